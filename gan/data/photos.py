"""Photographs bundled inside installed packages: an embedded image source with no download.

    from gan.data.photos import PHOTOS, load_photo
    img = load_photo("astronaut")          # uint8 [H, W, 3] (grayscale photos repeated to RGB)

``prepare.source: photos`` lists them (unlabelled): scikit-image's ``skimage.data``
images that ship inside its wheel and scikit-learn's ``load_sample_images`` (china,
flower). Images that ``skimage.data`` would fetch with pooch (eagle, kidney, lily,
skin, ...) are left out, so the source works offline. The list mixes colour photos
with grayscale textures (brick, grass, gravel: the high frequencies super-resolution
has to restore); synthetic images (colorwheel, logo, text) are left out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# name -> (package, loader name); every one loads from files inside the installed wheel
RGB_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle")
GRAY_PHOTOS = ("brick", "camera", "coins", "grass", "gravel", "moon")
SKLEARN_PHOTOS = ("china", "flower")
PHOTOS: tuple[str, ...] = RGB_PHOTOS + GRAY_PHOTOS + SKLEARN_PHOTOS


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
