"""Turn one raw image into a training array: resize + centre-crop, channels, scale to [-1, 1].

    x = to_array(Image.open("cat.png"), image_size=32, channels=3)   # float32 [3, 32, 32]
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def to_pil(raw: Image.Image | np.ndarray) -> Image.Image:
    """Accept a PIL image or a uint8 ``[H, W]`` / ``[H, W, C]`` array."""
    if isinstance(raw, Image.Image):
        return raw
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    return Image.fromarray(np.ascontiguousarray(raw))


def to_array(raw: Image.Image | np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """float32 ``[C, S, S]`` in [-1, 1]: shorter side resized to S, centre-cropped (PIL's ImageOps.fit)."""
    img = to_pil(raw)
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (image_size, image_size):
        img = ImageOps.fit(img, (image_size, image_size), method=Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]  # [1, S, S]
    else:
        arr = arr.transpose(2, 0, 1)  # [H, W, C] -> [C, H, W]
    return arr / 127.5 - 1.0
