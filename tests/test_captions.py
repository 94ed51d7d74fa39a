"""Captions in the prepare stage (for text-to-image StackGAN): generated from attributes, read from a CSV or an npz.

.venv/bin/python -m pytest -p no:cacheprovider -q tests/test_captions.py
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gan.config import PrepareConfig, parse_params
from gan.data import ShardedBatches, load_captions, load_split, prepare_dataset, read_manifest
from gan.data.captions import (
    ATTRIBUTE_WORDS,
    DIGIT_WORDS,
    attribute_captions,
    class_word,
    measure,
    read_captions_csv,
)
from gan.errors import ConfigError, DataError

# ---------------------------------------------------------------- measuring one image


def _stroke(direction: str, size: int = 16) -> np.ndarray:
    """A bright one-pixel line on a dark [1, S, S] image: '/' leans right, '\\' left, '|' upright."""
    x = np.full((1, size, size), -1.0)
    for r in range(2, size - 2):
        c = {"/": size - 1 - r, "\\": r, "|": size // 2}[direction]
        x[0, r, c] = 1.0
    return x


def test_measure_grayscale_mass_and_slant_sign():
    assert measure(np.full((1, 8, 8), -1.0)) == (0.0, 0.0)  # no ink: no mass, nothing to shear
    assert measure(np.ones((1, 8, 8)))[0] == 1.0
    right, left, upright = (measure(_stroke(d)) for d in "/\\|")
    assert right[1] > 0.5 and left[1] < -0.5 and upright[1] == 0.0
    assert right[0] == left[0] == upright[0] > 0


def test_measure_rgb_luminance_and_texture():
    flat = np.zeros((3, 8, 8))
    checker = np.where(np.indices((8, 8)).sum(0) % 2, 1.0, -1.0)[None].repeat(3, 0)
    assert measure(flat) == (pytest.approx(0.5), 0.0)
    mass, texture = measure(checker)
    assert mass == pytest.approx(0.5) and texture == pytest.approx(1.0)
    with pytest.raises(ValueError, match="C 1 or 3"):
        measure(np.zeros((2, 8, 8)))


def test_class_words_and_caption_shape():
    assert [class_word(str(d)) for d in range(10)] == list(DIGIT_WORDS)
    assert (
        class_word("Golden_Retriever") == "golden retriever"
        and class_word("t-shirt/top") == "t shirt top"
    )
    thresholds = np.array([[0.5, 0.5], [0.5, 0.5]])
    got = attribute_captions(
        np.array([[0.6, -0.7], [0.4, 0.1]]), np.array([0, 1]), ["cat", "Dog"], 3, thresholds
    )
    assert got == ["a bright textured cat", "a dark smooth dog"]


# ---------------------------------------------------------------- attributes: the bundled digits


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits at 8x8 with attribute captions, in several shards (captions must follow the shard boundaries)."""
    root = tmp_path_factory.mktemp("captions")
    cfg = PrepareConfig(image_size=8, shard_size=500, captions={"source": "attributes"})
    return root, cfg, prepare_dataset(cfg, root / "a")


def test_digit_captions_align_with_labels_and_measures(digits):
    root, _, manifest = digits
    (thin, thick), (upright, slanted) = ATTRIBUTE_WORDS[1]
    entry = manifest["captions"]
    assert entry["source"] == "attributes" and entry["attributes"] == ["mass", "slant"]
    assert np.array(entry["thresholds"]).shape == (10, 2)
    assert entry["count"] == {s: manifest["counts"][s]["total"] for s in ("train", "val")}
    assert (
        len(list((root / "a" / "train").glob("caption-*.npy")))
        == len(manifest["shards"]["train"])
        > 1
    )
    for split in ("train", "val"):
        x, y = load_split(root / "a", split)
        captions = load_captions(root / "a", split)
        assert captions.dtype.kind == "U" and len(captions) == len(x)
        words = [c.split() for c in captions]
        assert all(
            w[0] == "a" and w[1] in (thin, thick) and w[2] in (upright, slanted) for w in words
        )
        assert [w[3] for w in words] == [
            DIGIT_WORDS[int(k)] for k in y
        ]  # the class word is the row's label
        m = np.array([measure(xi) for xi in np.asarray(x)])
        # validation captions use the training split's thresholds, recorded in the manifest
        assert list(captions) == attribute_captions(
            m, y, manifest["class_names"], 1, np.array(entry["thresholds"])
        )
        thick_rows = np.array([w[1] == thick for w in words])
        for k in range(10):
            mine = y == k
            assert m[mine & thick_rows, 0].mean() > m[mine & ~thick_rows, 0].mean()


def test_digit_captions_are_deterministic_and_hashed(digits):
    root, cfg, first = digits
    again = prepare_dataset(cfg, root / "b")
    plain = read_manifest(root / "a")  # the same manifest bytes as returned
    assert again == first == plain
    for split in ("train", "val"):
        a = sorted((root / "a" / split).glob("caption-*.npy"))
        assert [p.read_bytes() for p in a] == [
            (root / "b" / split / p.name).read_bytes() for p in a
        ]
    none = prepare_dataset(
        PrepareConfig(**{**cfg.model_dump(), "captions": {"source": "none"}}), root / "c"
    )
    assert none["hash"] != first["hash"]  # the same images: the captions are in the hash
    assert none["captions"] == {"source": "none", "count": {"train": 0, "val": 0}, "attributes": []}
    with pytest.raises(
        DataError,
        match="prepared without captions; set prepare.captions.source and run dvc repro prepare",
    ):
        load_captions(root / "c", "train")


def test_sharded_batches_can_yield_row_indices(digits):
    root, _, _ = digits
    x_all, y_all = load_split(root / "a", "train")
    captions = load_captions(root / "a", "train")
    plain = iter(ShardedBatches(root / "a", "train", 64, seed=3))
    with_rows = iter(ShardedBatches(root / "a", "train", 64, seed=3, rows=True))
    for _ in range(30):  # past an epoch (22 batches): rows keep matching
        x, y = next(plain)
        x2, y2, rows = next(with_rows)
        assert rows.dtype == np.int64 and rows.shape == (64,)
        assert (
            np.array_equal(x.numpy(), x2.numpy())
            and np.array_equal(x2.numpy(), x_all[rows])
            and np.array_equal(y2.numpy(), y_all[rows])
        )
        assert all(
            c.endswith(DIGIT_WORDS[int(k)])
            for c, k in zip(captions[rows], y2.tolist(), strict=True)
        )


# ---------------------------------------------------------------- attributes: RGB photo patches


def test_photo_patch_captions(tmp_path):
    cfg = PrepareConfig(source="photo_patches", image_size=16, channels=3, captions={"source": "attributes"},
                        patches={"photos": ["chelsea", "coffee", "brick"], "per_photo": 8, "short_side": 32})  # fmt: skip
    manifest = prepare_dataset(cfg, tmp_path / "p")
    assert manifest["captions"]["attributes"] == ["mass", "texture"]
    (dark, bright), (smooth, textured) = ATTRIBUTE_WORDS[3]
    captions = load_captions(tmp_path / "p", "train")
    _, y = load_split(tmp_path / "p", "train")
    for caption, k in zip(captions, y, strict=True):
        _, w1, w2, name = caption.split()
        assert (
            w1 in (dark, bright) and w2 in (smooth, textured) and name == manifest["class_names"][k]
        )


# ---------------------------------------------------------------- captions.csv beside an image folder


def _images(root, classes=("cat", "dog"), per_class=3):
    """Each image is one grey level, so a caption can be checked against its pixels."""
    names = []
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            level = 30 * (c * per_class + i) + 10
            Image.fromarray(np.full((10, 10), level, np.uint8), "L").save(
                root / cls / f"{i:03d}.png"
            )
            names.append((f"{cls}/{i:03d}.png", level))
    return root, names


def _write_csv(path, rows, header="file,caption"):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


def test_captions_csv_round_trip(tmp_path):
    raw, names = _images(tmp_path / "raw")
    Image.fromarray(np.full((10, 10), 250, np.uint8), "L").save(raw / "dog" / "unique.png")
    # relative paths, a bare unique name, quoted commas, extra whitespace, a row listed twice with the same caption
    rows = [f'{n},"grey level {level}, äöü"' for n, level in names]
    rows += ['unique.png,"  grey level 250,\täöü "', rows[0]]
    (raw / "dog" / "junk.png").write_bytes(b"not a png")
    rows.append("dog/junk.png,a broken file")
    _write_csv(raw / "captions.csv", rows)
    cfg = PrepareConfig(source="image_folder", path=str(raw), image_size=8, val_fraction=0.34, on_bad_file="skip",
                        captions={"source": "file"})  # fmt: skip
    manifest = prepare_dataset(cfg, tmp_path / "out")
    assert manifest["ignored"] == [] and [s["file"] for s in manifest["skipped"]] == [
        str(raw / "dog" / "junk.png")
    ]
    seen = 0
    for split in ("train", "val"):
        x, _ = load_split(tmp_path / "out", split)
        captions = load_captions(tmp_path / "out", split)
        assert len(captions) == len(x) == manifest["captions"]["count"][split]
        for xi, caption in zip(np.asarray(x), captions, strict=True):
            level = round((float(xi.mean()) + 1) * 127.5)
            assert caption == f"grey level {level}, äöü"
            seen += 1
    assert seen == 7  # the skipped file's caption went with it


def test_captions_csv_in_a_flat_folder_and_elsewhere(tmp_path):
    raw = tmp_path / "flat"
    raw.mkdir()
    for i in range(4):
        Image.fromarray(np.full((9, 9), 50 * i, np.uint8), "L").save(raw / f"{i}.png")
    _write_csv(raw / "captions.csv", [f"{i}.png,image {i}" for i in range(4)])
    cfg = PrepareConfig(
        source="image_folder", path=str(raw), image_size=8, captions={"source": "file"}
    )
    manifest = prepare_dataset(cfg, tmp_path / "out")  # captions.csv itself is not read as an image
    assert manifest["labelled"] is False and manifest["captions"]["count"] == {"train": 3, "val": 1}
    (raw / "captions.csv").rename(tmp_path / "elsewhere.csv")
    moved = prepare_dataset(
        PrepareConfig(
            **{
                **cfg.model_dump(),
                "captions": {"source": "file", "path": str(tmp_path / "elsewhere.csv")},
            }
        ),
        tmp_path / "out2",
    )
    assert moved["hash"] == manifest["hash"]


BAD_CSVS = {
    "missing": (None, "does not exist; write a captions file"),
    "no_caption_column": (
        "file,text\ncat/000.png,a cat\n",
        "has no 'caption' column in its header (found: file, text)",
    ),
    "no_header": ("cat/000.png,a cat\n", "has no 'file' column in its header"),
    "unknown_file": (
        "file,caption\n{all}cat/999.png,a ghost\n",
        "row 8 names 'cat/999.png', which is not a file of the image folder",
    ),
    "missing_caption": (
        "file,caption\ncat/001.png,a cat\n",
        "has no caption for cat/000.png (and 4 more files)",
    ),
    "empty_caption": (
        "file,caption\n{all}cat/001.png,\n",
        "row 8: the caption of cat/001.png is empty",
    ),
    "whitespace_caption": (
        'file,caption\n{all}cat/001.png,"  \t "\n',
        "row 8: the caption of cat/001.png is empty",
    ),
    "punctuation_caption": (
        "file,caption\n{all}dog/002.png,?!\n",
        "row 8: the caption of dog/002.png is '?!', with no letter or digit",
    ),
    "conflicting_rows": (
        "file,caption\n{all}dog/000.png,another caption\n",
        "rows 5 and 8 give dog/000.png different captions",
    ),
    "ambiguous_name": (
        "file,caption\n{all}001.png,which one\n",
        "row 8 names '001.png', which matches 2 images",
    ),
    "not_utf8": (b"file,caption\ncat/000.png,caf\xe9\n", "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_bad_captions_csv_is_one_sentence_naming_the_file(tmp_path, case):
    raw, names = _images(tmp_path / "raw")
    text, message = BAD_CSVS[case]
    csv_path = raw / "captions.csv"
    if isinstance(text, bytes):
        csv_path.write_bytes(text)
    elif text is not None:
        # a valid row for every image (rows 2..7), then the case's row 8
        csv_path.write_text(
            text.replace("{all}", "".join(f"{n},image {n}\n" for n, _ in names)), encoding="utf-8"
        )
    cfg = PrepareConfig(
        source="image_folder", path=str(raw), image_size=8, captions={"source": "file"}
    )
    with pytest.raises(DataError) as err:
        prepare_dataset(cfg, tmp_path / "out")
    text = str(err.value)
    assert str(csv_path) in text and message in text, text
    assert "\n" not in text
    assert not (tmp_path / "out").exists() and not [
        p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")
    ]


def test_read_captions_csv_keeps_the_order_of_names(tmp_path):
    path = tmp_path / "c.csv"
    _write_csv(
        path, ["b.png,second", "sub/a.png,first"], header="\ufefffile,caption,extra"
    )  # a spreadsheet's BOM
    assert read_captions_csv(path, ["sub/a.png", "b.png"]) == ["first", "second"]


# ---------------------------------------------------------------- captions array of an npz


def _npz(tmp_path, **arrays):
    base = {
        "x": np.repeat(np.arange(0, 240, 20, dtype=np.uint8), 100).reshape(12, 10, 10),
        "y": np.repeat([0, 1], 6),
    }  # image i: grey 20 i
    np.savez(tmp_path / "d.npz", **{**base, **arrays})
    return PrepareConfig(
        source="npz", path=str(tmp_path / "d.npz"), image_size=8, captions={"source": "npz"}
    )


def test_npz_captions_column(tmp_path):
    captions = np.array([f"picture number {i}" for i in range(12)])
    cfg = _npz(tmp_path, captions=captions)
    manifest = prepare_dataset(cfg, tmp_path / "out")
    for split in ("train", "val"):
        x, _ = load_split(tmp_path / "out", split)
        for xi, caption in zip(np.asarray(x), load_captions(tmp_path / "out", split), strict=True):
            assert caption == f"picture number {round((float(xi.mean()) + 1) * 127.5) // 20}"
    assert manifest["captions"] == {
        "source": "npz",
        "count": {"train": 10, "val": 2},
        "attributes": [],
    }
    # encoded bytes are read as UTF-8
    prepare_dataset(_npz(tmp_path, captions=np.char.encode(captions, "utf-8")), tmp_path / "out2")
    assert list(load_captions(tmp_path / "out2", "train")) == list(
        load_captions(tmp_path / "out", "train")
    )


@pytest.mark.parametrize(("captions", "message"), [
    (None, "has no array 'captions'"),
    (np.array(["a", "b"]), "captions has shape (2,); expected (12,)"),
    (np.array(["a cat"] * 11 + ["  "]), "captions[11] is empty"),
    (np.arange(12), "captions has dtype int64"),
    (np.array(["a cat"] * 12, dtype=object), "cannot be read as .npz"),  # pickled objects are never loaded
])  # fmt: skip
def test_npz_bad_captions(tmp_path, captions, message):
    cfg = _npz(tmp_path, **({} if captions is None else {"captions": captions}))
    with pytest.raises(DataError) as err:
        prepare_dataset(cfg, tmp_path / "out")
    assert message in str(err.value) and "d.npz" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_attributes_need_labels(tmp_path):
    raw = tmp_path / "flat"
    raw.mkdir()
    for i in range(3):
        Image.fromarray(np.full((9, 9), 50 * i, np.uint8), "L").save(raw / f"{i}.png")
    with pytest.raises(
        DataError,
        match="'attributes' names each image's class, but the image_folder data at .* has no labels",
    ):
        prepare_dataset(
            PrepareConfig(
                source="image_folder",
                path=str(raw),
                image_size=8,
                captions={"source": "attributes"},
            ),
            tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- params


STACKGAN = {"prepare": {"captions": {"source": "attributes"}}, "model": {"arch": "stackgan"}}


def _with(**sections):
    raw = json.loads(json.dumps(STACKGAN))
    for name, values in sections.items():
        for key, value in values.items():
            if isinstance(value, dict):
                raw.setdefault(name, {}).setdefault(key, {}).update(value)
            else:
                raw.setdefault(name, {})[key] = value
    return raw


def test_stackgan_params_parse():
    p = parse_params(
        _with(
            train={"steps": 300, "stackgan": {"stage1_steps": 100}},
            model={"stackgan": {"stage1_size": 8}},
        )
    )
    assert (
        p.model.arch == "stackgan"
        and p.model.stackgan.stage1_size == 8
        and p.train.stackgan.stage1_steps == 100
    )
    assert (p.featurize.text.text_dim, p.model.stackgan.c_dim, p.train.stackgan.kl_weight) == (64, 32, 2.0)


@pytest.mark.parametrize(("raw", "message"), [
    ({"model": {"arch": "stackgan"}}, "model.arch: 'stackgan' generates images from captions, but prepare.captions.source is 'none'"),
    (_with(train={"steps": 200}), "train.steps: 200 is not more than train.stackgan.stage1_steps = 200, so Stage II would never train"),
    (_with(tune={"max_steps": 150, "eval_every": 50}), "tune.max_steps: 150 is not more than train.stackgan.stage1_steps = 200"),
    (_with(model={"task": "detect"}, prepare={"normal_classes": ["1"]}), "model.arch: 'stackgan' is an architecture of model.task 'generate', not 'detect'"),
    (_with(prepare={"image_size": 8}), "prepare.image_size: model 'stackgan' cannot produce 8x8; use at least 16"),
    (_with(model={"stackgan": {"stage1_size": 12}}), "model.stackgan.stage1_size = 12 is invalid: must be 0 (image_size // 2) or a power of two"),
    (_with(model={"stackgan": {"stage1_size": 16}}), "model.stackgan.stage1_size: 16 is not below prepare.image_size = 16"),
    (_with(model={"stackgan": {"n_res": 0}}), "model.stackgan.n_res = 0 is invalid"),
    (_with(train={"stackgan": {"kl_weight": -1}}), "train.stackgan.kl_weight = -1 is invalid"),
    ({"prepare": {"source": "npz", "path": "d.npz", "captions": {"source": "file"}}},
     "prepare.captions.source: 'file' reads a captions CSV beside an image folder, but prepare.source is 'npz'"),
    ({"prepare": {"source": "image_folder", "path": "raw", "captions": {"source": "npz"}}},
     "prepare.captions.source: 'npz' reads the captions array of an .npz file, but prepare.source is 'image_folder'"),
    ({"prepare": {"captions": {"source": "attributes", "path": "c.csv"}}}, "prepare.captions.path: only source 'file' reads a captions file"),
    ({"prepare": {"source": "photos", "captions": {"source": "attributes"}}}, "source 'photos' is unlabelled"),
    ({"prepare": {"source": "photos", "pairs": {"scale": 2, "patch_size": 16}, "captions": {"source": "attributes"}}},
     "prepare.captions.source: super-resolution pairs (prepare.pairs) carry no captions"),
    ({"prepare": {"captions": {"source": "words"}}}, "prepare.captions.source = 'words' is invalid: allowed values are"),
])  # fmt: skip
def test_bad_caption_and_stackgan_params_name_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
