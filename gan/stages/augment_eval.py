"""The augment_eval stage: does the champion's synthetic data help a classifier? -> augment/metrics.json

    python pipelines/augment_eval.py           # reads the augment_eval: section of params.yaml
    dvc repro augment_eval

The measure that matters to users of the generator. One small classifier, trained
three times with the same seed and settings, each time tested on the real validation split:

    (a) real            augment_eval.real_per_class real training images per class
    (b) real+synthetic  (a) plus augment_eval.synthetic_per_class samples per class from the champion
    (c) synthetic       the synthetic samples alone: the Classification Accuracy Score
                        (Ravuri & Vinyals 2019)

and ``gain`` = accuracy (b) - accuracy (a). ``augment_eval.epochs`` counts passes over each
training set, as the paper's protocol does, so (b) and (c) also take more steps than (a).
The champion alias (``models:/<register.model_name>@champion``) is resolved once; the
version used is recorded in the metrics, logged to the ``gan-augment-eval`` experiment and
set as tags on that model version.

When there is nothing to measure, the stage says why in one line, writes that sentence as
``skipped`` in augment/metrics.json and exits 0, so a scheduled ``gan repro`` ends cleanly:
registry/decision.json shows that no champion exists (the first version was kept from
promotion, by the privacy gate for instance), or that the registered model makes no
labelled synthetic images (a translate, detect or upscale model, or an unconditional
generator: the task's ``augments`` declaration, recorded by register).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from gan.atomic import atomic_write_json
from gan.config import load_params
from gan.errors import GanError
from gan.paths import check_outputs
from gan.stages import stage_parser
from gan.tracking import store_file

EXPERIMENT = "gan-augment-eval"


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", default=None, help="model URI (default: models:/<register.model_name>@champion)")
    parser.add_argument("--out", default="augment/metrics.json", help="metrics file (default: augment/metrics.json)")
    parser.add_argument("--decision", default="registry/decision.json",
                        help="the register stage's decision, read when --model is not given (default: registry/decision.json)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1, see below)")
    args = parser.parse_args(argv)
    import torch

    # The classifier's batches are tiny (64 images of 16x16): with more intra-op threads the
    # synchronisation costs more than it saves, 3-10x slower on a busy 2-core machine.
    torch.set_num_threads(max(1, args.threads))
    params = load_params(args.params)
    cfg, data = params.augment_eval, Path(args.data or params.prepare.out)
    model_uri = args.model or f"models:/{params.register.model_name}@champion"
    check_outputs({"--out": args.out}, {"--data": data, "--params": args.params, "the MLflow store": store_file()})
    start = time.perf_counter()
    reason = None if args.model else nothing_to_measure(Path(args.decision), params.register.model_name)
    if reason:
        atomic_write_json(args.out, {"skipped": reason})
        print(f"augment_eval: skipped: {reason} -> {args.out}")
        return 0

    from gan.augment import classification_accuracy, generate, real_slice, to_model_range
    from gan.data import load_split, read_manifest

    manifest = read_manifest(data)
    train_x, train_y = load_split(data, "train")
    val_x, val_y = load_split(data, "val")
    if train_y is None or val_y is None:
        raise GanError(f"{data} has no labels; augment_eval trains a classifier and needs labelled data.")
    num_classes = int(manifest["num_classes"])

    stream = generate(model_uri, cfg.synthetic_per_class * num_classes, seed=cfg.seed)  # the alias is resolved here, once
    check_generator(stream, train_x.shape[1:], num_classes, data)
    synthetic_u8, synthetic_y = stream.arrays()  # [K * synthetic_per_class, C, H, W], balanced by cycling
    synthetic_x = to_model_range(synthetic_u8)
    rows = real_slice(np.asarray(train_y), cfg.real_per_class, cfg.seed)
    real_x, real_y = np.asarray(train_x[rows], dtype=np.float32), np.asarray(train_y[rows])

    def score(x: np.ndarray, y: np.ndarray) -> float:
        return classification_accuracy(x, y, val_x, val_y, num_classes, cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed)

    acc_real = score(real_x, real_y)
    acc_both = score(np.concatenate([real_x, synthetic_x]), np.concatenate([real_y, synthetic_y]))
    acc_synthetic = score(synthetic_x, synthetic_y)
    metrics: dict[str, Any] = {
        "accuracy/real": acc_real,
        "accuracy/real_plus_synthetic": acc_both,
        "accuracy/synthetic": acc_synthetic,
        "gain": acc_both - acc_real,
        "model_uri": stream.model.uri,
        "model_version": stream.model.version,
        "real_train": len(real_y),
        "synthetic_train": len(synthetic_y),
        "val": len(val_y),
        "seconds": round(time.perf_counter() - start, 2),
    }
    atomic_write_json(args.out, metrics)
    log_to_mlflow(metrics, stream.model, cfg.model_dump())
    print(
        f"augment_eval: {stream.model.name} v{stream.model.version}: accuracy real {acc_real:.3f}, "
        f"real+synthetic {acc_both:.3f} (gain {acc_both - acc_real:+.3f}), synthetic only (CAS) {acc_synthetic:.3f} "
        f"-> {args.out} in {metrics['seconds']:.1f}s"
    )
    return 0


def nothing_to_measure(decision_path: Path, model_name: str) -> str | None:
    """Why the champion of ``model_name`` cannot be measured, from the register stage's decision file, or None.

    An absent decision file (the stage run on its own, before any register) leaves the
    question to the registry itself.
    """
    import json

    if not decision_path.exists():
        return None
    try:
        decision = json.loads(decision_path.read_text())
    except json.JSONDecodeError:
        raise GanError(f"{decision_path} is not valid JSON; re-run the register stage (dvc repro -f register).") from None
    if not decision.get("augments", True):
        return (f"{decision.get('model_uri', model_name)} ({decision.get('task', 'its task')}) makes no labelled synthetic images, "
                "so there is no classifier to train with them")  # fmt: skip
    if decision.get("champion_version") is None and not decision.get("promoted", True):
        return f"{model_name} has no champion yet: v{decision.get('challenger_version')} was not promoted ({decision.get('reason')})"
    return None


def check_generator(stream: Any, data_shape: tuple[int, ...], num_classes: int, data: Path) -> None:
    """The champion must be class-conditional on the same classes and image shape as the data."""
    ref = stream.model
    if not stream.conditional:
        raise GanError(f"{ref.uri} is unconditional; augment_eval needs a class-conditional generator (model.conditional: true).")
    if len(stream.class_names) != num_classes or tuple(stream.image_shape) != tuple(data_shape):
        raise GanError(
            f"{ref.uri} makes {len(stream.class_names)} classes of {tuple(stream.image_shape)} images but {data} has "
            f"{num_classes} classes of {tuple(data_shape)}; register a generator trained on this data (dvc repro)."
        )


def log_to_mlflow(metrics: dict[str, Any], ref: Any, settings: dict[str, Any]) -> None:
    """One run in ``gan-augment-eval``, and the accuracies as tags on the model version used."""
    import mlflow
    from mlflow import MlflowClient

    from gan.tracking import ensure_experiment, git_commit

    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, float)}
    tags = {"git_commit": git_commit(), "stage": "augment_eval", "model_uri": ref.uri}
    with mlflow.start_run(experiment_id=ensure_experiment(EXPERIMENT), run_name="augment_eval", tags=tags):
        mlflow.log_params({f"augment_eval.{k}": v for k, v in settings.items()})
        mlflow.log_metrics(numbers)
    client = MlflowClient()
    for key, value in numbers.items():
        client.set_model_version_tag(ref.name, ref.version, f"augment/{key}", repr(value))

