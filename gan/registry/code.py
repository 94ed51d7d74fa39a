"""The project code stored with every model version: the import closure of the inference code.

    files = model_code_files()              # gan/models, gan/inference, gan/export.py, ... (relative paths)
    stage_model_code(tmp)                   # copied under tmp/gan, a code_paths entry for MLflow

Found by reading imports (also inside functions, not under TYPE_CHECKING); anything from
the training side (TRAINING_SIDE) is refused, so a version never depends on training code.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from gan.errors import GanError

GAN_SRC = Path(__file__).resolve().parents[1]  # .../gan
MODEL_FILE = GAN_SRC / "mlflow_model.py"
# What the pyfunc model imports: the model file itself, every network build_network may
# pick and every task's inference module (chosen by the exported config.json at load time).
MODEL_CODE_ENTRIES = ("gan.mlflow_model", "gan.models", "gan.inference")
# Modules that must never travel with a model version: they belong to training, data
# preparation or orchestration, and a model that needs them is not independent of training.
TRAINING_SIDE = (
    "gan.training", "gan.tasks", "gan.tuning", "gan.losses", "gan.data", "gan.evaluation", "gan.metrics",
    "gan.features", "gan.config", "gan.ema", "gan.diffaugment", "gan.registry", "gan.augment",
    "gan.cli", "gan.tracking", "gan.retrain",
)  # fmt: skip
MODEL_ARTIFACT_NAME = "generator"


# ---------------------------------------------------------------- code stored with the model


def module_path(module: str, src: Path = GAN_SRC) -> Path | None:
    """The file of ``gan.x.y`` under ``src`` (the ``gan`` directory): a module or a package's ``__init__``."""
    parts = module.split(".")[1:]
    base = src.joinpath(*parts)
    if base.is_dir() and (base / "__init__.py").exists():
        return base / "__init__.py"
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    return None


def gan_imports(path: Path, module: str, src: Path = GAN_SRC) -> set[str]:
    """Modules of the ``gan`` package imported in ``path``, also inside functions (not under TYPE_CHECKING)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "gan")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "gan":
                continue
            found.add(base)
            # `from gan.models import mlp` imports a submodule, `from gan.models import build_G` does not
            found.update(f"{base}.{a.name}" for a in node.names if module_path(f"{base}.{a.name}", src) is not None)
    return found


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (never run, so never needed)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def model_code_files(src: Path = GAN_SRC, entries: tuple[str, ...] = MODEL_CODE_ENTRIES) -> list[Path]:
    """The ``gan`` files the pyfunc model needs, relative to ``src``: the import closure of ``entries``.

    A package counts with all its modules (``build_G`` chooses among them at run time), and
    every parent package's ``__init__.py`` is included. Raises GanError when the closure
    reaches a training-side module.
    """
    # (module, whole package?): parents of a module only need their __init__.py
    todo: list[tuple[str, bool]] = [(m, True) for m in entries]
    seen: set[tuple[str, bool]] = set()
    files: set[Path] = set()
    while todo:
        module, whole = todo.pop()
        whole = whole and module != "gan"  # the top-level package is never taken whole
        if (module, whole) in seen:
            continue
        seen.add((module, whole))
        if module.startswith(TRAINING_SIDE):
            raise GanError(f"the model code imports {module}, which belongs to training; move what gan/models or gan/export.py need out of it.")
        path = module_path(module, src)
        if path is None:
            continue  # a name imported from a module, not a module
        parts = module.split(".")
        todo.extend((".".join(parts[:i]), False) for i in range(1, len(parts)))
        members = [path]
        if whole and path.name == "__init__.py":
            members += sorted(p for p in path.parent.glob("*.py") if p.name != "__init__.py")
            todo.extend((f"{module}.{p.stem}", True) for p in members[1:])
        for member in members:
            files.add(member)
            member_module = module if member == path else f"{module}.{member.stem}"
            todo.extend((m, True) for m in gan_imports(member, member_module, src))
    return sorted(p.relative_to(src) for p in files)


def stage_model_code(dest: Path, src: Path = GAN_SRC) -> Path:
    """Copy :func:`model_code_files` into ``dest/gan`` and return that directory (a ``code_paths`` entry)."""
    root = Path(dest) / "gan"
    for rel in model_code_files(src):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, root / rel)
    return root
