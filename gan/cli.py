"""The ``gan`` command: every pipeline stage and the downstream tools under one name.

    gan check                      # validate params.yaml and exit
    gan models                     # list tasks, architectures, losses and regularisers
    gan prepare | featurize | tune | train | evaluate | register | augment-eval
    gan augment --model models:/digits-gan@champion --num 1000 --out synth/ --format npz
    gan translate --model models:/digits-translate@champion --in photos/ --to dilated_inverted --out translated/
    gan upscale --model models:/photos-sr@champion --in photos/ --out photos_x4/
    gan retrain                    # scheduled retraining: new data -> dvc repro -> gated promotion
    gan score --model models:/digits-detect@champion --in images/ --out scores.csv   # anomaly scores

Each stage subcommand runs the same ``main()`` that ``dvc repro`` runs
(:mod:`gan.stages`, behind the thin ``pipelines/<stage>.py`` scripts), so flags after the
subcommand are that stage's flags.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gan.errors import run_main

# subcommand -> (module, function, help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "prepare": ("gan.stages.prepare", "main", "raw data -> data/prepared/"),
    "featurize": ("gan.stages.featurize", "main", "train the feature network used by FID/KID"),
    "tune": ("gan.stages.tune", "main", "Ray Tune search of the lr_G / lr_D balance"),
    "train": ("gan.stages.train", "main", "Ray Train adversarial training -> models/generator/"),
    "evaluate": ("gan.stages.evaluate", "main", "FID, KID, precision/recall, mode coverage"),
    "register": ("gan.stages.register", "main", "MLflow model version, challenger/champion"),
    "augment-eval": ("gan.stages.augment_eval", "main", "classification accuracy with synthetic data"),
    "augment": ("gan.augment", "cli_main", "generate labelled synthetic data from a registered model"),
    "translate": ("gan.translate", "cli_main", "translate images to a domain with a registered translate model"),
    "upscale": ("gan.upscale", "cli_main", "upscale a folder of images with a super-resolution model"),
    "repro": ("gan.repro", "cli_main", "dvc repro with one local Ray shared by every stage"),
    "retrain": ("gan.retrain", "cli_main", "scheduled retraining with gated promotion"),
    "score": ("gan.detect", "cli_main", "score images for anomalies with a registered detect model"),
}


def _check(argv: list[str]) -> int:
    from gan.config import load_params

    parser = argparse.ArgumentParser(prog="gan check", description="Validate params.yaml.")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    load_params(args.params)
    print(f"{args.params}: ok")
    return 0


def _models(argv: list[str]) -> int:
    from gan.models import describe
    from gan.tasks import describe_tasks

    print(describe_tasks())
    print(describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("check", help="validate params.yaml", add_help=False)
    sub.add_parser("models", help="list tasks, architectures, losses and regularisers", add_help=False)
    for name, (_, _, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def dispatch(argv: list[str]) -> int:
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "check":
        return _check(rest)
    if name == "models":
        return _models(rest)
    if name not in COMMANDS:
        parser.error(f"unknown command '{name}'; choose from check, models, {', '.join(COMMANDS)}")
    module, func, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), func)(rest) or 0


def main() -> None:
    """Console-script entry point."""
    run_main(lambda: dispatch(sys.argv[1:]))
if __name__ == "__main__":
    main()
