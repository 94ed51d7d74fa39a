"""Report-boundary bookkeeping of the training loop: when to report, window means, throughput, progress lines.

    window = MetricWindow(); window.add(metrics); window.mean()   # rank-averaged means
    clock = Throughput(images_per_step); clock.window(steps)       # img/s of a window
    due(step, every, total), is_boundary(step, total, cfg), progress_line(metrics, total)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist


def distributed() -> bool:
    """True when a torch.distributed process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class MetricWindow:
    """Sums metric tensors on the device between reports; one all-reduce per report."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def mean(self) -> dict[str, float]:
        """Means over the window and over ranks (every rank gets the same numbers)."""
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        values = torch.stack([self.sums[k] / self.counts[k] for k in keys])  # [K]
        if distributed():
            dist.all_reduce(values)
            values /= dist.get_world_size()
        self.sums, self.counts = {}, {}
        return dict(zip(keys, values.tolist(), strict=True))


def due(step: int, every: int, total: int) -> bool:
    """Whether something done every ``every`` steps (0 = never) and at the end is due."""
    return step == total or bool(every and step % every == 0)


def progress_every(cfg: Any) -> int:
    """Steps between console progress lines: about ten per run, never finer than ``log_every``.

    history.csv keeps every ``log_every`` row; the console only needs to show that the
    run is alive and where it stands.
    """
    if not cfg.log_every:
        return 0
    tenth = cfg.steps // 10
    return max(cfg.log_every, tenth - tenth % cfg.log_every)  # a multiple of log_every


def is_boundary(step: int, total: int, cfg: Any) -> bool:
    """Whether the loop reports after G step ``step``."""
    return any(due(step, every, total) for every in (cfg.log_every, cfg.checkpoint_every, cfg.eval_every))


class Throughput:
    """Wall and CPU clocks over report windows; the steady state leaves out the first window.

    A window runs from the end of the previous report (minus its evaluation time: the
    figure is training throughput, boundary overhead such as reports and checkpoints
    included) to the current boundary.
    """

    def __init__(self, images_per_step: int) -> None:
        self.images_per_step = images_per_step
        self.started = time.perf_counter()
        self.wall, self.cpu = self.started, time.process_time()
        self.windows = 0
        self.steady = {"images": 0.0, "seconds": 0.0, "cpu_seconds": 0.0}

    def window(self, steps: int) -> float:
        """img/s of the window of ``steps`` G steps ending now."""
        wall, cpu = time.perf_counter(), time.process_time()
        images = self.images_per_step * steps
        if self.windows:  # the first window (start-up, warm-up) is not steady state
            self.steady["images"] += images
            self.steady["seconds"] += wall - self.wall
            self.steady["cpu_seconds"] += cpu - self.cpu
        self.windows += 1
        img_s = images / max(wall - self.wall, 1e-9)
        self.wall, self.cpu = wall, cpu
        return img_s

    def exclude(self, wall_seconds: float, cpu_seconds: float) -> None:
        """Leave time spent since the last window (an evaluation) out of the next one."""
        self.wall += wall_seconds
        self.cpu += cpu_seconds

    def summary(self, fallback_img_s: float) -> dict[str, float | None]:
        st = self.steady
        return {
            "throughput/img_s": st["images"] / st["seconds"] if st["seconds"] > 0 else fallback_img_s,
            # per CPU second of this process: insensitive to other load on a shared machine
            "throughput/img_per_cpu_s": st["images"] / st["cpu_seconds"] if st["cpu_seconds"] > 0 else None,
            "wall_s": time.perf_counter() - self.started,
        }


def progress_line(metrics: dict[str, float], total: int, primary: str = "fid") -> str:
    """``step 50/1500 | loss/D 1.234 | loss/G 0.876 | D(x) 0.62 | D(G(z)) 0.38 | fid 1.23 | 410 img/s``."""
    parts = [f"step {int(metrics['step'])}/{total}"]
    for key in ("loss/D", "loss/G", "loss/E", "D(x)", "D(G(z))"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.3f}")
    if metrics.get("reinit/D"):  # share of the window's steps after which D was re-initialised (GANomaly)
        parts.append(f"D re-initialised ({metrics['reinit/D']:.2f} of steps)")
    if primary in metrics:
        parts.append(f"{primary} {metrics[primary]:.2f}")
    if "privacy/epsilon" in metrics:  # DP-SGD: the budget spent so far
        parts.append(f"eps {metrics['privacy/epsilon']:.2f}")
    parts.append(f"{metrics.get('throughput/img_s', 0.0):.0f} img/s")
    return " | ".join(parts)


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """``fn(*args)`` with the wall and CPU seconds it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


