"""The embedded RGB default: labelled patches of the photographs that ship in installed wheels.

    .venv/bin/python -m pytest tests/test_photo_patches.py -q
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gan.config import PrepareConfig, parse_params
from gan.data import load_split, prepare_dataset
from gan.errors import ConfigError


def prepared(tmp_path, name: str, **patches) -> tuple[np.ndarray, np.ndarray, dict]:
    cfg = PrepareConfig(source="photo_patches", image_size=16, channels=3, seed=patches.pop("seed", 0),
                        patches={"photos": ["chelsea", "coffee", "brick"], "per_photo": 20, "short_side": 48, **patches})  # fmt: skip
    manifest = prepare_dataset(cfg, tmp_path / name)
    x, y = load_split(tmp_path / name, "train")
    return np.asarray(x), np.asarray(y), manifest


def test_one_class_per_photo_deterministic_from_the_seed(tmp_path):
    x, y, manifest = prepared(tmp_path, "a")
    assert manifest["class_names"] == ["chelsea", "coffee", "brick"] and manifest["channels"] == 3
    assert x.shape[1:] == (3, 16, 16) and sorted(set(y.tolist())) == [0, 1, 2]
    assert manifest["counts"]["train"]["total"] + manifest["counts"]["val"]["total"] == 60
    again, _, _ = prepared(tmp_path, "b")
    other, _, _ = prepared(tmp_path, "c", seed=1)
    assert np.array_equal(x, again) and not np.array_equal(x, other)
    # patches are cut, not resized: a grayscale photo (brick) gives equal channels, the colour ones do not
    assert np.array_equal(x[y == 2][:, 0], x[y == 2][:, 1]) and not np.array_equal(x[y == 0][:, 0], x[y == 0][:, 2])


@pytest.mark.parametrize(("patches", "message"), [
    ({"photos": ["chelsea", "eagle"]}, "unknown bundled photo 'eagle'"),  # pooch would download it
    ({"photos": ["chelsea", "chelsea"]}, "each once"),
    ({"short_side": 24}, "prepare.patches.short_side: 24 is smaller than prepare.image_size = 32"),
    ({"per_photo": 0}, "prepare.patches.per_photo"),
])  # fmt: skip
def test_bad_patch_settings_are_named(patches, message):
    with pytest.raises(ConfigError, match=message):
        parse_params({"prepare": {"source": "photo_patches", "image_size": 32, "channels": 3, "patches": patches}})


EXAMPLES = sorted((Path(__file__).parent.parent / "docs" / "examples").glob("generate-photos-*.yaml"))


def test_there_is_a_photos_example_for_every_generate_architecture():
    from gan.config import ARCHS, load_params

    assert sorted(load_params(p).model.arch for p in EXAMPLES) == sorted(ARCHS)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_photos_examples_build_their_networks_on_the_patches(example, tmp_path):
    import torch

    from gan.config import load_params
    from gan.tasks import make_task

    params = load_params(example)
    manifest = prepare_dataset(params.prepare.model_copy(update={"patches": params.prepare.patches.model_copy(update={"per_photo": 5})}),
                               tmp_path / "data")  # fmt: skip
    task = make_task(params, manifest)
    if params.model.arch == "stackgan":  # a caption encoder, as featurize would train it (one epoch here)
        from gan.data import load_captions
        from gan.text_encoder import fit_text_encoder, save_text_encoder

        captions = [str(c) for c in load_captions(tmp_path / "data", "train")]
        encoder, spec = fit_text_encoder(torch.randn(len(captions), 8), captions, params.featurize.text.model_copy(update={"epochs": 1}), seed=0)
        save_text_encoder(encoder, spec, tmp_path)
        task.use_inputs(tmp_path / "data", tmp_path)
    nets = task.build_networks()
    y = torch.tensor([0, 5])
    fake = nets["G"](torch.randn(2, nets["G"].z_dim), y)  # StackGAN's latent also holds its CA draws
    if params.model.arch == "stackgan":  # D judges (image, caption embedding) pairs, at each stage's size
        emb = nets["G"].condition(y, None, 2)
        assert nets["D2"](fake, emb).shape == (2,) and nets["D1"](nets["G1"](torch.randn(2, 64), emb)[0], emb).shape == (2,)
    else:
        assert nets["D"](fake, y).shape == (2,)
    assert fake.shape == (2, 3, 32, 32)
