"""The training core without Ray: recipe, checkpoints/resume, divergence guard, DDP on
two gloo processes, tuned values, run names, outputs, MLflow logging, and the train
stage's refusal of bad params before Ray starts."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from gan.config import parse_params
from gan.errors import ConfigError, DivergenceError
from gan.losses import loss_spec
from gan.training import (
    DivergenceGuard,
    TrainCheckpoint,
    apply_tuned,
    fit_task,
    load_checkpoint,
    make_trainer,
    run_name,
    save_checkpoint,
    with_train,
)

ROOT = Path(__file__).resolve().parents[1]


def tiny_params(**train):
    """An 8x8 config that trains in a fraction of a second per step."""
    raw = {
        "prepare": {"image_size": 8},
        "model": {"arch": "mlp", "conditional": True, "z_dim": 8, "g_width": 16, "d_width": 16, "loss": "hinge"},
        "train": {"batch_size": 32, "steps": 6, "log_every": 2, "checkpoint_every": 4, "sample_every": 4,
                  "divergence_patience": 50, "seed": 3, **train},
    }
    return parse_params(raw)


def weights(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


# ---- the recipe -----------------------------------------------------------------------


def test_fit_reports_metrics_checkpoints_and_samples(prepared_digits):
    params = tiny_params()
    calls: list[tuple[dict, TrainCheckpoint | None]] = []
    trainer = make_trainer(params, prepared_digits)
    before = weights(trainer.network("G")).clone()
    summary = fit_task(params, prepared_digits, report=lambda m, c: calls.append((m, c)), log=None, trainer=trainer)

    assert [int(m["step"]) for m, _ in calls] == [2, 4, 6]
    assert [c is not None for _, c in calls] == [False, True, True]  # checkpoint_every=4 and the last step
    for m, _ in calls:
        for key in ("loss/D", "loss/G", "D(x)", "D(G(z))", "grad_norm/D", "grad_norm/G", "throughput/img_s"):
            assert math.isfinite(m[key]), key
        assert 0.0 < m["D(x)"] < 1.0 and 0.0 < m["D(G(z))"] < 1.0
    final = calls[-1][1]
    assert final.step == 6 and [int(r["step"]) for r in final.history] == [2, 4, 6]
    assert sorted(final.samples) == ["step-0000004.png", "step-0000006.png"]
    assert final.samples["step-0000006.png"].startswith(b"\x89PNG")
    assert summary["step"] == 6 and summary["start_step"] == 0 and summary["throughput/img_s"] > 0
    assert not torch.equal(before, weights(trainer.network("G")))  # G was trained
    # G_ema moved towards G but is not G (the EMA ramp keeps it an average)
    assert not torch.equal(weights(trainer.G_ema), weights(trainer.network("G")))


def test_evaluation_on_schedule_and_early_stop(prepared_digits):
    params = tiny_params(steps=12, eval_every=4, log_every=2, checkpoint_every=100)
    evaluated: list[int] = []

    def eval_fn(nets, step):
        assert list(nets) == ["G"] and not nets["G"].training
        evaluated.append(step)
        return {"fid": 100.0 / step}

    reports: list[dict] = []
    summary = fit_task(params, prepared_digits, log=None, eval_fn=eval_fn, report=lambda m, c: reports.append(m),
                  should_stop=lambda m: m.get("fid", 1e9) < 15.0)
    assert evaluated == [4, 8]  # every eval_every steps; stopped at 8 (fid 12.5 < 15) before the end
    assert summary["step"] == 8 and [int(m["step"]) for m in reports] == [2, 4, 6, 8]
    assert [m.get("fid") for m in reports] == [None, 25.0, None, 12.5]


def test_resume_from_saved_checkpoint_continues_exactly(prepared_digits, tmp_path):
    # batch 256 on 1437 images: 5 batches per epoch, so resuming crosses epoch boundaries
    params = tiny_params(batch_size=256, n_critic=2, steps=6, checkpoint_every=4)
    straight = make_trainer(params, prepared_digits)
    fit_task(params, prepared_digits, log=None, trainer=straight)

    saved: list[TrainCheckpoint] = []
    first = make_trainer(params, prepared_digits)
    fit_task(with_train(params, steps=4), prepared_digits, log=None, trainer=first,
        report=lambda m, c: saved.append(c) if c is not None else None)
    save_checkpoint(saved[-1], tmp_path / "ckpt")
    del first
    torch.manual_seed(12345)  # a polluted global RNG must not matter: the checkpoint restores it

    start = load_checkpoint(tmp_path / "ckpt")
    assert start.step == 4 and start.state["batches_seen"] == 8 and start.state["phase_counts"] == {"Dmain": 8, "Gmain": 4}
    resumed = make_trainer(params, prepared_digits)
    summary = fit_task(params, prepared_digits, start=start, log=None, trainer=resumed)

    assert summary["start_step"] == 4 and summary["step"] == 6
    for name in ("G", "D"):
        assert torch.equal(weights(straight.network(name)), weights(resumed.network(name))), name
    assert torch.equal(weights(straight.G_ema), weights(resumed.G_ema))


def test_checkpoint_loads_with_weights_only_and_holds_everything(prepared_digits, tmp_path):
    params = tiny_params(steps=2, checkpoint_every=2)
    saved: list[TrainCheckpoint] = []
    fit_task(params, prepared_digits, log=None, report=lambda m, c: saved.append(c) if c else None)
    save_checkpoint(saved[-1], tmp_path)
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # no pickle of arbitrary objects
    for key in ("task", "networks", "nets", "optimizers", "phase_counts", "batches_seen", "scaler", "step", "rng", "config", "history"):
        assert key in state, key
    assert sorted(state["nets"]) == ["D", "G", "G_ema"] and sorted(state["optimizers"]) == ["D", "G"]
    assert state["task"] == "generate" and state["networks"]["G"]["network"] == "mlp.G"
    assert state["config"]["train"]["steps"] == 2 and state["config"]["model"]["arch"] == "mlp"
    assert isinstance(state["rng"][0]["torch"], torch.Tensor)
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert rows[-1]["step"] == "2" and "loss/D" in rows[-1]


def test_set_hparams_after_restore_reaches_the_optimisers(prepared_digits):
    params = tiny_params(steps=2, checkpoint_every=2)
    saved: list[TrainCheckpoint] = []
    fit_task(params, prepared_digits, log=None, report=lambda m, c: saved.append(c) if c else None)
    trainer = make_trainer(params, prepared_digits)
    trainer.load_state_dict(saved[-1].state)
    trainer.set_lrs(lr_G=1e-3, lr_D=5e-5)
    trainer.set_hparams(n_critic=3, beta1=0.0)
    assert trainer.optimizers["G"].param_groups[0]["lr"] == 1e-3
    assert trainer.optimizers["D"].param_groups[0]["lr"] == 5e-5
    assert trainer.optimizers["D"].param_groups[0]["betas"] == (0.0, 0.999)
    assert trainer.params.train.n_critic == 3 and trainer.state_dict()["config"]["train"]["lr_G"] == 1e-3
    before = trainer.batches_seen
    trainer.train_step()
    assert trainer.batches_seen == before + 3
    with pytest.raises(ConfigError):
        trainer.set_lrs(lr_G=-1.0, lr_D=1e-4)
    with pytest.raises(ValueError):
        trainer.set_hparams(batch_size=8)


def test_checkpoint_of_another_model_is_refused(prepared_digits):
    saved: list[TrainCheckpoint] = []
    fit_task(tiny_params(steps=2, checkpoint_every=2), prepared_digits, log=None,
        report=lambda m, c: saved.append(c) if c else None)
    other = make_trainer(parse_params({**tiny_params().model_dump(), "model": {**tiny_params().model.model_dump(), "g_width": 8}}),
                       prepared_digits)
    with pytest.raises(Exception, match="different model"):
        other.load_state_dict(saved[-1].state)


def test_ray_reports_only_checkpoint_and_evaluation_steps():
    from gan.training.ray_run import ray_report_due

    cfg = tiny_params(steps=12, log_every=2, checkpoint_every=4, eval_every=6).train
    sent = {s: ray_report_due(s, cfg, evaluating=True) for s in range(1, 13)}
    assert [s for s, (send, _) in sent.items() if send] == [4, 6, 8, 12]
    assert sent[4] == (True, "checkpoint-0000004") and sent[6] == (True, None)
    assert [s for s in range(1, 13) if ray_report_due(s, cfg, evaluating=False)[0]] == [4, 8, 12]
    assert [s for s in range(1, 13) if ray_report_due(s, cfg, evaluating=True, metric_only=True)[0]] == [6, 12]


# ---- divergence -----------------------------------------------------------------------


def test_exploding_learning_rate_stops_with_divergence_error(prepared_digits):
    params = tiny_params(lr_D=1e30, lr_G=1e30, steps=20, log_every=1, checkpoint_every=1)
    reported: list[int] = []
    with pytest.raises(DivergenceError, match=r"NaN or infinite.*not exported"):
        fit_task(params, prepared_digits, log=None, report=lambda m, c: reported.append(int(m["step"])))
    assert len(reported) < 20  # stopped early; nothing after the failing step was reported


def _feed(guard: DivergenceGuard, n: int, loss_D, loss_G, d_real: float, d_fake: float, drift: bool = True) -> None:
    for i in range(n):
        eps = 1e-3 * i if drift else 0.0
        guard.update(torch.tensor(loss_D + eps), torch.tensor(loss_G - eps), torch.tensor(d_real), torch.tensor(d_fake))


def test_guard_trips_on_saturated_discriminator_after_patience():
    guard = DivergenceGuard(patience=5, saturates=loss_spec("hinge").bounded)
    _feed(guard, 4, 0.0, 3.0, 0.999, 0.001)
    guard.check(4)  # 4 < patience: still fine
    _feed(guard, 1, 0.0, 3.0, 0.999, 0.001)
    with pytest.raises(DivergenceError, match=r"D separates real from fake.*divergence_patience = 5"):
        guard.check(5)


def test_guard_trips_on_frozen_losses_and_resets_on_recovery():
    guard = DivergenceGuard(patience=5, saturates=loss_spec("wgan-gp").bounded)
    _feed(guard, 3, 0.5, 0.5, 0.5, 0.5, drift=False)
    _feed(guard, 3, 0.5, 0.5, 0.5, 0.5, drift=True)  # moving again: the run resets
    guard.check(6)
    _feed(guard, 7, 0.7, 0.2, 0.5, 0.5, drift=False)
    with pytest.raises(DivergenceError, match="stopped changing"):
        guard.check(13)


def test_guard_ignores_large_critic_values_of_wgan():
    guard = DivergenceGuard(patience=3, saturates=loss_spec("wgan-gp").bounded)
    _feed(guard, 10, -50.0, 40.0, 1.0, 0.0)  # sigmoid saturates, but WGAN critics are unbounded
    guard.check(10)
    guard.update(torch.tensor(float("nan")), torch.tensor(1.0), torch.tensor(0.5), torch.tensor(0.5))
    with pytest.raises(DivergenceError, match="NaN"):
        guard.check(11)


# ---- DDP without Ray: two gloo processes ------------------------------------------------


DDP_MODELS = [
    # BatchNorm in D (two forwards before one backward), WGAN-GP's double backward, R1, n_critic
    {"arch": "dcgan", "g_width": 8, "d_width": 8, "spectral_norm_D": False, "loss": "wgan-gp", "conditional": True},
    # InfoGAN's Q head: used in D's step through the wrapper, in G's step through the raw D
    {"arch": "mlp", "g_width": 16, "d_width": 16, "loss": "nonsaturating", "conditional": False,
     "infogan": {"categorical": 3, "continuous": 2}},
]


def _ddp_worker(rank: int, world: int, port: int, data: str, raws: list[dict], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for i, raw in enumerate(raws):
            summary = fit_task(parse_params(raw), data, rank=rank, world_size=world, log=None)
            torch.save({"checksums": summary["replica_checksums"], "last": summary["last"]}, f"{out}/model{i}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_keep_replicas_identical(prepared_digits, tmp_path):
    raws = []
    for model in DDP_MODELS:
        raw = tiny_params(steps=3, n_critic=2, r1_gamma=1.0, r1_interval=2, log_every=1).model_dump()
        raw["model"] = {**raw["model"], "z_dim": 8, **model}
        raws.append(raw)
    port = 29500 + os.getpid() % 1000
    # fork: the children inherit the imported modules (spawn would re-import torch twice)
    mp.start_processes(_ddp_worker, args=(2, port, str(prepared_digits), raws, str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")
    for i, model in enumerate(DDP_MODELS):
        r0, r1 = (torch.load(tmp_path / f"model{i}-rank{r}.pt", weights_only=True) for r in (0, 1))
        rows = r0["checksums"]
        assert len(rows) == 2 and rows[0] == rows[1], model["arch"]  # gradients all-reduced: identical weights
        # reported metrics are rank averages: the same on both ranks (timings aside)
        same = [k for k in r0["last"] if "throughput" not in k]
        assert {k: r0["last"][k] for k in same} == {k: r1["last"][k] for k in same}, model["arch"]
        assert math.isfinite(r0["last"]["loss/D"])


# ---- tuned values, run names ------------------------------------------------------------


def test_tuned_values_applied_only_when_enabled_and_present(tmp_path):
    best = tmp_path / "best.json"
    params = tiny_params()
    same, used = apply_tuned(params, best)  # missing file
    assert same == params and used["source"] == "params.yaml" and used["lr_G"] == params.train.lr_G

    best.write_text(json.dumps({"config": {"lr_G": 1e-4, "lr_D": 4e-4, "n_critic": 2}, "score": 12.0, "metric": "fid"}))
    tuned, used = apply_tuned(params, best)
    assert (tuned.train.lr_G, tuned.train.lr_D, tuned.train.n_critic) == (1e-4, 4e-4, 2)
    assert used["source"] == str(best) and used["lr_D"] == 4e-4 and used["beta1"] == params.train.beta1

    off = parse_params({**params.model_dump(), "tune": {"enabled": False}})
    untouched, used = apply_tuned(off, best)
    assert untouched.train.lr_G == params.train.lr_G and used["source"] == "params.yaml"

    best.write_text(json.dumps({"config": {"lr_D": -1.0}}))
    with pytest.raises(ConfigError, match=r"best.json: train.lr_D = -1.0 is invalid"):
        apply_tuned(params, best)
    best.write_text(json.dumps({"config": {"momentum": 0.9}}))
    with pytest.raises(ConfigError, match="momentum"):
        apply_tuned(params, best)


def test_run_name_changes_with_training_config_only():
    params = tiny_params()
    name = run_name(params, data_hash="abc", code_hash="c1")
    assert name.startswith("train-") and name == run_name(params, "abc", "c1")
    assert run_name(with_train(params, log_every=7, checkpoint_every=9, storage_path="/x"), "abc", "c1") == name
    assert run_name(with_train(params, lr_G=1e-3), "abc", "c1") != name
    assert run_name(with_train(params, num_workers=2), "abc", "c1") != name
    assert run_name(params, "other-data", "c1") != name
    assert run_name(params, "abc", "other-code") != name


# ---- outputs, MLflow, the stage script's checks --------------------------------------------


def test_outputs_and_mlflow_run_from_a_checkpoint(prepared_digits, tmp_path, mlflow_sqlite, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)  # a SQLite store puts artifacts under ./mlruns

    from gan.data import read_manifest
    from gan.export import load_generator
    from gan.sampling import sample
    from gan.training import task_for
    from gan.training.outputs import final_metrics, generator_spec, write_outputs
    from gan.training.tracking import log_training_run

    params = tiny_params(steps=4)
    saved: list[TrainCheckpoint] = []
    summary = fit_task(params, prepared_digits, log=None, report=lambda m, c: saved.append(c) if c else None)
    ckpt, manifest = saved[-1], read_manifest(prepared_digits)
    _, used = apply_tuned(params, None)
    metrics = final_metrics(ckpt, summary, used, {"wall_time_s": 1.0})
    run_id = log_training_run(params.model_dump(mode="json"), ckpt, metrics, {"git_commit": "abc", "data_hash": manifest["hash"]}, "train-test")
    task = task_for(params, prepared_digits)
    spec = generator_spec(task, ckpt, used, {"mlflow_run_id": run_id})
    write_outputs(task, ckpt, spec, metrics, tmp_path / "generator", tmp_path / "train")

    G, spec = load_generator(tmp_path / "generator")
    assert spec["num_classes"] == 10 and spec["class_names"] == manifest["class_names"] and spec["tuned"]["source"] == "params.yaml"
    x, y = next(sample(G, 4, labels=[1, 2], seed=0))
    assert x.shape == (4, 1, 8, 8) and y.tolist() == [1, 2, 1, 2]
    assert torch.equal(G.state_dict()[next(iter(G.state_dict()))], ckpt.state["nets"]["G_ema"][next(iter(G.state_dict()))])
    written = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert written["steps"] == 4 and written["num_nodes"] == 1 and written["replica_weight_diff"] == 0.0
    assert {"loss/D", "loss/G", "throughput/img_s", "hyperparams", "resumed_from_step"} <= set(written)
    assert sorted(p.name for p in (tmp_path / "train" / "samples").iterdir()) == ["step-0000004.png"]
    assert sorted(p.name for p in (tmp_path / "train" / "plots").iterdir()) == ["d_outputs.png", "losses.png"]
    # the exported config.json holds no figure of this invocation (re-exporting changes no byte)
    assert not {"wall_time_s", "throughput/img_s", "steps_trained"} & set(spec["metrics"]) and written["steps_trained"] == 4
    # a finished run exported again trained nothing: no throughput, and the stage's line says so
    again_metrics = final_metrics(ckpt, {"start_step": ckpt.step, "throughput/img_s": 999.0}, used, {"wall_time_s": 1.0})
    assert again_metrics["steps_trained"] == 0 and "throughput/img_s" not in again_metrics
    from gan.stages.train import train_line

    assert "nothing to train" in train_line(again_metrics, "models/generator") and "img/s" not in train_line(again_metrics, "m")

    run = mlflow.MlflowClient(mlflow_sqlite).get_run(run_id)
    assert run.data.tags["git_commit"] == "abc" and run.data.tags["data_hash"] == manifest["hash"]
    assert run.data.params["train.lr_G"] == str(params.train.lr_G)
    history = mlflow.MlflowClient(mlflow_sqlite).get_metric_history(run_id, "loss/D")
    assert [m.step for m in history] == [2, 4]
    assert "D_G_z" in run.data.metrics and run.info.status == "FINISHED"
    # exporting the same finished training again (a re-run of the stage) logs no second run
    again = log_training_run(params.model_dump(mode="json"), ckpt, metrics, {"git_commit": "abc"}, "train-test")
    assert again == run_id
    assert len(mlflow.MlflowClient(mlflow_sqlite).search_runs([run.info.experiment_id])) == 1


def _write_params(tmp_path: Path, **train) -> Path:
    raw = tiny_params().model_dump(mode="json")
    raw["train"].update(train)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("train", "match"), [
    ({"lr_G": -0.1}, r"train.lr_G = -0.1 is invalid"),
    ({"batch_size": 5000}, r"train.batch_size = 5000 is invalid"),
    ({"placement_strategy": "RANDOM"}, r"train.placement_strategy"),
])
def test_stage_rejects_bad_params_before_ray_starts(prepared_digits, tmp_path, mlflow_sqlite, monkeypatch, train, match):
    import gan.stages.train as stage

    calls = []
    # another test may have started the shared Ray already, so watch the stage's own call
    monkeypatch.setattr(stage, "init_ray", lambda: calls.append("init_ray"))
    path = _write_params(tmp_path, **train)
    with pytest.raises(ConfigError, match=match):
        stage.main(["--params", str(path), "--data", str(prepared_digits), "--out", str(tmp_path / "out"),
                    "--model-out", str(tmp_path / "gen"), "--tuned", str(tmp_path / "none.json")])
    assert calls == []
    assert not (tmp_path / "out").exists() and not (tmp_path / "gen").exists()


def test_placement_problem_on_the_nodes_ray_reports():
    from gan.stages.train import placement_problem

    one, two = [{"CPU": 4.0}], [{"CPU": 4.0}, {"CPU": 2.0}]
    assert "different node" in placement_problem("STRICT_SPREAD", 2, {"CPU": 1.0}, one)
    assert placement_problem("STRICT_SPREAD", 2, {"CPU": 1.0}, two) is None
    assert "1 node(s)" in placement_problem("STRICT_SPREAD", 2, {"CPU": 3.0}, two)  # the 2-CPU node cannot hold one
    assert "one node" in placement_problem("STRICT_PACK", 3, {"CPU": 2.0}, two)
    assert placement_problem("STRICT_PACK", 2, {"CPU": 2.0}, two) is None
    assert placement_problem("PACK", 8, {"CPU": 1.0}, one) is None and placement_problem("SPREAD", 8, {"CPU": 1.0}, one) is None


def test_strict_spread_on_a_single_node_ray_is_refused_before_training(ray_cluster, prepared_digits, tmp_path, mlflow_sqlite, monkeypatch):
    """The session's one-node Ray: one sentence naming the key, at once, instead of a worker group that never starts."""
    import gan.stages.train as stage

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = _write_params(tmp_path, num_workers=2, placement_strategy="STRICT_SPREAD", storage_path=str(tmp_path / "ray"))
    with pytest.raises(ConfigError, match=r"train.placement_strategy = STRICT_SPREAD puts each of the 2 workers on a different node") as err:
        stage.main(["--params", str(path), "--data", str(prepared_digits), "--out", str(tmp_path / "out"),
                    "--model-out", str(tmp_path / "gen"), "--tuned", str(tmp_path / "none.json")])
    assert "\n" not in str(err.value) and str(err.value).endswith(".")
    assert not (tmp_path / "out").exists() and not (tmp_path / "gen").exists() and not (tmp_path / "ray").exists()


def test_ray_train_placement_group_cleaner_output_is_kept_off_the_console():
    """Batches from Ray Train's PlacementGroupCleaner actor are dropped; every other worker's output passes."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    from gan.ray_session import hide_actor_output

    printed: list[str] = []
    saved = list(dispatcher.handlers)  # a Ray this session connected to keeps its own handlers
    dispatcher.handlers = []
    dispatcher.add_handler("ray_print_logs", lambda data: printed.append(data["lines"][0]))
    try:
        assert hide_actor_output() is True
        assert hide_actor_output() is False  # wrapped once only
        dispatcher.emit({"actor_name": "PlacementGroupCleaner", "lines": ["ConnectionError: Found multiple active Ray instances"]})
        dispatcher.emit({"actor_name": "RayTrainWorker", "lines": ["step 20/40 | loss/D 1.2"]})
        dispatcher.emit({"task_name": "trial", "lines": ["a task's line"]})
    finally:
        dispatcher.handlers = saved
    assert printed == ["step 20/40 | loss/D 1.2", "a task's line"]


@pytest.mark.parametrize("name", ["D(G(z))", "D(x, wrong)", "loss/D", "a|b[c]{d}", "progan/alpha", "ratio (x/y) %"])
def test_every_metric_name_a_task_may_use_is_one_mlflow_takes(name):
    """Tasks name metrics freely; the tracking layer turns any name into one MLflow's validator accepts."""
    from mlflow.utils.validation import _validate_metric_name

    from gan.training.tracking import _key

    _validate_metric_name(_key(name))
