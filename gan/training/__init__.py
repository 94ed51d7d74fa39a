"""Adversarial training: a Ray-free core and its Ray Train adapter.

    from gan.training import GANTrainer, fit, make_trainer, fit_task, TrainCheckpoint, save_checkpoint, load_checkpoint
    from gan.training.ray_run import run_training        # Ray Train V2 (imports Ray lazily)

``make_trainer``/``fit_task`` build the task of ``model.task`` (:mod:`gan.training.factory`);
see :mod:`gan.training.loop` for the recipe and :mod:`gan.training.ray_run` for
scaling, storage, failures and resume.
"""

from gan.training.checkpoint import TrainCheckpoint, load_checkpoint, save_checkpoint
from gan.training.factory import fit_task, make_trainer, task_for
from gan.training.guard import DivergenceGuard
from gan.training.loop import DDP_KWARGS, GANTrainer, fit
from gan.training.settings import apply_tuned, run_name, with_train

__all__ = [
    "DDP_KWARGS",
    "DivergenceGuard",
    "GANTrainer",
    "TrainCheckpoint",
    "apply_tuned",
    "fit",
    "fit_task",
    "make_trainer",
    "task_for",
    "load_checkpoint",
    "run_name",
    "save_checkpoint",
    "with_train",
]
