"""``gan upscale``: upscale a folder of images with a registered (or exported) super-resolution model.

    gan upscale --model models:/photos-sr@champion --in photos/ --out photos_x4/ [--scale 4]
    gan upscale --model models/generator --in photos/ --out photos_x4/ --tile 128 --overlap 16

    from gan.upscale import upscale
    summary = upscale("models:/photos-sr@champion", "photos/", "photos_x4/")   # {"images", "megapixels", ...}

Each image is decoded, upscaled in overlapping tiles (:mod:`gan.inference.upscale`:
memory is one tile plus the output image, whatever the size) and written under the same
name in the same format (PNG stays PNG, JPEG stays JPEG at quality 95), one at a time.
Everything goes to a temporary folder beside ``--out`` that replaces it only when every
image is done, so a failed run leaves nothing half-written. Grayscale and RGB images
both work. A file that is not an 8-bit grayscale/RGB image (corrupt, 16-bit, with an
alpha channel, smaller than 4x4) stops the run with one sentence naming it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from gan.atomic import atomic_dir
from gan.errors import GanError
from gan.inference.upscale import DEFAULT_OVERLAP, DEFAULT_TILE, UpscaleRunner, check_image

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def load_runner(model: str) -> UpscaleRunner:
    """The upscale runner of ``model``: a ``models:/NAME@alias`` (or ``/version``) URI, or an exported model folder."""
    from gan.registry.loader import load_runner as load_task_runner

    return load_task_runner(model, "upscale")[0]


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """uint8 ``[H, W]`` or ``[H, W, 3]`` and the PIL format name; GanError naming the file when it cannot be upscaled."""
    try:
        with Image.open(path) as img:
            img.load()
            fmt, mode = img.format or "PNG", img.mode
            if mode in SIXTEEN_BIT_MODES:
                raise GanError(f"{path} is a 16-bit or float image (mode {mode}); convert it to 8-bit first.")
            if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
                raise GanError(f"{path} has an alpha channel; flatten it onto a background (RGB or grayscale) first.")
            img = img.convert("L" if mode in ("1", "L") else "RGB")
            return np.asarray(img, dtype=np.uint8), fmt
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise GanError(f"{path} cannot be read as an image ({type(err).__name__}); fix or remove it.") from None


def write_image(img: Image.Image | np.ndarray, path: Path, fmt: str) -> None:
    img = img if isinstance(img, Image.Image) else Image.fromarray(img)
    img.save(path, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))


def upscale_image(runner: UpscaleRunner, img: np.ndarray, tile: int, overlap: int, name: str) -> Image.Image:
    """The upscaled image as a PIL image. When the image has the model's channels, tiles are
    pasted straight into the PIL image that is encoded: no second full-size buffer."""
    checked = check_image(img, name)
    if checked.shape[-1] != runner.channels:  # grayscale <-> RGB conversions go through the array path
        return Image.fromarray(runner.upscale(img, tile=tile, overlap=overlap, name=name))
    h, w, c = checked.shape
    mode = "L" if c == 1 else "RGB"
    out = Image.new(mode, (w * runner.scale, h * runner.scale))

    def paste(top: int, left: int, part: np.ndarray) -> None:
        out.paste(Image.fromarray(part[..., 0] if c == 1 else part, mode), (left, top))

    runner.stream_tiles(checked, paste, tile, overlap)
    return out


def list_images(in_dir: Path) -> list[Path]:
    if not in_dir.is_dir():
        raise GanError(f"--in {in_dir} is not a directory; point it at a folder of images.")
    files = sorted(p for p in in_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in SUFFIXES]
    if not images:
        raise GanError(f"--in {in_dir} holds no images ({', '.join(SUFFIXES)}); add some or fix the path.")
    return images


def upscale(model: str | UpscaleRunner, in_dir: str | Path, out_dir: str | Path, scale: int | None = None, *,
            tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Upscale every image of ``in_dir`` into ``out_dir`` (same names and formats); return a summary.

    ``scale``, when given, must be the model's factor. Summary: ``images``,
    ``megapixels`` (output), ``seconds``, ``mp_s`` (output megapixels per second), ``scale``.
    """
    runner = model if isinstance(model, UpscaleRunner) else load_runner(model)
    runner.check_scale(scale)
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if out_dir.resolve() == in_dir.resolve():
        raise GanError(f"--out {out_dir} is the input folder; write the upscaled images somewhere else.")
    paths = list_images(in_dir)
    start, pixels = time.perf_counter(), 0
    with atomic_dir(out_dir) as tmp:
        for k, path in enumerate(paths, 1):
            img, fmt = read_image(path)
            if tile < 1 or overlap < 0:
                raise GanError(f"tile = {tile}, overlap = {overlap} are invalid; use tile >= 1 and overlap >= 0.")
            out = upscale_image(runner, img, tile, overlap, str(path))
            write_image(out, tmp / path.name, fmt)
            pixels += out.width * out.height
            if progress:
                print(f"\rupscale: {k}/{len(paths)} {path.name}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    seconds = time.perf_counter() - start
    return {"images": len(paths), "megapixels": pixels / 1e6, "seconds": seconds, "mp_s": pixels / 1e6 / max(seconds, 1e-9), "scale": runner.scale}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan upscale", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="models:/NAME@champion (or /VERSION), or an exported model folder")
    parser.add_argument("--in", dest="in_dir", required=True, help="folder of PNG/JPEG/WebP/BMP/TIFF images")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically when every image is done)")
    parser.add_argument("--scale", type=int, default=None, help="expected factor; must match the model's")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"low-resolution tile side (default {DEFAULT_TILE})")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help=f"context pixels around each tile (default {DEFAULT_OVERLAP})")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = upscale(args.model, args.in_dir, args.out, args.scale, tile=args.tile, overlap=args.overlap, progress=not args.quiet)
    print(f"upscale: {s['images']} images x{s['scale']} -> {args.out} ({s['megapixels']:.2f} MP in {s['seconds']:.1f}s, {s['mp_s']:.3f} MP/s)")
    return 0
