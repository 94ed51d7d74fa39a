"""A full disk or an unwritable output during prepare and augment: one sentence naming the
output, a non-zero exit, no half-written output and the previous output intact.

How each condition is made (root cannot be stopped by chmod):
- full disk: a real tmpfs of a few hundred KiB mounted for the test (skipped without
  mount rights), and RLIMIT_FSIZE in the stage's process (EFBIG), which works anywhere;
- unwritable: a read-only bind mount of the output's parent (skipped without mount
  rights), and a parent path that is a regular file, which works anywhere.
"""

from __future__ import annotations

import resource

import pytest

from ..conftest import write_params
from .conftest import assert_one_line_error, leftovers, read_only_dir, run_stage, small_tmpfs, tree


def prepare(params, out, **kw):
    return run_stage("prepare", "--params", str(params), "--out", str(out), **kw)


def augment(uri, out, fmt="image_folder", num="3000", **kw):
    args = ["--model", "models:/rel-gan@champion", "--num", num, "--out", str(out), "--format", fmt, "--seed", "0", "--no-progress"]
    return run_stage(["-m", "gan.cli", "augment"], *args, MLFLOW_TRACKING_URI=uri, **kw)


def test_prepare_on_a_full_disk_keeps_the_previous_output(tmp_path):
    small, large = write_params(tmp_path / "small.yaml"), write_params(tmp_path / "large.yaml", prepare={"image_size": 16})
    with small_tmpfs(tmp_path / "disk", "640k") as disk:
        out = disk / "prepared"
        assert prepare(small, out).returncode == 0  # 8x8 digits fit (about 470 KiB)
        before = tree(out)
        proc = prepare(large, out)  # 16x16 needs four times as much
        assert_one_line_error(proc, f"cannot write {out}", "no space left on device")
        assert tree(out) == before and leftovers(disk) == []


def limit_file_size(limit: int):
    def apply() -> None:  # in the child, before exec: Python ignores SIGXFSZ, so writes fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_prepare_over_the_file_size_limit_keeps_the_previous_output(tmp_path):
    small, large = write_params(tmp_path / "small.yaml"), write_params(tmp_path / "large.yaml", prepare={"image_size": 32})
    out = tmp_path / "prepared"
    assert prepare(small, out).returncode == 0
    before = tree(out)
    proc = prepare(large, out, preexec_fn=limit_file_size(1 << 20))  # one 32x32 shard is 5.9 MiB
    assert_one_line_error(proc, f"cannot write {out}", "file too large")
    assert tree(out) == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["image_folder", "npz"])
def test_augment_on_a_full_disk_writes_nothing(tmp_path, small_registry, fmt):
    with small_tmpfs(tmp_path / "disk", "128k") as disk:
        proc = augment(small_registry["uri"], disk / "synth", fmt)
        # refused up front from the size estimate (before this estimate: ENOSPC mid-write)
        assert_one_line_error(proc, f"cannot write {disk / 'synth'}", "are free there", "--num")
        assert list(disk.iterdir()) == []


def test_unwritable_output_directory(tmp_path, small_registry):
    params = write_params(tmp_path / "params.yaml")
    (tmp_path / "a-file").write_text("not a directory")
    proc = prepare(params, tmp_path / "a-file" / "prepared")
    assert_one_line_error(proc, f"cannot write {tmp_path / 'a-file' / 'prepared'}", "a-file is a file, not a directory")
    proc = augment(small_registry["uri"], tmp_path / "a-file" / "synth", num="10")
    assert_one_line_error(proc, f"cannot write {tmp_path / 'a-file' / 'synth'}", "a-file is a file, not a directory")
    assert (tmp_path / "a-file").read_text() == "not a directory"

    with read_only_dir(tmp_path / "ro") as ro:
        proc = prepare(params, ro / "prepared")
        assert_one_line_error(proc, f"cannot write {ro / 'prepared'}", "read-only file system")
        proc = augment(small_registry["uri"], ro / "synth", num="10")
        assert_one_line_error(proc, f"cannot write {ro / 'synth'}", "read-only file system")
        assert list(ro.iterdir()) == []


def test_augment_asking_for_more_than_the_disk_holds_is_refused_up_front(tmp_path, small_registry):
    """Before: `--num 1000000000` started writing ~256 GB to a disk with 65 GB free and
    failed 14 hours later. The output's size is estimated before the first sample."""
    from gan.augment import estimate_bytes, free_space

    have, _ = free_space(tmp_path)
    for fmt in ("npz", "image_folder"):
        per_sample = estimate_bytes(2, (1, 8, 8), fmt) - estimate_bytes(1, (1, 8, 8), fmt)
        num = str(have // per_sample * 2)  # twice what this disk can take
        proc = augment(small_registry["uri"], tmp_path / "synth", fmt, num=num)
        line = assert_one_line_error(proc, f"cannot write {tmp_path / 'synth'}: {num} samples as {fmt} need about", "are free there", "--num")
        print(f"\nFIGURE {line}")
    assert list(tmp_path.iterdir()) == []
