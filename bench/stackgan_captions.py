"""Benchmark: StackGAN on captioned embedded data: does Stage II add detail, do samples follow their captions?

    python bench/stackgan_captions.py                                   # photo patches, 3 seeds, 2 at a time
    python bench/stackgan_captions.py --source digits --image-size 32   # the digits, upsampled to 32x32
    python bench/stackgan_captions.py --seeds 0 --steps 300 --stage1-steps 150   # quicker

Data: the embedded RGB default (``prepare.source: photo_patches``, 32x32 patches of six
bundled photographs) or the digits, each with generated attribute captions
(``prepare.captions.source: attributes``: "a bright textured coffee", "a thick slanted
seven"). The feature classifier and the caption encoder are trained as the featurize
stage trains them; StackGAN (``model.arch: stackgan``) trains through the project's
trainer: ``--stage1-steps`` of Stage I at half size, then Stage II (Stage I frozen) to
``--steps``.

Per seed, on the validation split's captions (each sample drawn for one validation
caption, so the class and the attribute words are known):

* **detail**: sliced Wasserstein distance on Laplacian-pyramid patches (x 1e3, finest
  level and mean) of Stage II's samples and of the same Stage I samples upsampled
  bicubically, against the validation images;
* **caption class**: how often the feature classifier (trained on real images) assigns
  a sample to the class its caption names; beside it the classifier on the real images;
* **attribute words**: for every class, captions that differ in one attribute word only
  ("a thick upright seven" against "a thin upright seven"); the attribute measured on the
  samples (:func:`gan.data.captions.measure`), its gap between the two words, and the
  fraction of (class, other word) pairs where the gap has the caption's sign; beside it
  the same gap between real validation images captioned with each word.

Medians over seeds with the wall time and the machine; writes
bench/results/stackgan_<source>.json and a sample grid; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gan.config import parse_params
from gan.data import load_captions, load_split, prepare_dataset
from gan.data.captions import ATTRIBUTE_WORDS, class_word, measure
from gan.evaluation import evaluate_generator
from gan.features import FeatureNet, load_feature_net, save_feature_net, train_feature_net
from gan.metrics.swd import pyramid_swd
from gan.sampling import to_uint8
from gan.text_encoder import embed_captions, fit_text_encoder, load_text_encoder, save_text_encoder
from gan.training import GANTrainer
from gan.training.factory import task_for

RESULTS = Path(__file__).parent / "results"


def params_for(args: argparse.Namespace, seed: int) -> Any:
    """StackGAN's recipe (Adam 2e-4 betas (0.5, 0.999), KL weight 2, cross-entropy, no EMA) at the bench's size."""
    return parse_params({
        "prepare": prepare_section(args),
        "model": {"arch": "stackgan", "conditional": True, "z_dim": 64, "g_width": args.width, "d_width": args.width, "loss": "nonsaturating",
                  "stackgan": {"c_dim": 32, "n_res": 2}},
        "train": {"batch_size": args.batch, "steps": args.steps, "seed": seed, "mixed_precision": "none", "lr_G": 2e-4, "lr_D": 2e-4,
                  "beta1": 0.5, "beta2": 0.999, "ema_decay": args.ema_decay, "n_critic": 1,
                  "stackgan": {"stage1_steps": args.stage1_steps, "kl_weight": 2.0, "lr_decay_steps": 0}},
        "tune": {"enabled": False},
    })  # fmt: skip


def prepare_section(args: argparse.Namespace) -> dict[str, Any]:
    channels = 3 if args.source == "photo_patches" else 1
    return {"source": args.source, "image_size": args.image_size, "channels": channels, "captions": {"source": "attributes"}}


def stage_samples(G: torch.nn.Module, emb: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Stage II samples, the same Stage I samples upsampled bicubically), both at the full size."""
    torch.manual_seed(seed)
    z = torch.randn(len(emb), G.z_dim)
    with torch.no_grad():
        low, high, _, _ = G.forward_stages(z, emb)
    up = F.interpolate(low, size=high.shape[-1], mode="bicubic", align_corners=False).clamp(-1, 1)
    return high.clamp(-1, 1), up


def attribute_gaps(G: torch.nn.Module, encoder: Any, spec: dict[str, Any], class_names: list[str], channels: int, n: int, seed: int) -> dict[str, Any]:
    """Per attribute: the measured gap between samples of captions that differ in that word only."""
    words = ATTRIBUTE_WORDS[channels]
    out: dict[str, Any] = {}
    for a, (low_word, high_word) in enumerate(words):
        other = words[1 - a]
        gaps = []
        for name in class_names:
            for o in other:
                pair = []
                for w in (low_word, high_word):
                    caption = f"a {w} {o} {class_word(name)}" if a == 0 else f"a {o} {w} {class_word(name)}"
                    emb = embed_captions(encoder, spec, [caption] * n)
                    x, _ = stage_samples(G, emb, seed)
                    values = [measure(xi)[a] for xi in x.numpy()]
                    pair.append(float(np.mean(np.abs(values) if a == 1 and channels == 1 else values)))
                gaps.append(pair[1] - pair[0])
        key = f"{low_word}->{high_word}"
        out[key] = {"gap": round(float(np.mean(gaps)), 5), "right_sign": round(float(np.mean([g > 0 for g in gaps])), 3)}
        if a == 1:  # the slant / texture attribute is measured as a magnitude
            out[key]["note"] = "|slant|" if channels == 1 else "texture"
    return out


def real_gaps(val_x: np.ndarray, captions: list[str], channels: int) -> dict[str, float]:
    """The same gaps between real validation images captioned with each word."""
    words = ATTRIBUTE_WORDS[channels]
    m = np.array([measure(x) for x in val_x])
    m[:, 1] = np.abs(m[:, 1]) if channels == 1 else m[:, 1]
    out = {}
    for a, (low_word, high_word) in enumerate(words):
        has = np.array([high_word in c.split() for c in captions])
        out[f"{low_word}->{high_word}"] = round(float(m[has, a].mean() - m[~has, a].mean()), 5)
    return out


def run_seed(args: argparse.Namespace, seed: int, data: str, features: str) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    params = params_for(args, seed)
    trainer = GANTrainer(params, data, task=task_for(params, data, features))
    t0 = time.perf_counter()
    while trainer.step < args.steps:
        trainer.train_step()
    seconds = time.perf_counter() - t0
    G = trainer.G_ema.eval()
    feature_net = load_feature_net(features)
    encoder, spec = load_text_encoder(features)
    val_x, val_y = (np.array(a) for a in load_split(data, "val"))
    captions = [str(c) for c in load_captions(data, "val")]
    pick = np.random.default_rng(seed).permutation(len(val_x))[: args.samples]
    emb = embed_captions(encoder, spec, [captions[i] for i in pick])
    high, up = stage_samples(G, emb, seed)
    swd2 = pyramid_swd(torch.as_tensor(val_x), high, seed=seed)
    swd1 = pyramid_swd(torch.as_tensor(val_x), up, seed=seed)
    finest = f"swd/{args.image_size}"
    accuracy = float((feature_net.logits(high).argmax(1).numpy() == val_y[pick]).mean())
    accuracy1 = float((feature_net.logits(up).argmax(1).numpy() == val_y[pick]).mean())
    fid = evaluate_generator(G, feature_net, val_x, val_y, args.samples, seed=seed)
    row = {
        "seed": seed, "steps": trainer.step, "seconds": round(seconds, 1),
        "swd_finest/stage2": round(swd2[finest], 2), "swd_finest/stage1_bicubic": round(swd1[finest], 2),
        "swd/stage2": round(swd2["swd"], 2), "swd/stage1_bicubic": round(swd1["swd"], 2),
        "caption_class_accuracy": round(accuracy, 4), "caption_class_accuracy/stage1_bicubic": round(accuracy1, 4),
        "fid": round(float(fid["fid"]), 4), "precision": round(float(fid["precision"]), 4), "recall": round(float(fid["recall"]), 4),
        "attributes": attribute_gaps(G, encoder, spec, list(feature_net.class_names), val_x.shape[1], args.per_caption, seed),
    }  # fmt: skip
    row["grid"] = to_uint8(torch.cat([up[:8], high[:8]])).numpy().tolist() if seed == args.seeds[0] else None
    print(f"seed {seed}: finest SWD stage II {row['swd_finest/stage2']:.1f} vs stage I bicubic {row['swd_finest/stage1_bicubic']:.1f}; "
          f"caption class {accuracy:.3f}; FID {row['fid']:.2f}; attributes {row['attributes']}; {seconds:.0f}s", flush=True)  # fmt: skip
    return row


def featurize(data: Path, features: Path, seed: int) -> dict[str, Any]:
    """The feature classifier and the caption encoder, as the featurize stage trains them (params.yaml's defaults)."""
    cfg = parse_params({}).featurize
    train_x, train_y = (np.array(a) for a in load_split(data, "train"))
    val_x, val_y = (np.array(a) for a in load_split(data, "val"))
    manifest = json.loads((data / "manifest.json").read_text())
    net, clf = train_feature_net(train_x, train_y, val_x, val_y, len(manifest["class_names"]), cfg)
    spec = {"class_names": manifest["class_names"]}
    domain = FeatureNet(net, {**spec, "kind": "classifier"})
    encoder, text = fit_text_encoder(domain.features(train_x), [str(c) for c in load_captions(data, "train")], cfg.text, seed=seed,
                                     val=([str(c) for c in load_captions(data, "val")], val_y))  # fmt: skip
    save_feature_net(net, features, spec, also=lambda folder: save_text_encoder(encoder, text, folder))
    real_accuracy = float((load_feature_net(features).logits(val_x).argmax(1).numpy() == val_y).mean())
    return {"classifier_val_accuracy": round(real_accuracy, 4), "text": text["metrics"],
            "real_gaps": real_gaps(val_x, [str(c) for c in load_captions(data, "val")], val_x.shape[1])}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("photo_patches", "digits"), default="photo_patches")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--stage1-steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--samples", type=int, default=600, help="samples per evaluation")
    parser.add_argument("--per-caption", type=int, default=64, help="samples per caption for the attribute gaps")
    parser.add_argument("--ema-decay", type=float, default=0.0, help="G_ema's decay (0: the trained weights, as the paper, which keeps no EMA)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    out = Path(args.out or RESULTS / f"stackgan_{args.source}.json")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data, features = Path(tmp) / "prepared", Path(tmp) / "features"
        prepare_dataset(params_for(args, 0).prepare, data)
        floor = featurize(data, features, seed=0)
        val_x, _ = (np.array(a) for a in load_split(data, "val"))
        train_x, _ = (np.array(a) for a in load_split(data, "train"))
        pick = np.random.default_rng(0).permutation(len(train_x))[: args.samples]
        swd = pyramid_swd(torch.as_tensor(val_x), torch.as_tensor(train_x[pick]), seed=0)
        floor.update({"swd_finest": round(swd[f"swd/{args.image_size}"], 2), "swd": round(swd["swd"], 2)})
        print(f"floor: {floor}", flush=True)
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
            rows = list(pool.map(run_seed, [args] * len(args.seeds), args.seeds, [str(data)] * len(args.seeds), [str(features)] * len(args.seeds)))
    grid = np.asarray(rows[0].pop("grid"), dtype=np.uint8)
    for r in rows[1:]:
        r.pop("grid")
    keys = ("swd_finest/stage2", "swd_finest/stage1_bicubic", "swd/stage2", "swd/stage1_bicubic", "caption_class_accuracy",
            "caption_class_accuracy/stage1_bicubic", "fid", "precision", "recall", "seconds")  # fmt: skip
    medians = {k: statistics.median(r[k] for r in rows) for k in keys}
    for attr in rows[0]["attributes"]:
        medians[f"{attr}/gap"] = statistics.median(r["attributes"][attr]["gap"] for r in rows)
        medians[f"{attr}/right_sign"] = statistics.median(r["attributes"][attr]["right_sign"] for r in rows)
    result = {
        "benchmark": f"stackgan_{args.source}",
        "settings": vars(args),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": torch.get_num_threads(), "torch": torch.__version__},
        "floor": floor,
        "seeds": rows,
        "median": medians,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    tiles = grid.transpose(0, 2, 3, 1)  # [16, H, W, C]: Stage I bicubic (top row), Stage II (bottom)
    rows_img = [np.concatenate(list(tiles[i * 8 : (i + 1) * 8]), axis=1) for i in range(2)]
    picture = np.concatenate(rows_img, axis=0)
    Image.fromarray(picture.squeeze(-1) if picture.shape[-1] == 1 else picture).save(out.with_suffix(".png"))
    print(json.dumps(medians, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
