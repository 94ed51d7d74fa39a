"""Raw data -> versioned, training-ready shards + manifest.json (the prepare stage's library).

    manifest = prepare_dataset(params.prepare, out_dir="data/prepared")

With ``prepare.normal_classes`` (or ``prepare.anomaly_classes``) set, for anomaly
detection (``model.task: detect``): train/ and val/ hold normal images only, and a third
split test/ holds ``test_fraction`` of the normal images plus every anomalous one; the
manifest's ``anomaly`` entry names the normal and anomalous classes (the ground truth:
a test image is anomalous when its label is in ``anomaly.anomaly_labels``).

With ``prepare.captions.source`` set, every split also holds ``caption-NNNNN.npy``
(fixed-width str, row for row with ``x-NNNNN.npy``; :func:`gan.data.load_captions`) and
the manifest a ``captions`` entry; the captions are part of its ``hash``.

Items are listed first (cheap), split by label, then decoded and written in
shards of ``shard_size``: memory is bounded by one shard per split whatever the
data set's size. Everything is written into a temporary directory that replaces
``out_dir`` only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from gan.atomic import atomic_dir, atomic_write_json
from gan.config import TRANSLATE_SOURCES, PrepareConfig
from gan.data.captions import ATTRIBUTE_NAMES, attribute_captions, attribute_thresholds, measure
from gan.data.decode import decode_items, engine_for
from gan.data.shards import MANIFEST, ShardWriter, common_manifest, write_caption_shards
from gan.data.sources import Item, list_source
from gan.data.split import split_mask
from gan.errors import DataError

FORMAT = "gan-prepared/1"
HOW = {"engine", "ray_min_images"}  # prepare keys that change how, never what, is written


def prepare_dataset(cfg: PrepareConfig, out_dir: str | os.PathLike, progress: bool = False) -> dict[str, Any]:
    """Write ``out_dir`` (train/, val/, manifest.json) from ``cfg``; return the manifest.

    With ``prepare.pairs`` set, super-resolution pairs are written instead (:mod:`gan.data.pairs`).
    """
    if cfg.pairs is not None:
        from gan.data.pairs import prepare_pairs

        return prepare_pairs(cfg, out_dir)
    ignored: list[dict[str, str]] = []
    items, class_names = list_source(cfg, ignored)
    labelled = _labelled(items)
    if cfg.captions.source == "attributes" and not labelled:
        raise DataError(f"prepare.captions.source: 'attributes' names each image's class, but the {cfg.source} data at {cfg.path} has no labels; "
                        "use one sub-folder per class (or an npz with y), or captions source file or npz.")  # fmt: skip
    anomaly = _anomaly_classes(cfg, class_names, labelled) if cfg.anomaly_split else None
    if anomaly is None:
        splits = np.where(split_mask([it.label for it in items], cfg.val_fraction, cfg.seed), "val", "train")
    else:
        splits = _anomaly_splits([it.label for it in items], set(anomaly["anomaly_labels"]), cfg)
    skipped: list[dict[str, str]] = []
    stats = _ChannelStats(cfg.channels)
    digest = hashlib.sha256()
    extras = tuple(name for name in ("content", "oracle") if items and all(getattr(it, name) is not None for it in items))
    with atomic_dir(out_dir) as tmp:
        names = ("train", "val") if anomaly is None else ("train", "val", "test")
        writers = {s: ShardWriter(tmp / s, cfg.shard_size, labelled, extras) for s in names}
        counts = {s: [0] * len(class_names) for s in writers}
        captions = _Captions(cfg.captions.source, cfg.channels, names)
        for item, split, x in zip(items, splits, decode_items(items, cfg, skipped, engine_for(cfg, items)), strict=True):
            split = str(split)
            if x is None:
                continue
            extra = {"content": item.content, "oracle": item.oracle() if item.oracle else None}
            writers[split].add(x, item.label, **{k: extra[k] for k in extras})
            # the hash covers every byte written and where it went: a changed split changes it
            digest.update(split.encode())
            digest.update(x.tobytes())
            digest.update(str(item.label).encode())
            if labelled:
                counts[split][item.label] += 1
            if split == "train":
                stats.add(x)
            captions.add(split, x, item)  # only images that were written: a skipped file has no caption either
        for w in writers.values():
            w.flush()
        _check_nonempty(writers, class_names, counts, labelled, anomaly)
        caption_entry = captions.write(writers, class_names, digest)
        manifest = {
            **common_manifest(
                format=FORMAT, source=cfg.source,
                # how the images were decoded is left out: either route writes the same bytes
                settings=cfg.model_dump(exclude=HOW), channels=cfg.channels, image_size=cfg.image_size,
                class_names=class_names if labelled else [],
                counts={s: {"total": w.count, "per_class": counts[s] if labelled else []} for s, w in writers.items()},
                shards={s: w.shards for s, w in writers.items()}, digest=digest.hexdigest(), skipped=skipped, ignored=ignored,
            ),  # fmt: skip
            "mean": stats.mean(),
            "std": stats.std(),
            "captions": caption_entry,
            **({"anomaly": _anomaly_entry(anomaly, counts)} if anomaly is not None else {}),
        }
        if cfg.source in TRANSLATE_SOURCES:  # the translate task's data: labels are domains
            manifest["domains"] = class_names
            manifest["extras"] = list(extras)
            manifest["paired"] = "oracle" in extras
            if "content" in extras:
                manifest["content_names"] = [str(c) for c in range(10)]
        atomic_write_json(tmp / MANIFEST, manifest)
    return manifest


def _labelled(items: Sequence[Item]) -> bool:
    has = {it.label is not None for it in items}
    return has == {True}


def _anomaly_classes(cfg: PrepareConfig, class_names: list[str], labelled: bool) -> dict[str, list]:
    """Normal and anomalous classes (names and label indices) from normal_classes / anomaly_classes."""
    key = "normal_classes" if cfg.normal_classes is not None else "anomaly_classes"
    if not labelled:
        raise DataError(f"prepare.{key} needs labelled data (class folders or an npz with y), but the source has no labels; label the data or drop the key.")
    given = list(getattr(cfg, key))
    unknown = [c for c in given if c not in class_names]
    if unknown:
        raise DataError(f"prepare.{key} names class '{unknown[0]}', which the data does not have; its classes are {', '.join(class_names)}.")
    chosen = {class_names.index(c) for c in given}
    normal = sorted(chosen) if key == "normal_classes" else sorted(set(range(len(class_names))) - chosen)
    anomalous = sorted(set(range(len(class_names))) - set(normal))
    if not normal or not anomalous:
        raise DataError(f"prepare.{key} leaves no {'normal' if not normal else 'anomalous'} class; at least one class must be normal and one anomalous.")
    return {
        "normal_classes": [class_names[i] for i in normal],
        "anomaly_classes": [class_names[i] for i in anomalous],
        "normal_labels": normal,
        "anomaly_labels": anomalous,
    }


def _anomaly_splits(labels: list[int | None], anomalous: set[int], cfg: PrepareConfig) -> np.ndarray:
    """``"train" | "val" | "test"`` per item: anomalies to test; normal images split test, then val, stratified."""
    splits = np.full(len(labels), "test", dtype=object)
    normal = np.array([i for i, y in enumerate(labels) if y not in anomalous])
    normal_labels = [labels[i] for i in normal]
    is_test = split_mask(normal_labels, cfg.test_fraction, cfg.seed)
    rest = normal[~is_test]
    is_val = split_mask([labels[i] for i in rest], cfg.val_fraction, cfg.seed + 1)
    splits[rest] = np.where(is_val, "val", "train")
    return splits


def _anomaly_entry(anomaly: dict[str, list], counts: dict[str, list[int]]) -> dict[str, object]:
    """The manifest's ground truth: the classes and how many normal/anomalous images test/ holds."""
    test = counts["test"]
    return {
        **anomaly,
        "test": {"normal": sum(test[i] for i in anomaly["normal_labels"]), "anomalous": sum(test[i] for i in anomaly["anomaly_labels"])},
    }


def _check_nonempty(writers: dict[str, ShardWriter], class_names: list[str], counts: dict, labelled: bool,
                    anomaly: dict[str, list] | None = None) -> None:  # fmt: skip
    if writers["train"].count == 0:
        raise DataError("no image could be prepared (every file was skipped as unreadable); check prepare.path and manifest reasons.")
    if anomaly is not None:
        if writers["test"].count == 0 or not any(counts["test"][i] for i in anomaly["anomaly_labels"]):
            raise DataError("the test split holds no readable anomalous image; check prepare.anomaly_classes / normal_classes and the data.")
        if writers["val"].count == 0:
            raise DataError("the validation split holds no normal image; add normal images or raise prepare.val_fraction.")
        return
    if labelled:
        for c, name in enumerate(class_names):
            have = counts["train"][c] + counts["val"][c]
            if counts["train"][c] == 0 or counts["val"][c] == 0:
                raise DataError(
                    f"class '{name}' has {have} readable image{'s' if have != 1 else ''} but needs at least 2, one for the training "
                    "and one for the validation split; add images to that class or remove it from the data."
                )
    elif writers["val"].count == 0:
        have = writers["train"].count
        raise DataError(f"the data has {have} readable image{'s' if have != 1 else ''} but needs at least 2, one for the training and one for the validation split; add images.")


class _Captions:
    """The captions of the written images, per split in write order, and their shards.

    ``attributes`` keeps two floats per image while decoding (the words need the training
    split's class medians, known only at the end); ``file`` / ``npz`` keep each item's caption.
    """

    def __init__(self, source: str, channels: int, splits: tuple[str, ...]):
        self.source, self.channels = source, channels
        self.rows: dict[str, list] = {s: [] for s in splits}  # (mass, attribute) or the caption
        self.labels: dict[str, list[int]] = {s: [] for s in splits}

    def add(self, split: str, x: np.ndarray, item: Item) -> None:
        if self.source == "attributes":
            self.rows[split].append(measure(x))
            self.labels[split].append(int(item.label))
        elif self.source != "none":
            self.rows[split].append(item.caption)

    def write(self, writers: dict[str, ShardWriter], class_names: list[str], digest: Any) -> dict[str, Any]:
        """Write ``caption-NNNNN.npy`` beside each split's image shards, hash them; return the manifest's entry."""
        entry: dict[str, Any] = {"source": self.source, "count": {s: len(rows) for s, rows in self.rows.items()}, "attributes": []}
        if self.source == "none":
            return entry
        captions = self.rows
        if self.source == "attributes":
            thresholds = attribute_thresholds(_measures(self.rows["train"]), np.asarray(self.labels["train"], dtype=np.int64),
                                              len(class_names), self.channels)  # fmt: skip
            captions = {s: attribute_captions(_measures(rows), np.asarray(self.labels[s], dtype=np.int64), class_names, self.channels, thresholds)
                        for s, rows in self.rows.items()}  # fmt: skip
            # exact floats (JSON keeps a float64's repr): the words can be recomputed from them
            entry.update(attributes=list(ATTRIBUTE_NAMES[self.channels]), thresholds=thresholds.tolist())
        width = max((len(c) for rows in captions.values() for c in rows), default=1)
        for split, writer in writers.items():
            write_caption_shards(writer.folder, writer.shards, captions[split], width)
            digest.update(json.dumps(["captions", split, captions[split]], ensure_ascii=False).encode())
        return entry


def _measures(rows: list) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)  # [N, 2], also for an empty split


class _ChannelStats:
    """Streaming per-channel mean/std in the [-1, 1] space (sums in float64)."""

    def __init__(self, channels: int):
        self.n = 0
        self.s = np.zeros(channels)
        self.ss = np.zeros(channels)

    def add(self, x: np.ndarray) -> None:  # x: [C, H, W]
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        self.n += flat.shape[1]
        self.s += flat.sum(1)
        self.ss += (flat**2).sum(1)

    def mean(self) -> list[float]:
        return (self.s / max(self.n, 1)).round(6).tolist()

    def std(self) -> list[float]:
        m = self.s / max(self.n, 1)
        return np.sqrt(np.maximum(self.ss / max(self.n, 1) - m**2, 0)).round(6).tolist()


