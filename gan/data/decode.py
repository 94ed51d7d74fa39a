"""Decoding the listed images for prepare: in this process, or in parallel on Ray Data.

    for x in decode_items(items, cfg, skipped):   # one float32 [C, S, S] (or None) per item, in order
        ...

``prepare.engine`` chooses: ``local`` decodes here, one file after another; ``ray`` hands
the file paths to Ray Data, whose tasks (on every node of ``RAY_ADDRESS``'s cluster, or a
local Ray) open, decode and resize them in parallel and stream the arrays back in the
listed order; ``auto`` picks ``ray`` for an image folder of at least
``prepare.ray_min_images`` files on a cluster with more CPUs than this machine
(:func:`engine_for`; docs/benchmarks.md, "prepare on Ray Data", has the figures). Both routes run the same loader and :func:`gan.data.preprocess.to_array` on
the same file, so the shards, the manifest and its hash are the same bytes whichever ran;
a file that cannot be read gets the same sentence (or ``skipped`` entry) from both.
The driver keeps at most a few batches in memory: Ray Data's streaming executor stops
decoding ahead when the consumer (the shard writer) falls behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from gan.config import PrepareConfig
from gan.data.preprocess import to_array
from gan.data.sources import FileList, Item, open_image
from gan.errors import DataError

BATCH = 64  # files per map_batches call: large enough to amortise a call, small enough to spread
BLOCK_BYTES = 4 << 20  # decoded bytes per Ray Data block (one task)


def block_rows(cfg: PrepareConfig) -> int:
    """Files per Ray Data block: about ``BLOCK_BYTES`` of decoded images, 64 to 4,096 files.

    The driver keeps state for every block it has run (metadata, statistics): with a
    block per 64 files its memory grew by about 730 bytes per image (278 MB at 20,000
    files, 409 MB at 200,000); blocks of a few MB keep that count small while leaving
    tens of tasks per 100,000 small images to spread over a cluster.
    """
    per_image = 4 * cfg.channels * cfg.image_size**2
    return int(min(64 * BATCH, max(BATCH, BLOCK_BYTES // per_image)))


def engine_for(cfg: PrepareConfig, items: Sequence[Item], cluster_cpus: Callable[[], float | None] | None = None) -> str:
    """``local`` or ``ray``: ``prepare.engine``, with ``auto`` resolved.

    ``auto`` decodes on Ray Data only where that is faster: an image folder of at least
    ``prepare.ray_min_images`` files, on a cluster joined through ``RAY_ADDRESS`` that
    has more CPUs than this machine. On one 2-core machine Ray Data decoded 0.57x as fast
    as this process at 20,000 files and 1.26x at 200,000 (docs/benchmarks.md, "prepare on
    Ray Data"): the local Ray that ``gan repro`` shares (also ``RAY_ADDRESS``) adds no CPU,
    so ``auto`` leaves that choice to ``engine: ray``.
    ``cluster_cpus``: the joined cluster's CPU count (default: asked of Ray; None when no
    cluster is joined).
    """
    if cfg.engine != "auto":
        return cfg.engine
    files = cfg.source == "image_folder" and (isinstance(items, FileList) or all(it.file for it in items))
    if not files or len(items) < cfg.ray_min_images:
        return "local"
    cpus = (cluster_cpus or _joined_cluster_cpus)()
    return "ray" if cpus is not None and cpus > (os.cpu_count() or 1) else "local"


def _joined_cluster_cpus() -> float | None:
    """CPUs of the cluster at ``RAY_ADDRESS`` (joined here), or None when it is not set."""
    from gan.ray_session import init_ray, joined_address

    if not joined_address():
        return None
    init_ray()
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


def decode_items(items: Sequence[Item], cfg: PrepareConfig, skipped: list[dict[str, str]], engine: str = "local") -> Iterator[np.ndarray | None]:
    """One training array per item, in order; None for a file skipped under ``on_bad_file: skip``."""
    if engine == "ray":
        yield from _decode_on_ray(items, cfg, skipped)
        return
    for item in items:
        try:
            x = to_array(item.load(), cfg.image_size, cfg.channels)
        except Exception as err:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
            x = _bad_file(item, failure_reason(err), cfg, skipped)
        yield x


def failure_reason(err: BaseException) -> str:
    """What went wrong with one file, for the sentence and the manifest's ``skipped``."""
    return f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else 'unreadable'}"


def _bad_file(item: Item, reason: str, cfg: PrepareConfig, skipped: list[dict[str, str]]) -> None:
    """Fail with one sentence naming the file, or record it as skipped, per ``on_bad_file``."""
    if cfg.on_bad_file == "fail":
        raise DataError(f"{item.name} cannot be read as an image ({reason}); fix or remove it, or set prepare.on_bad_file: skip.")
    skipped.append({"file": item.name, "reason": reason})
    return None


def decode_batch(batch: dict[str, np.ndarray], image_size: int, channels: int) -> dict[str, np.ndarray]:
    """A Ray Data task's work: open and preprocess each file of ``batch["file"]``.

    A file that fails yields zeros and its reason (never an exception: the driver decides,
    in order, whether it stops the run or is skipped).
    """
    files = [str(f) for f in batch["file"]]
    x = np.zeros((len(files), channels, image_size, image_size), dtype=np.float32)
    errors = [""] * len(files)
    for i, f in enumerate(files):
        try:
            x[i] = to_array(open_image(f), image_size, channels)
        except Exception as err:
            errors[i] = failure_reason(err)
    return {"x": x, "error": np.asarray(errors, dtype=object)}


def _decode_on_ray(items: Sequence[Item], cfg: PrepareConfig, skipped: list[dict[str, str]]) -> Iterator[np.ndarray | None]:
    """Items with a ``file`` only: PrepareConfig refuses engine ray for other sources, and auto never picks it for them."""
    from gan.ray_session import init_ray

    init_ray()
    import ray.data

    # Ray Data sets up its own console logging when first imported (a line per execution,
    # a warning for disabled progress bars); the stage prints its own line instead
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows come back in the listed order: the bytes match the local route's
    ctx.enable_progress_bars = False
    blocks = max(1, len(items) // block_rows(cfg))
    if isinstance(items, FileList):  # the names' one buffer as Arrow columns, a zero-copy slice per block: no Python object per file
        import pyarrow as pa

        names = pa.table({"file": items.arrow_names()})
        size = -(-len(items) // blocks)
        ds = ray.data.from_arrow([names.slice(i, size) for i in range(0, len(items), size)])
    else:
        ds = ray.data.from_items([{"file": it.file} for it in items], override_num_blocks=blocks)
    ds = ds.map_batches(decode_batch, batch_size=BATCH, batch_format="numpy", fn_kwargs={"image_size": cfg.image_size, "channels": cfg.channels})
    rows = iter(items)
    for batch in ds.iter_batches(batch_size=BATCH, batch_format="numpy", prefetch_batches=2):
        yield from _unbatch(batch, rows, cfg, skipped)


def _unbatch(batch: dict[str, Any], rows: Iterator[Item], cfg: PrepareConfig, skipped: list[dict[str, str]]) -> Iterator[np.ndarray | None]:
    for x, error in zip(batch["x"], batch["error"], strict=True):
        item = next(rows)
        yield _bad_file(item, str(error), cfg, skipped) if error else np.ascontiguousarray(x)
