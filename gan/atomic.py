"""Write outputs to a temporary place and move them into position only when complete.

A failed or interrupted stage therefore leaves either the previous output or
nothing, never a half-written file or directory.

    with atomic_dir("data/prepared") as tmp:
        write_everything_into(tmp)
    # data/prepared now holds the complete result
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gan.errors import GanError

# Errors that mean "this place cannot take the output" (full, read-only, over a size limit,
# quota): reported as one sentence naming the output instead of a traceback.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def output_error(target: Path, err: OSError) -> GanError:
    """One sentence for an output that cannot be written: what, why, and what to do."""
    reason = (err.strerror or _short_write_reason(target)).lower()
    if err.errno in (errno.EEXIST, errno.ENOTDIR):
        # mkdir(parents=True) reports a path through a regular file as "file exists"
        blocker = next((p for p in (target, *target.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            reason = f"{blocker} is a file, not a directory"
    full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or err.errno is None
    advice = "free space there or choose another output location" if full else "choose another output location or make it writable"
    return GanError(f"cannot write {target}: {reason}; {advice} (nothing was changed).")


def _is_short_write(err: OSError) -> bool:
    """numpy's ``tofile`` reports a failed write as ``OSError("N requested and M written")``, without errno."""
    return err.errno is None and "requested and" in str(err) and "written" in str(err)


def _short_write_reason(target: Path) -> str:
    """Why a write came up short when the OS error number was lost on the way."""
    import resource

    with contextlib.suppress(OSError):
        if os.statvfs(target.parent).f_bavail == 0:
            return os.strerror(errno.ENOSPC)
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return f"{os.strerror(errno.EFBIG)} (the file size limit, ulimit -f)"
    return "a write came up short"


@contextlib.contextmanager
def _output_errors(target: Path, any_error: bool = False) -> Iterator[None]:
    """Turn write failures (disk full, read-only, file size limit) into :func:`output_error`.

    ``any_error``: every OSError counts (creating the output's directory, where a
    permission error or a parent that is a regular file is also the output's fault).
    """
    try:
        yield
    except OSError as err:
        if any_error or err.errno in WRITE_ERRNOS or _is_short_write(err):
            raise output_error(target, err) from None
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``target``; on success replace ``target`` with it.

    The temporary directory lives in the same parent so the final ``rename`` is atomic
    on one filesystem. On any exception it is removed and ``target`` is untouched.
    """
    target = Path(target)
    with _output_errors(target, any_error=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; outputs are shared artefacts
    try:
        with _output_errors(target):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.rename(target, old)
        os.rename(tmp, target)
    except OSError as err:  # e.g. the directory became read-only: put the old output back
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.rename(old, target)
        raise output_error(target, err) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    path = Path(path)
    with _output_errors(path, any_error=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are shared artefacts
    try:
        with _output_errors(path), os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with _output_errors(path, any_error=True):
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_text_file(path: str | os.PathLike) -> Iterator[Any]:
    """A text file written as a stream (rows as they come) that replaces ``path`` only when the block completes."""
    path = Path(path)
    with _output_errors(path, any_error=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.fchmod(fd, 0o644)
    try:
        with _output_errors(path), os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        with _output_errors(path, any_error=True):
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (keys sorted so diffs stay small)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays and paths into plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (exported weights, checkpoints, Inception weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
