"""Labelled synthetic data from a registered generator, as a stream of batches.

    stream = generate("models:/digits-gan@champion", 1000, labels=[3, 5], seed=0)
    for images, labels in stream:         # uint8 [B, C, H, W], int64 [B], batch after batch
        ...

The alias is resolved to one concrete version when the stream is made, and every
sample comes from that version; samples come from :mod:`gan.sampling` through the
model's inference runner, so memory stays flat for any N and the same seed gives the
same samples whatever the batch size.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gan.errors import GanError
from gan.sampling import check_count, check_labels

DEFAULT_BATCH_SIZE = 500



@dataclass
class SyntheticStream:
    """``n`` samples of one resolved model version, iterated as (uint8 images, int64 labels) batches."""

    model: Any  # gan.registry.ModelRef: name, version, requested, uri
    n: int
    labels: list[int] | None
    seed: int
    truncation: float | None
    batch_size: int
    generator: Any = field(repr=False)  # gan.mlflow_model.TaskModel of a generate model
    captions: list[str] | None = None  # a text-conditioned generator's captions, cycled instead of labels

    @property
    def class_names(self) -> list[str]:
        """The classes, or the captions when the samples are conditioned on captions (labels index them)."""
        return list(self.captions) if self.captions else list(self.generator.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.generator.image_shape)

    @property
    def conditional(self) -> bool:
        return bool(self.captions) or self.generator.num_classes > 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.generator.iter_batches(self.n, self.labels, self.seed, self.truncation, self.batch_size, captions=self.captions)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All samples as (uint8 ``[n, C, H, W]``, int64 ``[n]``); memory grows with n."""
        x = np.empty((self.n, *self.image_shape), np.uint8)
        y = np.empty(self.n, np.int64)
        start = 0
        for xb, yb in self:
            x[start : start + len(xb)], y[start : start + len(yb)] = xb, yb
            start += len(xb)
        return x, y

    def metadata(self) -> dict[str, Any]:
        """What produced these samples: enough to reproduce them exactly."""
        return {
            "model_uri": self.model.requested,
            "resolved_uri": self.model.uri,
            "model_name": self.model.name,
            "model_version": self.model.version,
            "run_id": self.model.run_id,
            "n": self.n,
            "labels": self.labels,
            "seed": self.seed,
            "truncation": self.truncation,
            "class_names": self.class_names if self.conditional else [],
            "captions": self.captions,
            "image_shape": list(self.image_shape),
            "dtype": "uint8",
            "value_range": [0, 255],
        }


def generate(
    model_uri: str,
    n: int,
    labels: Sequence[int | str] | None = None,
    seed: int | None = None,
    *,
    truncation: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    captions: Sequence[str] | None = None,
) -> SyntheticStream:
    """Resolve ``model_uri`` once, load that version and return a stream of ``n`` samples.

    ``labels`` (class indices or class names) are cycled over the samples; all classes
    when omitted. ``seed`` None picks a random seed (recorded in the stream). Raises
    GanError for n <= 0, an unreachable tracking server, an unknown model, alias or label.
    """
    from gan.registry.uris import load_registered

    check_count(n)
    if batch_size <= 0:
        raise GanError(f"batch_size = {batch_size} is invalid; use a positive number such as {DEFAULT_BATCH_SIZE}.")
    ref, model = load_registered(model_uri)
    if captions:
        if labels:
            raise GanError("--labels and --captions were both given; condition on one of them.")
        model.caption_embeddings(list(captions))  # GanError for a generator without a text encoder, or unusable captions
    ids = label_ids(labels, model.class_names, model.num_classes) if labels else None
    check_labels(ids, model.num_classes)
    seed = int.from_bytes(os.urandom(4), "little") >> 1 if seed is None else int(seed)
    return SyntheticStream(model=ref, n=int(n), labels=ids, seed=seed, truncation=truncation, batch_size=batch_size, generator=model,
                           captions=list(captions) if captions else None)  # fmt: skip


def read_captions_file(path: str | os.PathLike) -> list[str]:
    """``gan augment --captions FILE``: one caption per line (UTF-8; blank lines ignored)."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()  # noqa: SIM115 (read at once)
    except FileNotFoundError:
        raise GanError(f"--captions {path}: no such file; give a text file with one caption per line.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise GanError(f"--captions {path} cannot be read as UTF-8 text ({type(err).__name__}); give a text file with one caption per line.") from None
    captions = [line.strip() for line in lines if line.strip()]
    if not captions:
        raise GanError(f"--captions {path} holds no caption; write one caption per line.")
    return captions


def check_seed(seed: int | None) -> None:
    """Raise GanError for a seed outside 0..2**32-1 (the range params.yaml seeds have too)."""
    from gan.config import SEED_MAX

    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise GanError(f"--seed {seed} is invalid; use a whole number from 0 to {SEED_MAX}, or omit it for a random one.")


def label_ids(labels: Sequence[int | str], class_names: Sequence[str], num_classes: int) -> list[int]:
    """Class names or indices -> indices; GanError for a name the generator does not know."""
    if num_classes == 0:
        raise GanError("labels were given but this generator is unconditional; omit labels.")
    ids = []
    for label in labels:
        text = str(label).strip()
        if text in class_names:
            ids.append(list(class_names).index(text))
        elif re.fullmatch(r"-?\d+", text):
            ids.append(int(text))
        else:
            raise GanError(f"label {text!r} is unknown to this generator; use an index 0..{num_classes - 1} or one of {', '.join(class_names)}.")
    return ids
