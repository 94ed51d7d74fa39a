"""Every task through the real pipeline as a user meets it: an example, `gan repro`, `@champion`, its downstream command.

    pytest -q tests/test_task_pipelines.py      # about a minute per example on 2 cores

For each example params file of a task other than ``generate`` (whose default pipeline
tests/test_pipeline_dvc.py runs), a fresh git + DVC repo holding this project does what
the example's header tells a user: ``cp docs/examples/<name>.yaml params.yaml && gan
repro``, with the sizes of :data:`SMOKE` on top so that it takes about a minute; then
the header's downstream command (``gan translate``, ``gan score``, ``gan upscale``) on a
few images through ``models:/<name>@champion``, and a second ``gan repro`` that runs
nothing. A new task or method is covered by adding its example and its sizes here;
:func:`test_every_task_and_example_is_covered` fails until it is.

The first ``gan repro`` of every example runs at once in :func:`reproduced`,
:data:`PARALLEL` at a time, each on its own local Ray: a tiny pipeline spends most of its
minute starting processes and waiting on Ray's polls, so three share two cores well.
"""

from __future__ import annotations

import copy
import csv
import re
import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from gan.tasks import TASKS

from .pipeline_repo import BIN, COPIED, ROOT, copy_project, declared_outputs, init_repo, ran, run

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "docs" / "examples"

# Sizes that make each stage a few seconds: 8 px images, 8-wide nets, one 10-step tune trial,
# 20 training steps, a few dozen samples for the metrics.
COMMON: dict[str, Any] = {
    "featurize": {"epochs": 1, "width": 8, "feature_dim": 16},
    "tune": {"num_samples": 1, "max_steps": 10, "eval_every": 10, "eval_samples": 64, "max_concurrent_trials": 1},
    "train": {"batch_size": 16, "steps": 20, "checkpoint_every": 20, "sample_every": 20, "log_every": 10, "eval_every": 0,
              "eval_samples": 64, "divergence_patience": 20},
    "evaluate": {"num_samples": 64, "kid_subset_size": 32, "batch_size": 64},
    "register": {"eval_samples": 64},
}
SMALL_NETS = {"prepare": {"image_size": 8}, "model": {"z_dim": 8, "g_width": 8, "d_width": 8}}

# example -> its sizes on top of COMMON: every example of a task other than generate, and StackGAN,
# the generate architecture whose declarations differ most (captions, featurize's text encoder,
# no D for the audit, `gan augment --captions`)
SMOKE: dict[str, dict[str, Any]] = {
    "generate-photos-stackgan": {"prepare": {"image_size": 16, "patches": {"per_photo": 40}},
                                 "model": {"z_dim": 8, "g_width": 8, "d_width": 8, "stackgan": {"c_dim": 8, "n_res": 1, "stage1_size": 8}},
                                 "featurize": {"text": {"epochs": 2}}, "train": {"stackgan": {"stage1_steps": 5}},
                                 "augment_eval": {"real_per_class": 5, "synthetic_per_class": 5, "epochs": 1},
                                 # a 20-step generator is far from every real image, which the privacy audit's
                                 # share cannot tell from copying (docs/benchmarks.md): no gate for mechanics
                                 "register": {"max_memorisation": None}},
    "translate-cyclegan": {**SMALL_NETS, "model": {**SMALL_NETS["model"], "translate": {"n_blocks": 1, "d_layers": 1}}},
    "translate-pix2pix": {**SMALL_NETS, "model": {**SMALL_NETS["model"], "translate": {"d_layers": 1}}},
    "translate-stargan": {**SMALL_NETS, "model": {**SMALL_NETS["model"], "translate": {"n_blocks": 1, "d_layers": 1}},
                          "train": {"n_critic": 1}},
    "detect-ganomaly": SMALL_NETS,
    "detect-fanogan": {**SMALL_NETS, "model": {**SMALL_NETS["model"], "detect": {"encoder_steps": 5}}, "train": {"n_critic": 1}},
    "upscale-photos": {"prepare": {"pairs": {"scale": 2, "patch_size": 16, "patches_per_image": 8, "val_size": 32}},
                       "model": {"upscale": {"blocks": 1, "width": 8, "growth": 4, "d_width": 8, "pretrain_steps": 10, "lr_milestones": []}}},
}
# the generate task's pipeline is the project's default one (tests/test_pipeline_dvc.py)
COVERED_ELSEWHERE = {"generate"}
# first repros running at once: 2 on 2 cores (3 took 0.69x the time of one at a time, but
# starved Ray Train's helpers into logged time-outs)
PARALLEL = 2


def example_task(path: Path) -> str:
    return yaml.safe_load(path.read_text())["model"]["task"]


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def downstream_command(path: Path) -> list[str]:
    """The ``gan ...`` line of the example's header (``#   gan translate --model models:/...@champion ...``)."""
    (line,) = [line for line in path.read_text().splitlines() if line.startswith("#   gan ")]
    return shlex.split(line.removeprefix("#"))


def with_value(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def write_inputs(repo: Path, count: int = 4) -> Path:
    """A folder of ``count`` PNGs from the prepared validation images: what a user would hand the downstream command."""
    x = np.load(sorted((repo / "data/prepared/val").glob("x-*.npy"))[0])[:count]  # [n, C, S, S] in [-1, 1]
    folder = repo / "inputs"
    folder.mkdir()
    for i, img in enumerate(np.clip((x + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)):
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(folder / f"img{i}.png")
    return folder


def user_repo(repo: Path, example: Path, sizes: dict[str, Any]) -> Path:
    """A fresh git + DVC repo with this project and ``example`` copied to params.yaml as its header says, ``sizes`` on top."""
    copy_project(repo, (*COPIED, "docs/examples"))
    shutil.copy(repo / "docs/examples" / example.name, repo / "params.yaml")  # cp docs/examples/<name>.yaml params.yaml
    raw = merge(merge(yaml.safe_load((repo / "params.yaml").read_text()), COMMON), sizes)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return init_repo(repo, "params from the example")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """``{example: (repo, output of its first gan repro)}`` for every SMOKE example, PARALLEL at a time."""
    repos = {name: user_repo(tmp_path_factory.mktemp(name) / "repo", EXAMPLES / f"{name}.yaml", SMOKE[name]) for name in SMOKE}

    def repro(repo: Path) -> str:
        proc = run(repo, str(BIN / "gan"), "repro", check=False, timeout=1200)
        return f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"

    with ThreadPoolExecutor(PARALLEL) as pool:
        outputs = list(pool.map(repro, repos.values()))
    return {name: (repo, out) for (name, repo), out in zip(repos.items(), outputs, strict=True)}


def test_every_task_and_example_is_covered():
    """Each task has an example; each example of a task not covered elsewhere has its sizes here."""
    examples = {path.stem: example_task(path) for path in sorted(EXAMPLES.glob("*.yaml"))}
    assert set(TASKS) <= set(examples.values()), f"tasks without an example in docs/examples: {set(TASKS) - set(examples.values())}"
    missing = {name for name, task in examples.items() if task not in COVERED_ELSEWHERE} - set(SMOKE)
    assert not missing, f"examples no pipeline test runs (add their sizes to SMOKE): {sorted(missing)}"
    assert set(SMOKE) <= set(examples), f"SMOKE names examples that do not exist: {set(SMOKE) - set(examples)}"


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_example_runs_through_gan_repro_to_its_champion_and_downstream_command(name, reproduced):
    example = EXAMPLES / f"{name}.yaml"
    repo, out = reproduced[name]
    assert out.startswith("exit 0\n"), out
    # no traceback through the product's code (Ray may log its own transient ones under load)
    assert not re.search(r'File "[^"]*/gan/[^"]*", line', out), out
    missing = [path for path in declared_outputs(repo) if not (repo / path).exists()]
    assert not missing, f"outputs declared in dvc.yaml but not written: {missing}"

    params = yaml.safe_load((repo / "params.yaml").read_text())
    decision = yaml.safe_load((repo / "registry/decision.json").read_text())
    assert decision["promoted"] and decision["alias"] == "champion" and decision["task"] == example_task(example), decision
    augment = yaml.safe_load((repo / "augment/metrics.json").read_text())
    # measured exactly when the model makes labelled images (the task's declaration, recorded by register)
    assert ("skipped" not in augment) == decision["augments"], augment

    inputs = write_inputs(repo)
    args = downstream_command(example)
    if "--in" in args:
        args = with_value(args, "--in", str(inputs))
    if "--captions" in args:  # text-conditioned: two captions, --num samples of each
        (repo / "captions.txt").write_text("a bright textured coffee\na dark smooth rocket\n")
        args = with_value(with_value(args, "--captions", str(repo / "captions.txt")), "--num", "2")
    assert f"models:/{params['register']['model_name']}@champion" in args, args
    result = args[args.index("--out") + 1]
    down = run(repo, str(BIN / args[0]), *args[1:], check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    written = repo / result
    if written.suffix == ".csv":
        with written.open() as f:
            assert len(list(csv.DictReader(f))) == 4
    elif "--captions" in args:  # gan augment's default format: samples.npz, --num for each caption
        assert np.load(written / "samples.npz")["x"].shape[0] == 4
    else:
        assert sorted(p.name for p in written.iterdir()) == sorted(p.name for p in inputs.iterdir())

    again = run(repo, str(BIN / "gan"), "repro")
    assert not ran(again.stdout + again.stderr), again.stdout + again.stderr
