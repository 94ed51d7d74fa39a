"""StyleGAN2-ADA: the networks' invariants, the lazy phases' cadence, ADA, w-space truncation, DDP.

    .venv/bin/python -m pytest tests/test_stylegan2.py -q

The task contract (every phase runs, bit-exact resume including w_avg, the path-length
mean and ADA's p, export and pyfunc) is the ``generate/stylegan2`` case of tests/test_tasks.py.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gan.ada import ada_adjust, ada_augment
from gan.config import parse_params
from gan.data import read_manifest
from gan.errors import ConfigError, GanError
from gan.models.stylegan2 import (
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    minibatch_stddev,
    modulated_conv2d,
    w_stats,
)
from gan.sampling import sample
from gan.tasks import make_task
from gan.training import GANTrainer


def sg2_params(**train: Any) -> Any:
    sg = train.pop("stylegan2", {})
    return parse_params({
        "prepare": {"image_size": 8},
        "model": {"arch": "stylegan2", "conditional": True, "z_dim": 8, "g_width": 16, "d_width": 16, "loss": "nonsaturating",
                  "stylegan2": {"w_dim": 8, "mapping_layers": 2}},
        "train": {"batch_size": 8, "steps": 4, "seed": 1, "lr_G": 0.0025, "lr_D": 0.0025, "beta1": 0.0, "beta2": 0.99,
                  "stylegan2": sg, **train},
    })  # fmt: skip


def state(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten() for t in module.state_dict().values()])


# ---- networks ------------------------------------------------------------------------


def test_demodulation_keeps_unit_output_variance():
    torch.manual_seed(0)
    x = torch.randn(32, 64, 24, 24)  # unit-variance input
    weight, styles = torch.randn(16, 64, 3, 3) * 3.0, torch.rand(32, 64) * 4.0 + 0.1  # any scale
    out = modulated_conv2d(x, weight, styles)[:, :, 1:-1, 1:-1]  # interior: no zero padding in the window
    assert abs(out.var().item() - 1.0) < 0.05
    plain = modulated_conv2d(x, weight, styles, demodulate=False)[:, :, 1:-1, 1:-1]
    assert plain.var().item() > 10.0  # without demodulation the styles' scale goes through


def test_generator_and_discriminator_shapes_and_checks():
    G = StyleGAN2Generator(z_dim=8, num_classes=3, channels=3, image_size=16, width=16, w_dim=8)
    D = StyleGAN2Discriminator(num_classes=3, channels=3, image_size=16, width=16)
    z, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    x, ws = G(z, y, return_ws=True)
    assert x.shape == (6, 3, 16, 16) and ws.shape == (6, G.num_ws, 8) and G.num_ws == 6
    assert D(x, y).shape == (6,)
    with pytest.raises(ValueError, match="class-conditional"):
        G(z, None)
    with pytest.raises(ValueError, match=r"z must have shape \[N, 8\]"):
        G(torch.randn(6, 5), y)
    with pytest.raises(ValueError, match="x must have shape"):
        D(torch.randn(6, 1, 16, 16), y)
    # style mixing: the ws after the cutoff come from the second latent
    mixed = G(z, y, z_mix=torch.randn(6, 8), mix_cutoff=2, return_ws=True)[1]
    assert torch.equal(mixed[:, :2], ws[:, :2]) and not torch.equal(mixed[:, 2:], ws[:, 2:])
    assert minibatch_stddev(torch.randn(6, 4, 4, 4)).shape == (6, 5, 4, 4)  # group 3 divides 6


def test_eval_mode_uses_fixed_noise_and_noise_strengths_are_learned():
    G = StyleGAN2Generator(z_dim=8, channels=1, image_size=8, width=16, w_dim=8).eval()
    for layer in G.convs:
        layer.noise_strength.data.fill_(0.5)
    z = torch.randn(4, 8)
    assert torch.equal(G(z), G(z))  # const noise: a seed gives one image
    assert not torch.equal(G(z, noise_mode="random"), G(z, noise_mode="random"))
    assert all(layer.noise_strength.requires_grad for layer in G.convs)


def test_w_avg_tracks_per_class_means():
    G = StyleGAN2Generator(z_dim=8, num_classes=3, channels=1, image_size=8, width=16, w_dim=4)
    w = torch.tensor([[1.0] * 4, [3.0] * 4, [2.0] * 4])
    y = torch.tensor([0, 0, 2])
    G.mapping.update_w_avg(*w_stats(w, y, 3), beta=0.5)
    assert torch.allclose(G.mapping.w_avg[0], torch.full((4,), 1.0))  # 0.5 * 0 + 0.5 * mean(1, 3)
    assert torch.equal(G.mapping.w_avg[1], torch.zeros(4))  # absent class unchanged
    assert torch.allclose(G.mapping.w_avg[2], torch.full((4,), 1.0))


# ---- truncation in w-space --------------------------------------------------------------


def test_truncation_psi_one_is_identity_and_psi_zero_gives_w_avg():
    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, num_classes=3, channels=1, image_size=8, width=16, w_dim=8).eval()
    G.mapping.w_avg.copy_(torch.randn(3, 8))
    z, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    _, ws0 = G(z, y, truncation_psi=0.0, return_ws=True)
    assert torch.allclose(ws0, G.mapping.w_avg[y][:, None].expand_as(ws0))
    # through the sampling module, which inference and `gan augment` share
    untruncated = torch.cat([x for x, _ in sample(G, 9, seed=4)])
    assert torch.equal(torch.cat([x for x, _ in sample(G, 9, seed=4, truncation=1.0)]), untruncated)
    at_avg = torch.cat([x for x, _ in sample(G, 9, seed=4, truncation=0.0)])  # labels cycle 0, 1, 2
    assert torch.equal(at_avg[0], at_avg[3]) and torch.equal(at_avg[1], at_avg[4]) and not torch.equal(at_avg[0], at_avg[1])
    with pytest.raises(GanError, match="w-space"):
        next(sample(G, 2, truncation=-0.5))


def test_runner_applies_w_truncation_to_drawn_and_given_latents(tmp_path):
    import pandas as pd

    from gan.export import save_generator
    from gan.inference.generate import GenerateRunner

    torch.manual_seed(0)
    kwargs = {"z_dim": 8, "num_classes": 0, "channels": 1, "image_size": 8, "width": 16, "w_dim": 8, "mapping_layers": 2}
    G = StyleGAN2Generator(**kwargs).eval()
    G.mapping.w_avg.copy_(torch.randn(1, 8))
    spec = {"inference": "generate", "arch": "stylegan2", "G_kwargs": kwargs, "z_dim": 8, "num_classes": 0, "class_names": [],
            "channels": 1, "image_size": 8}  # fmt: skip
    runner = GenerateRunner(str(save_generator(G, spec, tmp_path / "model")))
    drawn = runner.predict(pd.DataFrame([{"n": 3, "seed": 1, "truncation": 0.0}]))["images"]
    assert (drawn == drawn[0]).all()  # psi 0: every sample is the image of w_avg
    given = runner.predict(pd.DataFrame([{"z": torch.randn(2, 8).tolist(), "truncation": 0.0}]))["images"]
    assert (given == drawn[0]).all()
    plain = runner.predict(pd.DataFrame([{"n": 3, "seed": 1}]))["images"]
    assert (runner.predict(pd.DataFrame([{"n": 3, "seed": 1, "truncation": 1.0}]))["images"] == plain).all()
    assert not (plain == plain[0]).all()


# ---- ADA ------------------------------------------------------------------------------------


def test_ada_p_zero_is_identity_and_augmentation_is_differentiable():
    x = torch.randn(8, 3, 8, 8, requires_grad=True)
    assert torch.equal(ada_augment(x, torch.zeros([])), x)
    torch.manual_seed(0)
    out = ada_augment(x, torch.ones([]))
    assert out.shape == x.shape and not torch.equal(out, x)
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_ada_adjust_moves_p_towards_the_target_and_stays_non_negative():
    p = torch.tensor(0.1)
    up = ada_adjust(p, torch.tensor(0.9), target=0.6, images=64 * 4, kimg=0.5)  # D overfits: more augmentation
    assert torch.isclose(up, torch.tensor(0.1 + 256 / 500))
    down = ada_adjust(p, torch.tensor(0.2), target=0.6, images=64 * 4, kimg=0.5)
    assert down.item() == 0.0


def test_ada_and_diffaugment_are_exclusive():
    """Refused by the config (what `gan check` runs), not first by the task as training starts."""
    with pytest.raises(ConfigError, match="train.diffaugment and train.stylegan2.ada_target are both on"):
        sg2_params(diffaugment="color")


# ---- the recipe: cadence, lazy optimiser settings -----------------------------------------


def test_r1_and_path_length_phases_run_at_their_intervals(prepared_digits):
    params = sg2_params(r1_interval=4, stylegan2={"pl_interval": 2, "ada_interval": 1, "ada_kimg": 0.01})
    task = make_task(params, read_manifest(prepared_digits))
    trainer = GANTrainer(params, prepared_digits, task=task)
    r1_steps, pl_steps, ps = [], [], []
    for step in range(6):
        out = trainer.train_step()
        if "loss/r1" in out:
            r1_steps.append(step)
        if "loss/pl" in out:
            pl_steps.append(step)
        ps.append(out["ada/p"].item())
    assert r1_steps == [0, 4] and pl_steps == [0, 2, 4]
    assert len(set(ps)) > 1 and min(ps) >= 0  # p moves (ada_kimg is tiny) and is reported every D step
    assert task.state_dict()["ada_p"].item() == ps[-1]
    assert task.state_dict()["images"] == 6 * 8
    # the reference's lazy-regularisation adjustment: lr * k/(k+1), beta ** (k/(k+1))
    opts = task.optimizers()
    assert opts["D"].lr == pytest.approx(0.0025 * 4 / 5) and opts["D"].betas[1] == pytest.approx(0.99 ** (4 / 5))
    assert opts["G"].lr == pytest.approx(0.0025 * 2 / 3) and opts["G"].betas == pytest.approx((0.0, 0.99 ** (2 / 3)))
    assert trainer.optimizers["D"].param_groups[0]["lr"] == pytest.approx(0.0025 * 4 / 5)
    # R1's gamma: the reference's heuristic 0.0002 * res^2 / batch when train.r1_gamma is 0
    assert task.stylegan2.r1_gamma == pytest.approx(0.0002 * 64 / 8)


# ---- DDP: two gloo processes keep the replicas identical ----------------------------------


def _ddp_worker(rank: int, world: int, port: int, data: str, raw: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        params = parse_params(raw)
        task = make_task(params, read_manifest(data))
        trainer = GANTrainer(params, data, task=task, rank=rank, world_size=world)
        for _ in range(3):
            trainer.train_step()
        nets = {name: state(trainer.network(name)) for name in ("G", "D", "G_ema")}
        torch.save({"nets": nets, "task": task.state_dict()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_keep_replicas_identical(prepared_digits, tmp_path):
    # Dreg and Greg every other step: their zero-weighted terms keep every parameter in DDP's graph
    raw = sg2_params(r1_interval=2, stylegan2={"pl_interval": 2, "ada_interval": 1, "ada_kimg": 0.01}).model_dump()
    port = 29500 + (os.getpid() + 337) % 1000
    mp.start_processes(_ddp_worker, args=(2, port, str(prepared_digits), raw, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in ("G", "D", "G_ema"):  # parameters and buffers, w_avg included
        assert torch.equal(r0["nets"][name], r1["nets"][name]), name
    for key in ("pl_mean", "ada_p"):  # statistics all-reduced: one p and one PL mean
        assert torch.equal(r0["task"][key], r1["task"][key]), key
    assert r0["task"]["images"] == 3 * 2 * 8  # real images shown on both ranks
