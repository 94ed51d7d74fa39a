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

from gan.augment.cas import (
    accuracy,
    classification_accuracy,
    real_slice,
    small_classifier,
    to_model_range,
    train_classifier,
)
from gan.augment.cli import build_parser, cli_main
from gan.augment.stream import DEFAULT_BATCH_SIZE, SyntheticStream, check_seed, generate, label_ids
from gan.augment.writers import (
    FORMATS,
    METADATA,
    NPZ_NAME,
    ImageFolderWriter,
    NpzWriter,
    check_fits,
    check_output_dir,
    estimate_bytes,
    free_space,
    safe_name,
    write_dataset,
    write_stream,
)

__all__ = [
    "DEFAULT_BATCH_SIZE", "FORMATS", "METADATA", "NPZ_NAME", "ImageFolderWriter", "NpzWriter", "SyntheticStream",
    "accuracy", "build_parser", "check_fits", "check_output_dir", "check_seed", "estimate_bytes", "free_space", "classification_accuracy", "cli_main", "generate", "label_ids",
    "real_slice", "safe_name", "small_classifier", "to_model_range", "train_classifier", "write_dataset", "write_stream",
]  # fmt: skip
