"""The registered generator as an MLflow pyfunc model, logged as code (models-from-code).

    model = mlflow.pyfunc.load_model("models:/digits-gan@champion")
    out = model.predict(pd.DataFrame([{"n": 8, "labels": [3], "seed": 0}]))
    out["images"]   # uint8 [8, C, H, W] (0..255; 127.5 * (x + 1) of G's [-1, 1] output)
    out["labels"]   # int64 [8] (-1 for an unconditional generator)

    mlflow models serve -m models:/digits-gan@champion --env-manager local
    curl -d '{"dataframe_records": [{"n": 4, "seed": 0}]}' -H 'Content-Type: application/json' \\
        127.0.0.1:5000/invocations

Input, one request per row (a table or JSON records; all rows give the same keys):
    n           samples to draw (1..MAX_REQUEST_SAMPLES)
    labels      optional class labels, cycled over the n samples (all classes when omitted)
    seed        optional, default 0: the same seed gives the same samples, and the first k
                samples of a request do not depend on n (latents are drawn in fixed blocks)
    truncation  optional truncation-trick threshold (> 0)
    z           optional latent batch [k, z_dim] used instead of drawing n latents
                (``labels`` then gives one label per row of z, or is cycled)

Why models-from-code with the model-definition modules as code_paths
--------------------------------------------------------------------
* No pickle on the loading path: MLflow executes this file at load time instead of
  unpickling a Python object, and G's weights are the exported ``model.safetensors``
  (tensors only) read by :func:`gan.export.load_generator`. Loading works with
  ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``.
* One definition of each network: a private copy of the architectures in this file
  would drift from ``gan/models`` the first time someone edits a layer. Instead
  :func:`gan.registry.model_code_files` logs, next to this file, exactly the modules
  needed to rebuild G: ``gan/export.py`` and ``gan/models/`` plus what they import
  inside ``gan`` (found by reading their imports, so a new dependency is picked up
  automatically), and it refuses to log anything from the training side (``gan.training``,
  ``gan.data``, ``gan.losses``, ``gan.tuning``, ...). MLflow puts that copy first on
  ``sys.path`` when it loads the model, so a fresh process imports ``gan`` from the
  model version itself: a version keeps loading after the project's code changes,
  and in an environment where the project is not installed (only torch, safetensors,
  numpy, pandas and mlflow are needed).
* This file imports nothing from ``gan`` but ``gan.export`` (loading and the label
  check, shared with the evaluation) and ``gan.errors``; both are in that closure.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import Array, ColSpec, Schema, TensorSpec

from gan.errors import GanError
from gan.export import check_labels, load_generator

# The artifact key under which the exported generator directory is logged.
GENERATOR_ARTIFACT = "generator"
# Latents are drawn in blocks of this many rows from one torch.Generator, so the stream
# for a seed is the same whatever the batch size or n (prefixes agree), while only one
# block is ever held in memory.
LATENT_BLOCK = 1024
DEFAULT_BATCH_SIZE = 500
# One HTTP request may not ask for more than this: the answer is held in memory as JSON.
MAX_REQUEST_SAMPLES = 10_000
UNLABELLED = -1


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """G's output in [-1, 1] -> uint8 in 0..255 (round to nearest; out-of-range values clip)."""
    return x.float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def latent_blocks(n: int, z_dim: int, seed: int, truncation: float | None = None) -> Iterator[torch.Tensor]:
    """Yield ``[<= LATENT_BLOCK, z_dim]`` latents from N(0, I), ``n`` rows in all.

    Full blocks are always drawn and then cut, so sample i is the same for any n > i.
    With ``truncation`` (Brock et al. 2019) values beyond +-truncation are redrawn.
    """
    gen = torch.Generator().manual_seed(int(seed))
    for start in range(0, n, LATENT_BLOCK):
        z = torch.randn(LATENT_BLOCK, z_dim, generator=gen)  # [LATENT_BLOCK, z_dim]
        if truncation is not None:
            outside = z.abs() > truncation
            while outside.any():
                z[outside] = torch.randn(int(outside.sum()), generator=gen)
                outside = z.abs() > truncation
        yield z[: min(LATENT_BLOCK, n - start)]


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


class GeneratorModel(PythonModel):
    """pyfunc wrapper around the exported generator; see the module docstring for the input."""

    def load_context(self, context: PythonModelContext) -> None:
        self.G, self.spec = load_generator(context.artifacts[GENERATOR_ARTIFACT])
        self.z_dim = int(self.spec["z_dim"])
        self.num_classes = int(self.spec["num_classes"])
        self.class_names = list(self.spec.get("class_names") or [str(i) for i in range(self.num_classes)])
        self.image_shape = (int(self.spec["channels"]), int(self.spec["image_size"]), int(self.spec["image_size"]))

    def all_labels(self) -> list[int]:
        """Every class of a conditional generator (empty for an unconditional one)."""
        return list(range(self.num_classes))

    @torch.inference_mode()
    def generate_from_latents(self, z: torch.Tensor, y: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """One batch: ``z [B, z_dim]``, ``y [B] | None`` -> (uint8 ``[B, C, H, W]``, int64 ``[B]``)."""
        images = to_uint8(self.G(z, y if self.num_classes else None)).numpy()
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
        check_request(n, labels, truncation, self.num_classes, limit=None)
        cycle = list(labels) if labels else self.all_labels()
        done = 0
        for z in rebatch(latent_blocks(n, self.z_dim, seed, truncation), batch_size):
            y = cycled_labels(done, len(z), cycle) if self.num_classes else None
            yield self.generate_from_latents(z, y)
            done += len(z)

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
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
            check_request(n, labels, request.get("truncation"), self.num_classes, limit=MAX_REQUEST_SAMPLES)
            yield from self.iter_batches(n, labels, seed, request.get("truncation"))
            return
        z = torch.as_tensor(np.asarray(z, dtype=np.float32))
        if z.ndim != 2 or z.shape[1] != self.z_dim or not 0 < len(z) <= MAX_REQUEST_SAMPLES:
            raise GanError(f"z has shape {list(z.shape)}; it must be [k, {self.z_dim}] with 1 <= k <= {MAX_REQUEST_SAMPLES}.")
        check_request(len(z), labels, None, self.num_classes, limit=MAX_REQUEST_SAMPLES)
        y = cycled_labels(0, len(z), list(labels) if labels else self.all_labels()) if self.num_classes else None
        yield self.generate_from_latents(z, y)


def whole_number(key: str, value: Any) -> int:
    """``value`` as an int when it is a whole number (JSON and NaN-holding tables send floats)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise GanError(f"{key} = {value!r} is invalid; it must be a whole number.")
    return int(number)


def check_request(n: int, labels: Sequence[int] | None, truncation: float | None, num_classes: int, limit: int | None) -> None:
    """Raise GanError for a sample count, label or truncation the generator cannot serve."""
    if n <= 0:
        raise GanError(f"n = {n} is invalid; ask for at least one sample.")
    if limit is not None and n > limit:
        raise GanError(f"n = {n} is more than one request may ask for ({limit}); split it or use `gan augment`.")
    if truncation is not None and not truncation > 0:
        raise GanError(f"truncation = {truncation} is invalid; use a positive threshold such as 1.0, or omit it.")
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


def model_signature(channels: int, image_size: int) -> ModelSignature:
    """The pyfunc signature: request rows in, uint8 images and int64 labels out."""
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


def input_example(num_classes: int) -> pd.DataFrame:
    """A small request: 4 samples (of classes 0 and 1 for a conditional generator), seed 0."""
    row: dict[str, Any] = {"n": 4, "seed": 0}
    if num_classes:
        row["labels"] = [0, min(1, num_classes - 1)]
    return pd.DataFrame([row])


mlflow.models.set_model(GeneratorModel())
