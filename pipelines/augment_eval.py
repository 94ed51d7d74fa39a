"""The augment_eval stage: does the champion's synthetic data help a classifier? -> augment/metrics.json

    python pipelines/augment_eval.py             # what dvc.yaml runs; flags: python pipelines/augment_eval.py --help

The stage's code is :mod:`gan.stages.augment_eval` (also `gan augment-eval`); this script only runs it.
"""

from gan.errors import run_main
from gan.stages.augment_eval import main

if __name__ == "__main__":
    run_main(main)
