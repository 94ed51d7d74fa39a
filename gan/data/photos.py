"""Photographs bundled inside installed packages: an embedded image source with no download.

    from gan.data.photos import PHOTOS, load_photo
    img = load_photo("astronaut")          # uint8 [H, W, 3] (grayscale photos repeated to RGB)

``prepare.source: photos`` lists them whole and unlabelled (super-resolution cuts its own
pairs); ``prepare.source: photo_patches`` cuts labelled RGB patches from them, one class
per photograph (:func:`photo_patches`), the embedded RGB default of the ``generate`` task.
Both read scikit-image's ``skimage.data``
images that ship inside its wheel and scikit-learn's ``load_sample_images`` (china,
flower). Images that ``skimage.data`` would fetch with pooch (eagle, kidney, lily,
skin, ...) are left out, so the source works offline. The list mixes colour photos
with grayscale textures (brick, grass, gravel: the high frequencies super-resolution
has to restore); synthetic images (colorwheel, logo, text) are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

# the names live in config, which checks prepare.patches.photos against them
from gan.config import GRAY_PHOTOS, PHOTOS, RGB_PHOTOS, SKLEARN_PHOTOS

if TYPE_CHECKING:
    from gan.config import PrepareConfig

__all__ = ["GRAY_PHOTOS", "PHOTOS", "RGB_PHOTOS", "SKLEARN_PHOTOS", "load_photo", "photo_loader", "photo_patches"]


def load_photo(name: str) -> np.ndarray:
    """The bundled photograph ``name`` as uint8 ``[H, W, 3]`` (a grayscale one repeated to three channels)."""
    if name not in PHOTOS:
        raise ValueError(f"unknown bundled photo {name!r}; known: {', '.join(PHOTOS)}")
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        img = np.asarray(load_sample_image(f"{name}.jpg"))
    else:
        import skimage.data

        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity); the left view
            img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def photo_loader(name: str) -> Callable[[], np.ndarray]:
    """A loader for :class:`gan.data.sources.Item` (decoding waits until prepare asks)."""
    return lambda: load_photo(name)


@lru_cache(maxsize=32)
def resized_photo(name: str, short_side: int) -> np.ndarray:
    """The bundled photograph ``name`` resized (Lanczos) so that its short side is ``short_side``: uint8 ``[H, W, 3]``."""
    from PIL import Image

    img = Image.fromarray(load_photo(name))
    scale = short_side / min(img.size)
    size = (max(short_side, round(img.width * scale)), max(short_side, round(img.height * scale)))
    return np.asarray(img.resize(size, Image.Resampling.LANCZOS))


def patch_loader(name: str, short_side: int, size: int, u: float, v: float) -> Callable[[], np.ndarray]:
    """A loader of one ``size`` x ``size`` patch at relative position ``(u, v)`` in [0, 1) of the resized photo."""

    def load() -> np.ndarray:
        img = resized_photo(name, short_side)
        top = int(u * (img.shape[0] - size + 1))
        left = int(v * (img.shape[1] - size + 1))
        return img[top : top + size, left : left + size]

    return load


def photo_patches(cfg: PrepareConfig) -> tuple[list[Any], list[str]]:
    """``prepare.source: photo_patches``: ``patches.per_photo`` random ``image_size`` patches of each photo, labelled by photo.

    Positions are drawn from ``prepare.seed`` and the photo's index (deterministic, and
    drawn before any photo is decoded, as every source lists first).

        prepare: {source: photo_patches, image_size: 32, channels: 3, patches: {photos: [chelsea, coffee], per_photo: 500}}
    """
    from gan.data.sources import Item

    pc = cfg.patches
    items = []
    for label, name in enumerate(pc.photos):
        rng = np.random.default_rng([cfg.seed, label])
        for i, (u, v) in enumerate(rng.random((pc.per_photo, 2))):
            items.append(Item(f"photo_patches[{name}][{i}]", label, patch_loader(name, pc.short_side, cfg.image_size, float(u), float(v))))
    return items, list(pc.photos)
