"""The prepare stage: raw data -> data/prepared/ (shards + manifest.json).

    python pipelines/prepare.py                 # reads the prepare: section of params.yaml
    dvc repro prepare
"""

from __future__ import annotations

from gan.config import load_params
from gan.data import prepare_dataset
from gan.paths import check_outputs
from gan.stages import stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, data=False)
    parser.add_argument("--out", default=None, help="output directory (default: prepare.out)")
    args = parser.parse_args(argv)
    cfg = load_params(args.params).prepare
    out = args.out or cfg.out
    check_outputs({"--out" if args.out else "prepare.out": out}, {"prepare.path": cfg.path, "--params": args.params})
    m = prepare_dataset(cfg, out)
    counts = m["counts"]
    print(
        f"prepare: {counts['train']['total']} train + {counts['val']['total']} val images "
        f"({m['channels']}x{m['image_size']}x{m['image_size']}, {m['num_classes']} classes, "
        f"{len(m['skipped'])} skipped, {len(m['ignored'])} ignored{' (listed in manifest.json)' if m['skipped'] or m['ignored'] else ''}) "
        f"-> {out} in {m['seconds']:.1f}s"
    )
    return 0

