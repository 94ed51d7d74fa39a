"""The train stage: Ray Train adversarial training -> models/generator/ and train/.

    python pipelines/train.py             # what dvc.yaml runs; flags: python pipelines/train.py --help

The stage's code is :mod:`gan.stages.train` (also `gan train`); this script only runs it.
"""

from gan.errors import run_main
from gan.stages.train import main

if __name__ == "__main__":
    run_main(main)
