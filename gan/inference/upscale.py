"""The ``upscale`` task's inference: low-res image -> high-res image, in overlapping tiles.

    runner = UpscaleRunner("models/generator")           # or what the pyfunc loads from a version
    hr = runner.upscale(img)                             # uint8 [H, W] or [H, W, C] -> [H*s, W*s(, C)]
    runner.predict(batch)                                # uint8 [N, h, w, C] -> {"images": [N, h*s, w*s, C]}

An image of any size is cut into ``tile`` x ``tile`` low-resolution tiles, each read with
``overlap`` extra pixels on every side that has neighbours; G runs on one padded tile at a
time and only the tile's own part of the output is kept. Memory is the output buffer plus
one tile, whatever the image size, and the seams match whole-image inference up to what
lies beyond ``overlap`` pixels in G's receptive field (a small tolerance, tested).

Grayscale and RGB both work with either kind of model: a grayscale image through an RGB
model is repeated to three channels and the output averaged back; an RGB image through a
grayscale model is upscaled channel by channel. Inputs must be 8-bit (uint8), without an
alpha channel, at least ``MIN_SIDE`` pixels on each side. This module travels with every
registered version of an upscale model, so it imports nothing from the training side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from gan.errors import GanError
from gan.export import load_networks

DEFAULT_TILE = 128  # low-resolution pixels per tile side
DEFAULT_OVERLAP = 16  # context read around each tile (BasicSR's tile_pad is 10)
MIN_SIDE = 4  # G's 3x3 convolutions and the bicubic skip need a few pixels of context
MAX_REQUEST_PIXELS = 16_000_000  # one HTTP request's output is held in memory


def check_image(img: np.ndarray, name: str = "the image") -> np.ndarray:
    """``img`` as uint8 ``[H, W, C]`` (C 1 or 3), or GanError saying what is wrong with it, in one sentence."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        bits = f"{img.dtype.itemsize * 8}-bit " if img.dtype.kind in "ui" else ""
        raise GanError(f"{name} is a {bits}{img.dtype} image; convert it to 8-bit (uint8, 0..255) first.")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise GanError(f"{name} has shape {list(img.shape)}; expected [H, W] or [H, W, C].")
    if img.shape[-1] == 4 or img.shape[-1] == 2:
        raise GanError(f"{name} has an alpha channel; flatten it onto a background (RGB or grayscale) first.")
    if img.shape[-1] not in (1, 3):
        raise GanError(f"{name} has {img.shape[-1]} channels; expected 1 (grayscale) or 3 (RGB).")
    if min(img.shape[:2]) < MIN_SIDE:
        raise GanError(f"{name} is {img.shape[1]}x{img.shape[0]} pixels; upscaling needs at least {MIN_SIDE}x{MIN_SIDE}.")
    return img


def tiles(height: int, width: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """``(top, left, bottom, right)`` of each tile of a ``height`` x ``width`` image, row by row."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield top, left, min(top + tile, height), min(left + tile, width)


class UpscaleRunner:
    """The upscale task's inference over an exported model directory; see the module docstring."""

    def __init__(self, model_dir: str, device: str | torch.device = "cpu") -> None:
        self.nets, self.spec = load_networks(model_dir, device)
        self.G = self.nets["G"]
        self.scale = int(self.spec["scale"])
        self.channels = int(self.spec["channels"])
        self.device = torch.device(device)

    def check_scale(self, scale: int | None) -> None:
        """GanError when ``scale`` is given and is not the factor the model was trained for."""
        if scale is not None and int(scale) != self.scale:
            raise GanError(f"scale = {scale} is not what this model was trained for (x{self.scale}); pass --scale {self.scale} or use a x{scale} model.")

    @torch.inference_mode()
    def run_tile(self, lr: np.ndarray, G: torch.nn.Module | None = None) -> np.ndarray:
        """uint8 ``[h, w, C]`` (C = the model's channels) -> uint8 ``[h*s, w*s, C]``: one forward pass."""
        x = torch.from_numpy(np.array(lr, dtype=np.uint8)).to(self.device).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # [1, C, h, w]
        y = (G or self.G)(x)[0].clamp(-1, 1)  # [C, h*s, w*s]
        return ((y + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    def upscale(self, img: np.ndarray, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, name: str = "the image",
                G: torch.nn.Module | None = None) -> np.ndarray:  # fmt: skip
        """uint8 ``[H, W]`` or ``[H, W, C]`` -> the same layout ``scale`` times larger, in overlapping tiles."""
        if tile < 1 or overlap < 0:
            raise GanError(f"tile = {tile}, overlap = {overlap} are invalid; use tile >= 1 and overlap >= 0.")
        flat = np.asarray(img).ndim == 2
        img = check_image(img, name)
        c_in = img.shape[-1]
        if c_in == self.channels:
            out = self._tiled(img, tile, overlap, G)
        elif c_in == 1:  # grayscale through an RGB model: repeat, upscale, average back
            out = self._tiled(np.repeat(img, 3, axis=-1), tile, overlap, G).mean(-1, keepdims=True).round().astype(np.uint8)
        else:  # RGB through a grayscale model: channel by channel
            out = np.concatenate([self._tiled(img[..., k : k + 1], tile, overlap, G) for k in range(c_in)], axis=-1)
        return out[..., 0] if flat else out

    def _tiled(self, img: np.ndarray, tile: int, overlap: int, G: torch.nn.Module | None) -> np.ndarray:
        s, (h, w, c) = self.scale, img.shape
        out = np.empty((h * s, w * s, c), dtype=np.uint8)  # the only buffer that grows with the image

        def put(top: int, left: int, part: np.ndarray) -> None:
            out[top : top + part.shape[0], left : left + part.shape[1]] = part

        self.stream_tiles(img, put, tile, overlap, G)
        return out

    def stream_tiles(self, img: np.ndarray, sink: Callable[[int, int, np.ndarray], None], tile: int = DEFAULT_TILE,
                     overlap: int = DEFAULT_OVERLAP, G: torch.nn.Module | None = None) -> None:  # fmt: skip
        """Upscale uint8 ``img [H, W, C]`` (C = the model's channels) tile by tile: ``sink(top, left, part)``
        receives each output tile's own part (``[t*s, t*s, C]``) at its place in the output."""
        s, (h, w, _) = self.scale, img.shape
        for top, left, bottom, right in tiles(h, w, tile):
            t, l_ = max(top - overlap, 0), max(left - overlap, 0)
            b, r = min(bottom + overlap, h), min(right + overlap, w)
            padded = self.run_tile(img[t:b, l_:r], G)  # [(b-t)*s, (r-l)*s, C]
            sink(top * s, left * s, padded[(top - t) * s : (bottom - t) * s, (left - l_) * s : (right - l_) * s])

    def predict(self, model_input: Any) -> dict[str, np.ndarray]:
        """uint8 ``[N, h, w, C]`` (or one ``[h, w, C]`` image) -> ``{"images": uint8 [N, h*s, w*s, C]}``."""
        if isinstance(model_input, pd.DataFrame):
            raise MlflowException.invalid_parameter_value("send images as a uint8 tensor [N, h, w, C] ({'inputs': ...}), not a table.")
        batch = np.asarray(model_input)
        if batch.ndim == 3:
            batch = batch[None]
        try:
            if batch.ndim != 4 or len(batch) == 0:
                raise GanError(f"the input has shape {list(batch.shape)}; send uint8 images [N, h, w, C].")
            if batch.shape[0] * batch.shape[1] * batch.shape[2] * self.scale**2 > MAX_REQUEST_PIXELS:
                raise GanError(f"the request asks for more than {MAX_REQUEST_PIXELS} output pixels; split it or use `gan upscale`.")
            return {"images": np.stack([self.upscale(x, name=f"image {i}") for i, x in enumerate(batch)])}
        except GanError as err:  # the serving layer answers MlflowException with HTTP 400
            raise MlflowException.invalid_parameter_value(str(err)) from None


def signature(spec: dict[str, Any]) -> ModelSignature:
    """The pyfunc signature: uint8 images ``[N, h, w, C]`` in, ``[N, h*s, w*s, C]`` out."""
    c = int(spec["channels"])
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, c))]),
                          outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, c), "images")]))  # fmt: skip


def input_example(spec: dict[str, Any]) -> np.ndarray:
    """One small 16x16 gradient image (uint8 ``[1, 16, 16, C]``)."""
    c = int(spec["channels"])
    ramp = np.linspace(0, 255, 16, dtype=np.float32)
    img = (ramp[:, None] + ramp[None, :]) / 2  # [16, 16]
    return np.repeat(img.round().astype(np.uint8)[None, :, :, None], c, axis=-1)


Runner = UpscaleRunner
