"""Inputs staged for workers on other nodes (gan/training/inputs.py), without Ray: the driver's path
when a node sees it unchanged, else one node-local copy of the staged input, else one sentence.

    pytest -q tests/test_inputs.py      # about a second
"""

from __future__ import annotations

import shutil

import pytest

from gan.errors import GanError
from gan.training.inputs import (
    CACHE_ENV,
    STAGED_MARKER,
    input_hash,
    local_path,
    stage_input,
    stage_inputs,
)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "project" / "prepared"
    (root / "train").mkdir(parents=True)
    (root / "manifest.json").write_text('{"hash": "abc"}')
    (root / "train" / "x-000.npy").write_bytes(b"\x00" * 64)
    return root


def test_a_node_that_sees_the_driver_path_reads_it_and_copies_nothing(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    ref = stage_input("data", dataset, str(tmp_path / "storage"))
    assert (tmp_path / "storage" / "_inputs" / f"data-{ref['hash']}" / STAGED_MARKER).exists()
    assert local_path(ref) == str(dataset)
    assert not (tmp_path / "cache").exists()


def test_a_node_without_the_driver_path_reads_one_cached_copy_of_the_staged_input(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    ref = stage_input("data", dataset, str(tmp_path / "storage"))
    shutil.rmtree(tmp_path / "project")  # what a node without the project folder sees
    first = local_path(ref)
    assert first == str(tmp_path / "cache" / f"data-{ref['hash']}")
    assert (tmp_path / "cache" / f"data-{ref['hash']}" / "train" / "x-000.npy").read_bytes() == b"\x00" * 64
    assert input_hash(first) == ref["hash"]
    assert local_path(ref) == first  # the second worker of the node reuses the copy


def test_a_driver_path_with_other_data_on_the_node_is_not_used(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    ref = stage_input("data", dataset, str(tmp_path / "storage"))
    (dataset / "manifest.json").write_text('{"hash": "another data set"}')  # same path, other content on this node
    assert local_path(ref) == str(tmp_path / "cache" / f"data-{ref['hash']}")


def test_staging_twice_copies_once_and_a_new_hash_stages_anew(dataset, tmp_path):
    storage = str(tmp_path / "storage")
    first = stage_input("data", dataset, storage)
    marker = tmp_path / "storage" / "_inputs" / f"data-{first['hash']}" / STAGED_MARKER
    stamp = marker.stat().st_mtime_ns
    assert stage_input("data", dataset, storage)["staged"] == first["staged"] and marker.stat().st_mtime_ns == stamp
    (dataset / "manifest.json").write_text('{"hash": "def"}')
    assert stage_input("data", dataset, storage)["hash"] != first["hash"]
    assert len(list((tmp_path / "storage" / "_inputs").iterdir())) == 2


@pytest.mark.parametrize("case", ["not staged", "storage not shared"])
def test_an_input_a_node_cannot_reach_gets_one_sentence(dataset, tmp_path, monkeypatch, case):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    ref = stage_input("data", dataset, None if case == "not staged" else str(tmp_path / "storage"))
    shutil.rmtree(tmp_path / "project")
    if case == "storage not shared":
        shutil.rmtree(tmp_path / "storage")  # a node-local storage_path: the other node has none of it
    with pytest.raises(GanError) as err:
        local_path(ref)
    message = str(err.value)
    assert message.count(". ") == 0 and message.startswith("data: ")
    assert ("RAY_ADDRESS" in message) if case == "not staged" else ("train.storage_path" in message)


def test_stage_inputs_stages_only_on_a_joined_cluster_and_keeps_absent_inputs_absent(dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = stage_inputs({"data": dataset, "features": tmp_path / "no-features", "extra": None}, str(tmp_path / "storage"))
    assert local["data"]["staged"] is None and local["features"] == str(tmp_path / "no-features") and local["extra"] is None
    assert not (tmp_path / "storage").exists()
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    joined = stage_inputs({"data": dataset, "features": tmp_path / "no-features"}, str(tmp_path / "storage"))
    assert joined["data"]["staged"].endswith(f"_inputs/data-{joined['data']['hash']}")


def test_a_single_file_input_resolves_to_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    weights = tmp_path / "project" / "vgg.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    ref = stage_input("weights", weights, str(tmp_path / "storage"))
    shutil.rmtree(tmp_path / "project")
    assert open(local_path(ref), "rb").read() == b"weights"
