"""The tune stage: Ray Tune searches lr_G / lr_D (and friends) -> tune/best.json.

    python pipelines/tune.py            # reads the tune: section (and model:, train:) of params.yaml
    dvc repro tune
    dvc exp run -S tune.scheduler=pbt -S tune.num_samples=8

Outputs: tune/best.json (best config and its score; train reads it), tune/trials.csv
(every trial's config, status and score), tune/metrics.json (DVC metrics) and
tune/search.png (score over lr_G x lr_D). Re-running after an interruption resumes the
same search (``Tuner.restore``) unless its params, data or feature network changed.
With ``tune.enabled: false`` the search is skipped and train uses train.* as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import signal
import time
from pathlib import Path
from typing import Any

from gan import signals
from gan.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, output_lock
from gan.config import Params, load_params
from gan.errors import GanError, Interrupted
from gan.paths import check_outputs
from gan.stages import stage_parser
from gan.tracking import store_file

CSV_FIELDS = ("trial_id", "lr_G", "lr_D", "beta1", "n_critic", "final_lr_G", "final_lr_D", "status", "score", "last_score", "steps", "error")


def trials_csv(rows: list[dict[str, Any]], max_steps: int) -> str:
    """tune/trials.csv: one row per trial; ``status`` is completed, stopped (early, by ASHA) or failed."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{k: row.get(k, "") for k in CSV_FIELDS}, "status": shown_status(row, max_steps)})
    return buf.getvalue()


def search_plot(rows: list[dict[str, Any]], metric: str, title: str, lower_is_better: bool = True) -> bytes:
    """PNG: each trial at (lr_G, lr_D), coloured by its score; failed trials as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    ok = [r for r in rows if r["status"] == "completed" and math.isfinite(r["score"])]
    bad = [r for r in rows if r not in ok]
    if ok:
        cmap = "viridis_r" if lower_is_better else "viridis"  # the best trials are bright either way
        pts = ax.scatter([r["lr_G"] for r in ok], [r["lr_D"] for r in ok], c=[r["score"] for r in ok], cmap=cmap, s=60, edgecolors="k")
        fig.colorbar(pts, ax=ax, label=f"{metric} ({'lower' if lower_is_better else 'higher'} is better)")
        best = min(ok, key=lambda r: r["score"] if lower_is_better else -r["score"])
        ax.scatter([best["lr_G"]], [best["lr_D"]], marker="*", s=300, c="red", label="best")
    if bad:
        ax.scatter([r["lr_G"] for r in bad], [r["lr_D"] for r in bad], marker="x", c="gray", s=60, label="failed")
    lims = [min([r["lr_G"] for r in rows] + [r["lr_D"] for r in rows] or [1e-5]), max([r["lr_G"] for r in rows] + [r["lr_D"] for r in rows] or [1e-3])]
    ax.plot(lims, lims, ":", c="gray", lw=1, label="lr_D = lr_G")
    ax.set(xscale="log", yscale="log", xlabel="lr_G", ylabel="lr_D", title=title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def best_config(row: dict[str, Any], scheduler: str) -> dict[str, Any]:
    """The values train should use; PBT/PB2 trials end with their mutated learning rates."""
    config = {k: row[k] for k in ("lr_G", "lr_D", "beta1", "n_critic") if k in row and row[k] not in ("", None)}
    if scheduler in ("pbt", "pb2") and "final_lr_G" in row:
        config.update(lr_G=row["final_lr_G"], lr_D=row["final_lr_D"])
    if "n_critic" in config:
        config["n_critic"] = int(config["n_critic"])
    return config


def shown_status(row: dict[str, Any], max_steps: int) -> str:
    """A trial's status for people: ``stopped`` for one ASHA ended early (Ray calls it completed)."""
    if row["status"] == "completed" and int(row.get("steps") or 0) < max_steps:
        return "stopped"
    return str(row["status"])


def start_parent_run(name: str, start_ms: int) -> str:
    """The search's parent run, started when the stage started (so its duration is the search's); returns its id."""
    import mlflow

    from gan.tracking import ensure_experiment, git_commit, source_tags

    commit = git_commit()
    tags = {"git_commit": commit, "stage": "tune", **source_tags("pipelines/tune.py", commit)}
    run = mlflow.MlflowClient().create_run(ensure_experiment("gan-tune"), start_time=start_ms, run_name=name, tags=tags)
    return run.info.run_id


def log_to_mlflow(params: Params, result: dict[str, Any], best: dict[str, Any] | None, out: Path, run_id: str) -> None:
    """Into the parent run: settings, the best lr_G/lr_D, search.png and trials.csv; one nested run per trial."""
    import mlflow

    cfg = params.tune
    with mlflow.start_run(run_id=run_id) as parent:
        mlflow.log_params({f"tune.{k}": v for k, v in cfg.model_dump().items()})
        if best:
            mlflow.log_metric(f"best/{cfg.metric}", best["score"])
            mlflow.log_params({f"best.{k}": v for k, v in best_config(best, cfg.scheduler).items()})
            mlflow.set_tag("best_trial", str(best["trial_id"]))
        mlflow.log_metric("trials/failed", sum(r["status"] == "failed" for r in result["rows"]))
        mlflow.log_metric("trials/stopped", sum(shown_status(r, cfg.max_steps) == "stopped" for r in result["rows"]))
        for name in ("search.png", "trials.csv", "best.json"):
            if (out / name).exists():
                mlflow.log_artifact(str(out / name))
        for row in result["rows"]:
            with mlflow.start_run(experiment_id=parent.info.experiment_id, run_name=row["trial_id"] or "trial", nested=True):
                mlflow.log_params({k: row[k] for k in ("lr_G", "lr_D", "beta1", "n_critic") if k in row})
                mlflow.set_tag("status", shown_status(row, cfg.max_steps))
                for point in row["curve"]:
                    mlflow.log_metric(cfg.metric, point[cfg.metric], step=int(point["step"]))


def end_failed(run_id: str, error: str) -> None:
    """Mark the parent run FAILED with the error; quietly, since the stage's own error is what matters."""
    import mlflow

    with contextlib.suppress(Exception):
        client = mlflow.MlflowClient()
        client.set_tag(run_id, "error", error[:5000])
        client.set_terminated(run_id, "FAILED")


def no_trial_scored(rows: list[dict[str, Any]]) -> str:
    """The sentence when no trial reported a score: the advice follows the first trial's error.

    Narrowing the learning rates helps only trials that diverged; a trial that params.yaml
    itself makes impossible (a ConfigError inside the trial) or that broke on something else
    needs that fixed, and its own message says what.
    """
    errors = [str(r["error"]) for r in rows if r.get("error")]
    first = errors[0] if errors else ""
    if "ConfigError" in first:
        return f"every tuning trial was refused by its settings: {first.split('ConfigError: ', 1)[-1].rstrip('.')}."
    if not first or "diverg" in first.lower():
        return f"every tuning trial diverged or reported no score ({first or 'no score reported'}); narrow tune.lr_G / tune.lr_D and run again."
    return f"every tuning trial failed (first error: {first}); fix its cause and run again."


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--features", default="models/features")
    parser.add_argument("--out", default="tune", help="output directory (default: tune)")
    args = parser.parse_args(argv)
    start_ms = int(time.time() * 1000)
    params = load_params(args.params)
    out = Path(args.out)
    cfg = params.tune
    check_outputs({"--out": out}, {"--data": args.data or params.prepare.out, "--features": args.features, "--params": args.params,
                                   "tune.storage_path": cfg.storage_path, "the MLflow store": store_file()})
    # one tune stage per output at a time: a second one would restore the same search
    with output_lock(out):
        return tune(args, params, out, start_ms)


def tune(args: argparse.Namespace, params: Params, out: Path, start_ms: int) -> int:
    """The stage's work once its output is known to be its own."""
    cfg = params.tune
    if not cfg.enabled:
        write_outputs(out, params, {"rows": [], "name": "disabled", "resumed": False, "wall_s": 0.0}, None)
        print("tune: disabled (tune.enabled: false); train uses train.* from params.yaml")
        return 0

    from gan.data import read_manifest
    from gan.ray_session import init_ray, ray_where
    from gan.tasks import make_task, task_class
    from gan.tracking import ensure_experiment
    from gan.training.inputs import tree_hash
    from gan.tuning import best_row, num_trials, run_search, search_fingerprint, trial_params

    data_dir = args.data or params.prepare.out
    manifest = read_manifest(data_dir)
    # the task as a trial builds it (tune's step budget, this data): a rule it enforces fails
    # here, once, in one sentence, instead of inside every trial after Ray has started
    make_task(trial_params(params, {}), manifest)
    if not (Path(args.features) / "config.json").exists():
        raise GanError(f"{args.features} holds no feature network; run the featurize stage first (dvc repro featurize).")
    ensure_experiment("gan-tune")  # once, before any trial starts (SQLite breaks under parallel creation)
    init_ray()
    print(f"tune: {num_trials(cfg, task_class(params.model.task).tunable)} trials x {cfg.max_steps} steps, {cfg.search_alg} search, {cfg.scheduler} scheduler{ray_where()} ...", flush=True)
    # named like the search in Ray's storage, so that register finds it from tune/best.json's "search"
    run_id = start_parent_run(search_fingerprint(params, manifest["hash"], tree_hash(args.features)), start_ms)
    try:
        result = run_search(params, data_dir, args.features, manifest["hash"])
        if not result["finished"]:
            raise Interrupted(
                f"tune was interrupted ({signals.name(signals.received() or signal.SIGINT)}) with {len(result['rows'])} of {num_trials(cfg)} trials "
                f"started; the outputs in {out} were left as they were, and running the same command again resumes the search saved in {result['path']}.",
                signals.received() or signal.SIGINT,
            )
        best = best_row(result["rows"], result.get("lower_is_better", True))
        if best is None:
            raise GanError(no_trial_scored(result["rows"]))
    except (Exception, KeyboardInterrupt) as err:
        end_failed(run_id, str(err) or type(err).__name__)
        raise
    write_outputs(out, params, result, best)
    log_to_mlflow(params, result, best, out, run_id)
    failed = sum(r["status"] == "failed" for r in result["rows"])
    print(f"tune: best {cfg.metric} {best['score']:.3f} with lr_G {best['lr_G']:.2e}, lr_D {best['lr_D']:.2e} "
          f"({len(result['rows'])} trials, {failed} failed, {result['wall_s']:.0f}s{', resumed' if result['resumed'] else ''})")
    return 0


def write_outputs(out: Path, params: Params, result: dict[str, Any], best: dict[str, Any] | None) -> None:
    cfg = params.tune
    rows = result["rows"]
    if best is None:
        best_json: dict[str, Any] = {"enabled": False, "config": {}, "metric": cfg.metric, "score": None}
    else:
        best_json = {"enabled": True, "config": best_config(best, cfg.scheduler), "metric": cfg.metric, "score": best["score"],
                     "trial_id": best["trial_id"], "steps": best["steps"], "search": result["name"]}
    metrics = {
        "enabled": cfg.enabled,
        "trials": len(rows),
        "failed": sum(r["status"] == "failed" for r in rows),
        "stopped_early": sum(r["status"] == "completed" and r["steps"] < cfg.max_steps for r in rows),
        "trial_steps": sum(r["steps"] for r in rows),
        "wall_s": round(result["wall_s"], 1),
        f"best_{cfg.metric}": None if best is None else best["score"],
    }
    title = f"{cfg.search_alg} + {cfg.scheduler}: {len(rows)} trials" if cfg.enabled else "search disabled"
    atomic_write_text(out / "trials.csv", trials_csv(rows, cfg.max_steps))
    atomic_write_bytes(out / "search.png", search_plot(rows, cfg.metric, title, result.get("lower_is_better", True)))
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "best.json", best_json)  # last: train depends on it

