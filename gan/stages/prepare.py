"""The prepare stage: raw data -> data/prepared/ (shards + manifest.json) + prepare/metrics.json.

    python pipelines/prepare.py                 # reads the prepare: section of params.yaml
    dvc repro prepare

data/prepared/ is a pure function of the raw data and the prepare: params (no times in
it), so re-running on the same bytes changes nothing downstream; how long it took and
the image counts go to prepare/metrics.json, which no stage depends on.
"""

from __future__ import annotations

import time
from typing import Any

from gan.atomic import atomic_write_json
from gan.config import load_params
from gan.data import prepare_dataset
from gan.paths import check_outputs
from gan.stages import stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, data=False)
    parser.add_argument("--out", default=None, help="output directory (default: prepare.out)")
    parser.add_argument("--metrics", default=None,
                        help="counts and timing (default: prepare/metrics.json; with --out, only when given)")  # fmt: skip
    args = parser.parse_args(argv)
    cfg = load_params(args.params).prepare
    out = args.out or cfg.out
    check_outputs({"--out" if args.out else "prepare.out": out}, {"prepare.path": cfg.path, "--params": args.params})
    start = time.perf_counter()
    m = prepare_dataset(cfg, out)
    metrics = run_metrics(m, time.perf_counter() - start)
    metrics_path = args.metrics or (None if args.out else "prepare/metrics.json")
    if metrics_path:  # a run into another --out must not overwrite the project's prepare/metrics.json
        atomic_write_json(metrics_path, metrics)
    print(
        f"prepare: {metrics['train_images']} train + {metrics['val_images']} val images "
        f"({m['channels']}x{m['image_size']}x{m['image_size']}, {m['num_classes']} classes, "
        f"{metrics['skipped']} skipped, {len(m['ignored'])} ignored{' (listed in manifest.json)' if m['skipped'] or m['ignored'] else ''}) "
        f"-> {out} in {metrics['seconds']:.1f}s"
    )
    return 0


def run_metrics(manifest: dict[str, Any], seconds: float) -> dict[str, Any]:
    """prepare/metrics.json: what this run produced and how long it took."""
    counts = manifest["counts"]
    return {
        "train_images": int(counts["train"]["total"]),
        "val_images": int(counts["val"]["total"]),
        "skipped": len(manifest["skipped"]),
        "seconds": round(seconds, 3),
    }
