"""run_main's exit: the status, and CPython's last collections skipped once the atexit handlers ran."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT

CHILD = r"""
import atexit, gc, sys
# registered before run_main's hook, so atexit runs it after that hook: what the teardown sees
atexit.register(lambda: print(f"gc enabled {gc.isenabled()}, frozen {gc.get_freeze_count() > 0}", flush=True))
from gan.errors import GanError, run_main

def main():
    print("work done", flush=True)
    if sys.argv[1] == "fail":
        raise GanError("params.yaml: train.steps = 0 is invalid; set it above 0.")
    return int(sys.argv[1])

run_main(main)
"""


def run_child(arg: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_run_main_keeps_the_exit_status_and_freezes_the_heap_after_the_handlers():
    for arg, status in (("0", 0), ("3", 3), ("fail", 2)):
        proc = run_child(arg)
        assert proc.returncode == status, proc.stderr
        assert proc.stdout.splitlines() == ["work done", "gc enabled False, frozen True"], proc.stdout
    assert proc.stderr.strip() == "error: params.yaml: train.steps = 0 is invalid; set it above 0."
