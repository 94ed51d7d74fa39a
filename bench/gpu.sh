#!/usr/bin/env bash
# The GPU path in one call; record what it prints in docs/benchmarks.md with the machine.
#
#   bash bench/gpu.sh            # a machine with an NVIDIA GPU: 64x64 dcgan + resnet, 300 Ray steps
#   bash bench/gpu.sh --quick    # the CPU fallback at a toy size: checks that the script works
#
# 1. bench/gpu_throughput.py: one training step of the default recipe, fp32 / bf16 +
#    channels_last / bf16 + torch.compile, img/s and MFU against a bf16 matmul peak
#    measured in the same run (bench/results/gpu_throughput.json).
# 2. The train stage's Ray Train run (run_training, without the MLflow logging) with one
#    worker: nccl and the GPU when there is one (train.use_gpu), gloo on the CPU otherwise;
#    the digits prepared at 64x64 RGB; img/s and time to the first step beside the plain
#    step's img/s above (bench/results/gpu_ray_train.json).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
quick=""; steps=300; size=64
if [[ "${1:-}" == "--quick" ]]; then quick="--quick"; steps=20; size=16; fi
out=${OUT:-bench/results}
mkdir -p "$out"

"$PY" bench/gpu_throughput.py $quick --out "$out/gpu_throughput.json"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gpu=$("$PY" -c 'import torch; print("true" if torch.cuda.is_available() else "false")')
"$PY" - "$tmp" "$gpu" "$steps" "$size" <<'PYEOF'
import sys
import yaml
tmp, gpu, steps, size = sys.argv[1], sys.argv[2] == "true", int(sys.argv[3]), int(sys.argv[4])
raw = yaml.safe_load(open("params.yaml"))
raw["prepare"].update(image_size=size, channels=3)
raw["tune"]["enabled"] = False
raw["train"].update(steps=steps, use_gpu=gpu, num_workers=1, storage_path=f"{tmp}/ray", checkpoint_every=steps,
                    sample_every=steps, log_every=max(steps // 10, 1), eval_every=0)
open(f"{tmp}/params.yaml", "w").write(yaml.safe_dump(raw, sort_keys=False))
PYEOF
export RAY_ADDRESS=""
"$PY" pipelines/prepare.py --params "$tmp/params.yaml" --out "$tmp/prepared" --metrics "$tmp/prepare.json" >/dev/null
# the train stage's own Ray Train run (run_training) without its MLflow logging, so that a
# GPU box needs torch and ray but no tracking server or MLflow install
"$PY" - "$tmp" "$gpu" <<'PYEOF'
import json, sys
from gan.config import load_params
from gan.ray_session import init_ray
from gan.training.ray_run import run_training
tmp, gpu = sys.argv[1], sys.argv[2] == "true"
params = load_params(f"{tmp}/params.yaml")
init_ray()
out = run_training(params, f"{tmp}/prepared", name="gpu-bench")
s = out.summary
backend = "nccl" if gpu else "gloo (no GPU)"
print(f"Ray Train, 1 worker, {backend}: {s.get('throughput/img_s', float('nan')):.1f} img/s over {out.checkpoint.step} steps, "
      f"first step {out.startup_s or float('nan'):.1f} s after fit(), wall {out.wall_s:.1f} s")
json.dump({"img_s": s.get("throughput/img_s"), "steps": out.checkpoint.step, "startup_s": out.startup_s, "wall_s": out.wall_s,
           "backend": backend}, open(sys.argv[1] + "/ray.json", "w"))
PYEOF
cp "$tmp/ray.json" "$out/gpu_ray_train.json"
