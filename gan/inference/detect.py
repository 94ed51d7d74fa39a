"""The ``detect`` task's inference: image -> anomaly score + flag, for the pyfunc, ``gan score`` and serving.

    runner = DetectRunner("models/generator")           # or what the pyfunc loads from a version
    scores, flags = runner.score(images)                 # uint8 [N, C, S, S] -> float64 [N], bool [N]
    model.predict({"images": images})                    # the pyfunc: {"score", "is_anomaly"}

    mlflow models serve -m models:/digits-detect@champion --env-manager local
    curl -d '{"inputs": {"images": [[[[0, 255, ...]]]]}}' -H 'Content-Type: application/json' 127.0.0.1:5000/invocations

Scores (higher = more anomalous) are per image and never normalised over a batch (the
GANomaly reference min-max normalises over the whole test set, which makes one image's
score meaningless): an image scored alone gets the same score as inside any batch, so
scores from different calls compare, and the threshold stored in the export (chosen on
normal validation images at a target false-positive rate) applies to each of them.

    GANomaly   ||z - z_hat||^2 (mean over the latent), z = E1(x), z_hat = E2(G(z))
    f-AnoGAN   ||x - G(E(x))||^2 / n + kappa * ||f(x) - f(G(E(x)))||^2 / n_f   (izi_f's score)

This module travels with every registered detect model (see :mod:`gan.registry`), so it
imports nothing from the training side.
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

DEFAULT_BATCH_SIZE = 256


@torch.inference_mode()
def anomaly_scores(nets: dict[str, torch.nn.Module], spec: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    """Per-image scores ``[N]`` (float32) of images ``x [N, C, S, S]`` in [-1, 1]; networks in eval mode."""
    for net in nets.values():
        net.eval()  # BatchNorm's running statistics: a score never depends on the rest of the batch
    if spec["method"] == "ganomaly":
        _, z, z_hat = nets["G"](x)  # [N, z_dim] each
        return (z - z_hat).pow(2).mean(dim=1)
    x_hat = nets["G"](nets["E"](x))  # [N, C, S, S]
    _, f_real = nets["D"](x)  # [N, F]
    _, f_fake = nets["D"](x_hat)
    return (x - x_hat).pow(2).flatten(1).mean(dim=1) + float(spec["kappa"]) * (f_real - f_fake).pow(2).mean(dim=1)


@torch.inference_mode()
def discriminator_scores(nets: dict[str, torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    """The discriminator-score baseline ``-D(x)`` ``[N]``: a D trained on normal data rates anomalies as less real."""
    nets["D"].eval()
    return -nets["D"](x)[0].float()


class DetectRunner:
    """The detect task's inference over an exported model directory."""

    def __init__(self, model_dir: str) -> None:
        self.nets, self.spec = load_networks(model_dir)
        if "threshold" not in self.spec:
            raise GanError(f"{model_dir}/config.json holds no threshold; re-export the model with the train stage (dvc repro train).")
        self.threshold = float(self.spec["threshold"])
        self.image_shape = (int(self.spec["channels"]), int(self.spec["image_size"]), int(self.spec["image_size"]))

    def check_images(self, images: Any) -> np.ndarray:
        """``images`` as uint8 ``[N, C, S, S]``; GanError naming the shape or values otherwise."""
        x = np.asarray(images)
        if x.ndim == 3 and self.image_shape[0] == 1 and x.shape[1:] == self.image_shape[1:]:
            x = x[:, None]  # [N, S, S] grayscale
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape or len(x) == 0:
            raise GanError(f"images have shape {list(x.shape)}; send [N, {', '.join(map(str, self.image_shape))}] with N >= 1 (uint8, 0..255).")
        if x.dtype != np.uint8:
            if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all() or x.min() < 0 or x.max() > 255:
                raise GanError("images must hold pixel values from 0 to 255 (uint8); found values outside that range or not numbers.")
            x = np.rint(x).astype(np.uint8)
        return x

    def score(self, images: Any, batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float64 [N], is_anomaly bool [N])`` of uint8 images ``[N, C, S, S]``."""
        x = self.check_images(images)
        out = [self.score_model_range(torch.from_numpy(x[i : i + batch_size].astype(np.float32) / 127.5 - 1.0))
               for i in range(0, len(x), batch_size)]  # fmt: skip
        scores = np.concatenate(out).astype(np.float64)
        return scores, scores > self.threshold

    def score_model_range(self, x: torch.Tensor) -> np.ndarray:
        """Scores of images already in the model's range ``[-1, 1]`` (prepared data)."""
        return anomaly_scores(self.nets, self.spec, x).numpy()

    def predict(self, model_input: Any) -> dict[str, np.ndarray]:
        """``{"images": uint8 [N, C, S, S]}`` (or the array itself) -> ``{"score", "is_anomaly"}``."""
        images = model_input.get("images") if isinstance(model_input, dict) else model_input
        if isinstance(images, pd.DataFrame):
            raise MlflowException.invalid_parameter_value("send images as a tensor input: {\"inputs\": {\"images\": [N, C, S, S] uint8}}.")
        if images is None:
            raise MlflowException.invalid_parameter_value("the input holds no images; send {\"images\": [N, C, S, S] uint8}.")
        try:
            scores, flags = self.score(images)
        except GanError as err:  # the serving layer answers MlflowException with HTTP 400
            raise MlflowException.invalid_parameter_value(str(err)) from None
        return {"score": scores, "is_anomaly": flags}


def signature(spec: dict[str, Any]) -> ModelSignature:
    """The pyfunc signature: uint8 images in; float64 scores and bool flags out."""
    shape = (-1, int(spec["channels"]), int(spec["image_size"]), int(spec["image_size"]))
    inputs = Schema([TensorSpec(np.dtype(np.uint8), shape, "images")])
    outputs = Schema([TensorSpec(np.dtype(np.float64), (-1,), "score"), TensorSpec(np.dtype(np.bool_), (-1,), "is_anomaly")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Two images: black and mid-grey."""
    c, s = int(spec["channels"]), int(spec["image_size"])
    images = np.zeros((2, c, s, s), np.uint8)
    images[1] = 128
    return {"images": images}


Runner = DetectRunner
