"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"),
scaled down by its arguments; reference: NVlabs/stylegan2-ada-pytorch, training/networks.py.

G: ``z (+ class embedding) -> mapping MLP (lr x 0.01) -> w -> synthesis``; the synthesis
network starts from a learned 4x4 constant and, per resolution, runs two modulated /
demodulated 3x3 convolutions (the first after a x2 upsampling) with per-pixel noise of
learned strength, and adds a toRGB output to the upsampled image so far (skip outputs).
D: ``fromRGB -> residual blocks (x1/2 each) -> minibatch stddev -> conv -> FC -> logit``,
class-conditional through a projection of D's features on a mapped class embedding.

Every weight uses the equalised learning rate (Karras et al. 2018): stored ~ N(0, 1/lr_mul^2)
and scaled by ``lr_mul / sqrt(fan_in)`` at run time. Differences from the reference, all
for CPU-sized models: up/downsampling is bilinear / average pooling instead of the
[1, 3, 3, 1] FIR filters, no activation clamping and no fp16 layers.

    G = StyleGAN2Generator(z_dim=64, num_classes=10, channels=1, image_size=16)
    x = G(z, y)                                  # [N, 1, 16, 16]
    x = G(z, y, truncation_psi=0.5)              # w <- w_avg + psi (w - w_avg), per class
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gan.models.equalized import (
    LRELU_GAIN,
    EqualizedConv2d,
    EqualizedLinear,
    class_projection,
    minibatch_stddev,
    normalize_2nd_moment,
)
from gan.models.layers import check_channels, check_labels, check_resolution, halving_widths

NOISE_SEED = 1234  # the fixed noise inputs of eval mode (``noise_mode="const"``)


def modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True
) -> torch.Tensor:
    """Modulated convolution (StyleGAN2 Sec. 2.2) as one grouped conv.

    ``x [N, I, H, W]``, ``weight [O, I, k, k]``, ``styles [N, I]`` -> ``[N, O, H, W]``:
    w'_ijk = s_i * w_ijk (modulation); w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps)
    (demodulation), so that an input of unit variance gives an output of unit variance.
    """
    N, c_in, H, W = x.shape
    c_out, c_in_w, kh, kw = weight.shape
    if c_in != c_in_w or styles.shape != (N, c_in):
        raise ValueError(
            f"modulated_conv2d: x {list(x.shape)}, weight {list(weight.shape)} and styles {list(styles.shape)} disagree"
        )
    w = weight[None] * styles[:, None, :, None, None]  # [N, c_out, c_in, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    out = F.conv2d(
        x.reshape(1, N * c_in, H, W), w.reshape(N * c_out, c_in, kh, kw), padding=kh // 2, groups=N
    )
    return out.reshape(N, c_out, H, W)


class MappingNetwork(nn.Module):
    """``z [N, z_dim] (+ y [N]) -> w [N, num_ws, w_dim]``; tracks ``w_avg`` (beta 0.995) for truncation.

    Conditional: a learned class embedding, normalised like z, is joined to z (the
    reference's ``embed(c)``). ``w_avg`` is per class when conditional (``[num_classes,
    w_dim]``) so that truncation pulls towards the class's average w, else ``[1, w_dim]``.
    """

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_ws: int,
        num_classes: int,
        layers: int,
        lr_mul: float = 0.01,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"mapping_layers = {layers} is invalid: must be at least 1")
        self.z_dim, self.w_dim, self.num_ws, self.num_classes = z_dim, w_dim, num_ws, num_classes
        self.embed = EqualizedLinear(num_classes, w_dim) if num_classes else None
        features = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * layers
        self.fcs = nn.ModuleList(
            EqualizedLinear(a, b, lr_mul=lr_mul, activation=True)
            for a, b in zip(features[:-1], features[1:], strict=True)
        )
        self.register_buffer("w_avg", torch.zeros(max(num_classes, 1), w_dim))

    def forward(
        self, z: torch.Tensor, y: torch.Tensor | None, truncation_psi: float = 1.0
    ) -> torch.Tensor:
        x = normalize_2nd_moment(z)  # [N, z_dim]
        if self.embed is not None:
            one_hot = F.one_hot(y, self.num_classes).to(z.dtype)  # [N, classes]
            x = torch.cat([x, normalize_2nd_moment(self.embed(one_hot))], dim=1)
        for fc in self.fcs:
            x = fc(x)  # [N, w_dim]
        if truncation_psi != 1.0:
            x = truncate_w(x, self.class_w_avg(y), truncation_psi)
        return x[:, None, :].expand(-1, self.num_ws, -1)  # [N, num_ws, w_dim]

    def class_w_avg(self, y: torch.Tensor | None) -> torch.Tensor:
        """The average w of each sample's class ``[N, w_dim]`` (or the one average, broadcast ``[1, w_dim]``)."""
        return self.w_avg[y] if self.num_classes else self.w_avg

    @torch.no_grad()
    def update_w_avg(self, sums: torch.Tensor, counts: torch.Tensor, beta: float = 0.995) -> None:
        """``w_avg <- lerp(w_avg, sums / counts, 1 - beta)`` for each class with ``counts > 0``.

        ``sums [K, w_dim]``, ``counts [K]`` with K = num_classes (1 when unconditional): the
        per-class sums of w over the batch (over every rank under DDP, so that the replicas
        keep one w_avg); see :func:`w_stats`.
        """
        if sums.shape != self.w_avg.shape or counts.shape != self.w_avg.shape[:1]:
            raise ValueError(
                f"sums {list(sums.shape)} / counts {list(counts.shape)} do not match w_avg {list(self.w_avg.shape)}"
            )
        present = (counts > 0)[:, None]  # [K, 1]
        means = sums.to(self.w_avg.dtype) / counts.clamp(min=1)[:, None].to(self.w_avg.dtype)
        self.w_avg.copy_(torch.where(present, self.w_avg.lerp(means, 1.0 - beta), self.w_avg))


def w_stats(
    w: torch.Tensor, y: torch.Tensor | None, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums [K, w_dim], counts [K])`` of ``w [N, w_dim]`` per class (K = 1 when unconditional)."""
    w = w.detach().float()
    if not num_classes:
        return w.sum(dim=0, keepdim=True), torch.full((1,), float(w.shape[0]), device=w.device)
    sums = torch.zeros(num_classes, w.shape[1], device=w.device).index_add_(0, y, w)
    return sums, torch.bincount(y, minlength=num_classes).float()


def truncate_w(w: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
    """The truncation trick in w-space (Karras et al. 2019): ``w' = w_avg + psi * (w - w_avg)``."""
    return w_avg.to(w.dtype).lerp(w, psi)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (after an optional x2 upsampling) + noise of learned strength + bias + lReLU."""

    def __init__(
        self, c_in: int, c_out: int, w_dim: int, resolution: int, up: bool = False
    ) -> None:
        super().__init__()
        self.affine = EqualizedLinear(
            w_dim, c_in, bias_init=1.0
        )  # styles start at 1: an identity modulation
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(c_in * 9)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        gen = torch.Generator().manual_seed(NOISE_SEED + resolution * 2 + int(up))
        self.register_buffer(
            "noise_const", torch.randn(1, 1, resolution, resolution, generator=gen)
        )
        self.up, self.resolution = up, resolution

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        styles = self.affine(w)  # [N, c_in]
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles)  # [N, c_out, r, r]
        if noise_mode == "random":
            x = (
                x
                + torch.randn(
                    x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype
                )
                * self.noise_strength
            )
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * LRELU_GAIN


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation (the reference's ToRGBLayer)."""

    def __init__(self, c_in: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualizedLinear(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, c_in, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(c_in)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain  # [N, c_in]
        return (
            modulated_conv2d(x, self.weight, styles, demodulate=False)
            + self.bias[None, :, None, None]
        )


class StyleGAN2Generator(nn.Module):
    """StyleGAN2's G: ``G(z [N, z_dim], y [N] | None) -> [N, channels, image_size, image_size]``.

    ``width`` is the channel count at 4x4, halving per doubling (at least 8, see
    :func:`gan.models.layers.halving_widths`); ``w_dim`` the style size; ``mapping_layers``
    the depth of the mapping MLP (8 in the paper). One w per layer input: ``num_ws =
    2 * log2(image_size) - 2`` (each resolution's two convs, plus the last toRGB).
    ``truncation_space = "w"`` tells :mod:`gan.sampling` to pass truncation as psi.
    """

    truncation_space = "w"

    def __init__(self, z_dim: int, num_classes: int = 0, channels: int = 1, image_size: int = 16, width: int = 64,
                 w_dim: int = 64, mapping_layers: int = 2) -> None:  # fmt: skip
        super().__init__()
        check_resolution(image_size)
        check_channels(channels)
        if z_dim < 1 or num_classes < 0 or w_dim < 1:
            raise ValueError(
                f"z_dim = {z_dim}, num_classes = {num_classes}, w_dim = {w_dim}: need z_dim, w_dim >= 1 and num_classes >= 0"
            )
        self.z_dim, self.num_classes, self.w_dim = z_dim, num_classes, w_dim
        self.channels, self.image_size = channels, image_size
        resolutions = [
            2**i for i in range(2, int(math.log2(image_size)) + 1)
        ]  # 4, 8, ..., image_size
        widths = halving_widths(width, resolutions)
        self.const = nn.Parameter(torch.randn(widths[0], 4, 4))
        self.convs = nn.ModuleList([SynthesisLayer(widths[0], widths[0], w_dim, 4)])
        self.torgbs = nn.ModuleList([ToRGB(widths[0], channels, w_dim)])
        for c_in, c_out, res in zip(widths[:-1], widths[1:], resolutions[1:], strict=True):
            self.convs.append(SynthesisLayer(c_in, c_out, w_dim, res, up=True))
            self.convs.append(SynthesisLayer(c_out, c_out, w_dim, res))
            self.torgbs.append(ToRGB(c_out, channels, w_dim))
        self.num_ws = len(self.convs) + 1
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_classes, mapping_layers)

    def _labels(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}")
        y = check_labels(y, self.num_classes, "generator")
        if y is not None and y.shape != (z.shape[0],):
            raise ValueError(f"labels y must have shape [{z.shape[0]}], got {list(y.shape)}")
        return y

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """``ws [N, num_ws, w_dim] -> [N, C, H, W]``: conv ``i`` takes ``ws[:, i]``, toRGB after conv ``i`` takes ``ws[:, i + 1]``."""
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(
                f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}"
            )
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)  # [N, C0, 4, 4]
        x = self.convs[0](x, ws[:, 0], noise_mode)
        img = self.torgbs[0](x, ws[:, 1])  # [N, channels, 4, 4]
        for i, torgb in enumerate(self.torgbs[1:]):
            x = self.convs[1 + 2 * i](x, ws[:, 1 + 2 * i], noise_mode)
            x = self.convs[2 + 2 * i](x, ws[:, 2 + 2 * i], noise_mode)
            img = F.interpolate(
                img, scale_factor=2.0, mode="bilinear", align_corners=False
            ) + torgb(x, ws[:, 3 + 2 * i])
        return img

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, *, truncation_psi: float = 1.0,
                z_mix: torch.Tensor | None = None, mix_cutoff: int | None = None, noise_mode: str | None = None,
                return_ws: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Images ``[N, C, H, W]`` (and ``ws [N, num_ws, w_dim]`` with ``return_ws``).

        Style mixing (training): the ws from ``mix_cutoff`` on come from ``z_mix``.
        ``noise_mode``: "random" (default in training), "const" (default in eval: fixed
        noise, so that a seed gives the same image) or "none".
        """
        y = self._labels(z, y)
        ws = self.mapping(z, y, truncation_psi)  # [N, num_ws, w_dim]
        if z_mix is not None and mix_cutoff is not None and 0 < mix_cutoff < self.num_ws:
            mixed = self.mapping(z_mix, y, truncation_psi)
            ws = torch.cat([ws[:, :mix_cutoff], mixed[:, mix_cutoff:]], dim=1)
        mode = noise_mode or ("random" if self.training else "const")
        if mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode = {mode!r} is invalid: use random, const or none")
        img = self.synthesis(ws, mode)
        return (img, ws) if return_ws else img


class DBlock(nn.Module):
    """Residual D block: ``(skip(x) + conv1(conv0(x))) / sqrt(2)``, x1/2 in both paths."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(c_in, c_in, 3)
        self.conv1 = EqualizedConv2d(c_in, c_out, 3, down=True)
        self.skip = EqualizedConv2d(c_in, c_out, 1, bias=False, activation=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x, gain=math.sqrt(0.5)) + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2's residual D: ``D(x [N, C, H, W], y [N] | None) -> logits [N]``.

    Conditional (the reference's ``cmap``): ``logit = <phi(x), embed(y)> / sqrt(dim)``.
    """

    def __init__(self, num_classes: int = 0, channels: int = 1, image_size: int = 16, width: int = 64,
                 mbstd_group: int = 4) -> None:  # fmt: skip
        super().__init__()
        check_resolution(image_size)
        check_channels(channels)
        self.num_classes, self.channels, self.image_size, self.mbstd_group = (
            num_classes,
            channels,
            image_size,
            mbstd_group,
        )
        resolutions = [2**i for i in range(int(math.log2(image_size)), 1, -1)]  # image_size, ..., 4
        widths = halving_widths(width, resolutions)
        self.from_rgb = EqualizedConv2d(channels, widths[0], 1)
        self.blocks = nn.Sequential(
            *(DBlock(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        )
        c4 = widths[-1]
        self.conv = EqualizedConv2d(c4 + 1, c4, 3)
        self.fc = EqualizedLinear(c4 * 16, c4, activation=True)
        self.cmap_dim = c4 if num_classes else 1
        self.out = EqualizedLinear(c4, self.cmap_dim)
        self.embed = EqualizedLinear(num_classes, self.cmap_dim) if num_classes else None

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, return_q: bool = False
    ) -> torch.Tensor:
        if return_q:
            raise ValueError(
                "the stylegan2 discriminator has no InfoGAN Q head (infogan codes are off)"
            )
        if x.dim() != 4 or x.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(
                f"x must have shape [N, {self.channels}, {self.image_size}, {self.image_size}], got {list(x.shape)}"
            )
        y = check_labels(y, self.num_classes, "discriminator")
        h = self.blocks(self.from_rgb(x))  # [N, c4, 4, 4]
        h = self.conv(minibatch_stddev(h, self.mbstd_group))  # [N, c4, 4, 4]
        h = self.out(self.fc(h.flatten(1)))  # [N, cmap_dim]
        return class_projection(h, y, self.embed, self.num_classes)
