"""The translate task beyond the contract: domain data, schedule and pool, learning, evaluation, `gan translate`.

One module-scoped CycleGAN trained in-process on the embedded digits domains at 8x8,
exported, scored with a featurize-stage domain classifier and registered in a real
MLflow SQLite registry (champion = v1).

    .venv/bin/python -m pytest tests/test_translate.py -q
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.config import FeaturizeConfig, parse_params
from gan.data import load_extra, load_split, read_manifest
from gan.errors import ConfigError, GanError
from gan.tasks import make_task
from gan.tasks.base import EvalSettings
from gan.tasks.translate import ImagePool, linear_decay, target_domains

from .conftest import ROOT
from .test_registry import tracking, venv_env

MODEL = "digits-translate"


def cyclegan_params(steps: int = 150, **translate):
    return parse_params({
        "prepare": {"source": "digits_domains", "image_size": 8},
        "model": {"task": "translate", "g_width": 8, "d_width": 8,
                  "translate": {"arch": "cyclegan", "n_blocks": 2, "d_layers": 1, **translate}},
        "train": {"batch_size": 16, "steps": steps, "log_every": 50, "checkpoint_every": steps, "sample_every": steps,
                  "divergence_patience": 1000, "seed": 0},
    })  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared_digit_domains):
    """A short CycleGAN run, its export, a domain classifier and a registry holding it as champion."""
    from mlflow import MlflowClient

    from gan.features import load_feature_net, save_feature_net, train_feature_net
    from gan.registry import log_generator
    from gan.training import fit
    from gan.training.outputs import export_generator, generator_spec

    root = tmp_path_factory.mktemp("translate")
    data = prepared_digit_domains
    params = cyclegan_params()
    task = make_task(params, read_manifest(data))
    saved = []
    torch.manual_seed(0)
    fit(params, data, task=task, log=None, report=lambda m, c: saved.append(c) if c else None)
    export_generator(task, saved[-1], generator_spec(task, saved[-1], {}, {}), root / "model")
    train_x, train_y = load_split(data, "train")
    val_x, val_y = load_split(data, "val")
    net, _ = train_feature_net(train_x, train_y, val_x, val_y, 2, FeaturizeConfig(epochs=2, width=8, feature_dim=16))
    save_feature_net(net, root / "features", {"class_names": read_manifest(data)["class_names"]})  # as the featurize stage does
    feature_net = load_feature_net(root / "features")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with tracking(uri):
        log_generator(root / "model", MODEL, params={"p": 1}, metrics={"eval/target_accuracy": 1.0}, tags={"git_commit": "test"})
        MlflowClient().set_registered_model_alias(MODEL, "champion", "1")
        yield {"root": root, "data": data, "task": task, "feature_net": feature_net, "uri": uri}


# ---------------------------------------------------------------- data


def test_digits_domains_are_disjoint_shares_with_content_and_an_oracle(prepared_digit_domains, prepared_digits):
    manifest = read_manifest(prepared_digit_domains)
    assert manifest["domains"] == ["plain", "dilated_inverted"] and manifest["paired"] and manifest["num_classes"] == 2
    x, y = load_split(prepared_digit_domains, "train")
    oracle, content = load_extra(prepared_digit_domains, "train", "oracle"), load_extra(prepared_digit_domains, "train", "content")
    assert oracle.shape == (len(x), 2, 1, 8, 8) and content.shape == (len(x),)
    assert np.array_equal(oracle[np.arange(len(x)), y], x)  # each image is its own domain's rendering
    # genuinely unpaired: no training image of B is the transform of a training image of A
    a_as_b = {oracle[i, 1].tobytes() for i in np.flatnonzero(y == 0)}
    assert not any(x[i].tobytes() in a_as_b for i in np.flatnonzero(y == 1))
    assert set(np.unique(content[y == 0])) == set(range(10)) == set(np.unique(content[y == 1]))
    # B is inverted: its backgrounds are light where A's are dark (the corner pixels)
    assert (x[y == 0][..., 0, 0] < 0).mean() > 0.9 and (x[y == 1][..., 0, 0] > 0).mean() > 0.9
    # other sources keep their manifest as before: no domain keys, no extra arrays
    plain = read_manifest(prepared_digits)
    assert "domains" not in plain and not list((Path(prepared_digits) / "train").glob("oracle-*.npy"))


def test_domain_folders_source_and_its_errors(tmp_path):
    from gan.config import PrepareConfig
    from gan.data import prepare_dataset
    from gan.errors import DataError

    for domain, value in (("horses", 40), ("zebras", 200)):
        (tmp_path / "raw" / domain).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((12, 12), value + i, np.uint8)).save(tmp_path / "raw" / domain / f"{i}.png")
    m = prepare_dataset(PrepareConfig(source="domains", path=str(tmp_path / "raw"), image_size=8), tmp_path / "out")
    assert m["domains"] == ["horses", "zebras"] and m["extras"] == [] and not m["paired"]
    (tmp_path / "one" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="needs at least two"):
        prepare_dataset(PrepareConfig(source="domains", path=str(tmp_path / "one"), image_size=8), tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_config_errors_name_the_key(prepared_digits, prepared_digit_domains, prepared_digit_domains3):
    with pytest.raises(ConfigError, match=r"prepare.source to digits_domains"):
        make_task(cyclegan_params(), read_manifest(prepared_digits))
    with pytest.raises(ConfigError, match=r"model.translate.arch = 'cyclegan' translates between two domains"):
        make_task(cyclegan_params(), read_manifest(prepared_digit_domains3))
    with pytest.raises(ConfigError, match=r"model.translate.d_layers = 2 is too deep for 8px"):
        make_task(cyclegan_params(d_layers=2), read_manifest(prepared_digit_domains))
    with pytest.raises(ConfigError, match=r"prepare.domains = .* unknown domain transform 'sepia'"):
        parse_params({"prepare": {"source": "digits_domains", "domains": ["plain", "sepia"]}})
    with pytest.raises(ConfigError, match=r"model.translate.arch = 'gauGAN' is invalid"):
        parse_params({"model": {"task": "translate", "translate": {"arch": "gauGAN"}}})


# ---------------------------------------------------------------- schedule and pool


def test_lr_is_constant_then_decays_linearly_and_a_resume_keeps_the_schedule(prepared_digit_domains):
    assert [linear_decay(s, 100, 100) for s in (0, 100, 150, 199)] == [1.0, 1.0, 1 - 50 / 101, 1 - 99 / 101]
    manifest = read_manifest(prepared_digit_domains)
    task = make_task(cyclegan_params(steps=200, decay_start=0.5), manifest)
    assert task.lr_scale(99) == {"G": 1.0, "D": 1.0} and task.lr_scale(150)["G"] == pytest.approx(1 - 50 / 101)
    # a resumed run with a longer train.steps continues the schedule it started with
    longer = make_task(cyclegan_params(steps=400, decay_start=0.5), manifest)
    longer.load_state_dict(task.state_dict())
    assert longer.lr_scale(150) == task.lr_scale(150)


def test_image_pool_fills_then_swaps_half_the_time_and_round_trips():
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returned as they are
    out = pool.query(torch.full((200, 1, 1, 1), 9.0))
    from_pool = (out != 9).sum().item()
    assert 0 < from_pool < 200  # some stored fakes were shown instead of the new ones
    again = ImagePool(4)
    again.load(pool.state())
    state = torch.get_rng_state()
    a = pool.query(torch.full((20, 1, 1, 1), 7.0))
    torch.set_rng_state(state)
    assert torch.equal(again.query(torch.full((20, 1, 1, 1), 7.0)), a)


@pytest.mark.parametrize("k", [2, 3, 8])
def test_stargan_targets_other_never_pick_the_source_and_cover_the_rest(k):
    torch.manual_seed(0)
    c_org = torch.arange(k).repeat(1000)
    c_trg = target_domains(c_org, k, "other")
    assert c_trg.dtype == c_org.dtype and not (c_trg == c_org).any()
    for d in range(k):  # every other domain drawn about equally often from each source
        counts = torch.bincount(c_trg[c_org == d], minlength=k).float()
        others = counts[torch.arange(k) != d]
        assert others.min() > 0.7 * others.mean()
    shuffled = target_domains(c_org, k, "shuffle")  # the reference's: a permutation of the batch's labels
    assert torch.equal(torch.sort(shuffled).values, torch.sort(c_org).values)
    assert (shuffled == c_org).float().mean() > 0.5 / k


# ---------------------------------------------------------------- learning and evaluation


def test_short_cyclegan_run_beats_the_untranslated_baseline(trained):
    task, feature_net, data = trained["task"], trained["feature_net"], trained["data"]
    from gan.export import load_networks

    nets, _ = load_networks(trained["root"] / "model")
    settings = EvalSettings(num_samples=100, seed=0, batch_size=100)
    scores = task.evaluate(nets, feature_net, data, settings)
    untranslated = task.evaluate({"G_AB": torch.nn.Identity(), "G_BA": torch.nn.Identity()}, feature_net, data, settings)
    floor = task.real_floor(feature_net, data, settings)
    assert set(scores) >= {"target_accuracy", "content_accuracy", "cycle_l1", "fid", "psnr", "ssim",
                           "target_accuracy/plain_to_dilated_inverted", "target_accuracy/dilated_inverted_to_plain"}  # fmt: skip
    assert untranslated["target_accuracy"] < 0.2 and floor["target_accuracy"] > 0.9  # the domain judge works
    assert floor["content_accuracy"] > 0.9  # the digit judge reads the true translations' digits
    assert scores["target_accuracy"] > untranslated["target_accuracy"] + 0.3
    assert scores["psnr"] > untranslated["psnr"]
    assert 0 <= scores["content_accuracy"] <= 1 and scores["cycle_l1"] >= 0
    images, nrow = task.grid(nets)
    assert nrow == 8 and images.shape == (2 * 3 * 8, 1, 8, 8)  # source, translation, reconstruction per direction


def test_promotion_follows_the_metric_direction():
    from gan.registry.promotion import decide

    assert decide("target_accuracy", "2", 0.9, "1", 0.8, 0.0, lower_is_better=False).promoted
    assert not decide("target_accuracy", "2", 0.81, "1", 0.8, 0.05, lower_is_better=False).promoted
    assert decide("fid", "2", 0.7, "1", 0.8, 0.0).promoted and not decide("fid", "2", 0.9, "1", 0.8, 0.0).promoted
    task = make_task.__globals__["task_class"]("translate")
    assert task.metric.lower("fid") and not task.metric.lower("target_accuracy")


# ---------------------------------------------------------------- gan translate


def _inputs(trained, folder: Path, n: int = 5) -> np.ndarray:
    x, y = load_split(trained["data"], "val")
    images = ((x[y == 0][:n] + 1) * 127.5).round().astype(np.uint8)  # [n, 1, 8, 8]
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img[0]).save(folder / f"digit_{i}.png")
    return images


def test_gan_translate_round_trip_through_the_registry(trained, tmp_path):
    from gan.translate import cli_main
    from gan.translate import translate as translate_fn

    images = _inputs(trained, tmp_path / "in")
    Image.fromarray(np.zeros((16, 24), np.uint8)).save(tmp_path / "in" / "wide.png")  # resized: shorter side, centre crop
    with tracking(trained["uri"]):
        assert cli_main(["--model", f"models:/{MODEL}@champion", "--in", str(tmp_path / "in"), "--to", "dilated_inverted",
                         "--out", str(tmp_path / "out"), "--no-progress"]) == 0  # fmt: skip
        summary = translate_fn(f"models:/{MODEL}/1", tmp_path / "in", "dilated_inverted", tmp_path / "npz", fmt="npz")
    assert summary["count"] == 6
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [*(f"digit_{i}.png" for i in range(5)), "wide.png"]
    from gan.inference.translate import TranslateRunner

    expected = TranslateRunner(str(trained["root"] / "model")).translate(images, "dilated_inverted")  # [5, 1, 8, 8]
    got = np.stack([np.asarray(Image.open(tmp_path / "out" / f"digit_{i}.png")) for i in range(5)])
    assert np.array_equal(got, expected[:, 0])
    with np.load(tmp_path / "npz" / "translated.npz") as npz:
        assert npz["x"].shape == (6, 8, 8, 1) and list(npz["names"])[:2] == ["digit_0.png", "digit_1.png"]
        assert np.array_equal(npz["x"][:5, ..., 0], expected[:, 0])


@pytest.mark.parametrize(("case", "message"), [
    ("rgb", r"has 3 channels; the model translates 1-channel images"),
    ("domain", r"unknown target domain 'zebra'; this model translates to plain, dilated_inverted"),
    ("empty", r"holds no files; put the images to translate there"),
    ("not_an_image", r"notes.txt is not a readable image; remove it from --in"),
])  # fmt: skip
def test_bad_inputs_are_one_sentence_and_write_nothing(trained, tmp_path, case, message):
    from gan.translate import translate as translate_fn

    _inputs(trained, tmp_path / "in", n=2)
    to = "zebra" if case == "domain" else "plain"
    if case == "rgb":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "colour.png")
    elif case == "empty":
        for f in (tmp_path / "in").iterdir():
            f.unlink()
    elif case == "not_an_image":
        (tmp_path / "in" / "notes.txt").write_text("hello")
    with pytest.raises(GanError, match=message):
        translate_fn(str(trained["root"] / "model"), tmp_path / "in", to, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pyfunc_rejects_a_wrong_channel_count_in_one_sentence(trained):
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    with tracking(trained["uri"]):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
        ok = model.predict(pd.DataFrame([{"image": np.zeros((1, 8, 8)).tolist(), "to": "plain"}]))
        assert ok["images"].shape == (1, 1, 8, 8) and ok["images"].dtype == np.uint8
        with pytest.raises(MlflowException, match=r"images have 3 channels; this model translates 1-channel images"):
            model.predict(pd.DataFrame([{"image": np.zeros((3, 8, 8)).tolist(), "to": "plain"}]))
        # a misspelt field is refused, not dropped (MLflow's column enforcement would drop it)
        with pytest.raises(MlflowException, match=r"unknown field 'too'; a row may hold image, to"):
            model.predict([{"image": np.zeros((1, 8, 8)).tolist(), "to": "plain", "too": "x"}])
        with pytest.raises(MlflowException, match=r"lacks image or to"):
            model.predict([{"image": np.zeros((1, 8, 8)).tolist()}])


@pytest.mark.slow
def test_models_serve_translates_over_http_and_refuses_a_bad_row_in_one_sentence(trained, tmp_path):
    """`mlflow models serve` of the registered translate model: the same images as in process; a misspelt field or a
    wrong channel count is HTTP 400 naming it."""
    import mlflow
    import requests

    from .test_registry import model_server

    with model_server(f"models:/{MODEL}@champion", trained["uri"], tmp_path) as url:
        images = _inputs(trained, tmp_path / "in", n=2)  # uint8 [2, 1, 8, 8]
        rows = [{"image": img.tolist(), "to": "dilated_inverted"} for img in images]
        r = requests.post(url, json={"dataframe_records": rows}, timeout=60)
        assert r.status_code == 200, r.text
        served = np.asarray(r.json()["predictions"]["images"], dtype=np.uint8)
        with tracking(trained["uri"]):
            local = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(rows)["images"]
        assert served.shape == (2, 1, 8, 8) and np.array_equal(served, local)
        for body, message in [
            ({"dataframe_records": [{**rows[0], "too": "plain"}]}, "unknown field 'too'"),
            ({"dataframe_records": [{"image": np.zeros((3, 8, 8)).tolist(), "to": "plain"}]}, "images have 3 channels"),
            ({"dataframe_records": [{"image": rows[0]["image"], "to": "sepia"}]}, "unknown target domain 'sepia'"),
        ]:
            r = requests.post(url, json=body, timeout=60)
            assert r.status_code == 400 and message in r.json()["message"], (body["dataframe_records"][0].keys(), r.text)


@pytest.mark.slow
def test_gan_translate_cli_exits_non_zero_with_one_line(trained, tmp_path):
    env = venv_env(MLFLOW_TRACKING_URI=trained["uri"])
    (tmp_path / "in").mkdir()
    cmd = [sys.executable, "-m", "gan.cli", "translate", "--model", f"models:/{MODEL}@champion", "--in", str(tmp_path / "in"),
           "--to", "plain", "--out", str(tmp_path / "o")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"error: --in {tmp_path / 'in'} holds no files; put the images to translate there."]


@pytest.mark.parametrize("example", sorted((ROOT / "docs" / "examples").glob("translate-*.yaml")), ids=lambda p: p.stem)
def test_params_examples_are_valid_and_build_their_task(example, tmp_path):
    from gan.config import load_params
    from gan.data import prepare_dataset

    params = load_params(example)
    manifest = prepare_dataset(params.prepare.model_copy(update={"image_size": 16}), tmp_path / "data")
    task = make_task(params, manifest)
    assert set(task.build_networks()) == set(task.network_specs())


@pytest.mark.slow
def test_evaluate_and_register_stages_gate_on_a_higher_is_better_metric(trained, tmp_path):
    """featurize -> evaluate -> register with register.metric = target_accuracy: a worse challenger is not promoted."""
    import json

    import yaml

    from gan.stages import evaluate, featurize, register
    from gan.training import fit
    from gan.training.outputs import export_generator, generator_spec

    raw = {"prepare": {"source": "digits_domains", "image_size": 8},
           "model": {"task": "translate", "g_width": 8, "d_width": 8, "translate": {"arch": "cyclegan", "n_blocks": 2, "d_layers": 1}},
           "featurize": {"epochs": 2, "width": 8, "feature_dim": 16},
           "evaluate": {"num_samples": 100, "batch_size": 100},
           "register": {"model_name": "stage-translate", "metric": "target_accuracy", "eval_samples": 100}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    data, params = str(trained["data"]), ["--params", str(tmp_path / "params.yaml"), "--data", str(trained["data"])]
    # a worse model of the same shape: one training step
    weak = cyclegan_params(steps=1)
    task = make_task(weak, read_manifest(trained["data"]))
    saved = []
    fit(weak, data, task=task, log=None, report=lambda m, c: saved.append(c) if c else None)
    export_generator(task, saved[-1], generator_spec(task, saved[-1], {}, {}), tmp_path / "weak")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking(uri):
        assert featurize.main([*params, "--out", str(tmp_path / "features"), "--metrics", str(tmp_path / "f.json")]) == 0
        decisions = []
        for i, model in enumerate((trained["root"] / "model", tmp_path / "weak")):
            common = [*params, "--model", str(model), "--features", str(tmp_path / "features")]
            assert evaluate.main([*common, "--out", str(tmp_path / f"eval{i}")]) == 0
            metrics = json.loads((tmp_path / f"eval{i}" / "metrics.json").read_text())
            assert {"target_accuracy", "floor/target_accuracy", "content_accuracy", "psnr"} <= set(metrics)
            assert register.main([*common, "--eval", str(tmp_path / f"eval{i}"), "--tuned", str(tmp_path / "none.json"),
                                  "--out", str(tmp_path / f"decision{i}.json")]) == 0  # fmt: skip
            decisions.append(json.loads((tmp_path / f"decision{i}.json").read_text()))
    assert decisions[0]["promoted"] and decisions[0]["lower_is_better"] is False
    assert not decisions[1]["promoted"] and decisions[1]["challenger_score"] < decisions[1]["champion_score"], decisions[1]


def _ddp_worker(rank: int, world: int, port: int, data: dict, raws: list[dict], out: str) -> None:
    import os

    import torch.distributed as dist

    from gan.training import fit_task

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for i, raw in enumerate(raws):
            summary = fit_task(parse_params(raw), data[raw["model"]["translate"]["arch"]], rank=rank, world_size=world, log=None)
            torch.save({"checksums": summary["replica_checksums"]}, f"{out}/model{i}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_keep_every_architecture_in_sync(prepared_digit_domains, prepared_digit_domains3, tmp_path):
    """InstanceNorm and per-rank image pools (cyclegan), BatchNorm on stacked pairs (pix2pix), GP's double backward (stargan)."""
    import os

    import torch.multiprocessing as mp

    raws = []
    for arch, extra in (("cyclegan", {"pool_size": 4}), ("pix2pix", {}), ("stargan", {})):
        raw = cyclegan_params(steps=3, **extra).model_dump()
        raw["model"]["translate"]["arch"] = arch
        raw["train"].update(batch_size=8, log_every=1, n_critic=2 if arch == "stargan" else 1)
        raws.append(raw)
    data = {"cyclegan": str(prepared_digit_domains), "pix2pix": str(prepared_digit_domains), "stargan": str(prepared_digit_domains3)}
    port = 29700 + os.getpid() % 1000
    mp.start_processes(_ddp_worker, args=(2, port, data, raws, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    for i, raw in enumerate(raws):
        rows = torch.load(tmp_path / f"model{i}-rank0.pt", weights_only=True)["checksums"]
        assert len(rows) == 2 and rows[0] == rows[1], raw["model"]["translate"]["arch"]  # gradients all-reduced
