"""Super-resolution on the bundled photos: PSNR model vs bicubic, GAN vs PSNR model, `gan upscale` speed and memory.

    nice -n 10 .venv/bin/python bench/upscale_photos.py                       # full: x2 and x4, 3 seeds
    nice -n 10 .venv/bin/python bench/upscale_photos.py --scales 2 --seeds 0 --psnr-steps 200 --gan-steps 50   # reduced

For each scale and seed: prepare the photos as pairs (prepare.pairs, 32x32 HR patches;
the held-out photos centre-cropped to 192x192), train a feature network on the HR
patches (the perceptual loss's, as featurize does), train the upscale task through the
project's trainer (L1 pre-training, then RaGAN + perceptual + L1) and score the
held-out photos with the task's evaluation: Y-PSNR / SSIM / detail SWD of bicubic, the
PSNR-phase model (G_psnr) and the GAN-phase model (G). Medians over seeds.

Then `gan upscale` (gan.upscale.upscale on a folder: decode, tiles, encode) against a
bare loop over the same tiles (G on each padded tile, no I/O), in output megapixels/s,
and the peak resident memory of `gan upscale` on a 1000x1000 and a 4000x3000 input
(each in its own process; ru_maxrss). Writes bench/results/upscale_photos.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def params_for(scale: int, seed: int, psnr_steps: int, gan_steps: int, features: Path) -> Any:
    from gan.config import parse_params

    return parse_params({
        "prepare": {"source": "photos", "channels": 3, "seed": 0,
                    "pairs": {"scale": scale, "patch_size": 32, "patches_per_image": 64, "val_size": 192}},
        "model": {"task": "upscale", "upscale": {"generator": "rrdb", "blocks": 2, "width": 24, "growth": 12, "d_width": 16,
                                                 "pretrain_steps": psnr_steps, "lr_milestones": [max(1, psnr_steps * 3 // 4)],
                                                 "features": str(features)}},
        "train": {"batch_size": 16, "steps": psnr_steps + gan_steps, "lr_G": 2e-4, "lr_D": 1e-4, "beta1": 0.9, "beta2": 0.99,
                  "ema_decay": 0.99, "log_every": 50, "checkpoint_every": 100_000, "sample_every": 100_000, "seed": seed},
    })  # fmt: skip


def train_one(scale: int, seed: int, psnr_steps: int, gan_steps: int, work: Path) -> dict[str, Any]:
    from gan.config import FeaturizeConfig
    from gan.data import load_split, prepare_dataset, read_manifest
    from gan.features import save_feature_net, train_feature_net
    from gan.tasks import make_task
    from gan.tasks.base import EvalSettings
    from gan.training import GANTrainer, fit
    from gan.training.outputs import export_generator, generator_spec

    data, features = work / f"x{scale}" / "prepared", work / f"x{scale}" / "features"
    if not (data / "manifest.json").exists():
        prepare_dataset(params_for(scale, seed, psnr_steps, gan_steps, features).prepare, data)
        x, _ = load_split(data, "train")
        vx, _ = load_split(data, "val")
        net, _ = train_feature_net(x, None, vx, None, 0, FeaturizeConfig(epochs=4, batch_size=64, width=16, feature_dim=64))
        save_feature_net(net, features, {"class_names": []})
    params = params_for(scale, seed, psnr_steps, gan_steps, features)
    task = make_task(params, read_manifest(data))
    saved: list[Any] = []
    t0 = time.perf_counter()
    fit(params, data, task=task, log=None, report=lambda m, c: saved.append(c) if c else None)
    train_s = time.perf_counter() - t0
    trainer = GANTrainer(params, data, task=task)
    trainer.load_state_dict(saved[-1].state)
    scores = task.evaluate(trainer.exported_networks(), None, data, EvalSettings(num_samples=1, seed=0))
    model_dir = work / f"x{scale}" / f"model-{seed}"
    export_generator(task, saved[-1], generator_spec(task, saved[-1], {}, {}), model_dir)
    return {"scale": scale, "seed": seed, "train_s": round(train_s, 1), **{k: round(v, 4) for k, v in scores.items()}, "model": str(model_dir)}


def median_rows(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k in rows[0] if isinstance(rows[0][k], float) and k != "seed"]
    return {k: round(statistics.median(r[k] for r in rows), 4) for k in keys}


# ---- throughput and memory -------------------------------------------------------------


def photo_of(width: int, height: int) -> np.ndarray:
    """A real photo tiled to ``width`` x ``height`` (uint8 [H, W, 3])."""
    from gan.data.photos import load_photo

    base = load_photo("coffee")
    reps = (-(-height // base.shape[0]), -(-width // base.shape[1]), 1)
    return np.ascontiguousarray(np.tile(base, reps)[:height, :width])


def throughput(model_dir: str, size: tuple[int, int], repeats: int) -> dict[str, float]:
    from PIL import Image

    from gan.inference.upscale import DEFAULT_OVERLAP, DEFAULT_TILE, UpscaleRunner, tiles
    from gan.upscale import upscale

    runner = UpscaleRunner(model_dir)
    img = photo_of(*size)
    h, w = img.shape[:2]
    out_mp = h * w * runner.scale**2 / 1e6
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # [1, 3, H, W]

    @torch.inference_mode()
    def bare() -> None:
        for top, left, bottom, right in tiles(h, w, DEFAULT_TILE):
            t, l_ = max(top - DEFAULT_OVERLAP, 0), max(left - DEFAULT_OVERLAP, 0)
            runner.G(x[..., t : min(bottom + DEFAULT_OVERLAP, h), l_ : min(right + DEFAULT_OVERLAP, w)])

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "in").mkdir()
        Image.fromarray(img).save(Path(tmp) / "in" / "photo.png")
        best_cli, best_bare = float("inf"), float("inf")
        for _ in range(repeats):  # alternate, best of each: the machine is shared
            t0 = time.perf_counter()
            bare()
            best_bare = min(best_bare, time.perf_counter() - t0)
            t0 = time.perf_counter()
            upscale(runner, Path(tmp) / "in", Path(tmp) / "out")
            best_cli = min(best_cli, time.perf_counter() - t0)
    return {"input": f"{w}x{h}", "output_mp": round(out_mp, 3), "gan_upscale_mp_s": round(out_mp / best_cli, 4),
            "bare_tile_loop_mp_s": round(out_mp / best_bare, 4), "ratio": round(best_bare / best_cli, 3)}  # fmt: skip


def peak_memory(model_dir: str, width: int, height: int) -> dict[str, float]:
    """Peak RSS (MiB) of a fresh process running gan.upscale.upscale on one ``width`` x ``height`` PNG.

    ``peak_mib``: the whole process (ru_maxrss), which start-up (imports) may set; ``upscale_peak_mib``:
    the peak while upscaling only (VmHWM reset through /proc/self/clear_refs after the input is written),
    and ``baseline_mib``: the RSS just before it.
    """
    code = f"""
import resource, sys, tempfile, torch
from pathlib import Path

def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

sys.path.insert(0, {str(ROOT)!r})
torch.set_num_threads(1)
from PIL import Image
sys.argv = ['x']
from bench.upscale_photos import photo_of
from gan.upscale import upscale
with tempfile.TemporaryDirectory() as tmp:
    (Path(tmp) / 'in').mkdir()
    Image.fromarray(photo_of({width}, {height})).save(Path(tmp) / 'in' / 'p.png')
    import gc; gc.collect()
    open('/proc/self/clear_refs', 'w').write('5')  # reset VmHWM to the current RSS
    base = status('VmRSS')
    upscale({model_dir!r}, Path(tmp) / 'in', Path(tmp) / 'out')
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, base, status('VmHWM'))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    peak, base, hwm = (round(float(v), 1) for v in out.stdout.strip().splitlines()[-1].split())
    return {"peak_mib": peak, "baseline_mib": base, "upscale_peak_mib": hwm, "upscale_growth_mib": round(hwm - base, 1)}


def tiny_export(out: Path) -> str:
    """An untrained x2 RRDB (width 8, one block) exported as the upscale task does: peak memory
    depends on the tiling and the output buffer, not on the weights, and it runs fast enough."""
    from gan.export import save_networks
    from gan.models import build_network

    kwargs = {"channels": 3, "scale": 2, "width": 8, "blocks": 1, "growth": 4}
    torch.manual_seed(0)
    G = build_network("rrdb.G", **kwargs).eval()
    spec = {"task": "upscale", "inference": "upscale", "networks": {"G": {"network": "rrdb.G", "kwargs": kwargs}},
            "channels": 3, "image_size": 32, "scale": 2}  # fmt: skip
    save_networks({"G": G}, spec, out)
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--psnr-steps", type=int, default=600)
    parser.add_argument("--gan-steps", type=int, default=200)
    parser.add_argument("--speed-size", type=int, nargs=2, default=[1000, 1000])
    parser.add_argument("--memory", action="store_true", help="also measure peak memory at 1000x1000 and 4000x3000 (slow)")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory measurement, merged into --out")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "upscale_photos.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_only:
        with tempfile.TemporaryDirectory() as tmp:
            tiny = tiny_export(Path(tmp) / "tiny")
            memory = {"model": "untrained rrdb.G x2, width 8, 1 block", "output_buffer_mib_4000x3000": round(8000 * 6000 * 3 / 2**20, 1),
                      "1000x1000": peak_memory(tiny, 1000, 1000), "4000x3000": peak_memory(tiny, 4000, 3000)}  # fmt: skip
        print(json.dumps(memory, indent=2))
        out = Path(args.out)
        saved = json.loads(out.read_text()) if out.exists() else {}
        out.write_text(json.dumps({**saved, "peak_rss_mib": memory}, indent=2) + "\n")
        return
    start = time.perf_counter()
    result: dict[str, Any] = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                          "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                                          "torch": torch.__version__, "load_1min": os.getloadavg()[0]},
                              "settings": vars(args), "runs": [], "median": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            rows = []
            for seed in args.seeds:
                row = train_one(scale, seed, args.psnr_steps, args.gan_steps, Path(tmp))
                print(json.dumps({k: v for k, v in row.items() if k != "model"}), flush=True)
                rows.append(row)
            result["runs"] += [{k: v for k, v in r.items() if k != "model"} for r in rows]
            result["median"][f"x{scale}"] = median_rows(rows)
            if scale == args.scales[0]:
                result["throughput"] = throughput(rows[0]["model"], tuple(args.speed_size), repeats=2)
                print(json.dumps(result["throughput"]), flush=True)
                if args.memory:
                    tiny = tiny_export(Path(tmp) / "tiny")
                    result["peak_rss_mib"] = {"model": "untrained rrdb.G x2, width 8, 1 block",
                                              "1000x1000": peak_memory(tiny, 1000, 1000), "4000x3000": peak_memory(tiny, 4000, 3000),
                                              "output_buffer_mib_4000x3000": round(8000 * 6000 * 3 / 2**20, 1)}  # fmt: skip
                    print(json.dumps(result["peak_rss_mib"]), flush=True)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["max_rss_mib_driver"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"], indent=2))
    print(f"wall {result['wall_s']} s -> {args.out}")


if __name__ == "__main__":
    main()
