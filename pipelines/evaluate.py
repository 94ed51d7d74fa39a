"""The evaluate stage: models/generator/ -> eval/metrics.json + eval/samples.png (and one MLflow run).

    python pipelines/evaluate.py             # what dvc.yaml runs; flags: python pipelines/evaluate.py --help

The stage's code is :mod:`gan.stages.evaluate` (also `gan evaluate`); this script only runs it.
"""

from gan.errors import run_main
from gan.stages.evaluate import main

if __name__ == "__main__":
    run_main(main)
