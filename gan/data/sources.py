"""Raw data sources for the prepare stage, each listed cheaply before any image is decoded.

A source is a list of :class:`Item` (how to load one image, its label, a name for
messages) plus the class names. Listing first lets prepare compute the split from
labels alone and then decode images in bounded chunks, so memory does not grow
with the data set.

    items, class_names = list_source(cfg)      # cfg: gan.config.PrepareConfig
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gan.config import PrepareConfig
from gan.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class Item:
    """One raw example: ``load()`` returns a PIL image or an ``[H, W]`` / ``[H, W, C]`` array."""

    name: str
    label: int | None
    load: Callable[[], Image.Image | np.ndarray]


def list_source(cfg: PrepareConfig) -> tuple[list[Item], list[str]]:
    """Return the items of ``cfg.source`` and its class names ([] when unlabelled)."""
    listers = {"digits": _digits, "photos": _photos, "image_folder": _image_folder, "npz": _npz, "torchvision": _torchvision}
    return listers[cfg.source](cfg)


def _digits(cfg: PrepareConfig) -> tuple[list[Item], list[str]]:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16): no download."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)  # [N, 8, 8]
    items = [Item(f"digits[{i}]", int(t), _const(images[i])) for i, t in enumerate(bunch.target)]
    return items, [str(c) for c in bunch.target_names]


def _photos(cfg: PrepareConfig) -> tuple[list[Item], list[str]]:
    """The photographs bundled in scikit-image and scikit-learn (:mod:`gan.data.photos`), unlabelled: no download."""
    from gan.data.photos import PHOTOS, photo_loader

    return [Item(f"photos[{name}]", None, photo_loader(name)) for name in PHOTOS], []


def _image_folder(cfg: PrepareConfig) -> tuple[list[Item], list[str]]:
    """``root/<class>/*.png`` (labelled) or ``root/*.png`` (unlabelled)."""
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"prepare.path: {root} is not a directory; point it at a folder of images (one sub-folder per class, or flat).")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_dirs:
        items: list[Item] = []
        for label, folder in enumerate(class_dirs):
            files = _files_in(folder)
            if not files:
                raise DataError(f"class folder {folder} has no images; add PNG/JPEG/WebP files or remove the folder.")
            items += [Item(str(f), label, _opener(f)) for f in files]
        return items, [d.name for d in class_dirs]
    files = _files_in(root)
    if not files:
        raise DataError(f"prepare.path: {root} contains no PNG/JPEG/WebP images; add images or fix the path.")
    return [Item(str(f), None, _opener(f)) for f in files], []


def _files_in(folder: Path) -> list[Path]:
    """Every non-hidden regular file: non-images are kept so the decoder reports them by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _npz(cfg: PrepareConfig) -> tuple[list[Item], list[str]]:
    """Arrays ``x`` [N, H, W] or [N, H, W, C] (uint8 0..255 or float 0..1) and optional ``y`` [N]."""
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"prepare.path: {path} does not exist; point it at an .npz file with arrays x and optional y.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:
        raise DataError(f"{path} cannot be read as .npz ({type(err).__name__}); write it with numpy.savez(x=..., y=...).") from None
    if "x" not in arrays:
        raise DataError(f"{path} has no array 'x' (found: {', '.join(arrays) or 'none'}); save images as x.")
    x = _check_x(arrays["x"], path)
    labels, names = _check_y(arrays.get("y"), len(x), path)
    items = [Item(f"{path.name}[{i}]", None if labels is None else int(labels[i]), _const(x[i])) for i in range(len(x))]
    return items, names


def _check_x(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)) or len(x) == 0:
        raise DataError(f"{path}: x has shape {x.shape}; expected (N, H, W) or (N, H, W, C) with C 1 or 3 and N > 0.")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: x has dtype {x.dtype}; expected uint8 (0..255) or float (0..1).")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: x contains NaN or inf values; clean the array before preparing it.")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
        raise DataError(f"{path}: x values range over [{lo:g}, {hi:g}]; expected 0..1 (float) or 0..255.")
    scale = 255.0 if hi <= 1.0 else 1.0
    return (x.astype(np.float64) * scale).round().astype(np.uint8)


def _check_y(y: np.ndarray | None, n: int, path: Path) -> tuple[np.ndarray | None, list[str]]:
    if y is None:
        return None, []
    if y.shape != (n,):
        raise DataError(f"{path}: y has shape {y.shape}; expected ({n},) to match x.")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise DataError(f"{path}: y must hold integer class labels; found NaN, inf or fractional values.")
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y has dtype {y.dtype}; expected integer class labels.")
    if (y < 0).any():
        raise DataError(f"{path}: y contains negative label {int(y.min())}; labels must be 0..K-1.")
    values = np.unique(y)
    # labels become 0..K-1 in sorted order; the original values are kept as class names
    remap = {int(v): i for i, v in enumerate(values)}
    return np.array([remap[int(v)] for v in y], dtype=np.int64), [str(int(v)) for v in values]


def _torchvision(cfg: PrepareConfig) -> tuple[list[Item], list[str]]:
    """A torchvision data set whose files are already under ``path``; never downloads."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cfg.torchvision_class or "", None)
    if cls is None or not isinstance(cls, type):
        raise ConfigError(f"prepare.torchvision_class = {cfg.torchvision_class!r} is not a torchvision data set; use e.g. MNIST, FashionMNIST, CIFAR10.")
    try:
        try:
            ds = cls(root=cfg.path, train=True, download=False)
        except TypeError:
            ds = cls(root=cfg.path, download=False)
    except (RuntimeError, FileNotFoundError, OSError) as err:
        raise DataError(f"{cfg.torchvision_class} files are not under {cfg.path} ({str(err).splitlines()[0][:120]}); place them there first (this pipeline never downloads).") from None
    names = [str(c) for c in getattr(ds, "classes", [])]
    items = [Item(f"{cfg.torchvision_class}[{i}]", None, _tv_loader(ds, i)) for i in range(len(ds))]
    targets = getattr(ds, "targets", None)
    if targets is not None:
        items = [Item(it.name, int(t), it.load) for it, t in zip(items, list(targets), strict=True)]
    return items, names if targets is not None else []


def _tv_loader(ds, i: int) -> Callable[[], Image.Image]:
    return lambda: ds[i][0]


def _const(array: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: array


def _opener(path: Path) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        with Image.open(path) as img:
            img.load()  # decode now so a truncated file fails here, by name
            return img.copy()

    return load
