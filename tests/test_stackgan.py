"""StackGAN in the generate task: the caption encoder from featurize, the two stages, captions at inference.

The task contract (resume across the stage switch, export, pyfunc) is in tests/test_tasks.py
(case ``generate/stackgan``); the networks' shapes and losses in tests/test_stackgan_models.py.

    .venv/bin/python -m pytest tests/test_stackgan.py -q
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException

from gan.config import parse_params
from gan.data import load_captions
from gan.errors import GanError
from gan.text_encoder import embed_captions, fit_text_encoder, load_text_encoder, save_text_encoder
from gan.training import GANTrainer
from gan.training.factory import task_for


def stackgan_params(**train: Any) -> Any:
    return parse_params({
        "prepare": {"image_size": 16, "captions": {"source": "attributes"}},
        "model": {"arch": "stackgan", "z_dim": 8, "g_width": 16, "d_width": 16, "conditional": True, "loss": "nonsaturating",
                  "stackgan": {"c_dim": 8, "n_res": 1}},
        "train": {"batch_size": 16, "steps": 4, "log_every": 1, "checkpoint_every": 2, "sample_every": 4, "seed": 3,
                  "stackgan": {"stage1_steps": 2}, **train},
    })  # fmt: skip


def weights(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().float().flatten() for t in [*module.parameters(), *module.buffers()]])


def test_featurize_trains_the_caption_encoder_and_it_round_trips(captioned_digits, tmp_path):
    data, features = captioned_digits
    metrics = json.loads((features.parent / "metrics.json").read_text())
    assert metrics["text/vocab_size"] > 12 and 0.0 <= metrics["text/class_agreement"] <= 1.0
    encoder, spec = load_text_encoder(features)
    captions = [str(c) for c in load_captions(data, "val")[:32]]
    first = embed_captions(encoder, spec, captions)
    # save -> load gives the same embeddings, bit for bit
    save_text_encoder(encoder, spec, tmp_path)
    again, spec2 = load_text_encoder(tmp_path)
    assert spec2["vocab"] == spec["vocab"] and torch.equal(first, embed_captions(again, spec2, captions))
    # a word the encoder never saw reads as <unk>: an embedding, not an error
    assert torch.isfinite(embed_captions(encoder, spec, ["a thick zebra seven"])).all()


def test_caption_encoder_training_is_deterministic(captioned_digits):
    data, features = captioned_digits
    cfg = parse_params({"featurize": {"text": {"epochs": 2}}}).featurize.text
    captions = [str(c) for c in load_captions(data, "train")]
    feats = torch.randn(len(captions), 8, generator=torch.Generator().manual_seed(0))
    a, _ = fit_text_encoder(feats, captions, cfg, seed=1)
    b, _ = fit_text_encoder(feats, captions, cfg, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_missing_caption_encoder_is_one_sentence(captioned_digits, tmp_path):
    data, _ = captioned_digits
    with pytest.raises(GanError, match="featurize"):
        task_for(stackgan_params(), data, None)
    (tmp_path / "text_encoder.json").write_text("{not json")
    with pytest.raises(GanError, match=r"re-run the featurize stage"):
        task_for(stackgan_params(), data, tmp_path)


def test_stage_one_is_frozen_while_stage_two_trains(captioned_digits):
    data, features = captioned_digits
    params = stackgan_params()
    trainer = GANTrainer(params, data, task=task_for(params, data, features))
    G1, G2 = trainer.network("G1"), trainer.network("G2")
    assert trainer.network("G").stage1 is G1 and trainer.network("G").stage2 is G2  # shared modules
    g2_start = weights(G2).clone()
    for _ in range(2):  # Stage I
        out = trainer.train_step()
    assert "loss/kl" in out and torch.equal(weights(G2), g2_start)
    g1_end = weights(G1).clone()  # parameters and BatchNorm statistics
    for _ in range(2):  # Stage II
        trainer.train_step()
    assert torch.equal(weights(G1), g1_end), "Stage I moved while Stage II trained"
    assert not torch.equal(weights(G2), g2_start)
    assert int(trainer.G_ema.stage) == 2 and not any(p.requires_grad for p in trainer.network("G").text.parameters())


@pytest.fixture(scope="module")
def exported(captioned_digits, tmp_path_factory) -> Path:
    """A StackGAN trained 4 steps and exported as the train stage exports it."""
    from gan.training import fit
    from gan.training.outputs import export_generator, generator_spec

    data, features = captioned_digits
    params = stackgan_params()
    task = task_for(params, data, features)
    saved: list[Any] = []
    fit(params, data, task=task, log=None, report=lambda m, c: saved.append(c) if c else None)
    out = tmp_path_factory.mktemp("stackgan") / "model"
    export_generator(task, saved[-1], generator_spec(task, saved[-1], {"source": "params.yaml"}, {}), out, data)
    return out


def test_the_export_draws_from_captions_and_from_labels(exported):
    from gan.inference.generate import GenerateRunner

    runner = GenerateRunner(str(exported))
    answer = runner.predict([{"n": 4, "captions": ["a thick slanted seven", "a thin upright one"], "seed": 1},
                             {"n": 2, "labels": [3]}])  # fmt: skip
    assert answer["images"].shape == (6, 1, 16, 16) and answer["images"].dtype == np.uint8
    assert list(answer["captions"]) == ["a thick slanted seven", "a thin upright one"] * 2 + ["", ""]
    assert list(answer["labels"]) == [-1] * 4 + [3, 3]
    again = runner.predict([{"n": 4, "captions": ["a thick slanted seven", "a thin upright one"], "seed": 1}])
    assert np.array_equal(again["images"], answer["images"][:4])  # the same seed, the same samples
    # the two captions condition differently
    assert not np.array_equal(answer["images"][0], answer["images"][1])


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"n": 2, "captions": ["zebra giraffe"]}, "no word this generator"),
        ({"n": 2, "captions": ["   "]}, "empty"),
        ({"n": 2, "captions": "a thick seven"}, "list of caption strings"),
        ({"n": 2, "captions": ["a thick seven"], "labels": [7]}, "both labels and captions"),
        ({"n": 1, "captions": ["a thick seven", "a thin one"]}, "at most one caption per sample"),
        ({"z": [[0.0] * 24], "captions": ["a thick seven"]}, "cannot be combined with z"),
    ],
)
def test_bad_caption_requests_are_one_sentence(exported, row, match):
    from gan.inference.generate import GenerateRunner

    with pytest.raises(MlflowException, match=match):
        GenerateRunner(str(exported)).predict([row])


def test_captions_to_a_label_conditioned_generator_are_refused(prepared_digits, tmp_path):
    from gan.export import save_generator
    from gan.inference.generate import GenerateRunner
    from gan.models import build_G

    G = build_G("dcgan", z_dim=8, width=16, num_classes=10, channels=1, image_size=8)
    save_generator(G, {"arch": "dcgan", "G_kwargs": {"z_dim": 8, "width": 16, "num_classes": 10, "channels": 1, "image_size": 8},
                       "z_dim": 8, "num_classes": 10, "channels": 1, "image_size": 8}, tmp_path / "model")  # fmt: skip
    with pytest.raises(MlflowException, match="not text-conditioned"):
        GenerateRunner(str(tmp_path / "model")).predict([{"n": 2, "captions": ["a thick seven"]}])


@pytest.mark.parametrize(("content", "match"), [(None, "no such file"), ("\n  \n", "holds no caption"), (b"\xff\xfe\x00", "UTF-8")])
def test_augment_captions_file_errors(tmp_path, content, match):
    from gan.augment.stream import read_captions_file

    path = tmp_path / "captions.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(GanError, match=match):
        read_captions_file(path)
    good = tmp_path / "good.txt"
    good.write_text("a thick seven\n\n  a thin one  \n")
    assert read_captions_file(good) == ["a thick seven", "a thin one"]
