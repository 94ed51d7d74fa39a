"""The ``generate`` task's inference: noise + class -> image, for the pyfunc, ``gan augment`` and serving.

    runner = GenerateRunner("models/generator")      # or what the pyfunc loads from a version
    for images, labels in runner.iter_batches(1000, labels=[3, 5], seed=0):   # uint8 [B, C, H, W], int64 [B]
        ...
    runner.predict(pd.DataFrame([{"n": 8, "labels": [3], "seed": 0}]))     # {"images", "labels", "class_names"}

Input of :meth:`GenerateRunner.predict`, one request per row (a table or JSON records).
A row may hold only these fields, each checked as sent (:mod:`gan.inference.requests`):
    n           samples to draw, a whole number >= 1; all rows of one request together
                may ask for at most MAX_REQUEST_SAMPLES (10,000)
    labels      optional list of classes, as indices or class names, cycled over the n
                samples (at most n of them); all classes when omitted
    seed        optional whole number 0..2^63-1, default 0: a request without a seed gets
                the same samples every time; the first k samples of a request do not
                depend on n (latents are drawn in fixed blocks)
    truncation  optional truncation trick: a threshold on z (> 0), or for a StyleGAN2 generator
                psi in w-space (0..1; w_avg + psi (w - w_avg), per class), also applied to z rows
                (a z-space threshold cannot apply to a given z: refused with one)
    z           optional latent batch [k, z_dim] used instead of n and seed (give neither
                with it); ``labels`` then gives one label per row of z, or is cycled
    captions    text-conditioned generators (StackGAN) only: a list of captions cycled over
                the n samples, instead of labels (words the text encoder does not know are
                read as <unk>; a caption with no known word is refused)
The answer: ``images`` uint8 [N, C, H, W], ``labels`` int64 [N] (-1 for an unconditional
generator or a caption row) and ``class_names`` [N] (each sample's class name; "" when
unconditional); a text-conditioned generator adds ``captions`` [N] (each sample's caption,
"" for rows conditioned on labels).
Nothing is drawn until every row of the request has passed its checks.

Samples come from :func:`gan.sampling.latent_label_batches` and :func:`gan.sampling.to_uint8`,
so the same seed gives the same images as ``gan.sampling.sample`` (evaluation, the sample
grid) and ``gan augment``. This module travels with every registered version of a
generate model (see :mod:`gan.registry`), so it imports nothing from the training side.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from gan.errors import GanError
from gan.export import load_generator
from gan.inference.requests import real_number, request_rows, whole_number
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
MAX_REQUEST_SAMPLES = 10_000  # over all rows of one request
MAX_SEED = 2**63 - 1
UNLABELLED = -1
REQUEST_FIELDS = ("n", "labels", "seed", "truncation", "z", "captions")


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
        self.captioned = hasattr(self.G, "vocab")  # conditioned on caption embeddings (StackGAN)

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
        captions: Sequence[str] | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream ``n`` samples as (uint8 ``[B, C, H, W]``, int64 ``[B]``) batches; memory is O(batch).

        With ``captions`` (a text-conditioned generator) they are cycled over the samples
        instead of labels, and each batch's int64 entries are caption indices.
        """
        if captions:
            emb, _ = self.caption_embeddings(captions)
            for z, i in latent_label_batches(n, self.z_dim, len(emb), list(range(len(emb))), seed, truncation, batch_size):
                with torch.inference_mode():
                    images = to_uint8(self.G(z, None, text=emb[i])).numpy()
                yield images, i.numpy().astype(np.int64)
            return
        check_request(n, labels, truncation, self.num_classes, limit=None, w_space=self.w_space)
        for z, y in latent_label_batches(n, self.z_dim, self.num_classes, labels, seed, truncation, batch_size, self.w_space):
            yield self.generate_from_latents(z, y, truncation)

    @torch.inference_mode()
    def caption_embeddings(self, captions: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
        """``([K, text_dim], unknown words)``: the captions through the generator's text encoder.

        GanError for a generator without one, a caption that is not text, or one without a
        word the encoder knows (every word would read as <unk>).
        """
        from gan.models.text import UNK, encode_captions

        if not self.captioned:
            raise GanError("captions were given but this generator is not text-conditioned; send labels instead.")
        texts = []
        for i, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise GanError(f"caption {i} ({caption!r}) is empty or not text; send one non-empty string per caption.")
            texts.append(caption)
        try:
            tokens, unknown = encode_captions(texts, list(self.G.vocab), int(self.G.max_len))
        except ValueError as err:
            raise GanError(f"{err}; send captions made of words such as: {', '.join(self.G.vocab[2:12])}.") from None
        known = (tokens > UNK).any(1)
        if not bool(known.all()):
            i = int((~known).nonzero()[0])
            raise GanError(f"caption {i} ({texts[i]!r}) has no word this generator's text encoder knows; use words such as: {', '.join(self.G.vocab[2:12])}.")
        return self.G.encode(tokens), unknown

    def label_index(self, label: Any) -> int:
        """A request's label as a class index: the index itself, or the class's name."""
        if isinstance(label, str):
            if label in self.class_names:
                return self.class_names.index(label)
            raise GanError(f"label {label!r} is unknown to this generator; use an index 0..{self.num_classes - 1} or one of {', '.join(self.class_names)}.")
        return whole_number("a labels entry", label)

    def parse(self, row: dict[str, Any]) -> Request:
        """One request row checked as sent (see the module docstring); GanError names the field."""
        labels = row.get("labels")
        if labels is not None:
            if isinstance(labels, str | bytes) or not isinstance(labels, Sequence | np.ndarray):
                raise GanError(f"labels = {labels!r} is invalid; send a list of class indices or names.")
            if len(labels) and not self.num_classes:
                check_labels(list(labels), 0)  # one sentence: an unconditional generator takes no labels
            labels = [self.label_index(v) for v in labels] or None
        captions = row.get("captions")
        if captions is not None:
            if isinstance(captions, str | bytes) or not isinstance(captions, Sequence | np.ndarray) or not len(captions):
                raise GanError(f"captions = {captions!r} is invalid; send a non-empty list of caption strings.")
            if labels is not None:
                raise GanError("a request row gives both labels and captions; condition on one of them.")
            captions = list(captions)
            self.caption_embeddings(captions)  # checked as sent, before anything is drawn
        truncation = None if row.get("truncation") is None else real_number("truncation", row["truncation"])
        if row.get("z") is None:
            if "n" not in row:
                raise GanError("a request row has neither n nor z; give n (the number of samples) or a latent batch z.")
            n = whole_number("n", row["n"], low=1)
            seed = whole_number("seed", row.get("seed", 0), low=0, high=MAX_SEED)
            z = None
        else:
            for key in ("n", "seed"):
                if key in row:
                    raise GanError(f"a request row gives both z and {key}; z fixes the samples, so drop {key} (or drop z).")
            if truncation is not None and not self.w_space:
                raise GanError("truncation has no effect on a given z for this generator (it truncates how z is drawn); "
                               "drop it, or clip z yourself.")  # fmt: skip
            z = _latent_batch(row["z"], self.z_dim)
            n, seed = len(z), 0
        for key, given in (("labels", labels), ("captions", captions)):
            if given is not None and len(given) > n:
                what = "label" if key == "labels" else "caption"
                raise GanError(f"{key} has {len(given)} entries for {n} samples; give at most one {what} per sample (they are cycled).")
        if captions is not None and z is not None:
            raise GanError("captions cannot be combined with z; send n, seed and captions.")
        check_request(n, labels, truncation, self.num_classes, limit=None, w_space=self.w_space)  # the cap is per request: predict
        return Request(n, labels, seed, truncation, z, captions)

    def predict(self, model_input: Any) -> dict[str, np.ndarray]:
        """Answer every request row, in row order; the whole input is checked before any sample is drawn."""
        try:
            requests = [self.parse(row) for row in request_rows(model_input, REQUEST_FIELDS, "n, labels, seed, truncation or z")]
            if not requests:
                raise GanError("the input holds no request; send rows with n (or z).")
            total = sum(r.n for r in requests)
            if total > MAX_REQUEST_SAMPLES:
                asked = f"n = {total}" if len(requests) == 1 else f"the {len(requests)} rows ask for {total} samples, which"
                raise GanError(f"{asked} is more than one request may ask for ({MAX_REQUEST_SAMPLES}); split it or use `gan augment`.")
        except GanError as err:  # the serving layer answers MlflowException with HTTP 400
            raise MlflowException.invalid_parameter_value(str(err)) from None
        images, labels, captions = [], [], []
        for request in requests:
            for x, y in self._answer(request):
                images.append(x)
                if request.captions is None:
                    labels.append(y)
                    captions += [""] * len(y)
                else:  # y: caption indices
                    labels.append(np.full(len(y), UNLABELLED, np.int64))
                    captions += [request.captions[i] for i in y.tolist()]
        labels = np.concatenate(labels)
        out = {"images": np.concatenate(images), "labels": labels, "class_names": self.names_of(labels)}
        if self.captioned:
            out["captions"] = np.asarray(captions, dtype=object)
        return out

    def names_of(self, labels: np.ndarray) -> np.ndarray:
        """Each sample's class name (object ``[N]``; "" for an unconditional generator's -1)."""
        return np.asarray([self.class_names[y] if y >= 0 else "" for y in labels.tolist()], dtype=object)

    def _answer(self, request: Request) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if request.z is None:
            yield from self.iter_batches(request.n, request.labels, request.seed, request.truncation, captions=request.captions)
            return
        labels = request.labels or self.all_labels()
        y = cycled_labels(0, request.n, labels) if self.num_classes else None
        yield self.generate_from_latents(request.z, y, request.truncation)


@dataclass(frozen=True)
class Request:
    """One checked request row: ``n`` samples (the rows of ``z`` when given), labels cycled over them."""

    n: int
    labels: list[int] | None
    seed: int
    truncation: float | None
    z: torch.Tensor | None
    captions: list[str] | None = None


def _latent_batch(value: Any, z_dim: int) -> torch.Tensor:
    """A request's z (nested lists of numbers, or the object arrays of a table) as float ``[k, z_dim]``."""
    try:
        rows = [np.asarray(v, dtype=np.float64) for v in value]
        z = np.stack(rows) if rows else np.zeros((0, z_dim))
    except (TypeError, ValueError):
        raise GanError(f"z is not a [k, {z_dim}] list of numbers; send one list of {z_dim} numbers per sample.") from None
    if z.ndim != 2 or z.shape[1] != z_dim or not 0 < len(z) <= MAX_REQUEST_SAMPLES:
        raise GanError(f"z has shape {list(z.shape)}; it must be [k, {z_dim}] with 1 <= k <= {MAX_REQUEST_SAMPLES}.")
    if not np.isfinite(z).all():
        raise GanError("z holds NaN or infinite values; send finite numbers.")
    return torch.as_tensor(z, dtype=torch.float32)


def check_request(n: int, labels: Sequence[int] | None, truncation: float | None, num_classes: int, limit: int | None,
                  w_space: bool = False) -> None:  # fmt: skip
    """Raise GanError for a sample count, label or truncation the generator cannot serve."""
    if n <= 0:
        raise GanError(f"n = {n} is invalid; ask for at least one sample.")
    if limit is not None and n > limit:
        raise GanError(f"n = {n} is more than one request may ask for ({limit}); split it or use `gan augment`.")
    check_truncation(truncation, w_space)
    check_labels(labels or None, num_classes)


def signature(spec: dict[str, Any]) -> ModelSignature:
    """The pyfunc signature: uint8 images, int64 labels and each sample's class name out.

    No input schema: MLflow would enforce it before the model sees a request, dropping
    unknown fields and casting n = 2.5 to 2 (:mod:`gan.inference.requests`); the request
    fields are the module docstring's and the logged input example shows one.
    """
    channels, image_size = int(spec["channels"]), int(spec["image_size"])
    outputs = Schema(
        [
            TensorSpec(np.dtype(np.uint8), (-1, channels, image_size, image_size), "images"),
            TensorSpec(np.dtype(np.int64), (-1,), "labels"),
            TensorSpec(np.dtype(object), (-1,), "class_names"),
            *([TensorSpec(np.dtype(object), (-1,), "captions")] if spec.get("arch") == "stackgan" else []),
        ]
    )
    return ModelSignature(outputs=outputs)


def input_example(spec: dict[str, Any]) -> pd.DataFrame:
    """A small request: 4 samples (of classes 0 and 1 for a conditional generator), seed 0."""
    num_classes = int(spec["num_classes"])
    row: dict[str, Any] = {"n": 4, "seed": 0}
    if num_classes:
        row["labels"] = [0, min(1, num_classes - 1)]
    return pd.DataFrame([row])



Runner = GenerateRunner
