"""DP-SGD on the discriminator (train.privacy): epsilon against an independent accountant, resume, refusals, DDP.

    pytest -q tests/test_dp_training.py
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gan.config import parse_params
from gan.errors import GanError
from gan.training import (
    TrainCheckpoint,
    fit_task,
    load_checkpoint,
    make_trainer,
    save_checkpoint,
    with_train,
)

from .test_training import tiny_params, weights

PRIVACY = {"enabled": True, "noise_multiplier": 1.1, "max_grad_norm": 1.0, "delta": 1e-5}


def dp_params(**train):
    """The tiny 8x8 config with a DCGAN D (so BatchNorm must give way to GroupNorm) and DP-SGD on."""
    raw = tiny_params(**train).model_dump()
    raw["model"] = {**raw["model"], "arch": "dcgan", "g_width": 8, "d_width": 8}
    raw["train"]["privacy"] = dict(PRIVACY)
    return parse_params(raw)


def rdp_epsilon(noise: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of the subsampled Gaussian mechanism by Mironov et al. 2019's RDP bound, computed here (not by the trainer)."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    rdp = compute_rdp(q=sample_rate, noise_multiplier=noise, steps=steps, orders=orders)
    return float(get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0])


def test_epsilon_matches_an_independent_accountant_and_d_uses_groupnorm(prepared_digits):
    from gan.data import read_manifest

    params = dp_params(steps=4, n_critic=2, log_every=2)
    trainer = make_trainer(params, prepared_digits)
    assert trainer.network_specs["D"]["kwargs"]["norm"] == "group"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trainer.network("D").modules())
    from gan.models import build_network

    D16 = build_network("dcgan.D", **{**trainer.network_specs["D"]["kwargs"], "image_size": 16})  # 8x8 has no hidden norm layer
    assert any(isinstance(m, torch.nn.GroupNorm) for m in D16.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D16.modules())
    before = weights(trainer.network("G"))
    history: list[dict] = []
    fit_task(params, prepared_digits, log=None, trainer=trainer, report=lambda m, c: history.append(m))
    n = read_manifest(prepared_digits)["counts"]["train"]["total"]
    q = 32 / n  # fakes are not charged: the sample rate counts real images only
    # one accountant step per D step (n_critic = 2 per training step), reported at each log step
    assert [h["step"] for h in history] == [2.0, 4.0]
    for h in history:
        steps = int(h["step"]) * 2
        assert h["privacy/epsilon"] == pytest.approx(rdp_epsilon(1.1, q, steps, 1e-5), rel=1e-6)
    assert 0 < history[0]["privacy/epsilon"] < history[1]["privacy/epsilon"]
    assert not torch.equal(before, weights(trainer.network("G")))  # G still learns through the private D


def test_target_epsilon_sets_the_noise_from_the_accountant(prepared_digits):
    raw = dp_params(steps=4).model_dump()
    raw["train"]["privacy"] = {"enabled": True, "target_epsilon": 5.0, "delta": 1e-5}
    params = parse_params(raw)
    trainer = make_trainer(params, prepared_digits)
    last = fit_task(params, prepared_digits, log=None, trainer=trainer)["last"]
    # the whole run (4 D steps) spends the target, within the accountant's tolerance
    assert last["privacy/epsilon"] == pytest.approx(5.0, abs=0.05)
    assert last["privacy/noise_multiplier"] == trainer.dp.noise_multiplier > 0


def test_resume_keeps_epsilon(prepared_digits, tmp_path):
    params = dp_params(steps=6, checkpoint_every=4, log_every=2)
    straight = fit_task(params, prepared_digits, log=None, trainer=make_trainer(params, prepared_digits))["last"]
    saved: list[TrainCheckpoint] = []
    fit_task(with_train(params, steps=4), prepared_digits, log=None, trainer=make_trainer(params, prepared_digits),
             report=lambda m, c: saved.append(c) if c is not None else None)  # fmt: skip
    save_checkpoint(saved[-1], tmp_path / "ckpt")
    start = load_checkpoint(tmp_path / "ckpt")
    assert start.state["privacy"]["history"][-1][2] == 4  # the accountant's 4 D steps travel in the checkpoint
    resumed = fit_task(params, prepared_digits, start=start, log=None, trainer=make_trainer(params, prepared_digits))["last"]
    assert resumed["privacy/epsilon"] == pytest.approx(straight["privacy/epsilon"], rel=1e-9)


@pytest.mark.parametrize(
    ("model", "train", "match"),
    [
        ({"loss": "wgan-gp"}, {"gp_weight": 10.0}, "cannot train the WGAN-GP gradient penalty"),
        ({}, {"r1_gamma": 1.0}, "cannot train the R1 penalty"),
        ({}, {"privacy": {"enabled": True}}, "exactly one of noise_multiplier and target_epsilon"),
    ],
)
def test_double_backward_losses_and_missing_noise_are_refused(model, train, match):
    raw = tiny_params().model_dump()
    raw["model"].update(model)
    raw["train"].update({"privacy": PRIVACY, **train})
    with pytest.raises(GanError, match=match) as err:
        parse_params(raw)
    assert "\n" not in str(err.value)


def _dp_worker(rank: int, world: int, port: int, data: str, raw: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        summary = fit_task(parse_params(raw), data, rank=rank, world_size=world, log=None)
        torch.save({"checksums": summary["replica_checksums"], "last": summary["last"]}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_dp_under_ddp_two_processes_keeps_replicas_identical(prepared_digits, tmp_path):
    from gan.data import read_manifest

    raw = dp_params(steps=3, log_every=3).model_dump()
    port = 29500 + (os.getpid() + 500) % 1000
    mp.start_processes(_dp_worker, args=(2, port, str(prepared_digits), raw, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    rows = r0["checksums"]
    assert len(rows) == 2 and rows[0] == rows[1]  # the noised gradient is reduced: identical D (and G) on both ranks
    q = 2 * 32 / read_manifest(prepared_digits)["counts"]["train"]["total"]  # a global batch of two workers' images
    assert r0["last"]["privacy/epsilon"] == r1["last"]["privacy/epsilon"] == pytest.approx(rdp_epsilon(1.1, q, 3, 1e-5), rel=1e-6)
    assert math.isfinite(r0["last"]["loss/D"])


def test_epsilon_in_train_metrics_and_mlflow_and_d_beside_the_export(prepared_digits, tmp_path, mlflow_sqlite, monkeypatch):
    import json

    import mlflow

    from gan.export import load_networks
    from gan.training import apply_tuned, task_for
    from gan.training.outputs import final_metrics, generator_spec, write_outputs
    from gan.training.tracking import log_training_run

    monkeypatch.chdir(tmp_path)
    params = dp_params(steps=4, log_every=2)
    saved: list[TrainCheckpoint] = []
    summary = fit_task(params, prepared_digits, log=None, report=lambda m, c: saved.append(c) if c else None)
    ckpt, (_, used) = saved[-1], apply_tuned(params, None)
    metrics = final_metrics(ckpt, summary, used, {"wall_time_s": 1.0})
    run_id = log_training_run(params.model_dump(mode="json"), ckpt, metrics, {"git_commit": "abc"}, "dp-test")
    task = task_for(params, prepared_digits)
    write_outputs(task, ckpt, generator_spec(task, ckpt, used, {"mlflow_run_id": run_id}), metrics, tmp_path / "generator",
                  tmp_path / "train", audit_dir=tmp_path / "discriminator")  # fmt: skip

    written = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert written["privacy/epsilon"] == ckpt.history[-1]["privacy/epsilon"] > 0 and written["privacy/noise_multiplier"] == 1.1
    epsilons = mlflow.MlflowClient(mlflow_sqlite).get_metric_history(run_id, "privacy/epsilon")
    assert [m.step for m in epsilons] == [2, 4] and epsilons[0].value < epsilons[1].value
    nets, spec = load_networks(tmp_path / "discriminator")
    assert set(nets) == {"D"} and spec["networks"]["D"]["kwargs"]["norm"] == "group" and spec["step"] == 4
    assert set(load_networks(tmp_path / "generator")[0]) == {"G"}  # the published export holds no D


def test_a_spectrally_normalised_d_is_refused_before_training(prepared_digits):
    from gan.data import read_manifest
    from gan.errors import ConfigError
    from gan.tasks import make_task
    from gan.training.privacy import check_task

    raw = dp_params().model_dump()
    raw["model"]["spectral_norm_D"] = True
    params = parse_params(raw)
    with pytest.raises(ConfigError, match=r"network D has layers DP-SGD cannot train \(ParametrizedConv2d.*spectral_norm_D: false") as err:
        check_task(make_task(params, read_manifest(prepared_digits)))
    assert "\n" not in str(err.value)


def test_train_stage_refuses_a_private_d_opacus_cannot_train_before_ray_starts(prepared_digits, tmp_path, mlflow_sqlite, monkeypatch):
    import yaml

    import gan.stages.train as stage
    from gan.errors import ConfigError

    calls = []
    monkeypatch.setattr(stage, "init_ray", lambda: calls.append("init_ray"))
    raw = dp_params().model_dump(mode="json")
    raw["model"]["spectral_norm_D"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="train.privacy.enabled but network D has layers DP-SGD cannot train"):
        stage.main(["--params", str(tmp_path / "params.yaml"), "--data", str(prepared_digits), "--out", str(tmp_path / "out"),
                    "--model-out", str(tmp_path / "gen"), "--tuned", str(tmp_path / "none.json")])  # fmt: skip
    assert calls == [] and not (tmp_path / "gen").exists()
