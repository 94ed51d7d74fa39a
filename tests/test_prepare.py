"""The prepare stage: every source, the split, the manifest, bad input, atomicity, sharded reading."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from gan.config import PrepareConfig
from gan.data import ShardedBatches, load_split, prepare_dataset, read_manifest
from gan.data.split import split_mask
from gan.errors import ConfigError, DataError
from gan.stages import prepare as prepare_stage


def _folder(root, classes=("cat", "dog"), per_class=6, size=(20, 14), mode="RGB"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


def test_digits_default(tmp_path):
    m = prepare_dataset(PrepareConfig(), tmp_path / "out")
    assert m["num_classes"] == 10 and m["class_names"][3] == "3"
    assert m["counts"]["train"]["total"] + m["counts"]["val"]["total"] == 1797
    assert abs(m["counts"]["val"]["total"] / 1797 - 0.2) < 0.01
    x, y = load_split(tmp_path / "out", "train")
    assert x.shape == (m["counts"]["train"]["total"], 1, 16, 16) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.99 and x.max() > 0.99
    assert set(np.unique(y)) == set(range(10))
    assert len(m["hash"]) == 64 and m["skipped"] == []
    assert np.allclose(m["mean"], [x.mean()], atol=1e-4) and np.allclose(m["std"], [x.std()], atol=1e-4)


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    a = prepare_dataset(PrepareConfig(image_size=8), tmp_path / "a")
    b = prepare_dataset(PrepareConfig(image_size=8), tmp_path / "b")
    c = prepare_dataset(PrepareConfig(image_size=8, seed=1), tmp_path / "c")
    assert a["hash"] == b["hash"] != c["hash"]


def test_split_is_stratified_and_deterministic():
    labels = [0] * 50 + [1] * 10 + [2] * 3
    m1, m2 = split_mask(labels, 0.2, 7), split_mask(labels, 0.2, 7)
    assert (m1 == m2).all()
    per_class = [int(m1[np.array(labels) == c].sum()) for c in range(3)]
    assert per_class == [10, 2, 1]


def test_image_folder_labelled_any_size_and_mode(tmp_path):
    raw = _folder(tmp_path / "raw")
    Image.fromarray(np.zeros((9, 31), np.uint8), "L").save(raw / "cat" / "gray.jpg")  # mixed mode & size
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(raw / "dog" / "big.webp")
    cfg = PrepareConfig(source="image_folder", path=str(raw), image_size=8, channels=3, val_fraction=0.25)
    m = prepare_dataset(cfg, tmp_path / "out")
    assert m["class_names"] == ["cat", "dog"] and m["shape"] == [3, 8, 8]
    assert sum(m["counts"]["train"]["per_class"]) + sum(m["counts"]["val"]["per_class"]) == 14


def test_image_folder_flat_is_unlabelled(tmp_path):
    raw = tmp_path / "flat"
    raw.mkdir()
    for i in range(5):
        Image.fromarray(np.full((10, 10), i * 40, np.uint8), "L").save(raw / f"{i}.png")
    m = prepare_dataset(PrepareConfig(source="image_folder", path=str(raw), image_size=8), tmp_path / "out")
    assert m["labelled"] is False and m["num_classes"] == 0
    assert load_split(tmp_path / "out", "train")[1] is None


def test_npz_with_remapped_labels_and_float_pixels(tmp_path):
    x = np.random.default_rng(0).random((30, 12, 12, 3)).astype(np.float32)
    y = np.repeat([3, 7, 9], 10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    m = prepare_dataset(PrepareConfig(source="npz", path=str(tmp_path / "d.npz"), image_size=8, channels=3), tmp_path / "out")
    assert m["class_names"] == ["3", "7", "9"] and m["num_classes"] == 3


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((4, 8))}, "x has shape (4, 8)"),
        ({"x": np.full((4, 8, 8), np.nan)}, "NaN or inf"),
        ({"x": np.zeros((4, 8, 8)), "y": np.array([0, 1, 2])}, "y has shape (3,)"),
        ({"x": np.zeros((4, 8, 8)), "y": np.array([0, 1, -1, 0])}, "negative label -1"),
        ({"x": np.zeros((4, 8, 8)), "y": np.array([0, 1, 0.5, 0])}, "integer class labels"),
        ({"x": np.full((4, 8, 8), 300.0)}, "values range over"),
        ({"images": np.zeros((4, 8, 8))}, "has no array 'x'"),
    ],
)
def test_npz_bad_arrays(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as err:
        prepare_dataset(PrepareConfig(source="npz", path=str(tmp_path / "bad.npz"), image_size=8), tmp_path / "out")
    assert message in str(err.value) and "bad.npz" in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "zero_byte", "not_an_image"])
def test_bad_file_fails_by_name_or_is_skipped(tmp_path, kind):
    raw = _folder(tmp_path / "raw", size=(8, 8))
    bad = raw / "dog" / ("notes.txt" if kind == "not_an_image" else "bad.png")
    good = (raw / "dog" / "0.png").read_bytes()
    bad.write_bytes({"corrupt": b"\x89PNG garbage" * 10, "truncated": good[: len(good) // 2], "zero_byte": b"", "not_an_image": b"hello"}[kind])
    cfg = PrepareConfig(source="image_folder", path=str(raw), image_size=8)
    with pytest.raises(DataError) as err:
        prepare_dataset(cfg, tmp_path / "out")
    assert str(bad) in str(err.value) and "on_bad_file: skip" in str(err.value)
    assert not (tmp_path / "out").exists()
    m = prepare_dataset(cfg.model_copy(update={"on_bad_file": "skip"}), tmp_path / "out")
    assert [s["file"] for s in m["skipped"]] == [str(bad)]
    assert m["counts"]["train"]["total"] + m["counts"]["val"]["total"] == 12


def test_missing_path_empty_folder_empty_class(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        prepare_dataset(PrepareConfig(source="image_folder", path=str(tmp_path / "nope")), tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no PNG/JPEG/WebP images"):
        prepare_dataset(PrepareConfig(source="image_folder", path=str(tmp_path / "empty")), tmp_path / "o")
    raw = _folder(tmp_path / "raw")
    (raw / "zebra").mkdir()
    with pytest.raises(DataError, match=r"class folder .*zebra has no images"):
        prepare_dataset(PrepareConfig(source="image_folder", path=str(raw)), tmp_path / "o")


def test_torchvision_never_downloads(tmp_path):
    cfg = PrepareConfig(source="torchvision", torchvision_class="MNIST", path=str(tmp_path))
    with pytest.raises(DataError, match="files are not under .*never downloads"):
        prepare_dataset(cfg, tmp_path / "o")
    assert list(tmp_path.iterdir()) == []  # nothing fetched or created
    with pytest.raises(ConfigError, match="not a torchvision data set"):
        prepare_dataset(cfg.model_copy(update={"torchvision_class": "NoSuchSet"}), tmp_path / "o")


def test_failed_run_keeps_previous_output(tmp_path):
    out = tmp_path / "out"
    before = prepare_dataset(PrepareConfig(image_size=8), out)
    raw = _folder(tmp_path / "raw")
    (raw / "cat" / "x.png").write_bytes(b"broken")
    with pytest.raises(DataError):
        prepare_dataset(PrepareConfig(source="image_folder", path=str(raw)), out)
    assert read_manifest(out)["hash"] == before["hash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]  # no temp leftovers


def test_sharded_batches_are_disjoint_per_rank(tmp_path):
    prepare_dataset(PrepareConfig(image_size=8, shard_size=100), tmp_path / "out")
    assert len(list((tmp_path / "out" / "train").glob("x-*.npy"))) > 10
    seen = []
    for rank in range(2):
        it = iter(ShardedBatches(tmp_path / "out", "train", 32, rank=rank, world_size=2, seed=0))
        rows = [next(it) for _ in range(5)]
        x, y = rows[0]
        assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
        seen.append({tuple(r.flatten().tolist()) for xb, _ in rows for r in xb})
    assert not seen[0] & seen[1]


def test_stage_script_and_clear_error(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  image_size: 8\n")
    assert prepare_stage.main(["--params", str(params), "--out", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["image_size"] == 8
    assert "1438 train + 359 val" in capsys.readouterr().out


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_ray_data_route_writes_the_local_routes_bytes_and_sentences(tmp_path, ray_cluster):
    """prepare.engine ray (Ray Data tasks) against local: same shards, manifest and hash; same bad-file handling."""
    raw = _folder(tmp_path / "raw", classes=("a", "b", "c"), per_class=70, size=(12, 9))
    good = (raw / "a" / "0.png").read_bytes()
    bad = {raw / "a" / "bad.png": b"\x89PNG garbage" * 10, raw / "b" / "half.png": good[: len(good) // 2],
           raw / "c" / "empty.png": b"", raw / "c" / "notes.txt": b"hello"}  # fmt: skip
    for path, data in bad.items():
        path.write_bytes(data)
    outs = {}
    for engine in ("local", "ray"):
        cfg = PrepareConfig(source="image_folder", path=str(raw), image_size=8, channels=3, shard_size=50, on_bad_file="skip", engine=engine)
        outs[engine] = prepare_dataset(cfg, tmp_path / engine)
        with pytest.raises(DataError) as err:
            prepare_dataset(cfg.model_copy(update={"on_bad_file": "fail"}), tmp_path / f"{engine}-fail")
        outs[f"{engine}-error"] = str(err.value)
        assert not (tmp_path / f"{engine}-fail").exists()
    assert sorted(s["file"] for s in outs["ray"]["skipped"]) == sorted(str(p) for p in bad)
    assert outs["ray-error"] == outs["local-error"] and str(raw / "a" / "bad.png") in outs["ray-error"]
    assert _tree(tmp_path / "ray") == _tree(tmp_path / "local"), "the two routes wrote different bytes"


def test_engine_choice_and_sources_without_files(tmp_path):
    from gan.data.decode import engine_for
    from gan.data.sources import list_source

    raw = _folder(tmp_path / "raw", per_class=3)
    cfg = PrepareConfig(source="image_folder", path=str(raw), ray_min_images=6)
    items, _ = list_source(cfg)
    cores = os.cpu_count()
    bigger, same, alone = (lambda: cores * 4.0), (lambda: float(cores)), (lambda: None)
    assert engine_for(cfg, items, bigger) == "ray"  # enough files, a cluster with more CPUs than here
    assert engine_for(cfg.model_copy(update={"ray_min_images": 7}), items, bigger) == "local"  # too few files
    assert engine_for(cfg, items, same) == "local" and engine_for(cfg, items, alone) == "local"  # one machine
    assert engine_for(cfg.model_copy(update={"engine": "local"}), items, bigger) == "local"
    assert engine_for(cfg.model_copy(update={"engine": "ray"}), items, alone) == "ray"
    digits = PrepareConfig(ray_min_images=1)
    assert engine_for(digits, list_source(digits)[0], bigger) == "local"  # bundled arrays: nothing for Ray to open
    with pytest.raises(ValueError, match="prepare.engine: ray decodes the files of an image folder, but source 'digits'"):
        PrepareConfig(engine="ray")


def test_a_folder_given_as_a_uri_prepares_like_its_local_path(tmp_path):
    """prepare.path as a URI (pyarrow file systems: s3://, gs://, file://): same layout rule, order, shards and hash."""
    raw = _folder(tmp_path / "raw", classes=("a", "b"), per_class=5, size=(10, 10))
    (raw / "a" / "deeper").mkdir()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(raw / "a" / "deeper" / "z.png")
    Image.fromarray(np.full((10, 10, 3), 9, np.uint8)).save(raw / "a" / "deeper.png")  # sorts after the folder, as locally
    (raw / "a" / ".DS_Store").write_bytes(b"x")
    (raw / "b" / "broken.png").write_bytes(b"nope")
    (raw / "README.txt").write_text("beside the classes")
    cfg = PrepareConfig(source="image_folder", path=str(raw), image_size=8, channels=3, on_bad_file="skip")
    local = prepare_dataset(cfg, tmp_path / "local")
    uri = f"file://{raw}"
    remote = prepare_dataset(cfg.model_copy(update={"path": uri}), tmp_path / "uri")
    assert remote["hash"] == local["hash"] and remote["counts"] == local["counts"]
    assert {k: v for k, v in _tree(tmp_path / "uri").items() if k.endswith(".npy")} == {k: v for k, v in _tree(tmp_path / "local").items() if k.endswith(".npy")}
    assert remote["skipped"][0]["file"] == f"{uri}/b/broken.png"
    assert {e["file"] for e in remote["ignored"]} == {f"{uri}/a/.DS_Store", f"{uri}/README.txt"}
    with pytest.raises(DataError, match=r"prepare.path: file:///.*nope is not a folder"):
        prepare_dataset(cfg.model_copy(update={"path": f"file://{tmp_path / 'nope'}"}), tmp_path / "o")
    with pytest.raises(DataError, match=r"prepare.path: nosuch://x/y cannot be listed \(.*\); check the address and the credentials"):
        prepare_dataset(cfg.model_copy(update={"path": "nosuch://x/y"}), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_file_list_keeps_names_labels_and_order_in_one_buffer(tmp_path):
    from gan.data.sources import FileList, list_source

    names = [str(tmp_path / n) for n in ("a.png", "é ü.png", "b/c.png")]
    items = FileList.build([(names[:2], 0), ([], 1), (names[2:], 2)])
    assert len(items) == 3 and [it.name for it in items] == names and [it.file for it in items] == names
    assert [it.label for it in items] == [0, 0, 2] and items[-1].name == names[2]
    assert items.arrow_names().to_pylist() == names  # what the Ray Data route reads, over the same buffer
    with pytest.raises(IndexError):
        items[3]
    assert [it.label for it in FileList.build([(names, None)])] == [None] * 3
    for c in ("x", "y"):
        (tmp_path / "raw" / c).mkdir(parents=True)
        Image.new("L", (4, 4)).save(tmp_path / "raw" / c / "1.png")
    listed, classes = list_source(PrepareConfig(source="image_folder", path=str(tmp_path / "raw")))
    assert classes == ["x", "y"] and [(it.label, os.path.basename(it.name)) for it in listed] == [(0, "1.png"), (1, "1.png")]


@pytest.mark.parametrize("layout", ["prepared_digits", "prepared_digit_domains", "prepared_anomaly_digits", "pairs"])
def test_every_layout_writes_the_common_manifest_keys_and_the_same_bytes_twice(layout, request, tmp_path):
    """What the stages read of every manifest (counts, skipped, ignored, hash, shape, classes) is there for each
    source and layout, and no wall time makes a re-run's manifest differ (it is every later stage's dependency)."""
    from gan.config import PairsConfig

    common = {"format", "source", "settings", "channels", "image_size", "shape", "value_range", "labelled", "num_classes",
              "class_names", "counts", "shards", "hash", "skipped", "ignored"}
    if layout == "pairs":
        cfg = PrepareConfig(source="photos", channels=3, pairs=PairsConfig(scale=2, patch_size=16, patches_per_image=2, val_size=32))
        manifest = prepare_dataset(cfg, tmp_path / "a")
        prepare_dataset(cfg, tmp_path / "b")
        assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    else:
        manifest = read_manifest(request.getfixturevalue(layout))
    assert common <= set(manifest), common - set(manifest)
