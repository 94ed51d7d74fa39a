"""The tune stage on the real Ray: a tiny search end to end, divergence, resume, PBT."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math

import mlflow
import pytest

from gan.config import load_params
from gan.stages import tune as tune_stage
from gan.tuning import (
    best_row,
    grid_points,
    log_grid,
    num_trials,
    run_search,
    search_space,
    trial_params,
)

from .conftest import write_params


def _tune(tmp_path, train: dict | None = None, **tune_values):
    values = {"num_samples": 3, "max_steps": 40, "eval_every": 20, "eval_samples": 200, "cpus_per_trial": 1,
              "max_concurrent_trials": 2, "storage_path": str(tmp_path / "ray"), "lr_G": [1e-4, 1e-3], "lr_D": [1e-4, 1e-3]}
    values.update(tune_values)
    return write_params(tmp_path / "params.yaml", tune=values, **({"train": train} if train else {}))


def test_search_space_and_trial_params(tmp_path):
    params = load_params(_tune(tmp_path, beta1=[0.0, 0.5], n_critic=[1, 2]))
    space = search_space(params.tune)
    assert set(space) == {"lr_G", "lr_D", "beta1", "n_critic"}
    assert log_grid(1e-5, 1e-3, 3) == [1e-5, 1e-4, 1e-3]
    p = trial_params(params, {"lr_G": 3e-4, "lr_D": 1e-4, "n_critic": 2})
    assert (p.train.lr_G, p.train.lr_D, p.train.n_critic, p.train.steps) == (3e-4, 1e-4, 2, 40)


def test_grid_is_every_point_once_in_a_seeded_shuffled_order(tmp_path):
    cfg = load_params(_tune(tmp_path, search_alg="grid", num_samples=9, lr_G=[1e-5, 1e-3], lr_D=[1e-5, 1e-3], seed=3)).tune
    points = grid_points(cfg)
    nested = [{"lr_G": g, "lr_D": d} for g, d in itertools.product([1e-5, 1e-4, 1e-3], repeat=2)]
    assert num_trials(cfg) == 9 and sorted(map(str, points)) == sorted(map(str, nested))
    assert points == grid_points(cfg) and points != nested  # the same shuffle for the same seed
    assert set(search_space(cfg)) == {"lr_G", "lr_D"}
    other = load_params(_tune(tmp_path, search_alg="grid", num_samples=9, lr_G=[1e-5, 1e-3], lr_D=[1e-5, 1e-3], seed=4)).tune
    assert grid_points(other) != points


def test_tune_stage_end_to_end_with_a_diverging_trial(tmp_path, ray_cluster, prepared_digits, featurized_digits, mlflow_sqlite):
    # a 2 x 2 grid whose lr_D = 50 trials blow D up (loss/G ~ 1e6, D(x) 1.0, D(G(z)) 0.0): the guard
    # stops them, they are never chosen. Patience 5: a 40-step trial's saturated stretches are
    # sometimes cut by one step with a mean D(G(z)) of 0.03, so 20 in a row is not certain
    params = _tune(tmp_path, train={"divergence_patience": 5}, search_alg="grid", num_samples=4, lr_G=[1e-4, 4e-4],
                   lr_D=[2e-4, 50.0], scheduler="fifo")  # fmt: skip
    out = tmp_path / "tune"
    argv = ["--params", str(params), "--data", str(prepared_digits), "--features", str(featurized_digits), "--out", str(out)]
    assert tune_stage.main(argv) == 0
    best = json.loads((out / "best.json").read_text())
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 4
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all(float(r["lr_D"]) == 50.0 for r in failed)
    assert "diverged" in failed[0]["error"] or "degenerate" in failed[0]["error"] or "NaN" in failed[0]["error"]
    assert best["config"]["lr_D"] == pytest.approx(2e-4)
    ok = [float(r["score"]) for r in rows if r["status"] == "completed"]
    assert best["score"] == pytest.approx(min(ok)) and math.isfinite(best["score"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trials"] == 4 and metrics["failed"] == len(failed)
    assert (out / "search.png").read_bytes()[:4] == b"\x89PNG"
    # MLflow: one parent run, a nested child per trial
    mlflow.set_tracking_uri(mlflow_sqlite)
    runs = mlflow.search_runs(experiment_names=["gan-tune"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    (parent,) = parents
    assert parent.info.run_name == best["search"] and parent.info.status == "FINISHED"
    assert float(parent.data.params["best.lr_G"]) == best["config"]["lr_G"] and float(parent.data.params["best.lr_D"]) == best["config"]["lr_D"]
    files = {f.path for f in mlflow.MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"search.png", "trials.csv", "best.json"} <= files, files
    # the run spans the search: it started before the first trial run was created
    assert parent.info.start_time < min(c.info.start_time for c in children) and parent.info.end_time >= max(c.info.end_time for c in children)
    assert {c.data.tags["status"] for c in children} == {"completed", "failed"}
    # re-running the same search restores it (Tuner.restore) and trains nothing new
    p = load_params(params)
    again = run_search(p, str(prepared_digits), str(featurized_digits), json.loads((prepared_digits / "manifest.json").read_text())["hash"])
    assert again["resumed"] is True
    assert sorted(r["score"] for r in again["rows"] if r["status"] == "completed") == sorted(ok)


def test_pbt_applies_mutated_lrs_to_the_optimisers(tmp_path, ray_cluster, prepared_digits, featurized_digits):
    data_hash = json.loads((prepared_digits / "manifest.json").read_text())["hash"]
    p = load_params(_tune(tmp_path, scheduler="pbt", num_samples=2, max_steps=30, eval_every=10, perturbation_interval=1,
                          lr_G=[1e-5, 1e-3], lr_D=[1e-5, 1e-3]))
    result = run_search(p, str(prepared_digits), str(featurized_digits), data_hash)
    assert best_row(result["rows"]) is not None
    # the lr the optimiser reported changed within some trial: PBT's mutation was applied after restore
    lrs = [{round(pt["lr_G"], 12) for pt in r["lr_curve"]} for r in result["rows"]]
    assert any(len(s) > 1 for s in lrs), f"no trial's optimiser lr_G changed: {lrs}"
    for r in result["rows"]:  # and the final optimiser lr is the trial's final (mutated) config
        assert r["final_lr_G"] == pytest.approx(r["lr_G"])


def test_the_search_space_holds_the_tasks_learning_rates():
    """Tune searches the learning rates a task declares (Task.tunable), each needing a range in the tune section."""
    from gan.config import parse_params
    from gan.errors import ConfigError
    from gan.tasks import task_class
    from gan.tuning import grid_points, learning_rate_ranges

    cfg = parse_params({"tune": {"lr_G": [1e-4, 1e-3], "lr_D": [2e-4, 2e-3], "search_alg": "grid", "num_samples": 9}}).tune
    assert set(search_space(cfg, task_class("generate").tunable)) == {"lr_G", "lr_D"}
    assert learning_rate_ranges(cfg, ("lr_D",)) == {"lr_D": (2e-4, 2e-3)}
    assert len(grid_points(cfg, ("lr_G", "lr_D"))) == 9 and len(grid_points(cfg, ("lr_D",))) == 9  # 3 x 3, or 9 on one axis
    with pytest.raises(ConfigError, match=r"tune.lr_E range"):
        learning_rate_ranges(cfg, ("lr_G", "lr_E"))


def test_trials_stopped_early_by_asha_are_shown_as_stopped():
    rows = [{"trial_id": "a", "status": "completed", "steps": 20}, {"trial_id": "b", "status": "completed", "steps": 60},
            {"trial_id": "c", "status": "failed", "steps": 5}]  # fmt: skip
    assert [tune_stage.shown_status(r, max_steps=60) for r in rows] == ["stopped", "completed", "failed"]
    assert [r["status"] for r in csv.DictReader(io.StringIO(tune_stage.trials_csv(rows, 60)))] == ["stopped", "completed", "failed"]
