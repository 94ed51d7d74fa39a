"""``gan translate``: translate a team's images to a domain with a registered translate model.

    gan translate --model models:/digits-translate@champion --in photos/ --to dilated_inverted --out translated/
    gan translate --model models:/digits-translate@champion --in batch.npz --to B --out out/ --format npz

    from gan.translate import translate
    summary = translate("models:/digits-translate@champion", "photos/", to="dilated_inverted", out="translated/")

Inputs: a folder of images (every non-hidden file, sorted by name; a file that is not an
image is an error naming it) or an ``.npz`` with ``x`` ``[N, H, W]`` / ``[N, H, W, C]``
uint8 (and optional ``names``). Resize rule: an image whose size is not the model's
``S x S`` is resized with its shorter side to S and centre-cropped (prepare's rule), so
outputs are always ``S x S``; the channel count must be the model's (1 grey, 3 RGB),
else the file is named and nothing is written. Outputs keep the input names
(``image_folder``: ``<stem>.png``; ``npz``: ``x`` uint8 ``[N, S, S, C]`` and ``names``),
are streamed in batches into a temporary directory and moved to ``--out`` only when
complete. ``--model`` is a registry URI (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``)
or an exported model directory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gan.atomic import atomic_dir
from gan.errors import GanError

FORMATS = ("image_folder", "npz")
DEFAULT_BATCH_SIZE = 64


def load_runner(model: str) -> tuple[Any, str]:
    """The translate Runner of a registry URI or an exported directory, and what was loaded (for messages)."""
    from gan.registry.loader import load_runner as load_task_runner

    return load_task_runner(model, "translate")


def read_inputs(path: str | Path, channels: int, size: int) -> tuple[list[str], Iterator[np.ndarray]]:
    """Input names and a lazy stream of uint8 ``[C, S, S]`` images (resized by the module's rule)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise GanError(f"--in {path} holds no files; put the images to translate there.")
        return [f.name for f in files], (_image_file(f, channels, size) for f in files)
    if path.suffix == ".npz" and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                x = npz["x"] if "x" in npz.files else None
                names = [str(n) for n in npz["names"]] if "names" in npz.files else None
        except Exception as err:
            raise GanError(f"--in {path} cannot be read as .npz ({type(err).__name__}); write it with numpy.savez(x=...).") from None
        if x is None or x.ndim not in (3, 4) or len(x) == 0 or x.dtype != np.uint8:
            raise GanError(f"--in {path} must hold x: uint8 [N, H, W] or [N, H, W, C] with N > 0.")
        have = 1 if x.ndim == 3 else x.shape[-1]
        if have != channels:
            raise GanError(f"--in {path}: x has {have} channels; the model translates {channels}-channel images.")
        names = names or [f"{i:06d}" for i in range(len(x))]
        return names, (_fit(Image.fromarray(x[i] if x.ndim == 3 else x[i].squeeze(-1) if channels == 1 else x[i]), size) for i in range(len(x)))
    raise GanError(f"--in {path} is neither a folder of images nor an .npz file; point it at one of them.")


def _image_file(path: Path, channels: int, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            img = img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise GanError(f"{path} is not a readable image; remove it from --in or replace it with a PNG/JPEG/WebP file.") from None
    have = 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else 3  # grey modes; every other mode is colour
    if have != channels:
        raise GanError(f"{path} has {have} channels; the model translates {channels}-channel images, convert it first.")
    return _fit(img.convert("L" if channels == 1 else "RGB"), size)


def _fit(img: Image.Image, size: int) -> np.ndarray:
    """uint8 ``[C, S, S]``: shorter side resized to S, centre-cropped (an S x S image is left as it is)."""
    if img.size != (size, size):
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def translate(model: str, inputs: str | Path, to: str, out: str | Path, fmt: str = "image_folder",
              batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Translate every input image to domain ``to``; write ``out`` atomically; return a summary."""
    if fmt not in FORMATS:
        raise GanError(f"--format {fmt!r} is unknown; use one of {', '.join(FORMATS)}.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GanError(f"output {out} exists and is not empty; choose a new --out directory or remove it.")
    runner, loaded = load_runner(model)
    runner.target_index(to)  # an unknown domain fails before any image is read
    names, images = read_inputs(inputs, runner.channels, runner.image_size)
    stems = _unique_stems(names)
    written, kept = 0, []
    with atomic_dir(out) as tmp:
        batch: list[np.ndarray] = []
        for i, image in enumerate(images):
            batch.append(image)
            if len(batch) == batch_size or i == len(names) - 1:
                result = runner.translate(np.stack(batch), to)  # uint8 [B, C, S, S]
                for j, y in enumerate(result):
                    if fmt == "image_folder":
                        Image.fromarray(y[0] if y.shape[0] == 1 else y.transpose(1, 2, 0)).save(tmp / f"{stems[written + j]}.png")
                    else:
                        kept.append(y)
                written += len(result)
                batch = []
                if progress:
                    print(f"\rtranslate: {written}/{len(names)}", end="", file=sys.stderr, flush=True)
        if fmt == "npz":
            np.savez(tmp / "translated.npz", x=np.stack(kept).transpose(0, 2, 3, 1), names=np.asarray(names))
    if progress:
        print(file=sys.stderr)
    return {"model": loaded, "to": to, "count": written, "out": str(out), "format": fmt}


def _unique_stems(names: list[str]) -> list[str]:
    """Each input's name without its suffix; a clash (a.png, a.jpg) keeps the suffix in the name."""
    stems = [Path(n).stem for n in names]
    return [Path(n).name.replace(".", "_") if stems.count(s) > 1 else s for n, s in zip(names, stems, strict=True)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan translate", description="Translate images to a domain with a registered translate model.")
    parser.add_argument("--model", required=True, help="models:/<name>@<alias>, models:/<name>/<version> or an exported model directory")
    parser.add_argument("--in", dest="inputs", required=True, help="a folder of images or an .npz with x (and optional names)")
    parser.add_argument("--to", required=True, help="the target domain's name (the model's domains)")
    parser.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    parser.add_argument("--format", choices=FORMATS, default="image_folder")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise GanError(f"--batch-size {args.batch_size} is invalid; use a positive number.")
    summary = translate(args.model, args.inputs, args.to, args.out, args.format, args.batch_size, progress=not args.no_progress)
    print(f"translated {summary['count']} images with {summary['model']} to {summary['to']} -> {summary['out']} [{summary['format']}]")
    return 0
