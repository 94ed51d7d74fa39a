"""Image folders on a URI: ``s3://``, ``gs://``, ``hdfs://`` or ``file://``, through pyarrow's file systems.

    items, class_names = remote_image_files("s3://bucket/images", ignored)

The same layout rule as a local folder (:mod:`gan.data.sources`): each non-hidden
top-level folder is a class, its images at any depth; files beside the class folders and
hidden entries are listed in ``ignored``. Files are ordered as the local listing orders
them (depth first, names sorted within each folder), so that a folder prepared from its
local path and from a ``file://`` URI gives the same shards and hash. Credentials come
from the environment as pyarrow reads them (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``).
With ``prepare.engine: ray`` the Ray Data tasks open the files, on whatever node they run.
"""

from __future__ import annotations

import functools
from typing import Any

from gan.errors import DataError


@functools.lru_cache(maxsize=8)
def _filesystem(root: str) -> tuple[Any, str]:
    """The pyarrow file system of ``root`` (``scheme://authority``), made once per process."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(root)


def _split(uri: str) -> tuple[Any, str]:
    """(file system, path inside it) of ``uri``."""
    scheme, rest = uri.split("://", 1)
    authority = rest.split("/", 1)[0] if scheme != "file" else ""
    fs, base = _filesystem(f"{scheme}://{authority}" if authority else f"{scheme}:///")
    path = rest[len(authority):] if authority else rest
    return fs, (f"{base.rstrip('/')}/{path.lstrip('/')}" if authority else path)


def read_bytes(uri: str) -> bytes:
    """The bytes of one file at ``uri``."""
    fs, path = _split(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def remote_image_files(uri: str, ignored: list[dict[str, str]]) -> tuple[list[Any], list[str]]:
    """The items of the folder at ``uri`` by the layout rule, and the class names ([] when flat)."""
    import pyarrow.fs

    from gan.data.sources import _file_item

    root = uri.rstrip("/")
    try:
        fs, base = _split(root)
        info = fs.get_file_info(base)
        if info.type != pyarrow.fs.FileType.Directory:
            raise DataError(f"prepare.path: {uri} is not a folder; point it at a folder of images (one sub-folder per class, or flat).")
        infos = fs.get_file_info(pyarrow.fs.FileSelector(base, recursive=True))
    except DataError:
        raise
    except Exception as err:  # OSError, ArrowInvalid, credentials and network errors of each file system
        raise DataError(f"prepare.path: {uri} cannot be listed ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
                        "check the address and the credentials in the environment.") from None  # fmt: skip
    prefix = base.rstrip("/") + "/"
    entries = {tuple(i.path[len(prefix):].split("/")): i.type for i in infos}
    hidden = {parts for parts in entries if any(p.startswith(".") for p in parts)}
    for parts in sorted(hidden):
        if not any(p.startswith(".") for p in parts[:-1]):  # list a hidden folder once, not its contents
            kind = "folder" if entries[parts] == pyarrow.fs.FileType.Directory else "file"
            ignored.append({"file": f"{root}/{'/'.join(parts)}", "reason": f"{kind} hidden"})
    files = sorted(parts for parts, kind in entries.items() if kind == pyarrow.fs.FileType.File and parts not in hidden)
    classes = sorted(parts[0] for parts, kind in entries.items() if len(parts) == 1 and kind == pyarrow.fs.FileType.Directory and parts not in hidden)

    def name(parts: tuple[str, ...]) -> str:
        return f"{root}/{'/'.join(parts)}"

    if not classes:
        if not files:
            raise DataError(f"prepare.path: {uri} contains no PNG/JPEG/WebP images; add images or fix the path.")
        return [_file_item(name(p), None) for p in files], []
    by_class: dict[str, list[tuple[str, ...]]] = {c: [] for c in classes}  # one pass over the files, in order
    for parts in files:
        if len(parts) == 1:
            ignored.append({"file": name(parts), "reason": "file beside the class folders, so in no class"})
        else:
            by_class[parts[0]].append(parts)
    items = []
    for label, c in enumerate(classes):
        if not by_class[c]:
            raise DataError(f"class folder {root}/{c} has no images; add PNG/JPEG/WebP files or remove the folder.")
        items += [_file_item(name(p), label) for p in by_class[c]]
    return items, classes
