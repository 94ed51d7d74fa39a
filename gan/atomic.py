"""Write outputs to a temporary place and move them into position only when complete.

A failed or interrupted stage therefore leaves either the previous output or
nothing, never a half-written file or directory.

Writers of one output directory exclude each other: ``atomic_dir`` holds an ``flock`` on
``.NAME.lock`` beside it for the whole write, and a second writer fails at once with one
sentence instead of silently replacing the first one's result. Under that lock, the
temporary ``.NAME.tmp-*`` / ``.NAME.old-*`` entries that a killed run (SIGKILL cannot be
handled) left behind are removed, or the previous output put back when a run died
between its two renames. Temporary files of ``atomic_write_bytes`` carry their
writer's PID, and those of dead writers are removed by the next write.

    with atomic_dir("data/prepared") as tmp:
        write_everything_into(tmp)
    # data/prepared now holds the complete result
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
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


def lock_file(target: Path) -> Path:
    """Where the lock of output ``target`` lives: beside it, hidden."""
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def output_lock(target: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive lock on writing ``target``; GanError at once when another process holds it.

    ``flock`` is released by the kernel when its holder dies, so a killed writer never
    leaves the output locked. The lock file is removed on release; a writer that opened
    it just before that removal notices (the path no longer names its file) and retries.
    """
    target = Path(target)
    path = lock_file(target)
    while True:
        with _output_errors(target, any_error=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GanError(
                f"{target} is being written by another process right now (it holds {path}); wait for it to finish or choose another output."
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file we locked: lock the new one
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def clean_leftovers(target: Path) -> list[Path]:
    """Remove what killed writers of ``target`` left beside it; call only under :func:`output_lock`.

    A run killed between moving the previous output aside and moving the new one in
    leaves ``.NAME.old-*`` and no ``target``: the previous output is put back first.
    Returns the paths removed.
    """
    name = glob.escape(target.name)
    olds = sorted(target.parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not os.path.lexists(target):
        os.rename(olds.pop(), target)
    removed = [*target.parent.glob(f".{name}.tmp-*"), *olds]
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return removed


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``target``; on success replace ``target`` with it.

    The temporary directory lives in the same parent so the final ``rename`` is atomic
    on one filesystem. On any exception (SIGINT and SIGTERM included, see gan.signals)
    it is removed and ``target`` is untouched. The write holds :func:`output_lock`;
    ``check(target)`` runs under it before anything is written (e.g. "must be empty":
    checked earlier, another writer could have finished in between).
    """
    target = Path(target)
    with output_lock(target):
        if check is not None:
            check(target)
        with _output_errors(target, any_error=True):
            clean_leftovers(target)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700; outputs are shared artefacts
        try:
            with _output_errors(target):
                yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _replace(tmp, target)


def _replace(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` into ``target``'s place, the previous output aside and then away."""
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
    with _atomic_file(path, "wb") as fh:
        fh.write(data)
    return Path(path)


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike, mode: str, **open_kwargs: Any) -> Iterator[Any]:
    """An open temporary file beside ``path`` (named with this process's PID, so a dead
    writer's leftover is recognised) that replaces ``path`` only when the block completes."""
    path = Path(path)
    with _output_errors(path, any_error=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_dead_writers(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are shared artefacts
    try:
        with _output_errors(path), os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        with _output_errors(path, any_error=True):
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _clean_dead_writers(path: Path) -> None:
    """Remove ``.NAME.tmp-<pid>-*`` files of ``path`` whose writer process no longer exists."""
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.tmp-*-*"):
        pid = leftover.name.removeprefix(f".{path.name}.tmp-").split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) and leftover.is_file():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextlib.contextmanager
def atomic_text_file(path: str | os.PathLike) -> Iterator[Any]:
    """A text file written as a stream (rows as they come) that replaces ``path`` only when the block completes."""
    with _atomic_file(path, "w", encoding="utf-8", newline="") as fh:
        yield fh


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
