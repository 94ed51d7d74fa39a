"""The prepare stage: raw data -> data/prepared/ (shards + manifest.json).

    python pipelines/prepare.py             # what dvc.yaml runs; flags: python pipelines/prepare.py --help

The stage's code is :mod:`gan.stages.prepare` (also `gan prepare`); this script only runs it.
"""

from gan.errors import run_main
from gan.stages.prepare import main

if __name__ == "__main__":
    run_main(main)
