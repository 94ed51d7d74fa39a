"""Benchmark: training throughput of the Ray Train loop against a plain PyTorch loop.

    python bench/train_throughput.py               # default model (dcgan 16x16, batch 64), 300 steps
    python bench/train_throughput.py --steps 150   # quicker
    python bench/train_throughput.py --steps 100 --rounds 1 --scaling-rounds 1   # a smoke run

In one run, on the same model, batch and thread count (1 intra-op thread per worker):

- steady-state img/s of a plain PyTorch loop (same recipe, no framework, a fresh process)
  and of the Ray Train loop with 1 worker, alternated for ``--rounds`` rounds; the ratio
  is the median of the per-round ratios (target: >= 0.95);
- steady-state img/s of plain PyTorch DDP with two processes (the project's loop, ``fit``,
  in two processes joined by torch.distributed over gloo, one thread each, no Ray: the
  limit of two workers on this machine) and of two Ray Train workers, alternated for
  ``--scaling-rounds`` rounds (target: Ray >= 0.9x plain DDP);
- the fixed start-up cost of a run: from ``TorchTrainer.fit()`` to the first step done;
- achieved FLOP/s (FLOPs of one step from ``torch.utils.flop_counter``) as a fraction of
  a 1-thread fp32 matmul peak measured in the same run.

Steady state excludes the first ``--warmup`` steps (the first report window in Ray);
img/s per CPU-second of the training process is reported too: on a machine shared with
other work it measures the loop's own cost, which wall-clock img/s cannot separate from
the neighbours' load.
img/s is the median over report windows of ``--warmup`` steps, which resists the bursts
of load that other processes put on a shared machine.
img/s counts real images shown to D (batch x n_critic x workers per G step).
Ray's workers run at nice 15 by default; here they run at the benchmark's own niceness
(``RAY_worker_niceness``), like the plain loop. Writes bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).parent / "results" / "train_throughput.json"


PARAMS = ROOT / "params.yaml"


def bench_params(steps: int, warmup: int, num_workers: int, storage: str, path: Path = PARAMS) -> Any:
    """``path``'s (params.yaml's) prepare, model and train sections, with reporting every ``warmup`` steps."""
    from gan.config import load_params

    return load_params(path, {
        "train.steps": steps, "train.log_every": warmup, "train.checkpoint_every": steps,
        "train.sample_every": steps, "train.eval_every": 0, "train.num_workers": num_workers,
        "train.cpus_per_worker": 1, "train.storage_path": storage, "train.max_failures": 0,
    })


def plain_loop(params: Any, data_dir: Path, steps: int, warmup: int) -> dict[str, float]:
    """The same recipe as a bare loop: batch -> D step -> G step (D frozen) -> EMA."""
    import copy

    from gan.data import ShardedBatches, read_manifest
    from gan.ema import update_ema
    from gan.losses import loss_pair
    from gan.models import build_D, build_G, model_kwargs

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg, m = params.train, read_manifest(data_dir)
    G_kwargs, D_kwargs = model_kwargs(params.model, m["channels"], m["image_size"], m["num_classes"])
    torch.manual_seed(cfg.seed)
    G, D = build_G(params.model.arch, **G_kwargs), build_D(params.model.arch, **D_kwargs)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_G = torch.optim.Adam(G.parameters(), cfg.lr_G, betas=(cfg.beta1, cfg.beta2))
    opt_D = torch.optim.Adam(D.parameters(), cfg.lr_D, betas=(cfg.beta1, cfg.beta2))
    d_loss_fn, g_loss_fn = loss_pair(params.model.loss)
    batches = iter(ShardedBatches(data_dir, "train", cfg.batch_size, 0, 1, cfg.seed))
    z_dim = G_kwargs["z_dim"]

    def one_step() -> None:
        x, y = next(batches)
        with torch.no_grad():
            fake = G(torch.randn(len(x), z_dim), y)
        loss_D = d_loss_fn(D(x, y), D(fake, y))
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        D.requires_grad_(False)
        loss_G = g_loss_fn(D(G(torch.randn(len(x), z_dim), y), y))
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
        D.requires_grad_(True)
        update_ema(G_ema, G, cfg.ema_decay)

    one_step()
    first_step = time.perf_counter() - t0
    for _ in range(warmup - 1):
        one_step()
    windows = []  # img/s of each window of `warmup` steps after the warm-up, as Ray reports them
    cpu = time.process_time()
    for _ in range((steps - warmup) // warmup):
        t = time.perf_counter()
        for _ in range(warmup):
            one_step()
        windows.append(cfg.batch_size * warmup / (time.perf_counter() - t))
    cpu_img_s = cfg.batch_size * len(windows) * warmup / (time.process_time() - cpu)
    return {"windows": windows, "cpu_img_s": cpu_img_s, "first_step_s": first_step}


def hand_written_recipe(params: Any) -> bool:
    """Whether :func:`plain_loop` runs the same recipe as the trainer: the generate task with a
    plain loss pair and no regulariser or schedule it leaves out (gradient or R1 penalty,
    DiffAugment, InfoGAN codes, StyleGAN2's, ProGAN's or StackGAN's phases). Otherwise the plain baseline
    is the project's loop (``fit``) in a plain process."""
    m, t = params.model, params.train
    return (m.task == "generate" and m.arch not in ("stylegan2", "progan", "stackgan") and m.loss != "wgan-gp" and t.r1_gamma == 0
            and not t.diffaugment and not (m.infogan.categorical or m.infogan.continuous))  # fmt: skip


def plain_in_subprocess(data_dir: Path, steps: int, warmup: int, path: Path = PARAMS) -> dict[str, Any]:
    """:func:`plain_loop` in a fresh process with the thread settings of a Ray worker
    (``OMP_NUM_THREADS=1``), so that both loops start from the same conditions."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--plain-child", str(data_dir), "--steps", str(steps), "--warmup", str(warmup), "--params", str(path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ddp_child(params: Any, data_dir: Path) -> dict[str, Any]:
    """One rank of the plain two-process DDP run: the project's training loop (``fit``) in a
    process that torch.distributed (gloo, ``env://``) joins to its peer, no Ray. Rank 0's windows."""
    import torch.distributed as dist

    from gan.training.loop import ddp_wrap, fit
    from gan.training.ray_run import task_for

    torch.set_num_threads(1)
    t0 = time.time()
    world = int(os.environ["WORLD_SIZE"])
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    windows: list[float] = []
    summary = fit(params, data_dir, task=task_for(params, data_dir, features_of(data_dir)), rank=rank, world_size=world, log=None,
                  wrap=ddp_wrap(torch.device("cpu")) if world > 1 else None,
                  report=lambda metrics, _ckpt: windows.append(metrics["throughput/img_s"]))  # fmt: skip
    if world > 1:
        dist.destroy_process_group()
    return {"windows": windows[1:], "first_step_s": summary["first_step_unix"] - t0,  # the first window is warm-up
            "cpu_img_s": summary["throughput/img_per_cpu_s"]}


def plain_ddp(data_dir: Path, steps: int, warmup: int, world: int = 2, path: Path = PARAMS) -> dict[str, Any]:
    """:func:`ddp_child` in ``world`` fresh processes (one intra-op thread each, as Ray's workers);
    rank 0's windows (img/s over all ranks) and its time from process start to the first step.
    With ``world`` 1: the project's loop in one plain process (no torch.distributed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "WORLD_SIZE": str(world)}  # fmt: skip
    cmd = [sys.executable, __file__, "--ddp-child", str(data_dir), "--steps", str(steps), "--warmup", str(warmup), "--params", str(path)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, text=True) for r in range(world)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"plain DDP run failed: exit codes {[p.returncode for p in procs]}")
    result = json.loads(outs[0].strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - t0
    return result


def flops_per_step(params: Any, data_dir: Path) -> float:
    """FLOPs (forward + backward, matmul/conv) of one G step of the plain loop."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        plain_loop(params, data_dir, steps=2, warmup=1)
    return counter.get_total_flops() / 2  # two steps were counted


def matmul_peak(threads: int = 1, n: int = 1024, repeats: int = 10) -> float:
    """fp32 matmul FLOP/s on ``threads`` intra-op threads (best of three)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * repeats / best


def ray_run(params: Any, data_dir: Path, name: str) -> dict[str, float]:
    from gan.training.ray_run import run_training

    out = run_training(params, data_dir, name=name, fresh=True, features_dir=features_of(data_dir))
    windows = [row["throughput/img_s"] for row in out.checkpoint.history[1:]]  # the first window is warm-up
    return {"windows": windows, "cpu_img_s": out.summary["throughput/img_per_cpu_s"] * 1.0,
            "first_step_s": float(out.startup_s or float("nan")), "wall_s": out.wall_s}


def features_of(data_dir: Path) -> Path | None:
    """The featurize output beside the prepared data, where the recipe reads one (StackGAN's caption encoder)."""
    folder = Path(data_dir).parent / "features"
    return folder if folder.exists() else None


def featurize_for(data_dir: Path) -> None:
    """For data with captions: the feature network and caption encoder the featurize stage would
    write (one epoch of the classifier: only the encoder's weights matter to training speed)."""
    from gan.config import parse_params
    from gan.data import load_captions, load_split, read_manifest
    from gan.data.captions import has_captions
    from gan.features import FeatureNet, save_feature_net, train_feature_net
    from gan.text_encoder import fit_text_encoder, save_text_encoder

    manifest = read_manifest(data_dir)
    if not has_captions(manifest):
        return
    cfg = parse_params({"featurize": {"epochs": 1}}).featurize
    (x, y), (vx, vy) = load_split(data_dir, "train"), load_split(data_dir, "val")
    net, _ = train_feature_net(x, y, vx, vy, int(manifest["num_classes"]), cfg)
    spec = {"class_names": manifest["class_names"]}
    features = FeatureNet(net, {**spec, "kind": "classifier"}).features(x)
    encoder, text = fit_text_encoder(features, [str(c) for c in load_captions(data_dir, "train")], cfg.text, seed=0)
    save_feature_net(net, Path(data_dir).parent / "features", spec, also=lambda folder: save_text_encoder(encoder, text, folder))


def _r(values: list[float]) -> list[float]:
    return [round(v, 1) for v in values]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain / Ray 1-worker measurements")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--scaling-rounds", type=int, default=3, help="alternating plain DDP / Ray 2-worker measurements")
    parser.add_argument("--params", type=Path, default=PARAMS,
                        help="the recipe, e.g. docs/examples/translate-cyclegan.yaml; for a task other than generate, or a "
                             "generate recipe the hand-written loop leaves parts of (WGAN-GP, R1, stylegan2, progan, ...), the "
                             "plain baseline is the project's loop (fit) in a plain process, and FLOPs are not counted")  # fmt: skip
    parser.add_argument("--plain-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ddp-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_child is not None:  # one plain-loop measurement, printed as JSON
        print(json.dumps(plain_loop(bench_params(args.steps, args.warmup, 1, "unused", args.params), args.plain_child, args.steps, args.warmup)))
        return 0
    if args.ddp_child is not None:  # one rank of a plain DDP run; rank 0 prints JSON
        with tempfile.TemporaryDirectory() as tmp:
            out = ddp_child(bench_params(args.steps, args.warmup, int(os.environ["WORLD_SIZE"]), tmp, args.params), args.ddp_child)
        if os.environ["RANK"] == "0":
            print(json.dumps(out))
        return 0
    # Ray starts its workers at nice 15; the plain loop runs at this process's niceness.
    # On a busy machine that alone would decide the ratio, so both run at the same priority.
    os.environ.setdefault("RAY_worker_niceness", str(os.nice(0)))
    load_start = os.getloadavg()

    from gan.data import prepare_dataset
    from gan.stages.train import init_ray

    with tempfile.TemporaryDirectory() as tmp:
        base = bench_params(args.steps, args.warmup, 1, f"{tmp}/ray", args.params)
        hand_written = hand_written_recipe(base)  # else the plain baseline is fit in a plain process
        data = Path(tmp) / "prepared"
        prepare_dataset(base.prepare, data)
        featurize_for(data)
        peak = matmul_peak()
        step_flops = flops_per_step(base, data) if hand_written else float("nan")
        t = time.perf_counter()
        init_ray()
        ray_init_s = time.perf_counter() - t
        rounds = []  # each round: plain then Ray, back to back, so both see similar neighbours
        for i in range(args.rounds):
            plain = plain_in_subprocess(data, args.steps, args.warmup, args.params) if hand_written else plain_ddp(data, args.steps, args.warmup, 1, args.params)
            ray1 = ray_run(base, data, f"bench-train-1-{i}")
            rounds.append({"plain": plain, "ray": ray1})
        scaling = []  # each round: the plain two-process DDP run, then two Ray Train workers
        for i in range(args.scaling_rounds):
            ddp2 = plain_ddp(data, args.steps, args.warmup, 2, args.params)
            ray2 = ray_run(bench_params(args.steps, args.warmup, 2, f"{tmp}/ray", args.params), data, f"bench-train-2-{i}")
            scaling.append({"ddp": ddp2, "ray": ray2})

    # medians over report windows: robust to bursts of load from other processes on the machine
    for r in rounds:
        r["plain_img_s"], r["ray_img_s"] = statistics.median(r["plain"]["windows"]), statistics.median(r["ray"]["windows"])
        r["ratio"], r["ratio_cpu"] = r["ray_img_s"] / r["plain_img_s"], r["ray"]["cpu_img_s"] / r["plain"]["cpu_img_s"]
    plain_img_s = statistics.median(r["plain_img_s"] for r in rounds)
    ray1_img_s = statistics.median(r["ray_img_s"] for r in rounds)
    for r in scaling:
        r["ddp_img_s"], r["ray_img_s"] = statistics.median(r["ddp"]["windows"]), statistics.median(r["ray"]["windows"])
        r["ratio"] = r["ray_img_s"] / r["ddp_img_s"]
    ddp2_img_s = statistics.median(r["ddp_img_s"] for r in scaling)
    ray2_img_s = statistics.median(r["ray_img_s"] for r in scaling)
    ray2_vs_ddp = statistics.median(r["ratio"] for r in scaling)
    ray2_startup = statistics.median(r["ray"]["first_step_s"] for r in scaling)
    ratio = statistics.median(r["ratio"] for r in rounds)
    ratio_cpu = statistics.median(r["ratio_cpu"] for r in rounds)
    startup = statistics.median(r["ray"]["first_step_s"] for r in rounds)
    batch = base.train.batch_size
    achieved = step_flops * ray1_img_s / batch  # FLOP/s of the 1-worker Ray loop
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "ray": __import__("ray").__version__, "niceness": os.nice(0), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "config": {"params": str(args.params), "task": base.model.task, "plain_baseline": "hand-written loop" if hand_written else "fit in a plain process",
                   "arch": base.model.arch if base.model.task == "generate" else getattr(base.model, base.model.task).arch, "image_size": base.prepare.image_size, "batch_size": batch, "loss": base.model.loss,
                   "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "threads_per_worker": 1},
        "rounds": [{"plain_img_s": round(r["plain_img_s"], 1), "ray_1_worker_img_s": round(r["ray_img_s"], 1),
                    "ratio": round(r["ratio"], 3), "plain_img_per_cpu_s": round(r["plain"]["cpu_img_s"], 1),
                    "ray_img_per_cpu_s": round(r["ray"]["cpu_img_s"], 1), "ratio_per_cpu_s": round(r["ratio_cpu"], 3),
                    "windows_plain": _r(r["plain"]["windows"]), "windows_ray": _r(r["ray"]["windows"]),
                    "ray_time_to_first_step_s": round(r["ray"]["first_step_s"], 2)} for r in rounds],
        "plain_img_s": round(plain_img_s, 1),
        "ray_1_worker_img_s": round(ray1_img_s, 1),
        "scaling_rounds": [{"plain_ddp_2_img_s": round(r["ddp_img_s"], 1), "ray_2_workers_img_s": round(r["ray_img_s"], 1),
                            "ratio": round(r["ratio"], 3), "windows_ddp": _r(r["ddp"]["windows"]), "windows_ray": _r(r["ray"]["windows"]),
                            "ddp_time_to_first_step_s": round(r["ddp"]["first_step_s"], 2),
                            "ray_time_to_first_step_s": round(r["ray"]["first_step_s"], 2)} for r in scaling],
        "plain_ddp_2_img_s": round(ddp2_img_s, 1),
        "ray_2_workers_img_s": round(ray2_img_s, 1),
        "ray_1_vs_plain": round(ratio, 3),
        "ray_1_vs_plain_per_cpu_s": round(ratio_cpu, 3),
        "plain_ddp_2_vs_plain_1": round(ddp2_img_s / plain_img_s, 3),
        "ray_2_vs_plain_ddp_2": round(ray2_vs_ddp, 3),
        "ray_2_vs_1_worker": round(ray2_img_s / ray1_img_s, 3),
        "ray_init_s": round(ray_init_s, 2),
        "time_to_first_step_s": {"ray_1_worker": round(startup, 2), "ray_2_workers": round(ray2_startup, 2),
                                 "plain_process": round(rounds[0]["plain"]["first_step_s"], 2),
                                 "plain_ddp_2": round(statistics.median(r["ddp"]["first_step_s"] for r in scaling), 2)},
        "gflop_per_step": round(step_flops / 1e9, 4),
        "achieved_gflop_s": round(achieved / 1e9, 3),
        "matmul_peak_gflop_s_1_thread": round(peak / 1e9, 2),
        "fraction_of_peak": round(achieved / peak, 4),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    per_round = ", ".join(f"{r['ratio']:.2f}" for r in rounds)
    scaling_rounds = ", ".join(f"{r['ratio']:.2f}" for r in scaling)
    per_round_cpu = ", ".join(f"{r['ratio_cpu']:.2f}" for r in rounds)
    rows = [
        ("plain PyTorch loop, 1 thread" if hand_written else "the loop (fit) in a plain process", f"{plain_img_s:.0f} img/s", f"median of {args.rounds} rounds"),
        ("Ray Train, 1 worker", f"{ray1_img_s:.0f} img/s", f"{ratio:.2f} x plain (rounds: {per_round}; target >= 0.95)"),
        ("  same, per CPU-second", f"{ratio_cpu:.2f} x plain", f"rounds: {per_round_cpu}"),
        ("plain DDP, 2 processes (gloo)", f"{ddp2_img_s:.0f} img/s", f"{result['plain_ddp_2_vs_plain_1']:.2f} x plain 1 process"),
        ("Ray Train, 2 workers", f"{ray2_img_s:.0f} img/s",
         f"{ray2_vs_ddp:.2f} x plain DDP (rounds: {scaling_rounds}; target >= 0.9); "
         f"{result['ray_2_vs_1_worker']:.2f} x 1 worker"),
        ("time to first step, 1 worker", f"{startup:.1f} s", f"after ray.init ({ray_init_s:.1f} s); a plain process: {rounds[0]['plain']['first_step_s']:.1f} s"),
        ("time to first step, 2 workers", f"{ray2_startup:.1f} s", f"plain DDP pair: {result['time_to_first_step_s']['plain_ddp_2']:.1f} s"),
        ("achieved FLOP/s (1 worker)", f"{achieved / 1e9:.2f} GFLOP/s", f"{step_flops / 1e9:.3f} GFLOP per step"),
        ("fp32 matmul peak, 1 thread", f"{peak / 1e9:.1f} GFLOP/s", f"fraction of peak {result['fraction_of_peak']:.1%}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"training throughput: {result['config']['task']} {result['config']['arch']} {base.prepare.image_size}x{base.prepare.image_size}, batch {batch}, "
          f"{args.steps} steps; load average {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
