"""Progressive GAN: the fade-in identity, the growth schedule, reals at the level of detail,
the growth in checkpoints and exports, config errors, and DDP across a growth step.

    .venv/bin/python -m pytest tests/test_progan.py -q

The task contract (every phase runs, bit-exact resume from every step across the growth
step and mid-fade, export and pyfunc) is the ``generate/progan`` case of tests/test_tasks.py.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gan.config import parse_params
from gan.data import read_manifest
from gan.errors import ConfigError, GanError
from gan.growth import Growth, growth_at, images_to_full_growth
from gan.models.progan import ProGANDiscriminator, ProGANGenerator, upsample_to
from gan.tasks import make_task
from gan.tasks.progan import fade_reals
from gan.training import GANTrainer, TrainCheckpoint, load_checkpoint, save_checkpoint


def pg_params(**train: Any) -> Any:
    pg = train.pop("progan", {})
    return parse_params({
        "prepare": {"image_size": 8},
        "model": {"arch": "progan", "conditional": True, "z_dim": 8, "g_width": 16, "d_width": 16, "loss": "wgan-gp"},
        "train": {"batch_size": 8, "steps": 6, "seed": 1, "lr_G": 0.001, "lr_D": 0.001, "beta1": 0.0, "beta2": 0.99,
                  "progan": {"fade_images": 16, "stabilise_images": 16, **pg}, **train},
    })  # fmt: skip


def state(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten() for t in module.state_dict().values()])


# ---- networks ------------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True])
def test_right_after_a_growth_step_G_draws_exactly_the_previous_resolution(training):
    torch.manual_seed(0)
    G = ProGANGenerator(z_dim=8, num_classes=3, channels=3, image_size=32, width=32).train(training)
    z, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    for level in range(1, 4):
        G.set_growth(level - 1, 1.0)
        before = G(z, y)  # [5, 3, 32, 32]: level - 1's image, nearest-upsampled
        G.set_growth(level, 0.0)
        assert torch.equal(G(z, y), before), level
        G.set_growth(level, 0.5)
        assert not torch.equal(G(z, y), before), level  # the new block is blended in from there
    # and the previous level's image is blocky at its own resolution
    G.set_growth(1, 1.0)
    img = G(z, y)
    assert torch.equal(img, upsample_to(img[:, :, ::4, ::4], 32))


def test_every_parameter_gets_a_gradient_at_every_level():
    """Idle layers join with an exact zero: DDP sees the same parameters from 4x4 to the end."""
    G = ProGANGenerator(z_dim=8, num_classes=2, channels=1, image_size=16, width=16)
    D = ProGANDiscriminator(num_classes=2, channels=1, image_size=16, width=16)
    z, y = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    for level, alpha in [(0, 1.0), (1, 0.0), (1, 0.5), (2, 1.0)]:
        G.set_growth(level, alpha)
        D.set_growth(level, alpha)
        D(G(z, y), y).sum().backward()
        missing = [n for n, p in [*G.named_parameters(), *D.named_parameters()] if p.grad is None]
        assert not missing, (level, alpha, missing)
        idle = G.blocks[2][0].weight.grad  # 16x16's first conv
        assert (idle == 0).all() == (level < 2), (level, alpha)
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)


def test_D_pools_any_input_size_down_to_its_level_and_names_bad_shapes():
    torch.manual_seed(0)
    D = ProGANDiscriminator(num_classes=0, channels=3, image_size=32, width=16).eval()
    D.set_growth(1, 1.0)  # 8x8
    x8 = torch.randn(4, 3, 8, 8)
    assert torch.allclose(D(upsample_to(x8, 32)), D(x8), atol=1e-5)
    with pytest.raises(ValueError, match=r"\[N, 3, S, S\]"):
        D(torch.randn(4, 3, 4, 4))  # below the level's resolution
    with pytest.raises(ValueError, match="level 4"):
        D.set_growth(4, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        D.set_growth(1, 1.5)


def test_a_new_network_is_fully_grown_and_the_growth_is_in_its_state_dict():
    G = ProGANGenerator(z_dim=4, channels=1, image_size=16, width=8)
    assert G.growth() == (2, 1.0)
    G.set_growth(1, 0.25)
    H = ProGANGenerator(z_dim=4, channels=1, image_size=16, width=8)
    H.load_state_dict(G.state_dict(), strict=True)
    assert H.growth() == (1, 0.25)


# ---- the schedule ----------------------------------------------------------------------


def test_growth_schedule_in_images_shown():
    # 4x4 for 100 images, then per level: fade 50, stabilise 100; 3 levels (4, 8, 16)
    at = [growth_at(n, 3, 50, 100) for n in (0, 99, 100, 125, 150, 249, 250, 275, 300, 10**9)]
    assert at == [
        Growth(0, 1.0, "stabilise"), Growth(0, 1.0, "stabilise"),
        Growth(1, 0.0, "fade"), Growth(1, 0.5, "fade"), Growth(1, 1.0, "stabilise"), Growth(1, 1.0, "stabilise"),
        Growth(2, 0.0, "fade"), Growth(2, 0.5, "fade"), Growth(2, 1.0, "stabilise"), Growth(2, 1.0, "stabilise"),
    ]  # fmt: skip
    assert images_to_full_growth(16, 50, 100) == 300
    assert growth_at(5, 3, 0, 0) == Growth(2, 1.0, "stabilise")  # no schedule: fully grown from the start
    assert growth_at(10**9, 1, 50, 100) == Growth(0, 1.0, "stabilise")


def test_reals_are_shown_at_the_level_of_detail():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(fade_reals(x, Growth(2, 1.0, "stabilise")), x)  # full resolution: untouched
    low8 = torch.nn.functional.avg_pool2d(x, 2)
    assert torch.allclose(fade_reals(x, Growth(1, 1.0, "stabilise")), upsample_to(low8, 16))
    low4 = upsample_to(torch.nn.functional.avg_pool2d(x, 4), 8)
    assert torch.allclose(fade_reals(x, Growth(1, 0.0, "fade")), upsample_to(low4, 16))  # alpha 0: 4x4 detail
    mid = fade_reals(x, Growth(1, 0.5, "fade"))
    assert torch.allclose(mid, upsample_to(0.5 * low8 + 0.5 * low4, 16), atol=1e-6)


def test_trainer_grows_the_networks_and_checkpoints_the_growth(prepared_digits, tmp_path):
    params = pg_params(n_critic=1)  # 8 images per step: 4x4 for steps 0-1, fade at 2-3, 8x8 from 4
    task = make_task(params, read_manifest(prepared_digits))
    trainer = GANTrainer(params, prepared_digits, task=task)
    seen = []
    for _ in range(6):
        out = trainer.train_step()
        seen.append((out["progan/level"].item(), out["progan/alpha"].item()))
        assert "loss/drift" in out and "loss/gp" in out
    assert seen == [(0, 1.0), (0, 1.0), (1, 0.0), (1, 0.5), (1, 1.0), (1, 1.0)]
    for name in ("G", "D", "G_ema"):
        assert trainer.network(name).growth() == (1, 1.0), name
    # a checkpoint taken mid-fade holds the growth (in the networks and the task state)
    params_mid = pg_params(n_critic=1)
    mid = GANTrainer(params_mid, prepared_digits, task=make_task(params_mid, read_manifest(prepared_digits)))
    for _ in range(4):
        mid.train_step()
    save_checkpoint(TrainCheckpoint(state=mid.state_dict()), tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt").state
    assert loaded["task_state"] == {"level": 1, "alpha": 0.5, "phase": "fade"}
    resumed = GANTrainer(params_mid, prepared_digits, task=make_task(params_mid, read_manifest(prepared_digits)))
    resumed.load_state_dict(loaded)
    assert resumed.network("G_ema").growth() == (1, 0.5)
    assert resumed.train_step()["progan/alpha"].item() == 1.0  # the growth continues, it does not restart


# ---- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "train", "message"),
    [
        ({"infogan": {"categorical": 2}}, {}, "model.infogan: codes are not supported with model.arch = 'progan'"),
        ({"spectral_norm_D": True}, {}, "spectral norm .spectral_norm_G / spectral_norm_D. is not supported with model.arch = 'progan'"),
        ({}, {"steps": 3}, "train.steps: 3 steps show 16 real images"),
    ],
)
def test_bad_progan_configs_are_named(prepared_digits, model, train, message):
    def build() -> None:
        raw = pg_params().model_dump()
        raw["model"].update(model)
        raw["train"].update(train)
        make_task(parse_params(raw), read_manifest(prepared_digits))

    with pytest.raises((ConfigError, GanError), match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


# ---- DDP: two gloo processes across a growth step ---------------------------------------


def _ddp_worker(rank: int, world: int, port: int, data: str, raw: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        params = parse_params(raw)
        task = make_task(params, read_manifest(data))
        trainer = GANTrainer(params, data, task=task, rank=rank, world_size=world)
        alphas = [trainer.train_step()["progan/alpha"].item() for _ in range(4)]
        nets = {name: state(trainer.network(name)) for name in ("G", "D", "G_ema")}
        torch.save({"nets": nets, "task": task.state_dict(), "alphas": alphas}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_grow_together_and_keep_replicas_identical(prepared_digits, tmp_path):
    # 2 ranks x 8 images per step: 4x4 at step 0, the 8x8 fade at steps 1-2, 8x8 from step 3
    raw = pg_params(n_critic=1, steps=4, num_workers=2, progan={"fade_images": 32, "stabilise_images": 16}).model_dump()
    port = 29500 + (os.getpid() + 411) % 1000
    mp.start_processes(_ddp_worker, args=(2, port, str(prepared_digits), raw, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["alphas"] == r1["alphas"] == [1.0, 0.0, 0.5, 1.0]
    for name in ("G", "D", "G_ema"):  # parameters and the growth buffers
        assert torch.equal(r0["nets"][name], r1["nets"][name]), name
    assert r0["task"] == r1["task"] == {"level": 1, "alpha": 1.0, "phase": "stabilise"}
