"""The task contract: every registered task, and a toy task that lives only here, pass it.

For each task: its networks build, its whole tiny schedule (``train.steps`` steps) runs
every phase it declares, a checkpoint round trip from every step (mid-phase and across
a schedule's switch) continues bit-exactly, and its export loads back without the
training code and answers its inference contract through the real MLflow pyfunc
(models-from-code, saved and loaded by MLflow), matching the task's signature.

The toy task (two generators trained against one D, :class:`DualGeneratorTask`) is
defined in this file alone: it trains, checkpoints, resumes and exports through the
unchanged trainer, which is the point of the contract.

    .venv/bin/python -m pytest tests/test_tasks.py -q
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gan.config import parse_params
from gan.data import read_manifest
from gan.losses import loss_spec
from gan.tasks import TASKS, make_task
from gan.tasks.base import (
    Batch,
    Health,
    Metrics,
    MetricSpec,
    OptimizerSpec,
    Phase,
    PhaseContext,
    Task,
)
from gan.tasks.generate import GenerateTask
from gan.training import GANTrainer, TrainCheckpoint, fit, load_checkpoint, save_checkpoint

# tiny configs per registered task: every phase switched on
TASK_PARAMS: dict[str, dict[str, Any]] = {
    "generate": {
        "model": {"task": "generate", "arch": "dcgan", "z_dim": 8, "g_width": 8, "d_width": 8, "conditional": True,
                  "loss": "wgan-gp", "infogan": {"categorical": 2, "continuous": 1}},
        "train": {"r1_gamma": 1.0, "r1_interval": 2, "n_critic": 2},
    },
    # GANomaly: Gmain, Dmain (and D's re-initialisation check) every step
    "detect": {
        "data": "prepared_anomaly_digits",
        "prepare": {"anomaly_classes": ["0"]},
        "model": {"task": "detect", "z_dim": 8, "g_width": 8, "d_width": 8, "detect": {"method": "ganomaly"}},
    },
    # CycleGAN with a pool smaller than a batch (both of its branches run) and the lr decay under way
    "translate": {
        "data": "prepared_digit_domains",
        "prepare": {"source": "digits_domains"},
        "model": {"task": "translate", "g_width": 8, "d_width": 8,
                  "translate": {"arch": "cyclegan", "n_blocks": 1, "d_layers": 1, "pool_size": 4, "decay_start": 0.5}},
    },
    # two PSNR steps, then the GAN phase: the round trips cover mid-phase and the switch
    "upscale": {
        "data": "prepared_pairs",
        "prepare": {"source": "photos", "channels": 3, "pairs": {"scale": 2, "patch_size": 16, "patches_per_image": 4, "val_size": 24}},
        "model": {"task": "upscale", "upscale": {"blocks": 1, "width": 8, "growth": 4, "d_width": 4, "pretrain_steps": 2,
                                                 "lr_milestones": [1]}},
        "train": {"batch_size": 8, "steps": 4, "beta1": 0.9, "beta2": 0.99},
    },
}
# further architectures of registered tasks
ARCH_PARAMS: dict[str, dict[str, Any]] = {
    "translate/pix2pix": {
        "data": "prepared_digit_domains",
        "prepare": {"source": "digits_domains"},
        "model": {"task": "translate", "g_width": 8, "d_width": 8, "translate": {"arch": "pix2pix", "d_layers": 1}},
    },
    # f-AnoGAN: step 0 is WGAN-GP (2 critic steps, Gmain), step 1 the encoder phase (G, D frozen),
    # so the checkpoint round trip below crosses the phase switch
    "detect/fanogan": {
        "data": "prepared_anomaly_digits",
        "prepare": {"anomaly_classes": ["0"]},
        "model": {"task": "detect", "z_dim": 8, "g_width": 8, "d_width": 8, "detect": {"method": "fanogan", "encoder_steps": 1}},
        "train": {"n_critic": 2},
    },
    # Progressive growing: 4x4 (step 0), 8x8 fading in (alpha 0 at step 1, 0.5 at step 2), then
    # stabilised (step 3): the resume check crosses the growth step and the middle of a fade
    "generate/progan": {
        "model": {"task": "generate", "arch": "progan", "z_dim": 8, "g_width": 16, "d_width": 16, "conditional": True, "loss": "wgan-gp"},
        "train": {"steps": 4, "lr_G": 0.001, "lr_D": 0.001, "beta1": 0.0, "beta2": 0.99,
                  "progan": {"fade_images": 32, "stabilise_images": 16}},
    },
    # StackGAN: Stage I (steps 0, 1), then Stage II with Stage I frozen (steps 2, 3): the resume
    # check crosses the stage switch; the text encoder comes from the featurize stage
    "generate/stackgan": {
        "data": "captioned_digits",
        "prepare": {"image_size": 16, "captions": {"source": "attributes"}},
        "model": {"task": "generate", "arch": "stackgan", "z_dim": 8, "g_width": 16, "d_width": 16, "conditional": True,
                  "loss": "nonsaturating", "stackgan": {"c_dim": 8, "n_res": 1}},
        "train": {"steps": 4, "stackgan": {"stage1_steps": 2, "lr_decay_steps": 1}},
    },
    # StarGAN with CycleGAN's least-squares objective instead of the critic and its penalty,
    # and CycleGAN's identity term
    "translate/stargan-lsgan": {
        "data": "prepared_digit_domains3",
        "prepare": {"source": "digits_domains", "domains": ["plain", "inverted", "dilated"]},
        "model": {"task": "translate", "g_width": 8, "d_width": 8, "translate": {"arch": "stargan", "n_blocks": 1, "adversarial": "lsgan",
                                                                                    "lambda_idt": 5.0}},
    },
    "translate/stargan": {
        "data": "prepared_digit_domains3",
        "prepare": {"source": "digits_domains", "domains": ["plain", "inverted", "dilated"]},
        "model": {"task": "translate", "g_width": 8, "d_width": 8, "translate": {"arch": "stargan", "n_blocks": 1}},
        "train": {"n_critic": 2, "lr_G": 1e-4, "lr_D": 1e-4},
    },
}
STYLEGAN2_PARAMS: dict[str, Any] = {
    "model": {"task": "generate", "arch": "stylegan2", "z_dim": 8, "g_width": 16, "d_width": 16, "conditional": True,
              "loss": "nonsaturating", "stylegan2": {"w_dim": 8, "mapping_layers": 2}},
    "train": {"r1_interval": 1, "lr_G": 0.0025, "lr_D": 0.0025, "beta1": 0.0, "beta2": 0.99,
              "stylegan2": {"pl_interval": 1, "ada_interval": 1, "ada_kimg": 0.1, "mixing_prob": 0.9}},
}


def tiny(overrides: dict[str, Any], features: Path | None = None) -> Any:
    raw: dict[str, Any] = {
        "prepare": {"image_size": 8},
        "train": {"batch_size": 16, "steps": 2, "log_every": 1, "checkpoint_every": 1, "sample_every": 2,
                  "divergence_patience": 50, "seed": 5},
    }
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    if features is not None and raw["model"].get("task") == "upscale":  # the perceptual loss's feature network
        raw["model"]["upscale"] = {**raw["model"]["upscale"], "features": str(features)}
    return parse_params(raw)


@pytest.fixture(scope="session")
def prepared_pairs(tmp_path_factory) -> tuple[Path, Path]:
    """The bundled photos as x2 super-resolution pairs (16x16 patches) and a feature network trained on them."""
    from gan.config import FeaturizeConfig
    from gan.data import load_split, prepare_dataset
    from gan.features import save_feature_net, train_feature_net

    root = tmp_path_factory.mktemp("pairs")
    prepare_dataset(tiny({k: v for k, v in TASK_PARAMS["upscale"].items() if k != "data"}, root).prepare, root / "prepared")
    x, _ = load_split(root / "prepared", "train")
    vx, _ = load_split(root / "prepared", "val")
    net, _ = train_feature_net(x, None, vx, None, 0, FeaturizeConfig(epochs=1, batch_size=16, width=4, feature_dim=8))
    save_feature_net(net, root / "features", {"class_names": []})
    return root / "prepared", root / "features"


def case_data(request: Any, overrides: dict[str, Any]) -> tuple[Path, Path | None, dict[str, Any]]:
    """(prepared data, perceptual feature network or None, the overrides without "data") of a contract case.

    A case names the session fixture of its kind of data under "data" (default: prepared_digits);
    a fixture returning a pair also gives a feature network (the upscale task's perceptual loss).
    """
    overrides = dict(overrides)
    value = request.getfixturevalue(overrides.pop("data", "prepared_digits"))
    data, features = value if isinstance(value, tuple) else (value, None)
    return data, features, overrides


def weights(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()] + [b.detach().float().flatten() for b in module.buffers()])


# ---- a task that exists only in this test --------------------------------------------


class DualGeneratorTask(Task):
    """Two generators, one discriminator: D sees half a batch of fakes from each (a mixture of two G's).

    Reuses the zoo's dcgan networks and the hinge loss; exports both generators (``G`` is
    the first, so the generate task's inference serves it).
    """

    name = "dual"
    inference = "generate"
    metric = MetricSpec("fid")
    ema = {"G1_ema": "G1", "G2_ema": "G2"}
    exported = {"G": "G1_ema", "G2": "G2_ema"}

    def __init__(self, params: Any, manifest: dict[str, Any]) -> None:
        super().__init__(params, manifest)
        self.base = GenerateTask(params, manifest)  # only for its model arguments and data stream
        self.loss = loss_spec("hinge")

    def network_specs(self) -> dict[str, dict[str, Any]]:
        specs = self.base.network_specs()
        return {"G1": specs["G"], "G2": specs["G"], "D": specs["D"]}

    def optimizers(self) -> dict[str, OptimizerSpec]:
        cfg = self.params.train
        return {"G": OptimizerSpec(("G1", "G2"), cfg.lr_G), "D": OptimizerSpec(("D",), cfg.lr_D)}

    def phases(self, step: int) -> list[Phase]:
        return [Phase("Dmain", "D", self.d_main, fetch=True, grad_norm="grad_norm/D"),
                Phase("Gmain", "G", self.g_main, grad_norm="grad_norm/G")]

    def batches(self, data_dir: Any, rank: int, world_size: int, consumed: int):
        return self.base.batches(data_dir, rank, world_size, consumed)

    def fakes(self, ctx: PhaseContext, batch: Batch) -> torch.Tensor:
        y = batch["label"]
        half = batch["image"].shape[0] // 2
        z = torch.randn(batch["image"].shape[0], self.base.z_dim, device=ctx.device)
        return torch.cat([ctx["G1"](z[:half], None if y is None else y[:half]), ctx["G2"](z[half:], None if y is None else y[half:])])

    def d_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        real_logits = ctx["D"](batch["image"], batch["label"])
        fake_logits = ctx["D"](self.fakes(ctx, batch), batch["label"])
        loss = self.loss.d(real_logits, fake_logits)
        return loss, {"loss/D": loss.detach(), "D(x)": torch.sigmoid(real_logits.detach()).mean(),
                      "D(G(z))": torch.sigmoid(fake_logits.detach()).mean()}

    def g_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        loss = self.loss.g(ctx["D"](self.fakes(ctx, batch), batch["label"]))
        return loss, {"loss/G": loss.detach()}

    def health(self, metrics: Metrics) -> Health:
        return Health(metrics["loss/D"], metrics["loss/G"], metrics["D(x)"], metrics["D(G(z))"])

    def grid(self, nets: dict[str, torch.nn.Module], seed: int = 0) -> tuple[torch.Tensor, int]:
        return self.base.grid(nets, seed)

    def export_spec(self) -> dict[str, Any]:
        return self.base.export_spec()


TaskFactory = Callable[[Any, dict[str, Any]], Task]
CASES: list[tuple[str, TaskFactory, dict[str, Any]]] = [
    *[(name, lambda params, manifest: make_task(params, manifest), TASK_PARAMS[name]) for name in TASKS],
    *[(name, lambda params, manifest: make_task(params, manifest), overrides) for name, overrides in ARCH_PARAMS.items()],
    # StyleGAN2-ADA's recipe inside the generate task: Dreg and Greg on every step (intervals 1),
    # p updated on every D step, so the resume check covers w_avg, the PL mean and p
    ("generate/stylegan2", lambda params, manifest: make_task(params, manifest), STYLEGAN2_PARAMS),
    ("dual (defined in the test)", DualGeneratorTask, {"model": {"arch": "dcgan", "z_dim": 8, "g_width": 8, "d_width": 8}}),
]


def test_every_registered_task_has_a_contract_case():
    assert set(TASKS) <= set(TASK_PARAMS), "add a tiny config for the new task to TASK_PARAMS"


def test_task_metrics_table_agrees_with_each_task(request):
    """gan.tasks.TASK_METRICS (what config validates tune/register.metric against) matches each task's MetricSpec."""
    from gan.tasks import TASK_METRICS

    assert set(TASK_METRICS) == set(TASKS)
    for name in TASKS:
        data, features, overrides = case_data(request, TASK_PARAMS[name])
        task = make_task(tiny(overrides, features), read_manifest(data))
        assert task.metric.primary in TASK_METRICS[name], name
        for metric, lower in TASK_METRICS[name].items():
            assert task.metric.lower(metric) == lower, (name, metric)


@pytest.mark.parametrize(("label", "factory", "overrides"), CASES, ids=[c[0] for c in CASES])
def test_task_contract(label, factory, overrides, request, tmp_path):
    data, features, overrides = case_data(request, overrides)
    params = tiny(overrides, features)
    manifest = read_manifest(data)
    task = factory(params, manifest)
    task.use_inputs(data, features)  # StackGAN: featurize's text encoder; nothing for the others

    # networks, optimisers and phases are consistent with each other
    nets = task.build_networks()
    assert set(nets) == set(task.network_specs())
    opts = task.optimizers()
    assert {n for spec in opts.values() for n in spec.networks} <= set(nets)
    assert set(task.ema.values()) <= set(nets) and set(task.exported.values()) <= set(nets) | set(task.ema)
    steps = params.train.steps
    schedule = [task.phases(step) for step in range(steps)]
    assert all(schedule) and all(p.optimizer in opts for phases in schedule for p in phases)
    assert all(set(task.copies(step)) <= set(nets) for step in range(steps))

    # the whole tiny schedule runs every phase it declares (lazy phases come up on their first
    # count, scheduled ones at their steps) and every optimiser moves its networks
    trainer = GANTrainer(params, data, task=task)
    names = [*nets, *task.ema]
    before = {name: weights(trainer.network(name)).clone() for name in nets}
    states, outs, after = [], [], []
    for _ in range(steps):
        states.append(trainer.state_dict())
        outs.append(trainer.train_step())
        after.append({name: weights(trainer.network(name)).clone() for name in names})
    assert {p.name for phases in schedule for p in phases} == set(trainer.phase_counts)
    assert all(torch.isfinite(v).all() for out in outs for v in out.values())
    for spec in opts.values():
        assert any(not torch.equal(before[n], after[-1][n]) for n in spec.networks), spec
    assert all(torch.isfinite(v) for out in outs for v in task.health(out))

    # checkpoint round trips from every step (mid-phase and across a schedule's switch):
    # a resumed trainer continues bit-exactly
    for step in range(1, steps):
        save_checkpoint(TrainCheckpoint(state=states[step]), tmp_path / f"ckpt{step}")
        resumed_task = factory(params, manifest)
        resumed_task.use_inputs(data, features)
        resumed = GANTrainer(params, data, task=resumed_task)
        resumed.load_state_dict(load_checkpoint(tmp_path / f"ckpt{step}").state)
        got = resumed.train_step()
        for name in names:
            assert torch.equal(after[step][name], weights(resumed.network(name))), (step, name)
        assert {k: v.item() for k, v in outs[step].items()} == {k: v.item() for k, v in got.items()}, step

    # export -> load without training code -> inference through the real MLflow pyfunc
    _check_export_and_pyfunc(task, params, data, tmp_path)


def _check_export_and_pyfunc(task: Task, params: Any, data: Path, tmp_path: Path) -> None:
    import mlflow

    from gan.export import load_networks
    from gan.inference import inference_module
    from gan.mlflow_model import GENERATOR_ARTIFACT
    from gan.registry import MODEL_FILE, pip_requirements, stage_model_code
    from gan.training.outputs import export_generator, generator_spec

    saved: list[TrainCheckpoint] = []
    fit(params, data, task=task, log=None, report=lambda m, c: saved.append(c) if c else None)
    spec = generator_spec(task, saved[-1], {"source": "params.yaml"}, {})
    export_generator(task, saved[-1], spec, tmp_path / "model", data)
    nets, loaded_spec = load_networks(tmp_path / "model")
    assert set(nets) == set(task.exported) and loaded_spec["task"] == task.name
    # register describes and tags the version from the task class and the export alone (no KeyError for any task)
    assert {"channels", "image_size"} <= set(loaded_spec)
    text, variant = type(task).describe(loaded_spec), type(task).variant(loaded_spec)
    assert text.endswith(".") and "?" not in text and variant and variant in text, text
    assert isinstance(type(task).augments(loaded_spec), bool)
    for name, src in task.exported.items():
        assert torch.equal(weights(nets[name]), weights(_trained(saved[-1], src, task, params, data)))

    module = inference_module(loaded_spec["inference"])
    signature, example = module.signature(loaded_spec), module.input_example(loaded_spec)
    mlflow.pyfunc.save_model(
        str(tmp_path / "pyfunc"), python_model=str(MODEL_FILE), artifacts={GENERATOR_ARTIFACT: str(tmp_path / "model")},
        code_paths=[str(stage_model_code(tmp_path / "code"))], signature=signature, input_example=example,
        pip_requirements=pip_requirements(),
    )  # fmt: skip
    model = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    answer = model.predict(example)
    for spec_out in signature.outputs.inputs:  # every declared output: its dtype and shape
        value = np.asarray(answer[spec_out.name])
        assert value.dtype == spec_out.type, spec_out.name
        assert all(s in (-1, v) for s, v in zip(spec_out.shape, value.shape, strict=True)), spec_out.name


def _trained(ckpt: TrainCheckpoint, name: str, task: Task, params: Any, data: Path) -> torch.nn.Module:
    trainer = GANTrainer(params, data, task=task)
    trainer.load_state_dict(ckpt.state)
    return trainer.network(name)


def test_same_seed_same_samples_everywhere(prepared_digits, tmp_path):
    """gan.sampling.sample (evaluation, grid), the pyfunc's runner and `gan augment`'s stream agree."""
    from gan.export import load_generator, save_generator
    from gan.inference.generate import GenerateRunner
    from gan.models import build_G, model_kwargs
    from gan.sampling import sample, to_uint8

    params = tiny({"model": {"arch": "dcgan", "z_dim": 8, "g_width": 8}})
    G_kwargs, _ = model_kwargs(params.model, 1, 8, 10)
    torch.manual_seed(0)
    G = build_G("dcgan", **G_kwargs).eval()
    save_generator(G, {"arch": "dcgan", "G_kwargs": G_kwargs, "z_dim": 8, "num_classes": 10, "channels": 1, "image_size": 8},
                   tmp_path / "g")  # fmt: skip
    G, _ = load_generator(tmp_path / "g")
    runner = GenerateRunner(str(tmp_path / "g"))
    for labels, truncation in ((None, None), ([3, 5], 0.5)):
        ours = torch.cat([to_uint8(x) for x, _ in sample(G, 1500, labels=labels, seed=7, truncation=truncation, batch_size=333)])
        served = np.concatenate([x for x, _ in runner.iter_batches(1500, labels=labels, seed=7, truncation=truncation, batch_size=500)])
        assert np.array_equal(ours.numpy(), served)
    # the first k samples do not depend on n
    head = torch.cat([x for x, _ in sample(G, 10, seed=7)])
    assert torch.equal(head, torch.cat([x for x, _ in sample(G, 1500, seed=7)])[:10])


def test_an_older_single_generator_export_still_loads(tmp_path):
    """gan-generator/1: arch + G_kwargs in config.json and unprefixed weight keys."""
    import json

    from safetensors.torch import save_file

    from gan.export import load_generator, load_networks
    from gan.models import build_G

    G_kwargs = {"z_dim": 8, "width": 8, "num_classes": 10, "channels": 1, "image_size": 8}
    torch.manual_seed(1)
    G = build_G("dcgan", **G_kwargs).eval()
    (tmp_path / "old").mkdir()
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(tmp_path / "old" / "model.safetensors"))
    spec = {"format": "gan-generator/1", "arch": "dcgan", "G_kwargs": G_kwargs, "z_dim": 8, "num_classes": 10,
            "class_names": [str(k) for k in range(10)], "channels": 1, "image_size": 8, "output_range": [-1.0, 1.0]}  # fmt: skip
    (tmp_path / "old" / "config.json").write_text(json.dumps(spec))
    nets, loaded = load_networks(tmp_path / "old")
    assert list(nets) == ["G"] and loaded["task"] == "generate" and loaded["networks"]["G"]["network"] == "dcgan.G"
    old_G, _ = load_generator(tmp_path / "old")
    z = torch.randn(4, 8)
    assert torch.equal(old_G(z, torch.arange(4)), G(z, torch.arange(4)))


@pytest.mark.parametrize(("field", "value"), [("channels", "3"), ("channels", 2), ("image_size", -8), ("z_dim", 2.5),
                                              ("num_classes", True), ("class_names", "0123"), ("task", 7)])  # fmt: skip
def test_an_export_with_a_wrong_field_type_is_named(tmp_path, field, value):
    import json

    from gan.errors import GanError
    from gan.export import read_spec, save_generator
    from gan.models import build_G

    G_kwargs = {"z_dim": 8, "width": 8, "num_classes": 0, "channels": 1, "image_size": 8}
    save_generator(build_G("dcgan", **G_kwargs), {"arch": "dcgan", "G_kwargs": G_kwargs, "z_dim": 8, "num_classes": 0,
                                                  "channels": 1, "image_size": 8}, tmp_path / "g")  # fmt: skip
    spec = json.loads((tmp_path / "g" / "config.json").read_text())
    spec[field] = value
    (tmp_path / "g" / "config.json").write_text(json.dumps(spec))
    with pytest.raises(GanError, match=rf"config.json: {field} = .* is invalid"):
        read_spec(tmp_path / "g")


def test_truncation_costs_the_same_for_any_threshold():
    """Inverse-CDF sampling: every entry within the threshold, one uniform draw per entry (1e-6 as fast as 2.0)."""
    from gan.sampling import latents

    for t in (2.0, 0.5, 1e-4, 1e-6):
        z = latents(5000, 16, seed=0, truncation=t)
        assert z.shape == (5000, 16) and float(z.abs().max()) <= t and torch.isfinite(z).all()
        if t >= 0.5:  # a truncated normal's spread: std ~ t / sqrt(3) for small t, < 1 always
            assert 0.2 * t < float(z.std()) < min(1.0, t)
    assert torch.equal(latents(10, 4, 3, 0.7), latents(2000, 4, 3, 0.7)[:10])  # prefixes agree
