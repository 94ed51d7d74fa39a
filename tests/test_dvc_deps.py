"""dvc.yaml's deps and params against the code: every stage lists what its script really uses.

    pytest -q tests/test_dvc_deps.py      # a second; no DVC run

For each stage, the gan/ modules its script imports (directly, through other modules,
and inside functions) are found by reading the source. Each must be covered by a dep
(the file or a folder above it) unless it is plumbing that never changes an output
(``PLUMBING``, the same list as dvc.yaml's header); each gan/ dep must be used. A
missing dep means a code change that DVC does not see; an unused one re-runs a stage
for nothing.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

# How files land, what the console shows, where services live (see dvc.yaml's header).
PLUMBING = {
    "gan/atomic.py",
    "gan/errors.py",
    "gan/console.py",
    "gan/tracking.py",
    "gan/ray_session.py",
    "gan/training/tracking.py",
    "gan/cli.py",
    "gan/stages/__init__.py",
    "gan/paths.py",
    "gan/signals.py",
    "gan/training/inputs.py",
}

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


@cache
def reexport_only(init: Path) -> bool:
    """An ``__init__.py`` with nothing but a docstring, imports and ``__all__``."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            continue
        return False
    return True


def reexports(init: Path) -> dict[str, str]:
    """name -> the module it is imported from, for each ``from gan.x import name`` in ``init``."""
    table = {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gan"):
            table.update({alias.asname or alias.name: node.module for alias in node.names})
    return table


def imported(path: Path) -> set[str]:
    """The gan modules ``path`` imports anywhere; a name taken from a re-exporting package
    counts as its defining module (``from gan.data import load_split`` -> gan.data.shards)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] == "gan"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "gan":
            package = module_file(node.module)
            table = reexports(package) if package and package.name == "__init__.py" and reexport_only(package) else {}
            if node.module == "gan.tasks" and TASK_LOADERS & {alias.name for alias in node.names}:
                names |= task_modules()
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if module_file(sub) else table.get(alias.name, node.module))
    return names


def task_modules() -> set[str]:
    """The modules gan.tasks.make_task/task_class import by name at run time (the TASKS table)."""
    from gan.tasks import TASKS

    return {target.split(":")[0] for target in TASKS.values()}


# names whose caller imports a task module at run time (reading TASKS alone does not)
TASK_LOADERS = {"make_task", "task_class"}


def used_by(script: Path) -> set[str]:
    """Repo-relative files of the gan modules ``script`` needs, not following plumbing."""
    seen: set[str] = set()
    todo = [script]
    while todo:
        for name in imported(todo.pop()):
            path = module_file(name)
            if path is None:
                continue
            rel = path.relative_to(ROOT).as_posix()
            if rel in seen or rel in PLUMBING or (path.name == "__init__.py" and reexport_only(path)):
                continue
            seen.add(rel)
            todo.append(path)
    return seen


def covers(dep: str, file: str) -> bool:
    return file == dep or file.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_stage_lists_its_script_and_the_library_it_uses(stage):
    spec = DVC["stages"][stage]
    script = spec["cmd"].split()[-1]
    assert script == f"pipelines/{stage}.py" and script in spec["deps"], f"dvc.yaml: stage {stage} must run and depend on pipelines/{stage}.py"
    used = used_by(ROOT / script)
    deps = [d for d in spec["deps"] if d.startswith("gan/")]
    missing = sorted(f for f in used if not any(covers(d, f) for d in deps))
    assert not missing, f"dvc.yaml: stage {stage} uses {missing} but does not list them in deps"
    unused = sorted(d for d in deps if not any(covers(d, f) for f in used))
    assert not unused, f"dvc.yaml: stage {stage} lists {unused} in deps but its code does not use them"
    assert not set(deps) & PLUMBING, f"dvc.yaml: stage {stage} lists plumbing {sorted(set(deps) & PLUMBING)}"


@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_stage_params_are_keys_of_params_yaml(stage):
    params = DVC["stages"][stage].get("params", [])
    assert stage in params, f"dvc.yaml: stage {stage} must list its own params.yaml section '{stage}'"
    for key in params:
        node = PARAMS
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml: stage {stage} lists params key '{key}', which params.yaml lacks"
            node = node[part]


def test_plumbing_modules_exist():
    # a renamed plumbing module would otherwise silently stop being excluded
    assert all((ROOT / path).is_file() for path in PLUMBING), sorted(p for p in PLUMBING if not (ROOT / p).is_file())


def test_tune_params_are_the_train_keys_a_trial_reads():
    """tune re-runs when a key that shapes a trial changes (train.privacy too), and for no other train key."""
    from gan.config import TrainConfig
    from gan.tuning import SET_BY_TRIALS, TRAIN_STAGE_ONLY, trial_train_keys

    listed = {key for key in DVC["stages"]["tune"]["params"] if isinstance(key, str) and key.startswith("train.")}
    assert listed == {f"train.{key}" for key in trial_train_keys()}
    assert set(SET_BY_TRIALS) | set(TRAIN_STAGE_ONLY) | set(trial_train_keys()) == set(TrainConfig.model_fields)
    assert "privacy" in trial_train_keys()


def test_keys_set_by_trials_do_not_reach_a_trial():
    """What SET_BY_TRIALS names, trial_params replaces: changing it in params.yaml changes no trial."""
    from gan.config import parse_params
    from gan.tuning import SET_BY_TRIALS, trial_params

    base = parse_params({})
    changed = parse_params({"train": {"steps": 7, "eval_every": 3, "eval_samples": 33, "log_every": 2, "checkpoint_every": 5,
                                      "sample_every": 9, "num_workers": 3, "lr_G": 0.123, "lr_D": 0.321}})  # fmt: skip
    assert set(changed.train.model_dump(include=set(SET_BY_TRIALS)).items()) != set(base.train.model_dump(include=set(SET_BY_TRIALS)).items())
    point = {"lr_G": 1e-3, "lr_D": 2e-3}
    assert trial_params(base, point).train == trial_params(changed, point).train
