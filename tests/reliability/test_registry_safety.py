"""The registry is written only with a generator known to load and run, and a register that
fails half-way leaves the registry as it was.

Before: a ``config.json`` naming an unknown architecture was registered as a new version
before the stage crashed (and ``gan augment`` on that version crashed too); a failure after
the version was created left a version without alias or decision, and a failed run.
"""

from __future__ import annotations

import json

import pytest
import torch

from gan.errors import GanError

from ..conftest import write_params
from ..test_registry import make_generator, tracking
from .conftest import assert_one_line_error, run_stage

# config.json edits that keep the weights' checksum but describe a network that cannot be
# built, or one whose output is not what the file says
BROKEN = {
    "unknown_arch": lambda spec: (spec.update(arch="stylegan9"), spec["networks"]["G"].update(network="stylegan9.G")),
    "extra_constructor_argument": lambda spec: spec["networks"]["G"]["kwargs"].update(depth_multiplier=2),
    "wrong_image_size": lambda spec: spec.update(image_size=16),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_register_refuses_a_generator_that_cannot_run_before_touching_the_registry(tmp_path, prepared_digits, kind):
    from gan.export import save_generator

    G, spec = make_generator(prepared_digits, fit_steps=0)
    model = save_generator(G, spec, tmp_path / "generator")
    config = json.loads((model / "config.json").read_text())
    BROKEN[kind](config)
    (model / "config.json").write_text(json.dumps(config))
    db = tmp_path / "mlflow.db"
    params = write_params(tmp_path / "params.yaml")
    proc = run_stage("register", "--params", str(params), "--data", str(prepared_digits), "--model", str(model),
                     "--eval", str(tmp_path / "eval"), "--out", str(tmp_path / "decision.json"), MLFLOW_TRACKING_URI=f"sqlite:///{db}")  # fmt: skip
    assert_one_line_error(proc, f"the generator in {model}", "nothing was registered")
    assert not db.exists() and not (tmp_path / "decision.json").exists()  # the store was not even opened


def test_a_register_failing_half_way_leaves_the_registry_as_it_was(tmp_path, prepared_digits):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from gan.export import save_generator
    from gan.registry import register_generator
    from gan.tracking import ensure_experiment

    G, spec = make_generator(prepared_digits, fit_steps=0)
    model = save_generator(G, spec, tmp_path / "generator")

    def wrong_latent_size(loaded) -> float:
        """A scoring step that fails on the real loaded version (a latent of the wrong size)."""
        return float(loaded.G(torch.zeros(1, 3), None).sum())

    def register(score) -> tuple:
        return register_generator(model, "safe-gan", metric="fid", min_improvement=0.0, score=score, manifest={"channels": 1, "image_size": 8},
                                  params={"p": 1}, metrics={"eval/fid": 1.0}, tags={"git_commit": "test"}, experiment_id=exp)  # fmt: skip

    with tracking(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        client, exp = MlflowClient(), ensure_experiment("gan-register")
        # the first version fails after it was created: no registered model is left at all
        with pytest.raises(GanError, match=r"registering safe-gan failed half-way \(ValueError: z must have shape .*the registry was put back as it was \(version 1, registered model safe-gan, run \w+ removed\)\.$"):
            register(wrong_latent_size)
        assert client.search_registered_models() == []
        # a good register, then one failing after its version 2 was created
        decision, version = register(lambda loaded: 1.0)
        assert decision.promoted and str(version.version) == "1"
        before = {a: str(v) for a, v in client.get_registered_model("safe-gan").aliases.items()}
        # other weights (identical ones would add no version at all: nothing to roll back)
        with torch.no_grad():
            next(G.parameters()).add_(1e-3)
        save_generator(G, spec, model)
        with pytest.raises(GanError, match=r"\(version 2, run \w+ removed\)"):
            register(wrong_latent_size)
        assert [str(mv.version) for mv in client.search_model_versions("name = 'safe-gan'")] == ["1"]
        assert {a: str(v) for a, v in client.get_registered_model("safe-gan").aliases.items()} == before == {"champion": "1", "challenger": "1"}
        runs = client.search_runs([exp], run_view_type=ViewType.ALL)
        assert sorted(r.info.lifecycle_stage for r in runs) == ["active", "deleted", "deleted"]  # the failed runs are gone from view
