"""Writing a synthetic stream to disk, atomically: ``samples.npz`` or an image folder, with metadata.json.

    write_dataset(stream, "synth/", "npz")            # x: uint8 [N, C, H, W], y: int64 [N]
    write_dataset(stream, "synth/", "image_folder")   # <class name>/<index>.png
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gan.atomic import atomic_dir
from gan.augment.stream import SyntheticStream
from gan.errors import GanError

FORMATS = ("image_folder", "npz")
NPZ_NAME = "samples.npz"
METADATA = "metadata.json"


# ---------------------------------------------------------------- writers


class NpzWriter:
    """Stream batches into ``samples.npz`` (x uint8 [N, C, H, W], y int64 [N]) without holding them.

    An .npz is a zip of .npy files: ``x.npy`` is written member by member as batches
    arrive (its header needs only the final shape, known up front); labels go to a raw
    side file that becomes ``y.npy`` at the end, since a zip takes one member at a time.
    """

    def __init__(self, folder: Path, n: int, image_shape: Sequence[int]) -> None:
        self.n, self.count = n, 0
        self.zip = zipfile.ZipFile(folder / NPZ_NAME, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.x = self.zip.open("x.npy", "w", force_zip64=True)
        np.lib.format.write_array_header_1_0(self.x, {"descr": "|u1", "fortran_order": False, "shape": (n, *image_shape)})
        self.y_path = folder / ".labels.raw"
        self.y = open(self.y_path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x.write(memoryview(np.ascontiguousarray(x, dtype=np.uint8)).cast("B"))
        self.y.write(np.ascontiguousarray(y, dtype="<i8").tobytes())
        self.count += len(x)

    def close(self) -> None:
        if self.count != self.n:
            raise RuntimeError(f"wrote {self.count} samples, expected {self.n}")
        self.x.close()
        self.y.close()
        with self.zip.open("y.npy", "w", force_zip64=True) as out, open(self.y_path, "rb") as raw:
            np.lib.format.write_array_header_1_0(out, {"descr": "<i8", "fortran_order": False, "shape": (self.n,)})
            shutil.copyfileobj(raw, out, 1 << 20)
        self.zip.close()
        self.y_path.unlink()

    def abort(self) -> None:
        """Release the files after a failed write (e.g. a full disk); the folder is discarded."""
        for close in (self.x.close, self.y.close, self.zip.fp.close if self.zip.fp else None):
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        self.zip._writing, self.zip.fp = False, None  # nothing more goes into this zip; __del__ stays quiet


class ImageFolderWriter:
    """One PNG per sample: ``<class name>/<index>.png``, or ``<index>.png`` when unconditional."""

    def __init__(self, folder: Path, class_names: Sequence[str], conditional: bool) -> None:
        self.folder, self.index = folder, 0
        self.dirs = [folder / safe_name(name, i) for i, name in enumerate(class_names)] if conditional else []
        for d in self.dirs:
            d.mkdir()

    def write(self, x: np.ndarray, y: np.ndarray) -> None:
        from PIL import Image

        for image, label in zip(x, y, strict=True):
            folder = self.dirs[label] if self.dirs else self.folder
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)  # [H, W] or [H, W, 3]
            Image.fromarray(np.ascontiguousarray(pixels)).save(folder / f"{self.index:08d}.png", compress_level=1)
            self.index += 1

    def close(self) -> None:
        for d in self.dirs:  # classes that got no samples (labels restricted) leave no empty folder
            if not any(d.iterdir()):
                d.rmdir()

    def abort(self) -> None:
        """Nothing is held open between images."""


def safe_name(name: str, index: int) -> str:
    """A class name usable as a folder name (path separators and dots-only names replaced)."""
    cleaned = re.sub(r"[/\\\x00]", "_", str(name)).strip()
    return cleaned if cleaned.strip(".") else f"class_{index}"


def write_stream(batches: Iterator[tuple[np.ndarray, np.ndarray]], writer: Any, total: int, progress: bool = True) -> None:
    """Generate the next batch while the previous one is written (at most two batches held)."""
    from tqdm import tqdm

    try:
        with ThreadPoolExecutor(max_workers=1) as pool, tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True) as bar:
            pending: Future | None = None
            for x, y in batches:
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write, x, y)
                bar.update(len(x))
            if pending is not None:
                pending.result()
        writer.close()
    except BaseException:
        writer.abort()
        raise


def write_dataset(stream: SyntheticStream, out: str | os.PathLike, fmt: str, progress: bool = True) -> Path:
    """Write ``stream`` to ``out`` in ``fmt`` atomically, with ``metadata.json``; return ``out``."""
    import json

    if fmt not in FORMATS:
        raise GanError(f"format {fmt!r} is unknown; use one of {', '.join(FORMATS)}.")
    # under the output's lock: a job writing the same --out excludes this one, and one that
    # finished since the command's first check has made the output non-empty
    with atomic_dir(out, check=check_output_dir) as tmp:
        check_fits(Path(out), estimate_bytes(stream.n, stream.image_shape, fmt, len(stream.class_names)), stream.n, fmt)
        if fmt == "npz":
            writer: Any = NpzWriter(tmp, stream.n, stream.image_shape)
        else:
            writer = ImageFolderWriter(tmp, stream.class_names, stream.conditional)
        write_stream(iter(stream), writer, stream.n, progress)
        (tmp / METADATA).write_text(json.dumps({**stream.metadata(), "format": fmt}, indent=2, sort_keys=True) + "\n")
    return Path(out)


# What an image_folder sample costs beyond its pixels: PNG signature and chunks (IHDR, IDAT,
# IEND), deflate's stored-block overhead, a filter byte per row; and the filesystem block it
# takes whatever its size (4 KiB on ext4, xfs and tmpfs). Deliberately a bound, not a guess:
# running out of space after hours is worse than asking for a smaller --num.
PNG_OVERHEAD = 128
BLOCK = 4096


def estimate_bytes(n: int, image_shape: Sequence[int], fmt: str, num_classes: int = 0) -> int:
    """An upper estimate of the bytes ``n`` samples of ``image_shape`` take on disk in ``fmt``."""
    c, h, w = (int(v) for v in image_shape)
    pixels = c * h * w
    if fmt == "npz":
        # x uint8, y int64 in the zip plus y's raw side file while writing, headers
        return n * (pixels + 16) + 64 * 1024
    per_file = pixels + h + PNG_OVERHEAD
    return n * (-(-per_file // BLOCK) * BLOCK) + (num_classes + 2) * BLOCK


def free_space(path: Path) -> tuple[int, int | None]:
    """(bytes, inodes) free to this user on the filesystem that would hold ``path``."""
    probe = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize, (st.f_favail if st.f_files else None)  # f_files 0: no inode limit (btrfs)


def check_fits(out: Path, need: int, n: int, fmt: str) -> None:
    """Refuse, before writing, a data set the filesystem of ``out`` cannot hold."""
    have, inodes = free_space(out)
    if need > have:
        smaller = ", use --format npz (smaller)" if fmt == "image_folder" else ""
        raise GanError(
            f"cannot write {out}: {n} samples as {fmt} need about {_size(need)} but only {_size(have)} are free there; "
            f"ask for fewer samples (--num){smaller} or choose another --out (nothing was written)."
        )
    if fmt == "image_folder" and inodes is not None and n + 2 > inodes:
        raise GanError(
            f"cannot write {out}: {n} samples as image_folder need {n} files but its filesystem has room for {inodes} more; "
            "ask for fewer samples (--num) or use --format npz (one file) (nothing was written)."
        )


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000
    return f"{nbytes:.1f} PB"


def check_output_dir(out: str | os.PathLike) -> None:
    """Refuse an output that exists and is not an empty directory (nothing is overwritten)."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise GanError(f"output {path} exists and is not empty; choose a new --out directory or remove it.")
