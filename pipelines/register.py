"""The register stage: models/generator/ -> a new MLflow model version + registry/decision.json.

    python pipelines/register.py             # what dvc.yaml runs; flags: python pipelines/register.py --help

The stage's code is :mod:`gan.stages.register` (also `gan register`); this script only runs it.
"""

from gan.errors import run_main
from gan.stages.register import main

if __name__ == "__main__":
    run_main(main)
