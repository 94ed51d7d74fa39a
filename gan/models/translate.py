"""Image-to-image networks: CycleGAN's ResNet G and PatchGAN D, pix2pix's U-Net G, StarGAN's G and D.

    G = CycleGANGenerator(channels=1, width=16, n_blocks=3)       # image [B, 1, 16, 16] -> [B, 1, 16, 16]
    D = PatchGANDiscriminator(channels=1, width=16, n_layers=2)   # image -> patch logits [B, 1, h, w]
    G = UNetGenerator(channels=1, width=16, image_size=16)        # pix2pix: skips at every scale
    G = StarGANGenerator(channels=1, num_domains=3)               # G(x, c): c [B, K] tiled over the image
    D = StarGANDiscriminator(channels=1, image_size=16, num_domains=3)   # -> (src [B, 1, h, w], cls [B, K])

Faithful to the reference implementations (junyanz/pytorch-CycleGAN-and-pix2pix
``networks.py``: ResnetGenerator, NLayerDiscriminator, UnetGenerator; yunjey/stargan
``model.py``), scaled down by arguments only. Pure modules: no optimisers, devices or I/O.
"""

from __future__ import annotations

import torch
from torch import nn

# ---- CycleGAN (Zhu et al. 2017) ------------------------------------------------------------


def _norm(kind: str, channels: int) -> nn.Module:
    """CycleGAN's InstanceNorm (no affine, no running stats) or pix2pix's BatchNorm."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm '{kind}'; use instance or batch")


class ResnetBlock(nn.Module):
    """x + [reflect-pad, conv3, norm, ReLU, reflect-pad, conv3, norm](x)."""

    def __init__(self, channels: int, norm: str = "instance") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CycleGANGenerator(nn.Module):
    """c7s1-w, d2w, d4w, R4w x n_blocks, u2w, uw, c7s1-C, tanh (Johnson et al. 2016, as CycleGAN uses it).

    ``n_blocks`` is 9 for 256 px and 6 for 128 px in the paper; fewer suit small images.
    Input and output ``[B, channels, S, S]`` in [-1, 1]; S a multiple of 4.
    """

    def __init__(self, channels: int = 3, width: int = 64, n_blocks: int = 9, norm: str = "instance", out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7), _norm(norm, width), nn.ReLU(True)]
        for i in range(2):  # downsampling: [B, w, S, S] -> [B, 4w, S/4, S/4]
            c = width * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(norm, 2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(4 * width, norm) for _ in range(n_blocks)]
        for i in range(2):  # upsampling back to [B, w, S, S]
            c = width * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1), _norm(norm, c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def patchgan_receptive_field(n_layers: int) -> int:
    """Receptive field in pixels of :class:`PatchGANDiscriminator`: 16, 34, 70 for 1, 2, 3 layers."""
    rf = 1
    for _ in range(2):  # the two stride-1 4x4 convs at the top
        rf += 3
    for _ in range(n_layers):  # each stride-2 4x4 conv below: rf -> 2 rf + 2
        rf = 2 * rf + 2
    return rf


class PatchGANDiscriminator(nn.Module):
    """NLayerDiscriminator: C64 (no norm), C128 ... (stride 2, ``n_layers`` in all), one stride-1 C, a 1-channel conv.

    Each output logit judges one overlapping patch (70x70 at ``n_layers=3``, 34x34 at 2,
    16x16 at 1: :func:`patchgan_receptive_field`). Images need ``S >= 3 * 2**n_layers``.
    ``channels`` is the input's: pix2pix's conditional D takes input and output stacked.
    """

    def __init__(self, channels: int = 3, width: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(width * prev, width * mult, 4, stride=2, padding=1), _norm(norm, width * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(width * prev, width * mult, 4, stride=1, padding=1), _norm(norm, width * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(width * mult, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B, 1, h, w] patch logits


# ---- pix2pix (Isola et al. 2017) -----------------------------------------------------------


class UNetBlock(nn.Module):
    """One U-Net level: down (LeakyReLU, conv4 s2, norm), the inner levels, up (ReLU, convT4 s2, norm), skip concat."""

    def __init__(self, outer: int, inner: int, sub: nn.Module | None, in_channels: int | None = None,
                 outermost: bool = False, innermost: bool = False, norm: str = "batch", dropout: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.outermost = outermost
        in_channels = in_channels or outer
        down = nn.Conv2d(in_channels, inner, 4, stride=2, padding=1)
        if outermost:
            up = nn.ConvTranspose2d(2 * inner, outer, 4, stride=2, padding=1)
            layers = [down, sub, nn.ReLU(True), up, nn.Tanh()]
        elif innermost:  # no norm at the 1x1 bottleneck
            up = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1)
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, _norm(norm, outer)]
        else:
            up = nn.ConvTranspose2d(2 * inner, outer, 4, stride=2, padding=1)
            layers = [nn.LeakyReLU(0.2, True), down, _norm(norm, inner), sub, nn.ReLU(True), up, _norm(norm, outer)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UNetGenerator(nn.Module):
    """U-Net from ``image_size`` down to 1x1 (log2 S levels) with skips; widths w, 2w, 4w, 8w, 8w ...

    The reference's unet_256 (8 levels) and its dropout in the three innermost 8w levels.
    """

    def __init__(self, channels: int = 3, width: int = 64, image_size: int = 256, norm: str = "batch",
                 dropout: bool = True, out_channels: int | None = None) -> None:  # fmt: skip
        super().__init__()
        levels = int(image_size).bit_length() - 1  # S = 2**levels -> 1x1 at the bottom
        if 2**levels != image_size or levels < 3:
            raise ValueError(f"UNetGenerator needs a power-of-two image_size >= 8, not {image_size}")
        widths = [width * min(2**i, 8) for i in range(levels)]  # channels after down-conv i
        self.net = _unet(channels, out_channels or channels, widths, norm, dropout, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _unet(channels: int, out_channels: int, widths: list[int], norm: str, dropout: bool, width: int) -> UNetBlock:
    """Build the levels inside out: ``widths[i]`` is the channel count produced by down-conv i."""
    levels = len(widths)
    block = UNetBlock(widths[levels - 2], widths[levels - 1], None, innermost=True, norm=norm)
    for i in range(levels - 2, 0, -1):
        # dropout in the innermost 8w levels below the bottleneck, as unet_256's three
        use_dropout = dropout and widths[i] == 8 * width and i >= levels - 4
        block = UNetBlock(widths[i - 1], widths[i], block, norm=norm, dropout=use_dropout)
    return UNetBlock(out_channels, widths[0], block, in_channels=channels, outermost=True, norm=norm)


# ---- StarGAN (Choi et al. 2018) -------------------------------------------------------------


class StarResidualBlock(nn.Module):
    """x + [conv3, affine IN, ReLU, conv3, affine IN](x) (StarGAN's ResidualBlock)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.InstanceNorm2d(channels, affine=True), nn.ReLU(True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.InstanceNorm2d(channels, affine=True),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class StarGANGenerator(nn.Module):
    """G(x, c): the target-domain vector ``c [B, K]`` tiled to ``[B, K, S, S]`` and concatenated to x.

    conv7 (w), two stride-2 conv4 downsamplings, ``n_blocks`` residual blocks, two
    transposed-conv upsamplings, conv7 to the image, tanh. Affine InstanceNorm as the
    reference; running statistics are not tracked so that eval mode normalises like training.
    """

    def __init__(self, channels: int = 3, num_domains: int = 5, width: int = 64, n_blocks: int = 6) -> None:
        super().__init__()
        self.num_domains = num_domains
        layers: list[nn.Module] = [nn.Conv2d(channels + num_domains, width, 7, padding=3, bias=False),
                                   nn.InstanceNorm2d(width, affine=True), nn.ReLU(True)]  # fmt: skip
        c = width
        for _ in range(2):
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=False), nn.InstanceNorm2d(2 * c, affine=True), nn.ReLU(True)]
            c *= 2
        layers += [StarResidualBlock(c) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False), nn.InstanceNorm2d(c // 2, affine=True), nn.ReLU(True)]
            c //= 2
        layers += [nn.Conv2d(c, channels, 7, padding=3, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        tiled = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])  # [B, K, S, S]
        return self.net(torch.cat([x, tiled], dim=1))


class StarGANDiscriminator(nn.Module):
    """PatchGAN trunk (``repeat`` stride-2 conv4 + LeakyReLU 0.01, no norm: WGAN-GP) with two heads.

    ``src``: a 3x3 conv to one channel, the real/fake critic per patch ``[B, 1, h, w]``;
    ``cls``: a conv over the whole remaining map to ``[B, K]`` domain logits.
    """

    def __init__(self, channels: int = 3, image_size: int = 128, num_domains: int = 5, width: int = 64, repeat: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
        c = width
        for _ in range(1, repeat):
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            c *= 2
        kernel = image_size // 2**repeat
        if kernel < 1:
            raise ValueError(f"StarGANDiscriminator: {repeat} stride-2 layers do not fit image_size {image_size}")
        self.main = nn.Sequential(*layers)
        self.src = nn.Conv2d(c, 1, 3, padding=1, bias=False)
        self.cls = nn.Conv2d(c, num_domains, kernel, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        return self.src(h), self.cls(h).flatten(1)  # [B, 1, h, w], [B, K]
