"""The train stage's outputs, written from the final checkpoint (atomically, each one).

    models/generator/     G_ema via gan.export.save_generator (+ config.json spec)
    train/metrics.json    final losses, steps, img/s, wall time, start-up, the values used
    train/history.csv     one row per logged step (DVC plots)
    train/plots/          losses.png, d_outputs.png: the same curves as images (offline `dvc plots show`)
    train/samples/        the sample grids, step-0000500.png ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gan.atomic import atomic_dir, atomic_write_json, atomic_write_text
from gan.charts import line_chart
from gan.export import save_generator
from gan.models import build_G
from gan.training.checkpoint import TrainCheckpoint, history_csv

# Columns of the last history row copied into metrics.json.
FINAL_KEYS = ("loss/D", "loss/G", "D(x)", "D(G(z))", "grad_norm/D", "grad_norm/G", "fid", "kid")
# Entries of train/metrics.json that measure this invocation, not the model: they stay out
# of models/generator/config.json so that re-exporting the same weights changes no byte there.
RUN_ONLY_KEYS = ("throughput/img_s", "steps_trained", "wall_time_s", "train_time_s", "startup_s", "resumed_from_step")


def generator_spec(ckpt: TrainCheckpoint, manifest: dict[str, Any], hyperparams: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """config.json of the exported generator: how to rebuild G plus how it was trained."""
    state = ckpt.state
    G_kwargs = state["G_kwargs"]
    return {
        "arch": state["arch"],
        "G_kwargs": G_kwargs,
        "z_dim": int(G_kwargs["z_dim"]),
        "num_classes": int(G_kwargs.get("num_classes", 0)),
        "class_names": list(manifest.get("class_names", [])) if G_kwargs.get("num_classes") else [],
        "channels": int(manifest["channels"]),
        "image_size": int(manifest["image_size"]),
        "train": state["config"]["train"],
        "model": state["config"]["model"],
        "tuned": hyperparams,
        "step": ckpt.step,
        "data_hash": manifest.get("hash"),
        **extra,
    }


def export_generator(ckpt: TrainCheckpoint, spec: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Rebuild G from the checkpoint's G_kwargs, load G_ema's weights and save it."""
    G = build_G(ckpt.state["arch"], **ckpt.state["G_kwargs"])
    G.load_state_dict(ckpt.state["G_ema"], strict=True)
    return save_generator(G.eval(), spec, out_dir)


def final_metrics(ckpt: TrainCheckpoint, summary: dict[str, Any], hyperparams: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
    """train/metrics.json: the last logged values, throughput, timing and the values used.

    ``steps_trained`` counts this invocation's steps; when it is 0 (the run had finished
    and was only exported again) there is no throughput to report, so the key is absent
    rather than a number nothing measured.
    """
    last = ckpt.history[-1] if ckpt.history else {}
    start = int(summary.get("start_step", ckpt.step))
    img_s = summary.get("throughput/img_s")
    measured = {"throughput/img_s": round(float(img_s), 2)} if ckpt.step > start and img_s else {}
    return {
        "steps": ckpt.step,
        "steps_trained": ckpt.step - start,
        **{k: last[k] for k in FINAL_KEYS if k in last},
        **measured,
        "resumed_from_step": start,
        "num_workers": int(summary.get("world_size", ckpt.state.get("world_size", 1))),
        "num_nodes": len(set(summary.get("node_ids", []))) or 1,
        "replica_weight_diff": replica_weight_diff(summary.get("replica_checksums", [])),
        "hyperparams": hyperparams,
        **timing,
    }


def replica_weight_diff(checksums: list[list[float]]) -> float:
    """The largest difference between ranks' weight checksums (0.0: replicas in sync)."""
    if len(checksums) < 2:
        return 0.0
    return max(abs(a - b) for row in checksums[1:] for a, b in zip(checksums[0], row, strict=True))


def write_outputs(
    ckpt: TrainCheckpoint,
    spec: dict[str, Any],
    metrics: dict[str, Any],
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
) -> None:
    """Write models/generator, train/metrics.json, train/history.csv and train/samples/."""
    out_dir = Path(out_dir)
    model_metrics = {k: v for k, v in metrics.items() if k not in RUN_ONLY_KEYS}
    export_generator(ckpt, {**spec, "metrics": model_metrics}, model_dir)
    with atomic_dir(out_dir / "samples") as tmp:
        for name, data in ckpt.samples.items():
            (tmp / name).write_bytes(data)
    with atomic_dir(out_dir / "plots") as tmp:
        for name, data in training_charts(ckpt.history).items():
            (tmp / name).write_bytes(data)
    atomic_write_text(out_dir / "history.csv", history_csv(ckpt.history))
    atomic_write_json(out_dir / "metrics.json", metrics)


def training_charts(history: list[dict[str, Any]]) -> dict[str, bytes]:
    """train/plots/: the loss curves and D's mean outputs against the training step, as PNG."""
    return {
        "losses.png": line_chart(history, "step", ["loss/D", "loss/G"], xlabel="training step", ylabel="loss", title="Loss curves"),
        "d_outputs.png": line_chart(
            history, "step", ["D(x)", "D(G(z))"], xlabel="training step",
            ylabel="mean sigmoid(D) (1 = judged real)", title="Discriminator outputs: real D(x), fake D(G(z))",
        ),  # fmt: skip
    }
