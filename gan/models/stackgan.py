"""StackGAN (Zhang et al. 2017, "StackGAN: Text to Photo-realistic Image Synthesis with Stacked
Generative Adversarial Networks"), scaled down by its arguments; reference:
hanzhanggit/StackGAN-Pytorch, code/model.py (CA_NET, STAGE1_G, STAGE2_G, STAGE1_D, D_GET_LOGITS).

Two stages, each with its own conditioning augmentation (CA): a caption embedding ``emb``
is turned into a Gaussian ``N(mu(emb), sigma(emb)^2)`` and ``c`` is sampled from it, so a
few thousand captions cover a smooth conditioning manifold; the KL to ``N(0, I)``
(:func:`gan.losses.conditioning_kl`) keeps it smooth.

Stage I:  ``z ++ c -> fc -> BN -> ReLU -> [w, 4, 4] -> (nearest x2, conv 3x3, BN, ReLU) ... -> conv 3x3 -> tanh``
          a low-resolution sketch at ``stage1_size``.
Stage II: the Stage-I image -> ``conv 3x3 -> ReLU -> conv 4x4 s2 -> BN -> ReLU`` (encoder) ++ c tiled
          -> ``conv 3x3 -> BN -> ReLU`` -> residual blocks -> (nearest x2, conv 3x3, BN, ReLU) ...
          -> conv 3x3 -> tanh at ``image_size``: it corrects the sketch's defects and adds detail.
D:        ``conv 4x4 s2 -> LReLU -> (conv 4x4 s2 -> BN -> LReLU) ... -> [w, 4, 4]`` ++ compressed text
          tiled -> ``conv 3x3 -> BN -> LReLU -> conv 4x4`` -> logit; matching-aware: trained to
          call real images with the wrong caption fake (:func:`gan.losses.d_loss_matching_aware`).

The exported generator (:class:`StackGANGenerator`) also holds the caption encoder that
featurize trained (:class:`gan.models.text.TextEncoder`, frozen) with its vocabulary, and
one mean caption embedding per class, so ``G(z, y)`` works like every class-conditional G
and ``G(z, text=G.encode(tokens))`` draws from a caption.

    G = StackGANGenerator(z_dim=64, text_dim=64, c_dim=32, g_width=64, channels=3, image_size=32,
                          stage1_size=16, n_res=2, vocab=vocab, embed_dim=64, max_len=16, num_classes=10)
    G.set_stage(2)
    x = G(torch.randn(8, 64), torch.randint(0, 10, (8,)))          # [8, 3, 32, 32] in [-1, 1]
    D = StackGANDiscriminator(channels=3, image_size=32, width=64, text_dim=64, c_dim=32)
    logits = D(x, G.condition(y, None, 8))                          # [8]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gan.models.layers import check_channels, check_resolution, halving_widths, init_weights
from gan.models.text import TextEncoder

INIT_STD = 0.02  # the reference's weights_init: N(0, 0.02) weights, BatchNorm gains N(1, 0.02)


def _init(w: torch.Tensor) -> None:
    nn.init.normal_(w, 0.0, INIT_STD)


def _conv3x3(c_in: int, c_out: int, bias: bool = False) -> nn.Conv2d:
    # no bias before BatchNorm, which has its own
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


def _up_block(c_in: int, c_out: int) -> nn.Sequential:
    """``[B, c_in, r, r] -> [B, c_out, 2r, 2r]``: the reference's upBlock (resize then convolve)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        _conv3x3(c_in, c_out),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


def _check_dims(**dims: int) -> None:
    bad = {k: v for k, v in dims.items() if v < 1}
    if bad:
        raise ValueError(", ".join(f"{k} = {v}" for k, v in bad.items()) + ": must be at least 1")


def _check_emb(emb: torch.Tensor, batch: int, text_dim: int) -> None:
    if emb.shape != (batch, text_dim):
        raise ValueError(
            f"the text embedding must have shape [{batch}, {text_dim}], got {list(emb.shape)}"
        )


class ConditioningAugmentation(nn.Module):
    """CA (StackGAN Sec. 3.1): ``forward(emb [B, text_dim]) -> (c, mu, logvar)``, each ``[B, c_dim]``.

    ``Linear(text_dim, 2 c_dim) -> LeakyReLU(0.2)`` split into ``mu`` and ``logvar``;
    ``c = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` drawn in eval mode too, as the
    reference does (samples vary with the caption's Gaussian, not only with z).
    LeakyReLU as the original TensorFlow StackGAN: the PyTorch port's ReLU would keep
    ``mu >= 0`` and ``sigma >= 1``.
    """

    def __init__(self, text_dim: int, c_dim: int) -> None:
        super().__init__()
        _check_dims(text_dim=text_dim, c_dim=c_dim)
        self.text_dim, self.c_dim = text_dim, c_dim
        self.fc = nn.Linear(text_dim, 2 * c_dim)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, emb: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``eps [B, c_dim]``: the standard normal draw, when the caller fixes it (the exported G takes it from its latent)."""
        h = self.act(self.fc(emb))  # [B, 2 c_dim]
        mu, logvar = h[:, : self.c_dim], h[:, self.c_dim :]
        eps = torch.randn_like(mu) if eps is None else eps
        c = mu + torch.exp(0.5 * logvar) * eps  # reparameterisation trick
        return c, mu, logvar


class StackGANStage1(nn.Module):
    """Stage-I G: ``forward(z [B, z_dim], emb [B, text_dim]) -> (image [B, C, size, size], mu, logvar)``.

    ``width`` is the channel count at 4x4, halving per doubling (at least 8), as
    ``model.g_width`` for every conv G. ``size`` is a power of two from 4 to 128.
    """

    def __init__(
        self, z_dim: int, text_dim: int, c_dim: int, width: int, channels: int, size: int
    ) -> None:
        super().__init__()
        check_resolution(size, minimum=4)
        check_channels(channels)
        _check_dims(z_dim=z_dim, width=width)
        self.z_dim, self.text_dim, self.channels, self.size = z_dim, text_dim, channels, size
        self.ca = ConditioningAugmentation(text_dim, c_dim)
        resolutions = [4 * 2**i for i in range(size.bit_length() - 2)]  # 4 .. size
        widths = halving_widths(width, resolutions)
        self.fc = nn.Sequential(
            nn.Linear(z_dim + c_dim, widths[0] * 16, bias=False),
            nn.BatchNorm1d(widths[0] * 16),
            nn.ReLU(),
        )
        self.up = nn.Sequential(
            *(_up_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        )
        self.to_image = nn.Sequential(_conv3x3(widths[-1], channels, bias=True), nn.Tanh())
        init_weights(self, _init, bn_gain_std=INIT_STD)

    def forward(
        self, z: torch.Tensor, emb: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [B, {self.z_dim}], got {list(z.shape)}")
        _check_emb(emb, z.shape[0], self.text_dim)
        c, mu, logvar = self.ca(emb, eps)  # [B, c_dim] each
        h = self.fc(torch.cat([z, c], dim=1)).view(z.shape[0], -1, 4, 4)  # [B, w0, 4, 4]
        return self.to_image(self.up(h)), mu, logvar  # [B, C, size, size]


class _ResBlock(nn.Module):
    """The reference's ResBlock: ``relu(x + BN(conv(relu(BN(conv(x))))))``, channels kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            _conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            _conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.block(x))


class StackGANStage2(nn.Module):
    """Stage-II G: ``forward(low [B, C, in_size, in_size], emb [B, text_dim]) -> (image [B, C, image_size, image_size], mu, logvar)``.

    ``width`` is the channel count of the residual trunk at ``in_size / 2`` (the
    encoder's first conv has half of it; the upsampling blocks halve it per doubling, at
    least 8): with ``width = g_width`` Stage II has about twice Stage I's channels at
    each resolution, the reference's ratio. ``in_size`` and ``image_size`` are powers of
    two (4..64 and 8..128) with ``in_size < image_size``.
    """

    def __init__(
        self,
        text_dim: int,
        c_dim: int,
        width: int,
        channels: int,
        in_size: int,
        image_size: int,
        n_res: int,
    ) -> None:
        super().__init__()
        check_resolution(in_size, minimum=4)
        check_resolution(image_size)
        check_channels(channels)
        _check_dims(width=width)
        if in_size >= image_size:
            raise ValueError(
                f"in_size = {in_size}, image_size = {image_size}: Stage II must upsample (image_size a power-of-two multiple of in_size, at least 2x)"
            )
        if n_res < 0:
            raise ValueError(f"n_res = {n_res} is invalid: must be >= 0")
        self.text_dim, self.channels, self.in_size, self.image_size = (
            text_dim,
            channels,
            in_size,
            image_size,
        )
        self.ca = ConditioningAugmentation(text_dim, c_dim)
        half = max(width // 2, 8)
        # the reference's encoder has no BatchNorm on its first conv (the image's statistics matter)
        self.encode = nn.Sequential(
            _conv3x3(channels, half, bias=True),
            nn.ReLU(),
            nn.Conv2d(half, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )  # [B, width, in_size / 2, in_size / 2]
        self.joint = nn.Sequential(_conv3x3(width + c_dim, width), nn.BatchNorm2d(width), nn.ReLU())
        self.residual = nn.Sequential(*(_ResBlock(width) for _ in range(n_res)))
        ups = (image_size // (in_size // 2)).bit_length() - 1  # doublings from in_size / 2
        widths = [max(width // 2**i, 8) for i in range(ups + 1)]
        self.up = nn.Sequential(
            *(_up_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        )
        self.to_image = nn.Sequential(_conv3x3(widths[-1], channels, bias=True), nn.Tanh())
        init_weights(self, _init, bn_gain_std=INIT_STD)

    def forward(
        self, low: torch.Tensor, emb: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if low.dim() != 4 or tuple(low.shape[1:]) != (self.channels, self.in_size, self.in_size):
            raise ValueError(
                f"the Stage-I image must have shape [B, {self.channels}, {self.in_size}, {self.in_size}], got {list(low.shape)}"
            )
        _check_emb(emb, low.shape[0], self.text_dim)
        c, mu, logvar = self.ca(emb, eps)  # [B, c_dim]
        h = self.encode(low)  # [B, width, r, r], r = in_size / 2
        c_map = c[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])  # c tiled spatially
        h = self.residual(self.joint(torch.cat([h, c_map], dim=1)))  # [B, width, r, r]
        return self.to_image(self.up(h)), mu, logvar  # [B, C, image_size, image_size]


class StackGANDiscriminator(nn.Module):
    """StackGAN's matching-aware D: ``forward(x [B, C, S, S], emb [B, text_dim]) -> logits [B]``.

    A logit says whether ``x`` is real *and* matches the caption ``emb``. ``width`` is
    the channel count at 4x4, halving per doubling of the resolution (at least 8), as
    ``model.d_width`` for every conv D. One class serves both stages: Stage I's D at
    ``stage1_size``, Stage II's at ``image_size`` (a power of two from 4 to 128; at 4
    the first conv is 3x3 stride 1, there being nothing to downsample).
    """

    def __init__(
        self, channels: int, image_size: int, width: int, text_dim: int, c_dim: int
    ) -> None:
        super().__init__()
        check_resolution(image_size, minimum=4)
        check_channels(channels)
        _check_dims(width=width, text_dim=text_dim, c_dim=c_dim)
        self.channels, self.image_size, self.text_dim = channels, image_size, text_dim
        # S/2 .. 4; at S = 4 a single 4x4 layer
        resolutions = [image_size // 2**i for i in range(1, image_size.bit_length() - 2)] or [4]
        widths = halving_widths(width, resolutions)
        first = (
            nn.Conv2d(channels, widths[0], 4, stride=2, padding=1)
            if image_size > 4
            else nn.Conv2d(channels, widths[0], 3, padding=1)
        )
        layers: list[nn.Module] = [first, nn.LeakyReLU(0.2)]  # no BatchNorm on D's input layer
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(a, b, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(b),
                nn.LeakyReLU(0.2),
            ]
        self.encode = nn.Sequential(*layers)  # [B, w4, 4, 4]
        self.compress = nn.Sequential(nn.Linear(text_dim, c_dim), nn.LeakyReLU(0.2))
        w4 = widths[-1]
        self.logits = nn.Sequential(
            _conv3x3(w4 + c_dim, w4),
            nn.BatchNorm2d(w4),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w4, 1, 4),  # valid: [B, 1, 1, 1]
        )
        init_weights(self, _init, bn_gain_std=INIT_STD)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.channels, size, size):
            raise ValueError(
                f"x must have shape [B, {self.channels}, {size}, {size}], got {list(x.shape)}"
            )
        _check_emb(emb, x.shape[0], self.text_dim)
        h = self.encode(x)  # [B, w4, 4, 4]
        t = self.compress(emb)[:, :, None, None].expand(-1, -1, 4, 4)  # [B, c_dim, 4, 4]
        return self.logits(torch.cat([h, t], dim=1)).view(x.shape[0])  # [B]


class StackGANGenerator(nn.Module):
    """The exported StackGAN: ``forward(z [B, z_dim], y [B] | None, text [B, text_dim] | None) -> [B, C, S, S]``.

    Holds the frozen caption encoder ``text`` (:class:`TextEncoder` with ``vocab``),
    ``stage1`` and ``stage2`` (separately trainable: the trainer registers these very
    module objects as networks of their own), the buffer ``class_embeddings``
    ``[max(num_classes, 1), text_dim]`` (zeros until the trainer fills in each class's
    mean caption embedding) and the buffer ``stage`` (1 or 2, :meth:`set_stage`), both in
    ``state_dict``. At stage 1 the output is Stage I's image upsampled (bicubic) to
    ``image_size``, so every stage returns one shape. ``stage1_size`` is a power of two
    from 4 to ``image_size / 2``; ``num_classes = 0``: labels are ignored. The latent ``z``
    is ``[B, z_dim + 2 c_dim]`` (``self.z_dim``): the noise, then the two conditioning-augmentation
    draws, so that a seed, or a given z, fixes the sample.
    """

    def __init__(
        self,
        z_dim: int,
        text_dim: int,
        c_dim: int,
        g_width: int,
        channels: int,
        image_size: int,
        stage1_size: int,
        n_res: int,
        vocab: list[str],
        embed_dim: int = 64,
        max_len: int = 16,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 0 or max_len < 1:
            raise ValueError(
                f"num_classes = {num_classes}, max_len = {max_len}: need num_classes >= 0 and max_len >= 1"
            )
        # the latent a sample is drawn from: the noise, then Stage I's and Stage II's
        # conditioning-augmentation draws, so that one seed (or one given z) fixes a sample
        self.noise_dim, self.c_dim = z_dim, c_dim
        self.z_dim, self.text_dim, self.num_classes = z_dim + 2 * c_dim, text_dim, num_classes
        self.vocab, self.max_len = list(vocab), max_len
        self.channels, self.image_size, self.stage1_size = channels, image_size, stage1_size
        # fixed, as StackGAN's pretrained char-CNN-RNN: featurize trained it, G only reads it
        self.text = TextEncoder(len(self.vocab), embed_dim, text_dim).requires_grad_(False)
        self.stage1 = StackGANStage1(z_dim, text_dim, c_dim, g_width, channels, stage1_size)
        self.stage2 = StackGANStage2(
            text_dim, c_dim, g_width, channels, stage1_size, image_size, n_res
        )
        self.register_buffer("class_embeddings", torch.zeros(max(num_classes, 1), text_dim))
        self.register_buffer("stage", torch.tensor(1, dtype=torch.long))

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Caption embeddings ``[B, text_dim]`` of ``tokens [B, L]`` (:func:`gan.models.text.encode_captions` with ``vocab``)."""
        return self.text(tokens)

    def condition(
        self, y: torch.Tensor | None = None, text: torch.Tensor | None = None, n: int | None = None
    ) -> torch.Tensor:
        """The embedding ``[B, text_dim]`` both stages condition on.

        ``text`` when given; else the class means ``class_embeddings[y]`` (labels are
        ignored when ``num_classes = 0``); else row 0 repeated ``n`` times (1 without ``n``).
        """
        if text is not None:
            if (
                text.dim() != 2
                or text.shape[1] != self.text_dim
                or (n is not None and text.shape[0] != n)
            ):
                raise ValueError(
                    f"text must have shape [{n if n is not None else 'B'}, {self.text_dim}], got {list(text.shape)}"
                )
            return text
        if y is not None and self.num_classes > 0:
            if y.dim() != 1 or (n is not None and y.shape[0] != n):
                raise ValueError(
                    f"labels y must have shape [{n if n is not None else 'B'}], got {list(y.shape)}"
                )
            return self.class_embeddings[y.long()]
        return self.class_embeddings[:1].expand(n if n is not None else 1, -1)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The latent ``[B, z_dim]`` as (noise ``[B, noise_dim]``, Stage I's eps, Stage II's eps ``[B, c_dim]``)."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [B, {self.z_dim}] (noise {self.noise_dim} + 2 x c_dim {self.c_dim}), got {list(z.shape)}")
        n, c = self.noise_dim, self.c_dim
        return z[:, :n], z[:, n : n + c], z[:, n + c :]

    def set_stage(self, stage: int) -> None:
        """Generate with Stage I only (1) or with both stages (2)."""
        if stage not in (1, 2):
            raise ValueError(f"stage = {stage} is invalid: must be 1 or 2")
        self.stage.fill_(int(stage))

    def forward_stages(
        self, z: torch.Tensor, emb: torch.Tensor
    ) -> tuple[
        torch.Tensor,
        torch.Tensor,
        tuple[torch.Tensor, torch.Tensor],
        tuple[torch.Tensor, torch.Tensor],
    ]:
        """``(low [B, C, s1, s1], high [B, C, S, S], (mu1, logvar1), (mu2, logvar2))`` from the latent ``z [B, z_dim]``."""
        noise, eps1, eps2 = self.split(z)
        low, mu1, logvar1 = self.stage1(noise, emb, eps1)
        high, mu2, logvar2 = self.stage2(low, emb, eps2)
        return low, high, (mu1, logvar1), (mu2, logvar2)

    def forward(
        self, z: torch.Tensor, y: torch.Tensor | None = None, text: torch.Tensor | None = None
    ) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [B, {self.z_dim}], got {list(z.shape)}")
        emb = self.condition(y, text, z.shape[0])  # [B, text_dim]
        noise, eps1, eps2 = self.split(z)
        low, _, _ = self.stage1(noise, emb, eps1)  # [B, C, s1, s1]
        if int(self.stage) == 1:
            up = F.interpolate(low, size=self.image_size, mode="bicubic", align_corners=False)
            return up.clamp(-1.0, 1.0)  # bicubic overshoots tanh's range at edges
        # Stage I's image feeds Stage II; in Stage II training the trainer freezes Stage I
        return self.stage2(low, emb, eps2)[0]  # [B, C, S, S]
