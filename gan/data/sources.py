"""Raw data sources for the prepare stage, each listed cheaply before any image is decoded.

A source is a list of :class:`Item` (how to load one image, its label, a name for
messages) plus the class names. Listing first lets prepare compute the split from
labels alone and then decode images in bounded chunks, so memory does not grow
with the data set.

    items, class_names = list_source(cfg)      # cfg: gan.config.PrepareConfig
    items, class_names = list_source(cfg, ignored)   # files left out are appended to `ignored`

The image-folder layout rule: each non-hidden sub-folder of ``prepare.path`` is a class
and holds that class's images at any depth (sub-folders of a class folder belong to
it); without sub-folders the images directly in ``prepare.path`` are one unlabelled
set. Files beside class folders (at the root of a labelled layout) and hidden files or
folders are not images of any class: they are left out, counted and listed in the
manifest's ``ignored`` with the reason, never dropped silently.
"""

from __future__ import annotations

import functools
import io
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gan.config import PrepareConfig
from gan.data.captions import check_captions, read_captions_csv
from gan.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True, slots=True)  # slots: a folder of 200,000 files lists 200,000 of these
class Item:
    """One raw example: ``load()`` returns a PIL image or an ``[H, W]`` / ``[H, W, C]`` array."""

    name: str
    label: int | None
    load: Callable[[], Image.Image | np.ndarray]
    # domain sources only: the digit class and the same content under every domain
    content: int | None = None
    oracle: Callable[[], np.ndarray] | None = None
    # prepare.captions.source file / npz: the image's caption, known before decoding
    caption: str | None = None
    # image folders: the file ``load`` opens (prepare.engine ray opens it in a Ray task)
    file: str | None = None


def list_source(cfg: PrepareConfig, ignored: list[dict[str, str]] | None = None) -> tuple[Sequence[Item], list[str]]:
    """Return the items of ``cfg.source`` and its class names ([] when unlabelled).

    Files of the source that are not used (image folders only) are appended to
    ``ignored`` as ``{"file", "reason"}``.
    """
    from gan.data.domains import digits_domains, domain_folders

    if cfg.source == "image_folder":
        return _image_folder(cfg, ignored if ignored is not None else [])
    from gan.data.photos import photo_patches

    listers = {"digits": _digits, "photos": _photos, "photo_patches": photo_patches, "npz": _npz, "torchvision": _torchvision,
               "digits_domains": digits_domains, "domains": domain_folders}  # fmt: skip
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


def is_uri(path: str) -> bool:
    """Whether ``prepare.path`` names a remote or pyarrow file system (``s3://``, ``gs://``, ``file://``)."""
    return "://" in path


def _image_folder(cfg: PrepareConfig, ignored: list[dict[str, str]]) -> tuple[Sequence[Item], list[str]]:
    """``root/<class>/**/*.png`` (labelled) or ``root/*.png`` (unlabelled); see the layout rule above."""
    if is_uri(cfg.path):
        from gan.data.remote import remote_image_files

        if cfg.captions.source == "file":
            raise DataError(f"prepare.captions.source: file reads a captions.csv beside a local image folder, but prepare.path is {cfg.path}; "
                            "copy the folder locally (dvc import-url) or give the captions in an npz.")  # fmt: skip
        return remote_image_files(cfg.path, ignored)
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"prepare.path: {root} is not a directory; point it at a folder of images (one sub-folder per class, or flat).")
    items, class_names = _image_files(root, ignored, _captions_file(cfg))
    if cfg.captions.source == "file":
        names = [Path(it.name).relative_to(root).as_posix() for it in items]
        captions = read_captions_csv(_captions_file(cfg), names)
        items = [replace(it, caption=c) for it, c in zip(items, captions, strict=True)]
    return items, class_names


def _captions_file(cfg: PrepareConfig) -> Path | None:
    """The captions CSV of source ``file`` (default ``captions.csv`` in the image folder), else None."""
    if cfg.captions.source != "file":
        return None
    return Path(cfg.captions.path) if cfg.captions.path else Path(cfg.path) / "captions.csv"


class FileList(Sequence[Item]):
    """The items of an image folder, kept as one UTF-8 buffer of file names and an array of labels.

        items = FileList.build([(files_of_class_0, 0), (files_of_class_1, 1)])
        items[3], len(items), [it.label for it in items]      # Items made on demand

    An :class:`Item` per file (with its ``load`` partial) costs about 370 bytes: 75 MB for a
    folder of 200,000 files, held for the whole stage. Here a file costs its name's bytes
    plus 12 (an end offset and a label), so prepare's memory barely grows with the folder.
    :meth:`arrow_names` hands the names to Ray Data without a Python object per file.
    """

    def __init__(self, blob: bytes, ends: np.ndarray, labels: np.ndarray | None) -> None:
        self._blob, self._ends, self._labels = blob, ends, labels

    @classmethod
    def build(cls, chunks: Iterable[tuple[list[str], int | None]]) -> FileList:
        """One chunk (a class folder's sorted files, and its label or None) at a time, in order."""
        blob, ends, labels, end, labelled = bytearray(), array("q"), array("i"), 0, True
        for files, label in chunks:
            for f in files:
                name = f.encode("utf-8", "surrogateescape")  # any name the file system gave us round-trips
                blob += name
                end += len(name)
                ends.append(end)
            labels.extend([-1 if label is None else label] * len(files))
            labelled = labelled and label is not None
        return cls(bytes(blob), np.frombuffer(ends, dtype=np.int64), np.frombuffer(labels, dtype=np.int32) if labelled else None)

    def __len__(self) -> int:
        return len(self._ends)

    def name(self, i: int) -> str:
        start = int(self._ends[i - 1]) if i > 0 else 0
        return self._blob[start : int(self._ends[i])].decode("utf-8", "surrogateescape")

    def __getitem__(self, i: int) -> Item:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return _file_item(self.name(i), None if self._labels is None else int(self._labels[i]))

    def __iter__(self) -> Iterator[Item]:
        start, chunk = 0, 4096  # offsets converted a chunk at a time: no list of N ints
        for first in range(0, len(self), chunk):
            ends = self._ends[first : first + chunk].tolist()
            labels = self._labels[first : first + chunk].tolist() if self._labels is not None else [None] * len(ends)
            for end, label in zip(ends, labels, strict=True):
                yield _file_item(self._blob[start:end].decode("utf-8", "surrogateescape"), label)
                start = end

    def arrow_names(self) -> Any:
        """The file names as a pyarrow ``large_string`` array over this list's buffer (no copy)."""
        import pyarrow as pa

        offsets = np.concatenate([np.zeros(1, np.int64), self._ends])
        return pa.LargeStringArray.from_buffers(len(self), pa.py_buffer(offsets), pa.py_buffer(self._blob))


def _image_files(root: Path, ignored: list[dict[str, str]], captions: Path | None) -> tuple[Sequence[Item], list[str]]:
    """The items of the folder ``root`` by the layout rule; the captions file is no image, nor ignored."""
    # the captions CSV usually sits in the image folder: it is data of the folder, not an image
    skip = captions.resolve() if captions is not None else None
    entries = [p for p in sorted(root.iterdir()) if skip is None or p.resolve() != skip]
    class_dirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    if class_dirs:
        for p in entries:
            if p not in class_dirs:
                ignored.append({"file": str(p), "reason": _why_ignored(p, "beside the class folders, so in no class")})

        def class_files() -> Iterator[tuple[list[str], int]]:  # one class folder's names in memory at a time
            for label, folder in enumerate(class_dirs):
                files = _files_below(folder, ignored, skip)
                if not files:
                    raise DataError(f"class folder {folder} has no images; add PNG/JPEG/WebP files or remove the folder.")
                yield files, label

        return FileList.build(class_files()), [d.name for d in class_dirs]
    files = _files_below(root, ignored, skip)
    if not files:
        raise DataError(f"prepare.path: {root} contains no PNG/JPEG/WebP images; add images or fix the path.")
    return FileList.build([(files, None)]), []


def _files_below(folder: Path, ignored: list[dict[str, str]], skip: Path | None = None) -> list[str]:
    """Every non-hidden regular file at any depth below ``folder``, sorted by path (as strings:
    a ``Path`` per file of a 200,000-file folder would cost tens of MB at once).

    Non-images are kept so the decoder reports them by name; hidden entries (``.DS_Store``,
    ``.ipynb_checkpoints``) and what is not a regular file are recorded in ``ignored``;
    ``skip`` (the captions file, resolved) is left out.
    """
    files: list[str] = []
    for p in sorted(folder.iterdir()):
        if skip is not None and p.resolve() == skip:
            continue
        if p.name.startswith("."):
            ignored.append({"file": str(p), "reason": _why_ignored(p, "hidden")})
        elif p.is_dir():
            files += _files_below(p, ignored, skip)
        elif p.is_file():
            files.append(str(p))
        else:
            ignored.append({"file": str(p), "reason": "not a regular file"})
    return files


def _why_ignored(path: Path, why: str) -> str:
    return f"{'folder' if path.is_dir() else 'file'} {why}"


def _npz(cfg: PrepareConfig) -> tuple[list[Item], list[str]]:
    """Arrays ``x`` [N, H, W] or [N, H, W, C] (uint8 0..255 or float 0..1) and optional ``y`` [N]."""
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"prepare.path: {path} does not exist; point it at an .npz file with arrays x and optional y.")
    want_captions = cfg.captions.source == "npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            # captions are read only when used: an object array there cannot load without pickle
            arrays = {k: npz[k] for k in npz.files if k != "captions" or want_captions}
    except Exception as err:
        raise DataError(f"{path} cannot be read as .npz ({type(err).__name__}); write it with numpy.savez(x=..., y=...) "
                        "and captions as a str array (np.array(captions, dtype=str)).") from None  # fmt: skip
    if "x" not in arrays:
        raise DataError(f"{path} has no array 'x' (found: {', '.join(arrays) or 'none'}); save images as x.")
    x = _check_x(arrays["x"], path)
    labels, names = _check_y(arrays.get("y"), len(x), path)
    captions = _check_npz_captions(arrays.get("captions"), len(x), path) if want_captions else [None] * len(x)
    items = [Item(f"{path.name}[{i}]", None if labels is None else int(labels[i]), _const(x[i]), caption=captions[i]) for i in range(len(x))]
    return items, names


def _check_npz_captions(captions: np.ndarray | None, n: int, path: Path) -> list[str]:
    if captions is None:
        raise DataError(f"{path} has no array 'captions', which prepare.captions.source npz reads; save one str per image as captions.")
    if captions.shape != (n,):
        raise DataError(f"{path}: captions has shape {captions.shape}; expected ({n},), one caption per image of x.")
    return check_captions(captions, f"{path}: captions")


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


def open_image(path: Path | str) -> Image.Image:
    """The decoded image at ``path``, a local path or a URI (decoded now, so that a truncated file fails here, by name)."""
    if isinstance(path, str) and is_uri(path):
        from gan.data.remote import read_bytes

        source: Any = io.BytesIO(read_bytes(path))
    else:
        source = path
    with Image.open(source) as img:
        img.load()
        return img.copy()


def _file_item(name: str, label: int | None) -> Item:
    """The item of one image file: one string for its name and file, no Path kept (memory per file)."""
    return Item(name, label, functools.partial(open_image, name), file=name)
