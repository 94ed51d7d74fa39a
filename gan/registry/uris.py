"""Model URIs: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` resolved to one concrete version, and loading it.

    ref = resolve_model("models:/digits-gan@champion")    # ModelRef(name, version, requested, run_id)
    model = load_model(ref)                               # the pyfunc's TaskModel
    ref, model = load_registered("models:/digits-gan@champion")           # the project's store, checked first

gan.registry.loader.load_runner builds on load_registered for every downstream command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gan.errors import GanError

# ---------------------------------------------------------------- model URIs


@dataclass(frozen=True)
class ModelRef:
    """A registered model resolved to one concrete version."""

    name: str
    version: str
    requested: str
    run_id: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3")."""
    if not uri.startswith("models:/"):
        raise GanError(f"model URI {uri!r} is not a registry URI; use models:/<name>@<alias> or models:/<name>/<version>.")
    rest = uri.removeprefix("models:/").strip("/")
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        if name and alias:
            return name, alias, None
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
    raise GanError(f"model URI {uri!r} is malformed; use models:/<name>@<alias> or models:/<name>/<version>.")


def resolve_model(uri: str, client: Any | None = None) -> ModelRef:
    """Resolve an alias or version URI once to a concrete version; GanError names what is unknown."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    name, alias, version = parse_model_uri(uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise GanError(f"registered model '{name}' does not exist in the MLflow registry; check the name in {uri} or run the register stage.") from None
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        what = f"alias '{alias}'" if alias else f"version {version}"
        raise GanError(f"model '{name}' has no {what}; check {uri} (aliases: {', '.join(aliases(client, name)) or 'none'}).") from None
    return ModelRef(name=name, version=str(mv.version), requested=uri, run_id=mv.run_id)


def aliases(client: Any, name: str) -> list[str]:
    """Aliases currently set on registered model ``name``."""
    return sorted(client.get_registered_model(name).aliases)


def load_model(ref: ModelRef) -> Any:
    """Load ``ref`` from the registry and return the pyfunc's TaskModel (its task's Runner at ``.runner``)."""
    import mlflow

    return mlflow.pyfunc.load_model(ref.uri).unwrap_python_model()


def load_registered(uri: str) -> tuple[ModelRef, Any]:
    """``(ref, TaskModel)`` of a registry URI, read from the project's MLflow store.

    The URI's form is checked before anything is touched; then MLflow is pointed at the
    project's store (``MLFLOW_TRACKING_URI``, else the repository's ``mlflow.db``, as every
    stage: :func:`gan.tracking.configure`), which must exist or answer, and the alias or
    version is resolved once.
    """
    from gan.tracking import check_reachable, configure

    parse_model_uri(uri)
    configure()
    check_reachable(must_exist=True)
    ref = resolve_model(uri)
    return ref, load_model(ref)
