"""The train stage's outputs, written from the final checkpoint (atomically, each one).

    models/generator/     the task's exported networks (generate: G_ema as G) via gan.export.save_networks
    models/discriminator/ the networks the privacy audit reads (Task.audited; generate: D), never registered;
                          for a task that audits none, only none.json saying so (DVC's outs are the same for every task)
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
from gan.export import save_networks
from gan.models import build_network
from gan.tasks.base import Task
from gan.training.checkpoint import TrainCheckpoint, history_csv

# Columns of the last history row copied into metrics.json.
FINAL_KEYS = ("loss/D", "loss/G", "loss/E", "D(x)", "D(G(z))", "grad_norm/D", "grad_norm/G", "fid", "kid", "auroc",
              "privacy/epsilon", "privacy/noise_multiplier", "privacy/delta")  # fmt: skip
# Entries of train/metrics.json that measure this invocation, not the model: they stay out
# of models/generator/config.json so that re-exporting the same weights changes no byte there.
RUN_ONLY_KEYS = ("throughput/img_s", "steps_trained", "wall_time_s", "train_time_s", "startup_s", "resumed_from_step")


def exported_networks(task: Task, ckpt: TrainCheckpoint) -> dict[str, dict[str, Any]]:
    """``{export name: {network, kwargs}}``: an EMA copy is built like the network it follows."""
    specs = ckpt.state["networks"]
    return {name: specs[task.ema.get(src, src)] for name, src in task.exported.items()}


def generator_spec(task: Task, ckpt: TrainCheckpoint, hyperparams: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """config.json of the exported model: the task, how to rebuild its networks, what inference needs, how it was trained."""
    state = ckpt.state
    return {
        "task": task.name,
        "inference": task.inference,
        "networks": exported_networks(task, ckpt),
        **task.export_spec(),
        "train": state["config"]["train"],
        "model": state["config"]["model"],
        "tuned": hyperparams,
        "step": ckpt.step,
        "data_hash": task.manifest.get("hash"),
        **extra,
    }


def export_generator(task: Task, ckpt: TrainCheckpoint, spec: dict[str, Any], out_dir: str | os.PathLike,
                     data_dir: str | os.PathLike | None = None, networks: dict[str, str] | None = None) -> Path:  # fmt: skip
    """Rebuild each exported network (or each of ``networks``: {name: source}) from the checkpoint, load its weights and save them all.

    With ``data_dir``, the task's :meth:`~gan.tasks.base.Task.calibrate` adds what it measures
    on the trained networks and the prepared data (the detect task's threshold) to the spec.
    """
    nets = {}
    for name, src in (task.exported if networks is None else networks).items():
        entry = spec["networks"][name]
        net = build_network(entry["network"], **entry["kwargs"])
        net.load_state_dict(ckpt.state["nets"][src], strict=True)
        nets[name] = net.eval()
    if data_dir is not None:
        spec = {**spec, **task.calibrate(nets, data_dir)}
    return save_networks(nets, spec, out_dir)


def audit_spec(task: Task, ckpt: TrainCheckpoint, spec: dict[str, Any]) -> dict[str, Any]:
    """config.json of models/discriminator: the export's spec with the audited networks in place of the exported ones."""
    specs = ckpt.state["networks"]
    return {**spec, "networks": {name: specs[src] for name, src in task.audited.items()}, "audit_only": True}


def write_no_audit(task: Task, spec: dict[str, Any], audit_dir: str | os.PathLike) -> None:
    """models/discriminator/ of a task whose networks no audit reads: none.json, and no weights.

    dvc.yaml declares the directory for every task (a stage's outs cannot depend on a
    param), so it always exists; evaluate finds no config.json in it and audits without D.
    """
    with atomic_dir(audit_dir) as tmp:
        atomic_write_json(tmp / "none.json", {"task": task.name, "networks": {}, "step": spec.get("step"), "ray_run": spec.get("ray_run"),
                                              "reason": f"the {task.name} task's {type(task).__name__} exports no network for the privacy audit"})


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
    task: Task,
    ckpt: TrainCheckpoint,
    spec: dict[str, Any],
    metrics: dict[str, Any],
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    audit_dir: str | os.PathLike | None = None,
) -> None:
    """Write models/generator, models/discriminator (``audit_dir``, when the task audits networks), train/metrics.json,
    history.csv, samples/ (``data_dir``: see export_generator)."""
    out_dir = Path(out_dir)
    model_metrics = {k: v for k, v in metrics.items() if k not in RUN_ONLY_KEYS}
    export_generator(task, ckpt, {**spec, "metrics": model_metrics}, model_dir, data_dir)
    if audit_dir is not None and task.audited:
        export_generator(task, ckpt, audit_spec(task, ckpt, spec), audit_dir, networks=dict(task.audited))
    elif audit_dir is not None:
        write_no_audit(task, spec, audit_dir)
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
