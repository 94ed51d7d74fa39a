"""Benchmark: the GPU path of one training step, img/s and MFU, with and without bf16, channels_last and torch.compile.

    python bench/gpu_throughput.py                    # on a CUDA machine: dcgan + resnet at 64x64
    python bench/gpu_throughput.py --quick            # CPU fallback: 16x16, a few steps (checks the script)

For each architecture (``--archs``) and each of these settings, the default recipe's step
(D hinge step, then G step with D frozen: the step ``bench/train_throughput.py`` times)
on random data of the chosen size, conditional, batch ``--batch``:

    fp32                  no autocast, contiguous tensors
    bf16                  autocast(bfloat16) + channels_last (the trainer's GPU defaults)
    bf16+compile          the same with G and D wrapped by ``torch.compile``

img/s is real images shown to D per second over ``--steps`` timed steps after ``--warmup``
(``torch.cuda.synchronize`` around the timing). MFU is the step's FLOPs
(``torch.utils.flop_counter`` on one eager fp32 step) times steps per second, over a
matmul peak measured in the same run (bf16 on a GPU, fp32 on a CPU: an 8192^2 / 2048^2
matmul). The CPU fallback runs the same code at a toy size so that the script is known
to work before a GPU machine is at hand; its numbers say nothing about a GPU.
Writes bench/results/gpu_throughput.json (or ``--out``); ``bench/gpu.sh`` runs it and a
one-worker Ray Train run with nccl.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results" / "gpu_throughput.json"
SETTINGS = ("fp32", "bf16", "bf16+compile")


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """FLOP/s of an ``n x n`` matmul in ``dtype`` on ``device`` (the best of ``repeats``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(arch: str, size: int, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    """G and D of the default recipe (params.yaml's model section) for ``arch`` at ``size`` x ``size`` RGB, 10 classes."""
    from gan.config import ModelConfig
    from gan.models import build_D, build_G, model_kwargs

    cfg = ModelConfig(arch=arch, conditional=True, spectral_norm_D=True, loss="hinge")
    G_kwargs, D_kwargs = model_kwargs(cfg, 3, size, 10)
    torch.manual_seed(0)
    return build_G(arch, **G_kwargs).to(device), build_D(arch, **D_kwargs).to(device), int(G_kwargs["z_dim"])


def make_step(arch: str, size: int, batch: int, device: torch.device, setting: str) -> tuple[Any, Any]:
    """``(step, flop_step)``: one training step under ``setting``, and the same step in eager fp32 for counting FLOPs."""
    from gan.losses import loss_pair

    G, D, z_dim = build(arch, size, device)
    bf16 = setting.startswith("bf16")
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    G, D = G.to(memory_format=fmt), D.to(memory_format=fmt)
    opt_G = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.0, 0.9))
    opt_D = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.0, 0.9))
    d_loss, g_loss = loss_pair("hinge")
    g_run, d_run = (torch.compile(G), torch.compile(D)) if setting.endswith("compile") else (G, D)
    x = torch.rand(batch, 3, size, size, device=device).mul(2).sub(1).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)

    def step(autocast: bool = bf16, g: Any = g_run, d: Any = d_run) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            with torch.no_grad():
                fake = g(torch.randn(batch, z_dim, device=device), y)
            loss = d_loss(d(x, y), d(fake, y))
        opt_D.zero_grad(set_to_none=True)
        loss.backward()
        opt_D.step()
        D.requires_grad_(False)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = g_loss(d(g(torch.randn(batch, z_dim, device=device), y), y))
        opt_G.zero_grad(set_to_none=True)
        loss.backward()
        opt_G.step()
        D.requires_grad_(True)

    return step, lambda: step(False, G, D)


def measure(arch: str, size: int, batch: int, device: torch.device, setting: str, steps: int, warmup: int, peak: float) -> dict[str, Any]:
    """img/s, step FLOPs and MFU of one (arch, setting)."""
    from torch.utils.flop_counter import FlopCounterMode

    step, eager_fp32 = make_step(arch, size, batch, device, setting)
    counter = FlopCounterMode(display=False)
    with counter:
        eager_fp32()
    flops = counter.get_total_flops()
    t0 = time.perf_counter()
    step()  # the first step compiles when torch.compile is on
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - t
    return {"arch": arch, "setting": setting, "img_s": round(batch * steps / seconds, 1), "step_gflop": round(flops / 1e9, 3),
            "mfu": round(flops * steps / seconds / peak, 6), "first_step_s": round(first, 2)}  # fmt: skip


def measure_or_error(arch: str, size: int, batch: int, device: torch.device, setting: str, steps: int, warmup: int, peak: float) -> dict[str, Any]:
    """:func:`measure`, or the row with the error that stopped it (one failing setting does not end the run)."""
    try:
        return {"batch": batch, **measure(arch, size, batch, device, setting, steps, warmup, peak)}
    except Exception as err:  # a setting that fails (torch.compile) is itself a finding
        return {"arch": arch, "setting": setting, "batch": batch, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}


def row_line(row: dict[str, Any]) -> str:
    """One printed line: img/s and MFU in percent (small GAN steps are launch-bound, far below 1 %)."""
    head = f"{row['arch']:8s} {row['setting']:13s} batch {row['batch']:5d}"
    if "error" in row:
        return f"{head}  failed: {row['error']}"
    return (f"{head} {row['img_s']:10.1f} img/s  MFU {100 * row['mfu']:.3f} %  "
            f"({row['step_gflop']} GFLOP/step, first step {row['first_step_s']} s)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["dcgan", "resnet"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 512], help="the trainer's default batch, and one large enough to fill a GPU")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--quick", action="store_true", help="toy size and few steps (the CPU fallback)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick or device.type == "cpu":
        args.size, args.batches, args.steps, args.warmup = 16, [8], 3, 1
        # compiling needs a C++ toolchain on a CPU; the fallback checks the eager paths
        args.settings = [s for s in args.settings if not s.endswith("compile")] if device.type == "cpu" else args.settings
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, peak_dtype, 8192 if device.type == "cuda" else 1024)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {name}: {peak_dtype} matmul peak {peak / 1e12:.2f} TFLOP/s", flush=True)
    rows = []
    for arch in args.archs:
        for batch in args.batches:
            for setting in args.settings:
                rows.append(row := measure_or_error(arch, args.size, batch, device, setting, args.steps, args.warmup, peak))
                print(row_line(row), flush=True)
    result = {"benchmark": "gpu_throughput", "device": name, "peak_tflops": round(peak / 1e12, 2), "peak_dtype": str(peak_dtype),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows,
              "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                          "cuda": torch.version.cuda}}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
