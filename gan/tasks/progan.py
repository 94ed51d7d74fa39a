"""Progressive growing's schedule inside the ``generate`` task (``model.arch: progan``).

Reference: tkarras/progressive_growing_of_gans, train.py (TrainingSchedule) and
networks.py. The networks (:mod:`gan.models.progan`) hold every resolution's layers and
two buffers, the level of detail and the fade-in alpha; this module decides them from the
images shown so far, a pure function of the step:

    4x4:   stabilise_images at full strength
    8x8:   fade_images with alpha 0 -> 1 (the new block blended into the old output), then
           stabilise_images at alpha 1
    ...    the same for every larger resolution; the last one trains on to the end

Images shown count real images given to D: ``step x batch_size x workers x n_critic``.
Real images are shown to D at the current level of detail as the reference's
``process_reals`` does: average-pooled to the level's resolution, blended with the
previous level's (pooled again, then upsampled) by the same alpha as G's output, and
nearest-upsampled back to the full size. The loss is model.loss (WGAN-GP with lambda 10
in the paper) plus the drift term ``drift * E[D(x)^2]`` on D.

Because the level and alpha are buffers of the networks, they are in every checkpoint
and export; because they are a function of the step, a resumed run continues the growth
where it stopped (the reference ports' most reported bug is a resume that restarts it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gan.growth import Growth, growth_at
from gan.models.progan import downsample_to, upsample_to

__all__ = ["Growth", "ProGANSchedule", "drift_penalty", "fade_reals", "growth_at"]


def fade_reals(x: torch.Tensor, growth: Growth) -> torch.Tensor:
    """Real images ``[N, C, S, S]`` at the level of detail G draws at (the reference's process_reals).

    Pooled to the level's resolution, blended with the previous level's by alpha, and
    nearest-upsampled back to ``S``: what D sees of a real image matches what it sees of
    G's output at every point of the growth.
    """
    size, res = x.shape[-1], growth.resolution
    low = downsample_to(x, res)
    if growth.alpha < 1.0 and growth.level > 0:
        low = torch.lerp(upsample_to(downsample_to(low, res // 2), res), low, growth.alpha)
    return upsample_to(low, size)


def drift_penalty(real_logits: torch.Tensor) -> torch.Tensor:
    """ProGAN's drift term (Sec. A.1), E[D(x)^2]: keeps WGAN's critic output near zero."""
    return real_logits.square().mean()


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class ProGANSchedule:
    """The growth schedule of :class:`gan.tasks.generate.GenerateTask` with ``model.arch: progan``."""

    def __init__(self, params: Any, image_size: int) -> None:
        self.params = params
        self.levels = len(range(2, image_size.bit_length()))  # 4, 8, ..., image_size: a level each
        self.current = growth_at(0, self.levels, 1, 1)

    def images_at(self, step: int) -> int:
        """Real images shown to D before ``step`` (all ranks)."""
        cfg = self.params.train
        return step * cfg.batch_size * cfg.n_critic * _world()

    def growth(self, step: int) -> Growth:
        pg = self.params.train.progan
        return growth_at(self.images_at(step), self.levels, pg.fade_images, pg.stabilise_images)

    def apply(self, nets: dict[str, nn.Module], step: int) -> None:
        """Set every growing network (G, D, G_ema) to the growth of ``step``."""
        self.current = self.growth(step)
        for net in nets.values():
            if hasattr(net, "set_growth"):
                net.set_growth(self.current.level, self.current.alpha)

    def metrics(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The growth as logged: ``progan/level``, ``progan/alpha``, ``progan/resolution``."""
        g = self.current
        values = {"progan/level": g.level, "progan/alpha": g.alpha, "progan/resolution": g.resolution}
        return {k: torch.tensor(float(v), device=device) for k, v in values.items()}

    def state_dict(self) -> dict[str, Any]:
        """The growth at the last step (for inspection: it is recomputed from the step on resume)."""
        g = self.current
        return {"level": g.level, "alpha": g.alpha, "phase": g.phase}
