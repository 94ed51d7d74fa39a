#!/usr/bin/env bash
# The GPU path in one call; record what it prints in docs/benchmarks.md with the machine.
#
#   bash bench/gpu.sh            # a machine with an NVIDIA GPU: 64x64 dcgan + resnet, 300 Ray steps
#   bash bench/gpu.sh --quick    # the CPU fallback at a toy size: checks that the script works
#
# 1. bench/gpu_throughput.py: one training step of the default recipe, fp32 / bf16 +
#    channels_last / bf16 + torch.compile, img/s and MFU against a bf16 matmul peak
#    measured in the same run (bench/results/gpu_throughput.json).
# 2. The train stage through Ray Train with one worker: nccl and the GPU when there is
#    one (train.use_gpu), gloo on the CPU otherwise; the digits prepared at 64x64 RGB, its
#    throughput from train/metrics.json beside the plain step's img/s above.
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
export MLFLOW_TRACKING_URI="sqlite:///$tmp/mlflow.db" RAY_ADDRESS=""
"$PY" pipelines/prepare.py --params "$tmp/params.yaml" --out "$tmp/prepared" --metrics "$tmp/prepare.json" >/dev/null
"$PY" pipelines/train.py --params "$tmp/params.yaml" --data "$tmp/prepared" --features "$tmp/no-features" \
    --out "$tmp/train" --model-out "$tmp/model"
"$PY" - "$tmp/train/metrics.json" "$gpu" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))
backend = "nccl" if sys.argv[2] == "true" else "gloo (no GPU)"
print(f"Ray Train, 1 worker, {backend}: {m.get('throughput/img_s', float('nan')):.1f} img/s over {m['steps_trained']} steps")
PYEOF
