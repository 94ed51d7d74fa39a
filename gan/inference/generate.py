"""The ``generate`` task's inference: noise + class -> image, for the pyfunc, ``gan augment`` and serving.

    runner = GenerateRunner("models/generator")      # or what the pyfunc loads from a version
    for images, labels in runner.iter_batches(1000, labels=[3, 5], seed=0):   # uint8 [B, C, H, W], int64 [B]
        ...
    runner.predict(pd.DataFrame([{"n": 8, "labels": [3], "seed": 0}]))     # {"images", "labels"}

Input of :meth:`GenerateRunner.predict`, one request per row (a table or JSON records;
all rows give the same keys):
    n           samples to draw (1..MAX_REQUEST_SAMPLES)
    labels      optional class labels, cycled over the n samples (all classes when omitted)
    seed        optional, default 0: the same seed gives the same samples (a request without
                a seed gets the same answer each time), and the first k samples of a
                request do not depend on n (latents are drawn in fixed blocks)
    truncation  optional truncation trick: a threshold on z (> 0), or for a StyleGAN2 generator
                psi in w-space (0..1; w_avg + psi (w - w_avg), per class), also applied to z rows
    z           optional latent batch [k, z_dim] used instead of drawing n latents
                (``labels`` then gives one label per row of z, or is cycled)

Samples come from :func:`gan.sampling.latent_label_batches` and :func:`gan.sampling.to_uint8`,
so the same seed gives the same images as ``gan.sampling.sample`` (evaluation, the sample
grid) and ``gan augment``. This module travels with every registered version of a
generate model (see :mod:`gan.registry`), so it imports nothing from the training side.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema, TensorSpec

from gan.errors import GanError
from gan.export import load_generator
from gan.sampling import (
    DEFAULT_BATCH_SIZE,
    check_labels,
    check_truncation,
    cycled_labels,
    latent_label_batches,
    run_generator,
    to_uint8,
    truncates_in_w,
)

# One HTTP request may not ask for more than this: the answer is held in memory as JSON.
MAX_REQUEST_SAMPLES = 10_000
UNLABELLED = -1


class GenerateRunner:
    """The generate task's inference over an exported model directory; see the module docstring for requests."""

    def __init__(self, model_dir: str) -> None:
        self.G, self.spec = load_generator(model_dir)
        self.nets = {"G": self.G}  # the exported networks, as the task's evaluation takes them
        self.z_dim = int(self.spec["z_dim"])
        self.num_classes = int(self.spec["num_classes"])
        self.class_names = list(self.spec.get("class_names") or [str(i) for i in range(self.num_classes)])
        self.image_shape = (int(self.spec["channels"]), int(self.spec["image_size"]), int(self.spec["image_size"]))
        self.w_space = truncates_in_w(self.G)  # truncation is psi in w-space (StyleGAN2)

    def all_labels(self) -> list[int]:
        """Every class of a conditional generator (empty for an unconditional one)."""
        return list(range(self.num_classes))

    @torch.inference_mode()
    def generate_from_latents(self, z: torch.Tensor, y: torch.Tensor | None, truncation: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One batch: ``z [B, z_dim]``, ``y [B] | None`` -> (uint8 ``[B, C, H, W]``, int64 ``[B]``); w-space truncation applied here."""
        images = to_uint8(run_generator(self.G, z, y if self.num_classes else None, truncation)).numpy()
        labels = y.numpy().astype(np.int64) if (self.num_classes and y is not None) else np.full(len(z), UNLABELLED, np.int64)
        return images, labels

    def iter_batches(
        self,
        n: int,
        labels: Sequence[int] | None = None,
        seed: int = 0,
        truncation: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream ``n`` samples as (uint8 ``[B, C, H, W]``, int64 ``[B]``) batches; memory is O(batch)."""
        check_request(n, labels, truncation, self.num_classes, limit=None, w_space=self.w_space)
        for z, y in latent_label_batches(n, self.z_dim, self.num_classes, labels, seed, truncation, batch_size, self.w_space):
            yield self.generate_from_latents(z, y, truncation)

    def predict(self, model_input: pd.DataFrame) -> dict[str, np.ndarray]:
        """Answer every request row; the results are concatenated in row order."""
        images, labels = [], []
        for request in requests_from_input(model_input):
            try:
                for x, y in self._answer(request):
                    images.append(x)
                    labels.append(y)
            except GanError as err:  # the serving layer answers MlflowException with HTTP 400
                raise MlflowException.invalid_parameter_value(str(err)) from None
        if not images:
            raise MlflowException.invalid_parameter_value("the input holds no request; send rows with n (or z).")
        return {"images": np.concatenate(images), "labels": np.concatenate(labels)}

    def _answer(self, request: dict[str, Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        z = request.get("z")
        labels = request.get("labels")
        if z is None:
            n = request.get("n")
            if n is None:
                raise GanError("a request row has neither n nor z; give n (the number of samples) or a latent batch z.")
            n, seed = whole_number("n", n), whole_number("seed", request.get("seed", 0))
            check_request(n, labels, request.get("truncation"), self.num_classes, limit=MAX_REQUEST_SAMPLES, w_space=self.w_space)
            yield from self.iter_batches(n, labels, seed, request.get("truncation"))
            return
        z = torch.as_tensor(np.asarray(z, dtype=np.float32))
        if z.ndim != 2 or z.shape[1] != self.z_dim or not 0 < len(z) <= MAX_REQUEST_SAMPLES:
            raise GanError(f"z has shape {list(z.shape)}; it must be [k, {self.z_dim}] with 1 <= k <= {MAX_REQUEST_SAMPLES}.")
        # a given z can only be truncated in w-space (z-space truncation is how z is drawn)
        truncation = request.get("truncation") if self.w_space else None
        check_request(len(z), labels, truncation, self.num_classes, limit=MAX_REQUEST_SAMPLES, w_space=self.w_space)
        y = cycled_labels(0, len(z), list(labels) if labels else self.all_labels()) if self.num_classes else None
        yield self.generate_from_latents(z, y, truncation)


def whole_number(key: str, value: Any) -> int:
    """``value`` as an int when it is a whole number (JSON and NaN-holding tables send floats)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise GanError(f"{key} = {value!r} is invalid; it must be a whole number.")
    return int(number)


def check_request(n: int, labels: Sequence[int] | None, truncation: float | None, num_classes: int, limit: int | None,
                  w_space: bool = False) -> None:  # fmt: skip
    """Raise GanError for a sample count, label or truncation the generator cannot serve."""
    if n <= 0:
        raise GanError(f"n = {n} is invalid; ask for at least one sample.")
    if limit is not None and n > limit:
        raise GanError(f"n = {n} is more than one request may ask for ({limit}); split it or use `gan augment`.")
    check_truncation(truncation, w_space)
    check_labels(labels or None, num_classes)


def requests_from_input(model_input: Any) -> list[dict[str, Any]]:
    """Normalise a DataFrame, a dict or a list of dicts into request dicts without missing values."""
    if isinstance(model_input, pd.DataFrame):
        rows = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        rows = [model_input]
    elif isinstance(model_input, list):
        rows = list(model_input)
    else:
        raise MlflowException.invalid_parameter_value(
            f"input of type {type(model_input).__name__} is not understood; send a table or JSON records with n, labels, seed, truncation or z."
        )
    return [{k: _plain(v) for k, v in row.items() if not _missing(v)} for row in rows]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, float) and math.isnan(value)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> Python numbers and lists (labels) or float arrays (z)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:  # nested arrays from schema enforcement: [k] of [z_dim]
            return np.stack([np.asarray(v, dtype=np.float32) for v in value]) if len(value) else value
        return value.tolist() if value.ndim == 1 and value.dtype.kind in "iu" else value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list) and value and isinstance(value[0], list):
        return np.asarray(value, dtype=np.float32)
    return value


def signature(spec: dict[str, Any]) -> ModelSignature:
    """The pyfunc signature: request rows in, uint8 images and int64 labels out."""
    channels, image_size = int(spec["channels"]), int(spec["image_size"])
    inputs = Schema(
        [
            # Optional columns: a table column cannot mix values and gaps (pandas fills the
            # gaps with NaN, which MLflow refuses for integers and arrays), so all rows of
            # one request table give the same keys.
            ColSpec("long", "n", required=False),
            ColSpec(Array("long"), "labels", required=False),
            ColSpec("long", "seed", required=False),
            ColSpec("double", "truncation", required=False),
            ColSpec(Array(Array("double")), "z", required=False),
        ]
    )
    outputs = Schema(
        [
            TensorSpec(np.dtype(np.uint8), (-1, channels, image_size, image_size), "images"),
            TensorSpec(np.dtype(np.int64), (-1,), "labels"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(spec: dict[str, Any]) -> pd.DataFrame:
    """A small request: 4 samples (of classes 0 and 1 for a conditional generator), seed 0."""
    num_classes = int(spec["num_classes"])
    row: dict[str, Any] = {"n": 4, "seed": 0}
    if num_classes:
        row["labels"] = [0, min(1, num_classes - 1)]
    return pd.DataFrame([row])



Runner = GenerateRunner
