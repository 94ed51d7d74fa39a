"""The pipeline's stages as library code: one module per DVC stage, each with ``main(argv)``.

    python pipelines/train.py          # what dvc.yaml runs: a thin script calling gan.stages.train.main
    gan train --params params.yaml     # the same main() through the CLI

A stage reads its ``params.yaml`` section, calls the library and writes its outputs
atomically; ``pipelines/<stage>.py`` only hands ``main`` to :func:`gan.errors.run_main`.
What every stage's command line shares lives here.
"""

from __future__ import annotations

import argparse

STAGES = ("prepare", "featurize", "tune", "train", "evaluate", "register", "augment_eval")


def stage_parser(doc: str | None, *, data: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the flags every stage has: ``--params`` and (most) ``--data``.

    ``doc`` is the stage module's docstring: its first line is the description.
    """
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    if data:
        parser.add_argument("--data", default=None, help="prepared data directory (default: prepare.out)")
    return parser
