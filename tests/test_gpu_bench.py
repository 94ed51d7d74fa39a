"""bench/gpu.sh stays ready for a GPU machine: its shell parses and its step benchmark runs on the CPU fallback.

    pytest -q tests/test_gpu_bench.py      # a few seconds
"""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT


def test_gpu_script_parses_and_the_step_benchmark_runs_its_cpu_fallback(tmp_path):
    subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu.sh")], check=True)
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_throughput.py"), "--quick", "--archs", "dcgan",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    rows = {row["setting"]: row for row in result["rows"]}
    assert all("error" not in row for row in rows.values()), rows
    assert set(rows) == {"fp32", "bf16"}  # torch.compile is left to the GPU run
    for row in rows.values():
        assert row["img_s"] > 0 and row["step_gflop"] > 0 and 0 < row["mfu"] < 1
