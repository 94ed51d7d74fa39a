"""The featurize stage: data/prepared/ -> models/features/ + featurize/metrics.json.

    python pipelines/featurize.py             # what dvc.yaml runs; flags: python pipelines/featurize.py --help

The stage's code is :mod:`gan.stages.featurize` (also `gan featurize`); this script only runs it.
"""

from gan.errors import run_main
from gan.stages.featurize import main

if __name__ == "__main__":
    run_main(main)
