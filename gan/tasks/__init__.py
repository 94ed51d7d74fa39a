"""The table of tasks: ``model.task`` -> the class that declares that kind of GAN.

    from gan.tasks import make_task, TASKS
    task = make_task(params, manifest)       # a gan.tasks.base.Task for params.model.task

The table maps names to ``module:Class`` paths and imports a task only when it is
asked for, so that :mod:`gan.config` can validate ``model.task`` against
:data:`TASKS` without importing the task modules (which import the models, which
import the config: a circle). Stage-level code (stages, tuning, evaluation, export)
imports this table; the trainer never does.

Adding a task: write ``gan/tasks/<name>.py`` (a :class:`gan.tasks.base.Task`
subclass), its inference module ``gan/inference/<name>.py``, add one line here, and
pass ``tests/test_tasks.py``'s contract test.
"""

from __future__ import annotations

import importlib
from typing import Any

# This module imports nothing from gan: gan.config reads TASKS to validate model.task,
# and every stage (DVC deps included) sees only this table, not the task modules.

TASKS: dict[str, str] = {
    "generate": "gan.tasks.generate:GenerateTask",
    "translate": "gan.tasks.translate:TranslateTask",
    "detect": "gan.tasks.detect:DetectTask",
    "upscale": "gan.tasks.upscale:UpscaleTask",
}

# Metrics tune.metric and register.metric may name, per task, with their direction
# (True: lower is better). Each task's MetricSpec agrees (tests/test_tasks.py checks);
# kept here so that gan.config validates both keys without importing the task modules.
TASK_METRICS: dict[str, dict[str, bool]] = {
    "generate": {"fid": True, "kid": True},
    "detect": {"auroc": False, "average_precision": False},
    "upscale": {"psnr": False, "ssim": False, "swd": True},
    "translate": {"target_accuracy": False, "content_accuracy": False, "cycle_l1": True, "fid": True, "psnr": False, "ssim": False},
}


def task_class(name: str) -> type:
    """The :class:`gan.tasks.base.Task` subclass registered as ``name``."""
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def lower_is_better(task: str, metric: str) -> bool:
    """The direction of ``metric`` of ``task`` (True for FID/KID, False for AUROC)."""
    return TASK_METRICS[task][metric]


def make_task(params: Any, manifest: dict[str, Any]) -> Any:
    """The task (a :class:`gan.tasks.base.Task`) of ``params.model.task`` for the prepared data described by ``manifest``."""
    return task_class(params.model.task)(params, manifest)


def describe_tasks() -> str:
    """``gan models``' list of tasks: each name with the first line of its class docstring."""
    lines = ["Tasks (model.task): the kind of GAN, its phases, inference and metrics (gan/tasks/)"]
    for name in TASKS:
        doc = (task_class(name).__doc__ or "").strip().splitlines()
        lines.append(f"  {name:<10} {doc[0] if doc else ''}")
    return "\n".join(lines) + "\n"


__all__ = ["TASKS", "TASK_METRICS", "describe_tasks", "lower_is_better", "make_task", "task_class"]
