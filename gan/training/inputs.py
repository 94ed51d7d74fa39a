"""What workers read (the prepared data, the feature network) reaches them on any node of a cluster.

    refs = {name: stage_input(name, path, storage) for name, path in inputs.items()}   # driver
    data_dir = local_path(refs["data"])                                                # worker

A Ray Train worker or Tune trial on another node cannot open the driver's
``data/prepared`` unless the repository happens to be mounted at the same path
everywhere. So, when the stage runs on a cluster (``RAY_ADDRESS`` set), the driver copies
each input once per content hash to ``<storage_path>/_inputs/<name>-<hash>`` with
``pyarrow.fs`` (a local or NFS path and ``s3://`` / ``gs://`` alike; the storage that Ray
Train already needs shared for its checkpoints), and writes a ``_STAGED`` marker last. A
worker then uses the driver's path where it exists on its node with the same hash (one
machine, or a shared mount: nothing is copied), and otherwise copies the staged input once
per node into a node-local cache under a file lock, so the workers of a node share one
copy and memory-map it as before. Why this route and not Ray Data: docs/architecture.md.

The hash of a prepared data set is that of its ``manifest.json`` (which holds the content
hash of every image and label), so checking the driver's path costs one small read; other
inputs are hashed whole (a feature network is a few hundred KB).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gan.errors import GanError

STAGED_MARKER = "_STAGED"
CACHE_ENV = "GAN_INPUT_CACHE"


def input_hash(path: str | os.PathLike) -> str:
    """A 16-hex identity of ``path``'s content: its manifest.json's bytes when it has one, else every file's name and bytes."""
    base = Path(path)
    manifest = base / "manifest.json"
    if manifest.is_file():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    return tree_hash(base)


def tree_hash(path: str | os.PathLike) -> str:
    """sha256 over every file below ``path`` (names and bytes); a file hashes as itself."""
    digest = hashlib.sha256()
    base = Path(path)
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
    for f in files:
        digest.update(f.relative_to(base).as_posix().encode() if f != base else b"")
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def stage_input(name: str, path: str | os.PathLike, storage: str | None) -> dict[str, Any]:
    """A reference to ``path`` that :func:`local_path` resolves on any node.

    ``storage`` None: the driver's path only (a local Ray, where every worker shares this
    machine's files). Else the input is copied to ``<storage>/_inputs/<name>-<hash>`` unless
    a complete copy is already there.
    """
    local = Path(path).resolve()
    ref: dict[str, Any] = {"name": name, "driver_path": str(local), "hash": input_hash(local), "staged": None, "file": local.is_file()}
    if storage is None:
        return ref
    uri = f"{storage.rstrip('/')}/_inputs/{name}-{ref['hash']}"
    if not _is_staged(uri):
        _copy(str(local), uri)
        _write_marker(uri)
    ref["staged"] = uri
    return ref


def local_path(ref: str | dict[str, Any] | None) -> str | None:
    """The path on this node that holds ``ref``'s input (a plain path or None passes through)."""
    if ref is None or isinstance(ref, str):
        return ref
    driver = Path(ref["driver_path"])
    if driver.exists() and input_hash(driver) == ref["hash"]:
        return str(driver)
    if not ref.get("staged"):
        raise GanError(
            f"{ref['name']}: {driver} is not on this node ({_node()}) or holds other data, and it was not staged to shared storage; "
            "run the stage against the cluster through RAY_ADDRESS (it then stages its inputs under train.storage_path), "
            "or mount the project at the same path on every node."
        )
    copy = _cached_copy(ref)
    return str(Path(copy) / driver.name) if ref.get("file") else copy


def stage_inputs(inputs: dict[str, str | os.PathLike | None], storage: str) -> dict[str, Any]:
    """:func:`stage_input` for each present input; staged under ``storage`` only on a cluster joined
    through ``RAY_ADDRESS`` (a Ray that this process started runs on this machine's files)."""
    on_cluster = bool(os.environ.get("RAY_ADDRESS"))
    refs: dict[str, Any] = {}
    for name, path in inputs.items():
        if path is None or not Path(path).exists():  # an absent optional input (no feature network) stays absent
            refs[name] = str(Path(path).resolve()) if path else None
        else:
            refs[name] = stage_input(name, path, storage if on_cluster else None)
    return refs


def _cached_copy(ref: dict[str, Any]) -> str:
    """The staged input copied once into this node's cache (under a lock: a node's workers share one copy)."""
    from filelock import FileLock

    root = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "gan-inputs")
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"{ref['name']}-{ref['hash']}"
    with FileLock(str(dest) + ".lock"):
        if (dest / STAGED_MARKER).exists():
            return str(dest)
        if not _is_staged(ref["staged"]):
            raise GanError(
                f"{ref['name']}: the staged copy {ref['staged']} is missing or incomplete on this node ({_node()}); "
                "train.storage_path must be storage that every node shares (NFS or s3://), not a node-local folder."
            )
        partial = root / f".{dest.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        _copy(ref["staged"], str(partial))
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)
    return str(dest)


def _filesystem(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def _copy(src: str, dst: str) -> None:
    """``src`` (a folder or a file) to ``dst``, each a local path or a URI."""
    import pyarrow.fs as pafs

    src_fs, src_path = _filesystem(src)
    dst_fs, dst_path = _filesystem(dst)
    if src_fs.get_file_info(src_path).type == pafs.FileType.File:
        dst_fs.create_dir(dst_path, recursive=True)
        dst_path = f"{dst_path}/{Path(src_path).name}"
    else:
        dst_fs.create_dir(dst_path, recursive=True)
    pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)


def _is_staged(uri: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = _filesystem(uri)
    return fs.get_file_info(f"{path}/{STAGED_MARKER}").type == pafs.FileType.File


def _write_marker(uri: str) -> None:
    fs, path = _filesystem(uri)
    with fs.open_output_stream(f"{path}/{STAGED_MARKER}") as out:
        out.write(b"complete\n")


def _node() -> str:
    try:
        import ray

        return f"Ray node {ray.get_runtime_context().get_node_id()[:8]}"
    except Exception:
        return "this machine"
