"""params.yaml validation: every invalid kind fails before work starts, naming the key."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gan.config import ARCHS, LOSSES, load_params, parse_params
from gan.errors import ConfigError

from .conftest import ROOT


def test_shipped_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.model.arch in ARCHS and params.model.loss in LOSSES
    assert params.prepare.source == "digits"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"train": {"lr_G": -0.001}}, "train.lr_G = -0.001 is invalid: must be greater than 0"),
        ({"train": {"batch_size": 0}}, "train.batch_size = 0 is invalid"),
        ({"model": {"arch": "vit"}}, "model.arch = 'vit' is invalid: allowed values are 'mlp', 'dcgan', 'resnet', 'stylegan2', 'progan' or 'stackgan'"),
        ({"model": {"loss": "wasserstein"}}, "model.loss = 'wasserstein' is invalid: allowed values are"),
        ({"prepare": {"image_size": 12}}, "prepare.image_size = 12 is invalid: must be a power of two"),
        ({"prepare": {"image_size": 256}}, "prepare.image_size = 256 is invalid"),
        ({"prepare": {"source": "image_folder"}}, "prepare.path: source 'image_folder' needs a path"),
        ({"prepare": {"source": "flickr"}}, "prepare.source = 'flickr' is invalid: allowed values are"),
        ({"train": {"lr_g": 0.1}}, "unknown key 'train.lr_g' in train; allowed keys:"),
        ({"tune": {"lr_D": [0.01, 0.001]}}, "tune.lr_D = [0.01, 0.001] is invalid"),
        ({"train": {"diffaugment": "flip"}}, "unknown policy 'flip'"),
        ({"train": {"ema_decay": 1.5}}, "train.ema_decay = 1.5 is invalid"),
    ],
)
def test_invalid_values_name_the_key(raw, expected):
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message  # one sentence, no pydantic dump


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line"):
        load_params(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "absent.yaml")
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_params(bad)


def test_overrides_are_validated(tmp_path):
    params = load_params(ROOT / "params.yaml", {"train.lr_G": 0.001})
    assert params.train.lr_G == 0.001
    with pytest.raises(ConfigError, match="train.steps"):
        load_params(ROOT / "params.yaml", {"train.steps": -5})


def test_cli_check_exits_nonzero_with_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  lr_D: -1\n")
    proc = subprocess.run([sys.executable, "-m", "gan.cli", "check", "--params", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "train.lr_D = -1 is invalid" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_choices_are_the_tables_names():
    """model.task, model.arch and model.loss accept exactly what the task, network and loss tables hold."""
    import typing

    from gan.config import ModelConfig
    from gan.losses import LOSSES
    from gan.models import DISCRIMINATORS, GENERATORS
    from gan.tasks import TASKS

    fields = ModelConfig.model_fields
    assert set(typing.get_args(fields["arch"].annotation)) == set(GENERATORS) == set(DISCRIMINATORS)
    assert set(typing.get_args(fields["loss"].annotation)) == set(LOSSES)
    for name in TASKS:
        assert ModelConfig(task=name).task == name
    with pytest.raises(ValueError, match="unknown task"):
        ModelConfig(task="no-such-task")


def test_the_config_and_the_models_agree_on_the_equalised_architectures():
    import gan.config
    import gan.models

    assert gan.config.EQUALIZED_ARCHS == gan.models.EQUALIZED_ARCHS


@pytest.mark.parametrize(("raw", "message"), [
    ({"model": {"arch": "stylegan2", "spectral_norm_D": True}}, "is not supported with model.arch = 'stylegan2'"),
    ({"model": {"arch": "progan", "spectral_norm_D": False, "infogan": {"continuous": 2}}}, "model.infogan: codes are not supported"),
    ({"model": {"arch": "stylegan2", "spectral_norm_D": False}, "train": {"diffaugment": "color"}}, "both on"),
    ({"model": {"arch": "stackgan", "loss": "wgan-gp"}, "prepare": {"image_size": 16, "captions": {"source": "attributes"}}},
     "'wgan-gp' is not supported with model.arch = 'stackgan'"),
    ({"model": {"task": "translate"}, "prepare": {"source": "digits"}}, "model.task 'translate' needs domain data"),
    ({"model": {"task": "translate"}, "prepare": {"source": "digits_domains", "domains": ["plain", "inverted", "dilated"]}},
     "translates between two domains but 3 are listed"),
    ({"model": {"task": "translate", "translate": {"arch": "pix2pix"}}, "prepare": {"source": "domains", "path": "/srv/horses-zebras"}},
     "'pix2pix' needs paired data"),
    ({"model": {"task": "translate", "translate": {"d_layers": 3}}, "prepare": {"source": "digits_domains", "image_size": 8}},
     "model.translate.d_layers = 3 is too deep for 8px images; use at most 1"),
    ({"model": {"task": "upscale"}, "prepare": {"source": "photos"}}, "needs super-resolution pairs"),
    ({"model": {"task": "upscale"}, "prepare": {"source": "photos", "pairs": {"scale": 2, "patch_size": 24}}}, "D needs a power of two"),
], ids=["stylegan2-sn", "progan-infogan", "ada-diffaugment", "stackgan-wgan", "translate-source", "cyclegan-3", "pix2pix-unpaired",
        "d_layers", "upscale-pairs", "upscale-patch"])
def test_gan_check_refuses_what_training_would(raw, message):
    """Every rule that params alone decide runs in the config, so `gan check` fails before any stage starts."""
    from gan.config import parse_params

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_params(raw)
