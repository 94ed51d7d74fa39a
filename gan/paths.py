"""Refuse an output that would overwrite one of the inputs, before anything is touched.

    check_outputs({"--out": args.out}, {"prepare.path": cfg.path, "--params": args.params})

A stage replaces its output directory as a whole (``gan.atomic.atomic_dir``): an output
that equals an input, or contains one (``prepare.out: data`` with raw images under
``data/raw``), would delete that input; an output inside an input changes it (a DVC
output or the raw data gains files). Paths are compared after resolving symlinks and
``..``, so two spellings of one place are one place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from gan.errors import ConfigError

PathLike = str | os.PathLike


def resolved(path: PathLike) -> Path:
    """``path`` made absolute with symlinks and ``..`` resolved (it need not exist)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def relation(output: PathLike, other: PathLike) -> str | None:
    """How ``output`` overlaps ``other``: ``"is"``, ``"contains"``, ``"lies inside"``, or None."""
    out, inp = resolved(output), resolved(other)
    if out == inp:
        return "is"
    if out in inp.parents:
        return "contains"
    if inp in out.parents:
        return "lies inside"
    return None


def overlap_message(out_label: str, output: PathLike, in_label: str, other: PathLike, rel: str, kind: str = "input") -> str:
    """One sentence naming both paths and what to do."""
    return (
        f"the output {out_label} = {os.fspath(output)} {rel} the {kind} {in_label} = {os.fspath(other)}, "
        f"and writing it would {'change' if rel == 'lies inside' else 'delete'} that {kind}; "
        f"choose an output that neither is, contains nor lies inside {os.fspath(other)}."
    )


def check_outputs(outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | None]) -> None:
    """Raise ConfigError when an output overlaps an input, or another output.

    ``outputs`` and ``inputs`` map a label for the user (a key such as ``prepare.out`` or a
    flag such as ``--out``) to a path; None or a URI (``s3://``) entries are skipped.
    """
    outs = {k: v for k, v in outputs.items() if _local(v)}
    ins = {k: v for k, v in inputs.items() if _local(v)}
    for out_label, output in outs.items():
        for in_label, other in ins.items():
            rel = relation(output, other)
            if rel is not None:
                raise ConfigError(overlap_message(out_label, output, in_label, other, rel))
    labels = list(outs)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            rel = relation(outs[a], outs[b])
            if rel is not None:
                raise ConfigError(overlap_message(a, outs[a], b, outs[b], rel, kind="output"))


def _local(path: PathLike | None) -> bool:
    return path is not None and os.fspath(path) != "" and "://" not in os.fspath(path)
