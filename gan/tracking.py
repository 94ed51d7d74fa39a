"""MLflow tracking: where the store is, one-time experiment creation, run provenance.

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 dvc repro   # a shared server
    dvc repro                                              # sqlite:///<repo>/mlflow.db

Log only from the driver or rank 0. SQLite stores break when several processes
create the same experiment at once, so experiments are created once, up front.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from gan.errors import GanError

DEFAULT_DB = "mlflow.db"


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The git/DVC project root above ``start`` (or the working directory)."""
    here = Path(start or os.getcwd()).resolve()
    for path in (here, *here.parents):
        if (path / "params.yaml").exists() or (path / ".git").exists():
            return path
    return here


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<repo>/mlflow.db`` (the registry needs a database)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{repo_root() / DEFAULT_DB}"


def store_file(uri: str | None = None) -> Path | None:
    """The database file of a ``sqlite:///`` tracking store (an input no output may overwrite), else None."""
    uri = uri or tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def configure() -> str:
    """Point mlflow at :func:`tracking_uri` (registry too) and return the URI."""
    import mlflow

    uri = tracking_uri()
    if redact(uri) != uri:
        # MLflow prints "View run ... at: <tracking URI>/#/..." when a run ends, password included
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """Create experiment ``name`` if missing and return its id; a clear error when the server is down."""
    import mlflow

    uri = configure()
    try:
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return mlflow.create_experiment(name, artifact_location=artifact_location(uri, name))
        except mlflow.exceptions.MlflowException:
            # another process created it between our lookup and create
            exp = mlflow.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id
    except mlflow.exceptions.MlflowException as err:
        raise GanError(f"MLflow tracking server {redact(uri)} cannot be used ({_first_line(err)}); check MLFLOW_TRACKING_URI or start the server.") from None


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: ``mlruns/<experiment>`` beside the database.

    MLflow's own default is ``./mlruns`` of whatever directory the process runs in, so a
    store used from two places would scatter its artifacts (and a command run from the
    project root would write into the project's ``mlruns/``). A server decides for itself
    (``--artifacts-destination``), so other schemes keep MLflow's default (None).
    """
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()
    return (db.parent / "mlruns" / experiment).as_uri()


def git_commit(root: str | os.PathLike | None = None) -> str:
    """The current git commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    cwd = str(root or repo_root())
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def source_tags(script: str, commit: str) -> dict[str, str]:
    """MLflow's own source tags, so the UI shows where a run came from (the stage script and commit)."""
    tags = {"mlflow.source.name": script, "mlflow.source.type": "LOCAL"}
    if commit and commit != "unknown":
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    return tags


def redact(uri: str) -> str:
    """Drop credentials from a URI before it is printed or logged (``user:pass@`` -> ``***@``)."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def check_reachable(uri: str | None = None, timeout: float = 5.0, must_exist: bool = False) -> str:
    """Fail fast with one sentence when the tracking store at ``uri`` cannot be used; return the URI.

    MLflow's own HTTP client retries with exponential backoff for minutes before it
    gives up, so an HTTP server is probed once (``GET /health``) with a short timeout.
    ``must_exist`` is for readers (``gan augment``): MLflow would silently create an
    empty SQLite file, which is a write and hides a wrong path.
    """
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            response = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)
        except requests.RequestException as err:
            raise GanError(f"MLflow tracking server {redact(uri)} is not reachable ({type(err).__name__}); start it or fix MLFLOW_TRACKING_URI.") from None
        if response.status_code >= 500 or response.status_code in (401, 403):
            raise GanError(f"MLflow tracking server {redact(uri)} answered HTTP {response.status_code}; check the server or the credentials in MLFLOW_TRACKING_URI.")
    elif must_exist and uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])  # sqlite:////abs or sqlite:///relative
        if not path.exists():
            raise GanError(f"the MLflow store {path} does not exist; run the register stage first or set MLFLOW_TRACKING_URI.")
    return uri
