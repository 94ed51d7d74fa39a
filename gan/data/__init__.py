"""Data: raw sources -> prepared shards (prepare stage) -> per-worker batches (train)."""

from gan.data.prepare import prepare_dataset
from gan.data.shards import (
    ShardedBatches,
    load_captions,
    load_extra,
    load_split,
    read_manifest,
    shard_arrays,
)

__all__ = [
    "ShardedBatches",
    "load_captions",
    "load_extra",
    "load_split",
    "prepare_dataset",
    "read_manifest",
    "shard_arrays",
]
