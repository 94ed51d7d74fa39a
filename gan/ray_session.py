"""Start or join Ray quietly: ``RAY_ADDRESS`` selects an existing cluster, else a local one.

    init_ray()      # RAY_ADDRESS=<head>:6379 dvc repro  -> joins that cluster (docs/cluster.md)

Ray's own output (worker logs, progress tables, deprecation notes) stays in Ray's log
files (``/tmp/ray/session_latest/logs`` on each node); the user sees the stage's own
concise progress lines.
"""

from __future__ import annotations

import logging
import os

from gan import signals
from gan.console import quiet_console


def init_ray(num_cpus: int | None = None) -> str:
    """Connect to ``RAY_ADDRESS`` (or start a local cluster) once; return where we are."""
    quiet_console()
    import ray

    if ray.is_initialized():
        return "already connected"
    address = os.environ.get("RAY_ADDRESS") or None
    ray.init(
        # "local": a new local instance, even when a `ray start` (or ray.cluster_utils) on
        # this machine wrote /tmp/ray/ray_current_cluster, which address=None would join
        address=address or "local",
        num_cpus=None if address else num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=True,
    )
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    signals.reinstall()  # ray.init replaced the SIGTERM handler with sys.exit(15)
    return address or "local"
