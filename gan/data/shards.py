"""Prepared data on disk: ``.npy`` shards per split, read memory-mapped.

    data/prepared/
      manifest.json
      train/x-00000.npy   float32 [n, C, H, W] in [-1, 1]
      train/y-00000.npy   int64 [n]  (absent when unlabelled)
      train/caption-00000.npy   str <U{width} [n]  (only with prepare.captions.source; load_captions)
      val/...

NumPy shards are read with ``mmap_mode="r"``: a worker touches only the rows it
samples, so memory per worker does not grow with the data set.

    for x, y in ShardedBatches("data/prepared", "train", 64, rank=0, world_size=2, seed=0):
        ...   # x: Tensor [64, C, H, W], y: Tensor [64] | None; endless

    captions = load_captions("data/prepared", "train")        # str [N], row i describes image i
    for x, y, rows in ShardedBatches("data/prepared", "train", 64, rows=True):
        text = captions[rows]                                 # rows: np.int64 [64], the batch's rows of the split
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gan.errors import DataError

if TYPE_CHECKING:  # torch is imported lazily: prepare itself never needs it
    import torch

MANIFEST = "manifest.json"
CAPTION = "caption"  # caption-NNNNN.npy beside x-NNNNN.npy
FULL = "full"  # val/full/ of super-resolution pairs: whole validation images, one per file


class ShardWriter:
    """Buffer up to ``shard_size`` examples, then write ``x-NNNNN.npy`` (and ``y-NNNNN.npy``)."""

    def __init__(self, folder: Path, shard_size: int, labelled: bool, extras: tuple[str, ...] = ()):
        self.folder, self.shard_size, self.labelled = folder, shard_size, labelled
        folder.mkdir(parents=True, exist_ok=True)
        self._x: list[np.ndarray] = []
        self._y: list[int] = []
        # named per-example arrays beside x and y (domain sources: content, oracle)
        self.extras = extras
        self._extra: dict[str, list[np.ndarray]] = {name: [] for name in extras}
        self.shards: list[dict] = []
        self.count = 0

    def add(self, x: np.ndarray, y: int | None, **extras: np.ndarray) -> None:
        self._x.append(x)
        for name in self.extras:
            self._extra[name].append(np.asarray(extras[name]))
        if self.labelled:
            self._y.append(int(y))
        if len(self._x) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._x:
            return
        idx = len(self.shards)
        x = np.stack(self._x).astype(np.float32)  # [n, C, H, W]
        np.save(self.folder / f"x-{idx:05d}.npy", x)
        if self.labelled:
            np.save(self.folder / f"y-{idx:05d}.npy", np.asarray(self._y, dtype=np.int64))
        for name, values in self._extra.items():
            np.save(self.folder / f"{name}-{idx:05d}.npy", np.stack(values))
        self.shards.append({"index": idx, "count": len(x)})
        self.count += len(x)
        self._x, self._y = [], []
        self._extra = {name: [] for name in self.extras}


def write_caption_shards(folder: Path, shards: list[dict], captions: list[str], width: int) -> None:
    """Write ``caption-NNNNN.npy`` (``<U{width}``) with the same rows as the image shards ``shards`` of ``folder``."""
    if sum(s["count"] for s in shards) != len(captions):
        raise ValueError(f"{folder}: {len(captions)} captions for {sum(s['count'] for s in shards)} images")
    start = 0
    for shard in shards:
        rows = captions[start : start + shard["count"]]
        # fixed-width unicode, not objects: loads with allow_pickle=False and mmap_mode="r"
        np.save(folder / f"{CAPTION}-{shard['index']:05d}.npy", np.array(rows, dtype=f"<U{width}"))
        start += shard["count"]


def common_manifest(*, format: str, source: str, settings: dict[str, Any], channels: int, image_size: int, class_names: list[str],
                    counts: dict[str, dict[str, Any]], shards: dict[str, list[dict]], digest: str, skipped: list[dict[str, str]],
                    ignored: list[dict[str, str]]) -> dict[str, Any]:  # fmt: skip
    """The keys every prepared data set's manifest.json has, whichever source or layout wrote it.

    Every source and layout (whole images, super-resolution pairs) starts its manifest
    here and adds its own keys, so what a stage reads of every manifest (counts, skipped,
    ignored, the hash, the image shape and classes) is always there. No time goes in: the
    manifest is a dependency of every later stage and must be the same bytes for the
    same data and params.
    """
    labelled = bool(class_names)
    return {
        "format": format,
        "source": source,
        "settings": settings,
        "image_size": int(image_size),
        "channels": int(channels),
        "shape": [int(channels), int(image_size), int(image_size)],
        "value_range": [-1.0, 1.0],
        "labelled": labelled,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "counts": counts,
        "shards": shards,
        "hash": digest,
        "skipped": skipped,
        "ignored": ignored,
    }


def read_manifest(prepared_dir: str | os.PathLike) -> dict:
    """The manifest of a prepared data set, with a clear error when it is missing."""
    path = Path(prepared_dir) / MANIFEST
    if not path.exists():
        raise DataError(f"{path} does not exist; run the prepare stage first (dvc repro prepare).")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"{path} is not valid JSON; re-run the prepare stage (dvc repro -f prepare).") from None


def shard_arrays(prepared_dir: str | os.PathLike, split: str) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Memory-mapped ``x`` (and ``y``) arrays of every shard of ``split``."""
    folder = Path(prepared_dir) / split
    xs = sorted(folder.glob("x-*.npy"))
    if not xs:
        raise DataError(f"{folder} holds no shards; run the prepare stage first (dvc repro prepare).")
    ys = [p.with_name(p.name.replace("x-", "y-", 1)) for p in xs]
    x_maps = [np.load(p, mmap_mode="r", allow_pickle=False) for p in xs]
    if not all(p.exists() for p in ys):
        return x_maps, None
    y_maps = [np.load(p, mmap_mode="r", allow_pickle=False) for p in ys]
    check_labels(prepared_dir, ys, y_maps)
    return x_maps, y_maps


def check_labels(prepared_dir: str | os.PathLike, paths: list[Path], y_maps: list[np.ndarray]) -> None:
    """Every label must be a class of the manifest: an edited or mixed-up shard would
    otherwise fail deep inside a worker (an embedding index error) or train on wrong classes."""
    k = int(read_manifest(prepared_dir).get("num_classes") or 0)
    for path, y in zip(paths, y_maps, strict=True):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise DataError(f"{path} holds label {bad}, outside the manifest's {k} classes (0..{k - 1}); re-run the prepare stage (dvc repro -f prepare).")


def load_split(prepared_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The whole split as arrays: memory-mapped when it is one shard, concatenated otherwise.

    Meant for evaluation-sized splits (validation, metrics); training streams with
    :class:`ShardedBatches` instead.
    """
    x_maps, y_maps = shard_arrays(prepared_dir, split)
    x = x_maps[0] if len(x_maps) == 1 else np.concatenate(x_maps)
    if y_maps is None:
        return x, None
    return x, (y_maps[0] if len(y_maps) == 1 else np.concatenate(y_maps))


def load_extra(prepared_dir: str | os.PathLike, split: str, name: str) -> np.ndarray:
    """A named per-example array of ``split`` (``content``, ``oracle``), all shards concatenated."""
    folder = Path(prepared_dir) / split
    paths = sorted(folder.glob(f"{name}-*.npy"))
    if not paths:
        raise DataError(f"{folder} holds no {name} arrays; prepare the data with a source that provides them (prepare.source: digits_domains).")
    return np.concatenate([np.load(p, allow_pickle=False) for p in paths])


def load_captions(prepared_dir: str | os.PathLike, split: str) -> np.ndarray:
    """The captions of ``split``: str ``[N]``, row ``i`` describing image ``i`` of :func:`load_split`.

    Memory-mapped when the split is one shard, concatenated otherwise.
    """
    folder = Path(prepared_dir) / split
    paths = sorted(folder.glob(f"{CAPTION}-*.npy"))
    if not paths:
        shard_arrays(prepared_dir, split)  # no images at all: that error first
        raise DataError(f"{prepared_dir} was prepared without captions; set prepare.captions.source and run dvc repro prepare.")
    maps = [np.load(p, mmap_mode="r", allow_pickle=False) for p in paths]
    captions = maps[0] if len(maps) == 1 else np.concatenate(maps)
    images = sum(len(x) for x in shard_arrays(prepared_dir, split)[0])
    if len(captions) != images:
        raise DataError(f"{folder} holds {len(captions)} captions for {images} images; re-run the prepare stage (dvc repro -f prepare).")
    return captions


class ShardedBatches:
    """Endless shuffled batches over this rank's share of a split.

    Each epoch draws one seeded permutation of all rows (the same on every rank),
    and rank ``r`` of ``w`` takes rows ``r::w`` of it, so ranks see disjoint data
    and together cover the epoch. Rows are gathered from memory-mapped shards.

    ``rows=True`` yields ``(x, y, rows)`` instead: ``rows`` (np.int64 [B]) are the batch's
    row indices into the whole split, in the order of ``x``, to look up per-row data such
    as :func:`load_captions`.
    """

    def __init__(self, prepared_dir: str | os.PathLike, split: str, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 rows: bool = False):  # fmt: skip
        self.with_rows = rows
        self.x_maps, self.y_maps = shard_arrays(prepared_dir, split)
        sizes = np.array([len(x) for x in self.x_maps])
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.n = int(self.offsets[-1])
        per_rank = self.n // world_size
        if per_rank < batch_size:
            raise DataError(f"{split} split has {self.n} images, fewer than batch_size {batch_size} x {world_size} workers; lower train.batch_size.")
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.batches_per_epoch = per_rank // batch_size
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, np.ndarray]]:
        while True:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            mine = perm[self.rank :: self.world_size]
            for b in range(self.batches_per_epoch):
                # sorted: shards are read in order, so x comes out in the order of rows
                rows = np.sort(mine[b * self.batch_size : (b + 1) * self.batch_size]).astype(np.int64)
                yield (*self._gather(rows), rows) if self.with_rows else self._gather(rows)
            self.epoch += 1

    def _gather(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        import torch

        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        xs, ys = [], []
        for s in np.unique(shard):
            local = rows[shard == s] - self.offsets[s]
            xs.append(self.x_maps[s][local])
            if self.y_maps is not None:
                ys.append(self.y_maps[s][local])
        x = torch.from_numpy(np.concatenate(xs))
        y = torch.from_numpy(np.concatenate(ys)) if ys else None
        return x, y


# ---- super-resolution pairs (gan.data.pairs writes them) --------------------------------------------------------------------------


def paired_batches(data_dir: str | os.PathLike, batch_size: int, rank: int, world_size: int, seed: int, consumed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(lr [B, C, p, p], hr [B, C, P, P])`` batches of the training pairs, after ``consumed`` batches.

    The same seeded per-epoch permutation as :class:`gan.data.ShardedBatches` (ranks take
    disjoint rows ``rank::world_size``), so a resumed run sees the same batches.
    """
    import torch

    source = ShardedBatches(data_dir, "train", batch_size, rank, world_size, seed)
    folder = Path(data_dir) / "train"
    lr_maps = [np.load(folder / f"lr-{i:05d}.npy", mmap_mode="r", allow_pickle=False) for i in range(len(source.x_maps))]
    source.epoch, skip = divmod(consumed, source.batches_per_epoch)
    while True:
        perm = np.random.default_rng([source.seed, source.epoch]).permutation(source.n)
        mine = perm[rank::world_size]
        for b in range(skip, source.batches_per_epoch):
            rows = np.sort(mine[b * batch_size : (b + 1) * batch_size])
            shard = np.searchsorted(source.offsets, rows, side="right") - 1
            his, los = [], []
            for k in np.unique(shard):
                local = rows[shard == k] - source.offsets[k]
                his.append(source.x_maps[k][local])
                los.append(lr_maps[k][local])
            yield torch.from_numpy(np.concatenate(los)), torch.from_numpy(np.concatenate(his))
        skip = 0
        source.epoch += 1


def val_images(data_dir: str | os.PathLike) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The whole validation images as ``(lr [1, C, h, w], hr [1, C, H, W])`` in [-1, 1], one at a time."""
    folder = Path(data_dir) / "val" / FULL
    for hr_path in sorted(folder.glob("hr-*.npy")):
        yield (np.load(hr_path.with_name(hr_path.name.replace("hr-", "lr-", 1)), allow_pickle=False),
               np.load(hr_path, allow_pickle=False))
