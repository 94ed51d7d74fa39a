"""Labelled synthetic data from a registered generator, for downstream augmentation.

    gan augment --model models:/digits-gan@champion --num 100 --per-class \\
        --out synth/ --format image_folder --seed 0

    from gan.augment import generate
    stream = generate("models:/digits-gan@champion", 1000, labels=[3, 5], seed=0)
    stream.model.version                  # the alias is resolved once, here
    for images, labels in stream:         # uint8 [B, C, H, W], int64 [B], batch after batch
        ...
    x, y = stream.arrays()                # or everything at once (small n)

The alias is resolved to one concrete version when the job starts, and every sample
comes from that version (it is recorded in ``metadata.json``). Samples are streamed
in batches: memory stays flat for any N (latents are drawn in fixed blocks, labels
are cycled, nothing is accumulated), and the same seed gives the same samples
whatever the batch size. Outputs are written to a temporary directory that replaces
``--out`` only when complete.

    --format npz            DIR/samples.npz (x: uint8 [N, C, H, W], y: int64 [N]) + metadata.json
    --format image_folder   DIR/<class name>/<index>.png (flat for an unconditional G) + metadata.json

Both formats are what the prepare stage reads back (``source: npz`` / ``image_folder``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gan.atomic import atomic_dir
from gan.errors import GanError

FORMATS = ("image_folder", "npz")
DEFAULT_BATCH_SIZE = 500
NPZ_NAME = "samples.npz"
METADATA = "metadata.json"


@dataclass
class SyntheticStream:
    """``n`` samples of one resolved model version, iterated as (uint8 images, int64 labels) batches."""

    model: Any  # gan.registry.ModelRef: name, version, requested, uri
    n: int
    labels: list[int] | None
    seed: int
    truncation: float | None
    batch_size: int
    generator: Any = field(repr=False)  # gan.mlflow_model.GeneratorModel

    @property
    def class_names(self) -> list[str]:
        return list(self.generator.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.generator.image_shape)

    @property
    def conditional(self) -> bool:
        return self.generator.num_classes > 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.generator.iter_batches(self.n, self.labels, self.seed, self.truncation, self.batch_size)

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
) -> SyntheticStream:
    """Resolve ``model_uri`` once, load that version and return a stream of ``n`` samples.

    ``labels`` (class indices or class names) are cycled over the samples; all classes
    when omitted. ``seed`` None picks a random seed (recorded in the stream). Raises
    GanError for n <= 0, an unreachable tracking server, an unknown model, alias or label.
    """
    from gan.export import check_labels
    from gan.registry import load_model, resolve_model
    from gan.tracking import check_reachable, configure

    check_count(n)
    if batch_size <= 0:
        raise GanError(f"batch_size = {batch_size} is invalid; use a positive number such as {DEFAULT_BATCH_SIZE}.")
    configure()
    check_reachable(must_exist=True)
    ref = resolve_model(model_uri)
    model = load_model(ref)
    ids = label_ids(labels, model.class_names, model.num_classes) if labels else None
    check_labels(ids, model.num_classes)
    seed = int.from_bytes(os.urandom(4), "little") >> 1 if seed is None else int(seed)
    return SyntheticStream(model=ref, n=int(n), labels=ids, seed=seed, truncation=truncation, batch_size=batch_size, generator=model)


def check_count(n: int) -> None:
    """Raise GanError unless ``n`` is a positive whole number."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
        raise GanError(f"n = {n!r} is invalid; ask for at least one sample (a positive whole number).")


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


# ---------------------------------------------------------------- Classification Accuracy Score


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 images (0..255) -> float32 in [-1, 1], the prepared data's range."""
    return images.astype(np.float32) / 127.5 - 1.0


def real_slice(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` random rows of each class (all rows of a smaller class)."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(y == k))[:per_class] for k in np.unique(y)]
    return np.sort(np.concatenate(picks))


def small_classifier(channels: int, num_classes: int) -> Any:
    """Two 3x3 conv blocks and a linear layer: ``[N, C, S, S] -> logits [N, K]`` for any S >= 8.

    Deliberately small (about 0.3 M multiply-adds per 16x16 image): CAS compares
    training sets, not classifiers, and the stage must stay fast on a laptop CPU.
    """
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [N, 16, S/2, S/2]
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [N, 32, S/4, S/4]
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, num_classes),  # [N, 128] -> [N, K]
    )  # fmt: skip


def train_classifier(x: np.ndarray, y: np.ndarray, num_classes: int, epochs: int, batch_size: int, lr: float, seed: int) -> Any:
    """Fit :func:`small_classifier` with Adam and cross-entropy; deterministic for ``seed``.

    The global torch RNG is left as it was (initialisation runs in a forked RNG state).
    """
    import torch
    import torch.nn.functional as F

    xt, yt = torch.from_numpy(np.array(x, dtype=np.float32)), torch.from_numpy(np.array(y, dtype=np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = small_classifier(xt.shape[1], num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            loss = F.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def accuracy(net: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``net`` on ``(x, y)``."""
    import torch

    correct = 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.array(x[start : start + batch_size], dtype=np.float32))  # a copy: x may be a read-only memmap
            correct += int((net(xb).argmax(1).numpy() == np.asarray(y[start : start + batch_size])).sum())
    return correct / len(x)


def classification_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
    num_classes: int, epochs: int, batch_size: int, lr: float, seed: int,
) -> float:  # fmt: skip
    """Train on ``(train_x, train_y)``, return the accuracy on the real ``(test_x, test_y)``.

    With synthetic training data only, this is the Classification Accuracy Score (CAS) of
    Ravuri & Vinyals 2019, "Classification Accuracy Score for Conditional Generative Models".
    """
    net = train_classifier(train_x, train_y, num_classes, epochs, batch_size, lr, seed)
    return accuracy(net, test_x, test_y)


# ---------------------------------------------------------------- the `gan augment` command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan augment", description="Generate labelled synthetic data from a registered generator.")
    parser.add_argument("--model", required=True, help="models:/<name>@<alias> or models:/<name>/<version>")
    parser.add_argument("--num", type=int, required=True, help="samples in all, or per class with --per-class")
    parser.add_argument("--per-class", action="store_true", help="--num samples for every class (of --labels, or all)")
    parser.add_argument("--labels", nargs="+", help="class indices or names (cycled); default: all classes")
    parser.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    parser.add_argument("--format", choices=FORMATS, default="npz")
    parser.add_argument("--seed", type=int, default=None, help="default: random (recorded in metadata.json)")
    parser.add_argument("--truncation", type=float, default=None, help="truncation-trick threshold (> 0)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    """``gan augment``: every check that needs no server runs before the model is loaded."""
    args = build_parser().parse_args(argv)
    check_count(args.num)
    check_seed(args.seed)
    check_output_dir(args.out)
    if args.truncation is not None and not args.truncation > 0:
        raise GanError(f"--truncation {args.truncation} is invalid; use a positive threshold such as 1.0, or omit it.")
    # load with n = --num first: the class count needed for --per-class is known only then
    stream = generate(args.model, args.num, args.labels, args.seed, truncation=args.truncation, batch_size=args.batch_size)
    if args.per_class:
        if not stream.conditional:
            raise GanError(f"--per-class needs a class-conditional generator; {stream.model.uri} is unconditional, drop --per-class.")
        stream.n = args.num * len(stream.labels or stream.class_names)  # cycling gives each class exactly --num
    write_dataset(stream, args.out, args.format, progress=not args.no_progress)
    print(f"wrote {stream.n} samples of {stream.model.name} v{stream.model.version} (from {stream.model.requested}) to {args.out} [{args.format}]")
    return 0


if __name__ == "__main__":
    from gan.errors import run_main

    run_main(cli_main)
