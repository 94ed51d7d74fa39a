"""Progressive growing's schedule (Karras et al. 2018), in images shown: pure arithmetic, no torch.

    growth_at(images, levels=4, fade_images=16000, stabilise_images=16000)   # Growth(level, alpha, phase)
    images_to_full_growth(32, 16000, 16000)                                   # 96000

Level 0 (4x4) trains for ``stabilise_images``; each later level fades in over
``fade_images`` (alpha 0 -> 1) and stabilises for ``stabilise_images``; the last level
trains on. Config checks ``train.steps`` against :func:`images_to_full_growth` and
:mod:`gan.tasks.progan` sets the networks from :func:`growth_at`; both read this module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Growth:
    """Where the growth stands: ``level`` (0 = 4x4), the fade-in ``alpha`` and the phase's name."""

    level: int
    alpha: float
    phase: str  # "fade" | "stabilise"

    @property
    def resolution(self) -> int:
        return 4 * 2**self.level


def growth_at(images: int, levels: int, fade_images: int, stabilise_images: int) -> Growth:
    """The growth after ``images`` real images shown, for a network of ``levels`` resolutions.

    >>> growth_at(0, 3, 100, 100), growth_at(150, 3, 100, 100), growth_at(10**6, 3, 100, 100)
    (Growth(level=0, alpha=1.0, phase='stabilise'), Growth(level=1, alpha=0.5, phase='fade'), Growth(level=2, alpha=1.0, phase='stabilise'))
    """
    if images < stabilise_images or levels == 1:
        return Growth(0, 1.0, "stabilise")
    level_len = fade_images + stabilise_images
    grown, into = divmod(images - stabilise_images, level_len) if level_len else (levels, 0)
    level = 1 + grown
    if level >= levels:
        return Growth(levels - 1, 1.0, "stabilise")
    if into < fade_images:
        return Growth(level, into / fade_images, "fade")
    return Growth(level, 1.0, "stabilise")


def images_to_full_growth(image_size: int, fade_images: int, stabilise_images: int) -> int:
    """Images shown before the last resolution runs at alpha 1 (``growth_at`` reaches it there)."""
    levels = len(range(2, image_size.bit_length()))
    if levels == 1:
        return 0
    return stabilise_images + (levels - 2) * (fade_images + stabilise_images) + fade_images
