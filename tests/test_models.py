"""The model zoo: shapes, gradients, conditioning, InfoGAN, spectral norm, EMA, DiffAugment.

    .venv/bin/python -m pytest tests/test_models.py -q
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load, save
from torch.nn.utils import parametrize

from gan.config import InfoGANConfig, ModelConfig, parse_params
from gan.diffaugment import diff_augment, rand_cutout, rand_translation
from gan.ema import update_ema
from gan.errors import ConfigError
from gan.models import build_D, build_G, describe, model_kwargs
from gan.models.infogan import encode_latent
from gan.models.layers import halving_widths

torch.set_num_threads(1)

NUM_CLASSES = 10
BATCH = 3  # > 1 so that BatchNorm has statistics to normalise with

CASES = [
    (arch, conditional, channels, size)
    for arch, sizes in (("mlp", (8, 16)), ("dcgan", (8, 16, 32, 64)), ("resnet", (8, 16, 32, 64)))
    for conditional in (False, True)
    for channels in (1, 3)
    for size in sizes
]


def _build(arch: str, conditional: bool, channels: int, size: int, infogan: InfoGANConfig | None = None, **cfg):
    """G and D from a ModelConfig with tiny widths, through JSON as an exported config would go."""
    cfg = {"z_dim": 8, "g_width": 8, "d_width": 8, **cfg}
    model_cfg = ModelConfig(arch=arch, conditional=conditional, infogan=infogan or InfoGANConfig(), **cfg)
    G_kwargs, D_kwargs = model_kwargs(model_cfg, channels, size, NUM_CLASSES)
    G_kwargs, D_kwargs = json.loads(json.dumps(G_kwargs)), json.loads(json.dumps(D_kwargs))
    return build_G(arch, **G_kwargs), build_D(arch, **D_kwargs), G_kwargs


def _labels(G: torch.nn.Module, n: int = BATCH, seed: int = 0) -> torch.Tensor | None:
    if G.num_classes == 0:
        return None
    return torch.randint(0, G.num_classes, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("arch", "conditional", "channels", "size"), CASES)
def test_shapes_range_and_gradient_reaches_every_parameter(arch: str, conditional: bool, channels: int, size: int) -> None:
    torch.manual_seed(0)
    G, D, _ = _build(arch, conditional, channels, size)
    assert G.z_dim == 8 and G.c_dim == 0 and G.num_classes == (NUM_CLASSES if conditional else 0)
    z, y = torch.randn(BATCH, G.z_dim), _labels(G)
    x = G(z, y)
    assert x.shape == (BATCH, channels, size, size)
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0
    logits = D(x, y)
    assert logits.shape == (BATCH,) and torch.isfinite(logits).all()
    (logits.square().mean() + D(torch.randn_like(x), y).mean()).backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None, f"{type(net).__name__}.{name} gets no gradient"
            assert torch.isfinite(p.grad).all(), name
        assert any(p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_conditional_output_changes_with_label(arch: str) -> None:
    torch.manual_seed(0)
    G, _, _ = _build(arch, True, 1, 16)
    # Class embeddings start neutral in conditional BatchNorm; train-like perturbation
    # makes the label matter as it does after a few steps.
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.1 * torch.randn_like(p))
    G.eval()
    z = torch.randn(1, G.z_dim).repeat(NUM_CLASSES, 1)
    x = G(z, torch.arange(NUM_CLASSES))  # one z, every class
    for k in range(1, NUM_CLASSES):
        assert (x[k] - x[0]).abs().max() > 1e-4, f"class {k} gives the same image as class 0"


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_conditional_models_need_labels_and_unconditional_ignore_them(arch: str) -> None:
    G, D, _ = _build(arch, True, 1, 8)
    z = torch.randn(2, G.z_dim)
    with pytest.raises(ValueError, match="labels"):
        G(z, None)
    with pytest.raises(ValueError, match="labels"):
        D(torch.zeros(2, 1, 8, 8), None)
    G0, D0, _ = _build(arch, False, 1, 8)
    G0.eval()
    y = torch.tensor([1, 2])
    assert torch.equal(G0(z, y), G0(z, None))


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
@pytest.mark.parametrize("spectral_norm_G", [False, True])
def test_exported_generator_round_trips_through_safetensors(arch: str, spectral_norm_G: bool) -> None:
    torch.manual_seed(0)
    G, _, G_kwargs = _build(arch, True, 3, 16, spectral_norm_G=spectral_norm_G)
    G(torch.randn(4, G.z_dim), torch.arange(4))  # move BatchNorm statistics and SN vectors
    state = G.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    blob = save({k: v.contiguous() for k, v in state.items()})
    G2 = build_G(arch, **G_kwargs)
    G2.load_state_dict(load(blob), strict=True)
    G.eval(), G2.eval()
    z, y = torch.randn(5, G.z_dim), torch.arange(5)
    torch.testing.assert_close(G2(z, y), G(z, y))


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_infogan_codes_and_q_head(arch: str) -> None:
    torch.manual_seed(0)
    info = InfoGANConfig(categorical=4, continuous=2)
    G, D, G_kwargs = _build(arch, True, 1, 16, infogan=info)
    assert G.z_dim == 8 + 6 and G.c_dim == 6 and G_kwargs["c_categorical"] == 4
    z, y = torch.randn(BATCH, G.z_dim), _labels(G)
    logits, q = D(G(z, y), y, return_q=True)
    assert logits.shape == (BATCH,) and q.shape == (BATCH, 6)
    q.sum().backward()
    assert all(p.grad is not None for p in D.q_head.parameters())
    # Unconditional without codes: no Q head at all (DDP would see unused parameters).
    _, D0, _ = _build(arch, False, 1, 16)
    assert D0.q_head is None
    with pytest.raises(ValueError, match="Q head"):
        D0(torch.zeros(2, 1, 16, 16), return_q=True)


def test_infogan_categorical_code_is_one_hot_of_its_argmax() -> None:
    z = torch.tensor([[0.3, -1.0, 2.0, 0.1, 0.5, -0.7]])  # noise 2 | categorical 3 | continuous 1
    out = encode_latent(z, categorical=3, continuous=1)
    torch.testing.assert_close(out, torch.tensor([[0.3, -1.0, 1.0, 0.0, 0.0, -0.7]]))


def test_infogan_categorical_code_changes_the_image() -> None:
    torch.manual_seed(0)
    G, _, _ = _build("dcgan", False, 1, 16, infogan=InfoGANConfig(categorical=3, continuous=0))
    G.eval()
    z = torch.randn(1, G.z_dim).repeat(2, 1)
    z[0, -3:] = torch.tensor([5.0, 0.0, 0.0])
    z[1, -3:] = torch.tensor([0.0, 5.0, 0.0])
    x = G(z, None)
    assert (x[0] - x[1]).abs().max() > 1e-4


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_spectral_normalised_layers_have_unit_largest_singular_value(arch: str) -> None:
    torch.manual_seed(0)
    _, D, _ = _build(arch, False, 1, 16, spectral_norm_D=True)
    for _ in range(30):  # power iteration runs once per training-mode forward
        D(torch.randn(4, 1, 16, 16))
    layers = [m for m in D.modules() if parametrize.is_parametrized(m, "weight")]
    assert len(layers) >= 3
    D.eval()
    for m in layers:
        w = m.weight.detach()
        w = w.transpose(0, 1) if isinstance(m, torch.nn.ConvTranspose2d) else w
        sigma = torch.linalg.matrix_norm(w.flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.02), type(m).__name__
        # ... while the raw weight it normalises is not of unit norm.
        raw = m.parametrizations.weight.original.detach().flatten(1)
        assert torch.linalg.matrix_norm(raw, ord=2).item() != pytest.approx(1.0, abs=0.02)


def test_resnet_discriminator_is_always_spectral_normalised_and_dcgan_drops_batchnorm() -> None:
    _, D, _ = _build("resnet", False, 1, 16, spectral_norm_D=False)
    assert any(parametrize.is_parametrized(m, "weight") for m in D.modules())
    _, D_sn, _ = _build("dcgan", False, 1, 16, spectral_norm_D=True)
    _, D_bn, _ = _build("dcgan", False, 1, 16, spectral_norm_D=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D_sn.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in D_bn.modules())


@pytest.mark.parametrize("upsample", ["transposed", "resize"])
def test_dcgan_follows_the_paper_initialisation(upsample: str) -> None:
    torch.manual_seed(0)
    G, _, _ = _build("dcgan", False, 1, 32, g_width=64, g_upsample=upsample)
    layer = G.ups[0] if upsample == "transposed" else G.ups[0][1]  # resize: [Upsample, Conv 3x3]
    conv = layer.weight.detach()
    assert abs(conv.mean().item()) < 0.005 and conv.std().item() == pytest.approx(0.02, rel=0.1)


def test_resize_upsampling_leaves_no_checkerboard_where_a_transposed_convolution_does() -> None:
    """A flat feature map through each 2x layer with random weights: ConvT 4x4 s2 answers with a
    pattern of period 2 (each output parity sees other kernel taps), resize + conv stays flat."""
    from gan.models.dcgan import _upsampling

    torch.manual_seed(0)
    flat = torch.ones(1, 4, 8, 8)
    for mode, periodic in (("transposed", True), ("resize", False)):
        layer = _upsampling(4, 1, mode, bias=False)
        out = layer(flat)[0, 0, 2:-2, 2:-2].detach()  # [12, 12], borders left out (padding)
        assert out.shape == (12, 12)
        spread = (out.max() - out.min()).item()
        assert (spread > 1e-3) is periodic, (mode, spread)
        if periodic:  # the pattern repeats every 2 pixels
            assert torch.allclose(out[:-2], out[2:], atol=1e-6) and torch.allclose(out[:, :-2], out[:, 2:], atol=1e-6)


def test_an_export_from_before_the_upsampling_key_still_builds_transposed_convolutions() -> None:
    G_kwargs = {"z_dim": 8, "width": 8, "num_classes": 0, "c_categorical": 0, "c_continuous": 0,
                "spectral_norm": False, "channels": 1, "image_size": 16}  # fmt: skip
    assert isinstance(build_G("dcgan", **G_kwargs).ups[0], torch.nn.ConvTranspose2d)
    with pytest.raises(ValueError, match="upsample = 'bilinear' is invalid"):
        build_G("dcgan", **G_kwargs, upsample="bilinear")


def test_width_conventions() -> None:
    assert halving_widths(64, [4, 8]) == [64, 32]  # DCGAN: width at 4x4
    assert halving_widths(1024, [4, 8, 16, 32]) == [1024, 512, 256, 128]  # the paper's 64x64 G
    assert halving_widths(64, [4, 8, 16, 32, 64]) == [64, 32, 16, 8, 8]  # never below 8
    assert halving_widths(4, [4, 8]) == [4, 4]  # ... unless the width itself is smaller


def test_mlp_generates_points_in_the_plane() -> None:
    G = build_G("mlp", z_dim=4, out_shape=[2], width=8, depth=2)
    D = build_D("mlp", in_shape=[2], width=8, depth=2)
    x = G(torch.randn(5, 4), None)
    assert x.shape == (5, 2)
    assert D(x).shape == (5,)


def test_bad_arguments_fail_with_clear_messages() -> None:
    with pytest.raises(ValueError, match="unknown generator architecture 'vae'"):
        build_G("vae", z_dim=8)
    with pytest.raises(ValueError, match="image_size = 24"):
        build_G("dcgan", z_dim=8, channels=1, image_size=24)
    with pytest.raises(ValueError, match=r"z must have shape \[N, 8\]"):
        build_G("dcgan", z_dim=8, channels=1, image_size=8)(torch.randn(2, 7), None)
    with pytest.raises(ValueError, match="z_dim = 4 must exceed"):
        build_G("mlp", z_dim=4, out_shape=[2], c_categorical=2, c_continuous=2)
    with pytest.raises(ConfigError, match="model.conditional"):
        model_kwargs(ModelConfig(conditional=True), 1, 16, num_classes=0)
    with pytest.raises(ConfigError, match=r"model.infogan.categorical = 1 is invalid: use 0 \(off\) or at least 2 categories"):
        parse_params({"model": {"infogan": {"categorical": 1}}})  # the config's rule: `gan check` sees it


def test_model_kwargs_follow_the_config() -> None:
    cfg = ModelConfig(arch="dcgan", conditional=False, z_dim=32, g_width=16, d_width=24, spectral_norm_D=True)
    G_kwargs, D_kwargs = model_kwargs(cfg, 3, 32, num_classes=10)
    assert G_kwargs == {
        "z_dim": 32, "width": 16, "num_classes": 0, "c_categorical": 0, "c_continuous": 0,
        "spectral_norm": False, "upsample": "resize", "channels": 3, "image_size": 32,
    }
    assert D_kwargs["width"] == 24 and D_kwargs["spectral_norm"] is True and D_kwargs["num_classes"] == 0
    G_kwargs, _ = model_kwargs(ModelConfig(arch="mlp"), 1, 16, num_classes=10)
    assert G_kwargs["out_shape"] == [1, 16, 16] and G_kwargs["num_classes"] == 10


def test_describe_lists_architectures_losses_and_regularisers() -> None:
    text = describe()
    for word in ("mlp", "dcgan", "resnet", "minimax", "nonsaturating", "hinge", "wgan-gp", "lsgan",
                 "InfoGAN", "spectral norm", "R1", "gradient penalty", "EMA", "DiffAugment"):
        assert word in text


# --- EMA ---------------------------------------------------------------------------------


def test_ema_update_is_exact_on_a_toy_module() -> None:
    G = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G.parameters():
            p.copy_(torch.arange(p.numel(), dtype=p.dtype).view_as(p))
        G[1].running_mean.fill_(7.0)
    before = [p.clone() for p in G_ema.parameters()]
    update_ema(G_ema, G, decay=0.75)
    for p_ema, p0, p in zip(G_ema.parameters(), before, G.parameters(), strict=True):
        assert torch.equal(p_ema, 0.75 * p0 + 0.25 * p)
    assert torch.equal(G_ema[1].running_mean, torch.full((3,), 7.0))  # buffers are copied
    update_ema(G_ema, G, decay=0.0)
    for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
        assert torch.equal(p_ema, p)


def test_ema_unwraps_a_data_parallel_style_wrapper_and_checks_names() -> None:
    class Wrapper(torch.nn.Module):  # stands in for DistributedDataParallel's .module
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

    G = torch.nn.Linear(2, 2)
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        G.weight.add_(1.0)
    update_ema(G_ema, Wrapper(G), decay=0.5)
    torch.testing.assert_close(G_ema.weight, G.weight - 0.5)
    with pytest.raises(ValueError, match="differ in parameters"):
        update_ema(torch.nn.Linear(2, 2, bias=False), G, decay=0.5)


def test_ema_works_with_a_spectral_normalised_generator() -> None:
    G, _, _ = _build("dcgan", True, 1, 8, spectral_norm_G=True)
    G_ema = copy.deepcopy(G)
    G(torch.randn(2, G.z_dim), torch.tensor([0, 1]))  # moves SN vectors and BN statistics
    update_ema(G_ema, G, decay=0.9)
    for (name, b_ema), b in zip(G_ema.named_buffers(), G.buffers(), strict=True):
        assert torch.equal(b_ema, b), name


# --- DiffAugment -------------------------------------------------------------------------


def test_diffaugment_keeps_shape_is_differentiable_and_random_per_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    out = diff_augment(x, "color,translation,cutout", generator=gen)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert diff_augment(x, "") is x
    with pytest.raises(ValueError, match="unknown DiffAugment policy 'blur'"):
        diff_augment(x, "color,blur")


def test_translation_shifts_whole_pixels_and_pads_with_zeros() -> None:
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8) + 1.0
    out = rand_translation(x.repeat(50, 1, 1, 1), torch.Generator().manual_seed(1))
    for img in out[:, 0]:
        nonzero = img[img != 0]
        assert set(nonzero.tolist()) <= set(x.flatten().tolist())  # values only move
        assert img.count_nonzero() >= 7 * 7  # at most one row and one column lost (8 * 0.125)
    assert not torch.equal(out[0], out[1]) or not torch.equal(out[1], out[2])


def test_cutout_zeroes_a_square_of_half_the_size() -> None:
    x = torch.ones(200, 2, 8, 8)
    out = rand_cutout(x, torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at the border
    assert torch.equal(out[:, 0], out[:, 1])  # the same square on every channel
