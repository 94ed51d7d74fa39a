"""The tune stage: Ray Tune searches lr_G / lr_D (and friends) -> tune/best.json.

    python pipelines/tune.py             # what dvc.yaml runs; flags: python pipelines/tune.py --help

The stage's code is :mod:`gan.stages.tune` (also `gan tune`); this script only runs it.
"""

from gan.errors import run_main
from gan.stages.tune import main

if __name__ == "__main__":
    run_main(main)
