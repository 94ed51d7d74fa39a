"""Super-resolution networks: RRDB and SRResNet generators, a VGG-style discriminator.

    G = RRDBNet(channels=3, scale=4, width=64, blocks=23, growth=32)     # ESRGAN's generator
    G = SRResNet(channels=3, scale=4, width=64, blocks=16)               # SRGAN's (MSRResNet, no BN)
    sr = G(lr)            # lr [N, C, h, w] in [-1, 1] -> [N, C, h*scale, w*scale]
    D = VGGStyleDiscriminator(channels=3, image_size=128, width=64)
    logits = D(hr)        # [N]

After Wang et al. 2018 (ESRGAN) and Ledig et al. 2017 (SRGAN), as BasicSR builds them
(``RRDBNet``, ``MSRResNet``, ``VGGStyleDiscriminator``): no BatchNorm in G (it brings
artefacts and makes G depend on the batch), residual scaling 0.2 in the dense blocks, and
their convolutions initialised at 0.1 x Kaiming so that a deep stack starts close to the
identity. Upsampling is sub-pixel convolution (pixel shuffle, Shi et al. 2016), one x2
stage per factor of two. G adds the bicubic upscaling of its input to its output, so it
learns the residual detail and starts at bicubic quality (fast to train on a CPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _scaled_init(module: nn.Module, scale: float) -> None:
    """Kaiming-normal convolutions scaled by ``scale`` (BasicSR's ``default_init_weights``)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            m.weight.data.mul_(scale)
            if m.bias is not None:
                m.bias.data.zero_()


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing all earlier outputs; ``x + 0.2 * out``."""

    def __init__(self, width: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(width + i * growth, growth if i < 4 else width, 3, padding=1) for i in range(5))
        _scaled_init(self, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(F.leaky_relu(out, 0.2))
        return x + 0.2 * out


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, ``x + 0.2 * out``."""

    def __init__(self, width: int, growth: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(width, growth) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


class ResidualBlockNoBN(nn.Module):
    """SRResNet's block without BatchNorm (MSRResNet): ``x + conv(relu(conv(x)))``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(width, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)
        _scaled_init(self, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class _SRNet(nn.Module):
    """Shared frame: first conv, trunk, conv, pixel-shuffle upsampling, HR convs, + bicubic skip."""

    def __init__(self, channels: int, scale: int, width: int, trunk: nn.Module) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"scale = {scale} is not supported; use 2 or 4")
        self.channels, self.scale = channels, scale
        self.conv_first = nn.Conv2d(channels, width, 3, padding=1)
        self.trunk = trunk
        self.conv_body = nn.Conv2d(width, width, 3, padding=1)
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):  # x2 per stage: width*4 channels -> pixel shuffle
            ups += [nn.Conv2d(width, width * 4, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.2)]
        self.upsample = nn.Sequential(*ups)
        self.conv_hr = nn.Conv2d(width, width, 3, padding=1)
        self.conv_last = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.conv_last.weight)  # start exactly at bicubic: the residual is learnt
        nn.init.zeros_(self.conv_last.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(lr)  # [N, width, h, w]
        feat = feat + self.conv_body(self.trunk(feat))
        hr = self.conv_last(F.leaky_relu(self.conv_hr(self.upsample(feat)), 0.2))  # [N, C, h*s, w*s]
        base = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return hr + base


class RRDBNet(_SRNet):
    """ESRGAN's generator: ``blocks`` RRDBs of ``width`` channels (dense growth ``growth``)."""

    def __init__(self, channels: int = 3, scale: int = 4, width: int = 64, blocks: int = 23, growth: int = 32) -> None:
        super().__init__(channels, scale, width, nn.Sequential(*(RRDB(width, growth) for _ in range(blocks))))


class SRResNet(_SRNet):
    """SRGAN's generator without BatchNorm (BasicSR's MSRResNet): ``blocks`` residual blocks."""

    def __init__(self, channels: int = 3, scale: int = 4, width: int = 64, blocks: int = 16) -> None:
        super().__init__(channels, scale, width, nn.Sequential(*(ResidualBlockNoBN(width) for _ in range(blocks))))


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN's D on a high-resolution patch: per level a 3x3 conv and a strided 4x4 conv
    (BatchNorm + LeakyReLU after each but the first), halving down to 4x4, then two
    linear layers to one logit. ``image_size``: the patch side, a power of two >= 8."""

    def __init__(self, channels: int = 3, image_size: int = 128, width: int = 64) -> None:
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size = {image_size} must be a power of two >= 8")
        levels = int(math.log2(image_size // 4))
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(levels):
            c_out = min(width * 2**i, width * 8)
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=i > 0)]
            if i > 0:
                layers += [nn.BatchNorm2d(c_out)]
            layers += [nn.LeakyReLU(0.2), nn.Conv2d(c_out, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)  # [N, c_in, 4, 4]
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 16, 100), nn.LeakyReLU(0.2), nn.Linear(100, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)  # [N]
