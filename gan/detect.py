"""Score images for anomalies with a registered (or exported) detect model: ``gan score`` and ``gan.detect.score``.

    gan score --model models:/digits-detect@champion --in photos/ --out scores.csv
    gan score --model models/generator --in batch.npz --out scores.csv

    from gan.detect import load, score
    model = load("models:/digits-detect@champion")      # the alias is resolved once, here
    for row in score(model, "photos/"):                 # streaming: one batch in memory at a time
        print(row.file, row.score, row.is_anomaly)

``--in`` is a folder of images (flat, or one sub-folder per class; every file is read
like the prepare stage reads it: resized and centre-cropped to the model's size) or an
``.npz`` with ``x`` ``[N, H, W]`` / ``[N, H, W, C]`` (uint8 0..255 or float 0..1). The CSV
has one row per image: ``file, score, is_anomaly`` (at the threshold stored in the
model); it is written as a stream and appears only when complete. Scores are per image
(no batch normalisation), so they compare across calls and batch sizes.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from gan.errors import GanError

DEFAULT_BATCH_SIZE = 256


class ScoreRow(NamedTuple):
    file: str
    score: float
    is_anomaly: bool


def load(model: str) -> Any:
    """The detect Runner of ``model``: a registry URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``) or an export folder."""
    from gan.registry.loader import load_runner

    return load_runner(model, "detect")[0]


def iter_images(source: str | os.PathLike, channels: int, image_size: int, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(names, float32 [B, C, S, S] in [-1, 1])`` batches of a folder or .npz, read lazily like the prepare stage."""
    from gan.config import PrepareConfig
    from gan.data.preprocess import to_array
    from gan.data.sources import list_source

    path = Path(source)
    if not path.exists():
        raise GanError(f"--in {path} does not exist; give a folder of images or an .npz file with x.")
    kind = "npz" if path.is_file() else "image_folder"
    if path.is_file() and path.suffix != ".npz":
        raise GanError(f"--in {path} is neither a folder nor an .npz file; give a folder of images or an .npz with x.")
    if kind == "npz":
        yield from _npz_batches(path, channels, image_size, batch_size)
        return
    items, _ = list_source(PrepareConfig(source=kind, path=str(path), image_size=image_size, channels=channels))
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for item in items:
        try:
            arrays.append(to_array(item.load(), image_size, channels))
        except Exception as err:  # PIL raises many types for unreadable files
            raise GanError(f"{item.name} cannot be read as an image ({type(err).__name__}); fix or remove it.") from None
        names.append(Path(item.name).name if kind == "image_folder" else item.name)
        if len(arrays) == batch_size:
            yield names, np.stack(arrays)
            names, arrays = [], []
    if arrays:
        yield names, np.stack(arrays)


def _npz_batches(path: Path, channels: int, image_size: int, batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """An .npz's ``x`` checked like the prepare stage checks it; images already at the model's size skip PIL."""
    from gan.data.preprocess import to_array
    from gan.data.sources import _check_x
    from gan.errors import DataError

    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz.files:
                raise GanError(f"--in {path} has no array 'x' (found: {', '.join(npz.files) or 'none'}); save the images as x.")
            x = npz["x"]
    except (OSError, ValueError) as err:
        raise GanError(f"--in {path} cannot be read as .npz ({type(err).__name__}); write it with numpy.savez(x=...).") from None
    try:
        x = _check_x(x, path)  # uint8 [N, H, W] or [N, H, W, C]
    except DataError as err:
        raise GanError(str(err)) from None
    same = x.shape[1:3] == (image_size, image_size) and (x.ndim == 3 if channels == 1 else x.ndim == 4 and x.shape[-1] == 3)
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        if same:  # the exact arithmetic of to_array, vectorised: uint8 -> [-1, 1]
            arr = chunk.astype(np.float32)[:, None] if chunk.ndim == 3 else chunk.astype(np.float32).transpose(0, 3, 1, 2)
            arr = arr / 127.5 - 1.0
        else:
            arr = np.stack([to_array(img, image_size, channels) for img in chunk])
        yield [f"{path.name}[{i}]" for i in range(start, start + len(chunk))], arr


def score_batches(model: Any, source: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """``(names, scores float [B], is_anomaly bool [B])`` per batch of ``source``: the vectorised form of :func:`score`."""
    channels, size = model.image_shape[0], model.image_shape[1]
    for names, x in iter_images(source, channels, size, batch_size):
        scores = model.score_model_range(torch.from_numpy(x))
        yield names, scores, scores > model.threshold


def score(model: Any, source: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[ScoreRow]:
    """One :class:`ScoreRow` per image of ``source`` (a folder or .npz), streaming; ``model`` from :func:`load`."""
    for names, scores, flags in score_batches(model, source, batch_size):
        yield from (ScoreRow(n, s, f) for n, s, f in zip(names, scores.tolist(), flags.tolist(), strict=True))


def score_to_csv(model: Any, source: str | os.PathLike, out: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[int, int]:
    """Write ``out`` (file, score, is_anomaly) atomically, a batch at a time; return (images, flagged)."""
    from gan.atomic import atomic_text_file

    n = flagged = 0
    with atomic_text_file(out) as fh:
        writer = csv.writer(fh)
        writer.writerow(ScoreRow._fields)
        for names, scores, flags in score_batches(model, source, batch_size):
            writer.writerows(zip(names, map("{:.9g}".format, scores.tolist()), flags.astype(np.int8).tolist(), strict=True))
            n += len(names)
            flagged += int(flags.sum())
    if n == 0:
        raise GanError(f"--in {source} holds no images; nothing was scored.")
    return n, flagged


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan score", description="Score images for anomalies with a detect model.")
    parser.add_argument("--model", required=True, help="models:/<name>@<alias>, models:/<name>/<version> or an export folder")
    parser.add_argument("--in", dest="source", required=True, help="a folder of images or an .npz with x")
    parser.add_argument("--out", required=True, help="CSV to write (file, score, is_anomaly)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    """``gan score``: inputs are checked before the model is loaded."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise GanError(f"--batch-size {args.batch_size} is invalid; use a positive number such as {DEFAULT_BATCH_SIZE}.")
    if not Path(args.source).exists():
        raise GanError(f"--in {args.source} does not exist; give a folder of images or an .npz file with x.")
    model = load(args.model)
    with torch.inference_mode():  # scoring only: no autograd graph (and nothing global changed for the caller)
        n, flagged = score_to_csv(model, args.source, args.out, args.batch_size)
    print(f"scored {n} images with {args.model} (threshold {model.threshold:.4g}): {flagged} flagged as anomalous -> {args.out}")
    return 0


if __name__ == "__main__":
    from gan.errors import run_main

    run_main(cli_main)
