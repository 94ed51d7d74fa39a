"""The trainer for ``model.task``: where the table of tasks meets the task-agnostic trainer.

    trainer = make_trainer(params, "data/prepared")          # GANTrainer of params.model.task
    summary = fit_task(params, "data/prepared", log=None)    # fit() with that task

The trainer (:mod:`gan.training.loop`) imports only the task contract; callers at the
stage level (the Ray adapter, tuning, tests) build the task here from the prepared
data's manifest.
"""

from __future__ import annotations

import os
from typing import Any

from gan.config import Params
from gan.data import read_manifest
from gan.tasks import make_task
from gan.tasks.base import Task
from gan.training.loop import GANTrainer, fit


def task_for(params: Params, data_dir: str | os.PathLike, features_dir: str | os.PathLike | None = None) -> Task:
    """The task of ``params.model.task`` for the prepared data in ``data_dir`` (and featurize's output, where it reads it)."""
    task = make_task(params, read_manifest(data_dir))
    task.use_inputs(data_dir, features_dir)
    return task


def make_trainer(params: Params, data_dir: str | os.PathLike, features_dir: str | os.PathLike | None = None, **kwargs: Any) -> GANTrainer:
    """A :class:`GANTrainer` for ``params.model.task`` (keyword arguments as GANTrainer's)."""
    return GANTrainer(params, data_dir, task=task_for(params, data_dir, features_dir), **kwargs)


def fit_task(params: Params, data_dir: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """:func:`gan.training.loop.fit` for ``params.model.task`` (keyword arguments as fit's)."""
    features_dir = kwargs.pop("features_dir", None)
    if kwargs.get("trainer") is None:
        kwargs["task"] = task_for(params, data_dir, features_dir)
    return fit(params, data_dir, **kwargs)
