"""The one way samples are drawn from a generator: latents, labels, batches, pixel values.

    from gan.sampling import sample, to_uint8
    for x, y in sample(G, n=1000, labels=None, seed=0):   # x: [B, C, H, W] in [-1, 1], y: [B] | None
        images = to_uint8(x)                               # what `gan augment` and the pyfunc return

Export, the sample grid, evaluation, the MLflow pyfunc and ``gan augment`` all call
:func:`sample`, so the same seed gives the same samples everywhere:

* latents come from one ``torch.Generator`` seeded with ``seed``, drawn in fixed blocks
  of :data:`LATENT_BLOCK` rows and cut, so sample ``i`` is the same for any ``n > i`` and
  any batch size, while only one block is held in memory;
* labels are ``labels`` cycled over the samples (every class in turn when omitted);
* the truncation trick (Brock et al. 2019) draws each latent entry from N(0, 1)
  truncated to [-t, t] by inverse-CDF sampling: one uniform draw per entry, so the cost
  does not depend on the threshold (rejection sampling needs ~1/P(|z| < t) draws:
  hopeless for t = 1e-4);
* a generator with ``truncation_space = "w"`` (StyleGAN2) truncates in w-space instead
  (Karras et al. 2019): z is drawn untruncated and ``truncation`` is psi in
  ``w' = w_avg + psi (w - w_avg)`` (per class when conditional), applied by
  :func:`run_generator`, which every caller uses to run G on a batch.

This module imports nothing from training, data or evaluation: it travels with every
registered model version (see :mod:`gan.registry`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence

import torch

from gan.errors import GanError

# Latents are drawn in blocks of this many rows from one torch.Generator (see the docstring).
LATENT_BLOCK = 1024
DEFAULT_BATCH_SIZE = 500


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """G's output in [-1, 1] -> uint8 in 0..255 (round to nearest; out-of-range values clip)."""
    return x.float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def truncates_in_w(G: torch.nn.Module) -> bool:
    """Whether ``G`` takes the truncation as psi in w-space (``truncation_space = "w"``, StyleGAN2)."""
    return getattr(G, "truncation_space", "z") == "w"


def check_truncation(truncation: float | None, w_space: bool = False) -> None:
    """Raise GanError unless ``truncation`` is None, a positive finite threshold, or (w-space) a psi >= 0."""
    if truncation is None:
        return
    bad = isinstance(truncation, bool) or not isinstance(truncation, int | float) or not math.isfinite(truncation)
    if w_space:
        if bad or truncation < 0:
            raise GanError(f"truncation = {truncation!r} is invalid; this generator truncates in w-space: use psi in [0, 1] such as 0.7, or omit it.")
        return
    if bad or truncation <= 0:
        raise GanError(f"truncation = {truncation!r} is invalid; use a positive threshold such as 1.0, or omit it.")


def run_generator(G: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None, truncation: float | None = None) -> torch.Tensor:
    """``G(z, y)`` with w-space truncation (psi) for a generator that has it; ``[B, C, H, W]``.

    For other generators the truncation was already applied when z was drawn
    (:func:`latent_label_batches`), so ``truncation`` is ignored here.
    """
    if truncation is not None and truncates_in_w(G):
        return G(z, y, truncation_psi=float(truncation))
    return G(z, y)


def truncated_normal(shape: tuple[int, ...], threshold: float, generator: torch.Generator) -> torch.Tensor:
    """N(0, 1) truncated to [-threshold, threshold], by inverse-CDF sampling (float32).

    u ~ U(Phi(-t), Phi(t)),  z = Phi^-1(u); computed in float64 so that thresholds down
    to ~1e-12 keep their width.
    """
    lo = 0.5 * math.erfc(threshold / math.sqrt(2.0))  # Phi(-t)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    z = torch.special.ndtri(lo + u * (1.0 - 2.0 * lo))
    return z.clamp_(-threshold, threshold).float()


def latent_blocks(n: int, z_dim: int, seed: int, truncation: float | None = None) -> Iterator[torch.Tensor]:
    """Yield ``[<= LATENT_BLOCK, z_dim]`` latents, ``n`` rows in all (see the module docstring)."""
    check_truncation(truncation)
    gen = torch.Generator().manual_seed(int(seed))
    for start in range(0, n, LATENT_BLOCK):
        if truncation is None:
            z = torch.randn(LATENT_BLOCK, z_dim, generator=gen)  # [LATENT_BLOCK, z_dim]
        else:
            z = truncated_normal((LATENT_BLOCK, z_dim), float(truncation), gen)
        yield z[: min(LATENT_BLOCK, n - start)]


def latents(n: int, z_dim: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """All ``n`` latents ``[n, z_dim]`` at once (the concatenation of :func:`latent_blocks`)."""
    return torch.cat(list(latent_blocks(n, z_dim, seed, truncation)))


def rebatch(blocks: Iterator[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Regroup a stream of row blocks into batches of exactly ``batch_size`` rows (the last may be short)."""
    pending: list[torch.Tensor] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += len(block)
        while held >= batch_size:
            joined = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield joined[:batch_size]
            rest = joined[batch_size:]
            pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield torch.cat(pending) if len(pending) > 1 else pending[0]


def cycled_labels(start: int, count: int, labels: Sequence[int]) -> torch.Tensor:
    """Labels of samples ``start .. start + count - 1`` when ``labels`` is cycled: ``labels[i % len]``."""
    base = torch.as_tensor(list(labels), dtype=torch.long)
    return base[torch.arange(start, start + count) % len(base)]


def check_labels(labels: Sequence[int] | None, num_classes: int) -> None:
    """Raise GanError for labels the generator does not know."""
    if labels is None:
        return
    if num_classes == 0:
        raise GanError("labels were given but this generator is unconditional; omit labels.")
    bad = [int(v) for v in labels if not 0 <= int(v) < num_classes]
    if bad:
        raise GanError(f"label {bad[0]} is unknown to this generator; allowed labels are 0..{num_classes - 1}.")


def check_count(n: int) -> None:
    """Raise GanError unless ``n`` is a positive whole number."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise GanError(f"n = {n!r} is invalid; ask for at least one sample (a positive whole number).")


def latent_label_batches(
    n: int, z_dim: int, num_classes: int, labels: Sequence[int] | None = None, seed: int = 0,
    truncation: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE, w_space: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:  # fmt: skip
    """``(z [B, z_dim], y [B] | None)`` batches for ``n`` samples: the inputs :func:`sample` feeds G.

    ``w_space``: the generator truncates in w-space (:func:`truncates_in_w`), so z is drawn
    untruncated and the caller passes ``truncation`` to :func:`run_generator`.
    """
    check_count(n)
    check_truncation(truncation, w_space)
    n = int(n)
    if batch_size <= 0:
        raise GanError(f"batch_size = {batch_size} is invalid; use a positive number such as {DEFAULT_BATCH_SIZE}.")
    check_labels(labels or None, num_classes)
    cycle = list(labels) if labels else list(range(num_classes))
    done = 0
    for z in rebatch(latent_blocks(n, z_dim, seed, None if w_space else truncation), batch_size):
        y = cycled_labels(done, len(z), cycle) if num_classes else None
        yield z, y
        done += len(z)


@torch.no_grad()
def sample(
    G: torch.nn.Module,
    n: int,
    labels: Sequence[int] | None = None,
    seed: int = 0,
    truncation: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(x [B, C, H, W] in [-1, 1] on the CPU, y [B] | None)``; deterministic for ``seed``.

    ``G`` has ``z_dim`` and ``num_classes`` attributes (every generator in
    :mod:`gan.models` does); ``device`` defaults to the device of G's parameters.
    ``truncation``: a threshold on z, or psi in w-space for a StyleGAN2 G (see the module docstring).
    """
    num_classes = int(getattr(G, "num_classes", 0))
    if device is None:
        device = next(G.parameters()).device
    w_space = truncates_in_w(G)
    for z, y in latent_label_batches(n, int(G.z_dim), num_classes, labels, seed, truncation, batch_size, w_space):
        yb = None if y is None else y.to(device)
        x = run_generator(G, z.to(device), yb, truncation)  # [B, C, H, W]
        yield x.float().clamp_(-1, 1).cpu(), y
