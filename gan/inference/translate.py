"""The ``translate`` task's inference: image + target domain -> image, for the pyfunc, ``gan translate`` and serving.

    runner = TranslateRunner("models/generator")               # or what the pyfunc loads from a version
    out = runner.translate(images, to="dilated_inverted")       # uint8 [B, C, S, S] -> uint8 [B, C, S, S]
    runner.predict(pd.DataFrame([{"image": img.tolist(), "to": "dilated_inverted"}]))   # {"images"}

Input of :meth:`TranslateRunner.predict`, one image per row (a table or JSON records);
a row holds exactly these fields (any other is refused, see :mod:`gan.inference.requests`):
    image   the image as nested lists [C][S][S] of 0..255 values, C and S the model's
    to      the target domain's name (``spec["domains"]``)

Images must already have the model's channel count and size (``gan translate`` resizes
files first, see :mod:`gan.translate`). CycleGAN and pix2pix translate between their two
domains (the source is the other domain); StarGAN translates any image to any domain.
This module travels with every registered version of a translate model, so it imports
nothing from the training side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from gan.errors import GanError
from gan.export import load_networks
from gan.inference.requests import request_rows
from gan.sampling import to_uint8

MAX_REQUEST_IMAGES = 10_000
REQUEST_FIELDS = ("image", "to")


class TranslateRunner:
    """The translate task's inference over an exported model directory."""

    def __init__(self, model_dir: str) -> None:
        self.nets, self.spec = load_networks(model_dir)
        self.arch = str(self.spec["arch"])
        self.domains = [str(d) for d in self.spec["domains"]]
        self.channels, self.image_size = int(self.spec["channels"]), int(self.spec["image_size"])
        self.directions = [tuple(p) for p in self.spec.get("directions", [])]

    def target_index(self, to: str | int) -> int:
        """The index of domain ``to``; GanError naming the known domains otherwise."""
        if isinstance(to, str) and to in self.domains:
            index = self.domains.index(to)
        elif isinstance(to, int | np.integer) and not isinstance(to, bool) and 0 <= int(to) < len(self.domains):
            index = int(to)
        else:
            raise GanError(f"unknown target domain {to!r}; this model translates to {', '.join(self.domains[t] for t in self.targets())}.")
        if index not in self.targets():
            raise GanError(f"this {self.arch} model does not translate to {self.domains[index]!r}; it translates to {', '.join(self.domains[t] for t in self.targets())}.")
        return index

    def targets(self) -> list[int]:
        return sorted({t for _, t in self.directions})

    def check_images(self, images: np.ndarray) -> None:
        """GanError unless ``images`` is ``[B, C, S, S]`` with the model's channels and size."""
        if images.ndim != 4 or images.shape[0] == 0:
            raise GanError(f"images have shape {list(images.shape)}; send a batch [B, {self.channels}, {self.image_size}, {self.image_size}].")
        if images.shape[1] != self.channels:
            raise GanError(f"images have {images.shape[1]} channels; this model translates {self.channels}-channel images.")
        if images.shape[2:] != (self.image_size, self.image_size):
            raise GanError(f"images are {images.shape[2]}x{images.shape[3]}; this model translates {self.image_size}x{self.image_size} images (resize them first).")

    @torch.inference_mode()
    def translate(self, images: np.ndarray, to: str | int) -> np.ndarray:
        """uint8 (or 0..255) ``[B, C, S, S]`` -> uint8 ``[B, C, S, S]`` in domain ``to``."""
        images = np.asarray(images)
        self.check_images(images)
        target = self.target_index(to)
        x = torch.from_numpy(images.astype(np.float32)) / 127.5 - 1.0  # [B, C, S, S] in [-1, 1]
        if self.arch == "stargan":
            c = torch.nn.functional.one_hot(torch.full((len(x),), target), len(self.domains)).float()
            y = self.nets["G"](x, c)
        elif target == 1:
            y = self.nets["G_AB"](x)
        else:
            y = self.nets["G_BA"](x)
        return to_uint8(y).numpy()

    def predict(self, model_input: Any) -> dict[str, np.ndarray]:
        """Translate every row's image to its ``to`` domain, in row order."""
        rows = request_rows(model_input, REQUEST_FIELDS, "image and to")
        if not rows:
            raise MlflowException.invalid_parameter_value("the input holds no image; send rows with image and to.")
        if len(rows) > MAX_REQUEST_IMAGES:
            raise MlflowException.invalid_parameter_value(f"{len(rows)} images are more than one request may send ({MAX_REQUEST_IMAGES}); split them or use `gan translate`.")
        out = []
        try:
            for row in rows:
                if "image" not in row or "to" not in row:
                    raise GanError("a request row lacks image or to; send the image as [C][S][S] lists of 0..255 and the target domain's name.")
                out.append(self.translate(_array(row["image"])[None], row["to"]))
        except GanError as err:  # the serving layer answers MlflowException with HTTP 400
            raise MlflowException.invalid_parameter_value(str(err)) from None
        return {"images": np.concatenate(out)}


def _array(value: Any) -> np.ndarray:
    """Nested lists or the object arrays of MLflow's schema enforcement -> a float array."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return np.stack([_array(v) for v in value]) if len(value) else np.zeros(0)
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray | list):
        return np.stack([_array(v) for v in value])
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise GanError("an image is not a nested list of numbers; send [C][S][S] lists of 0..255 values.") from None


def signature(spec: dict[str, Any]) -> ModelSignature:
    """The pyfunc signature: uint8 images out.

    No input schema: MLflow would enforce it before the model sees a request and drop
    unknown fields (:mod:`gan.inference.requests`); the rows' fields are the module
    docstring's and the logged input example shows one.
    """
    channels, size = int(spec["channels"]), int(spec["image_size"])
    return ModelSignature(outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, channels, size, size), "images")]))


def input_example(spec: dict[str, Any]) -> pd.DataFrame:
    """Two mid-grey images sent to the model's last target domain."""
    channels, size = int(spec["channels"]), int(spec["image_size"])
    target = spec["domains"][max(t for _, t in spec["directions"])]
    image = np.full((channels, size, size), 128.0).tolist()
    return pd.DataFrame([{"image": image, "to": target}, {"image": image, "to": target}])


Runner = TranslateRunner
