"""Start or join Ray quietly: ``RAY_ADDRESS`` selects an existing cluster, else a local one.

    init_ray()      # RAY_ADDRESS=<head>:6379 dvc repro  -> joins that cluster (docs/cluster.md)

Ray's own output (worker logs, progress tables, deprecation notes) stays in Ray's log
files (``/tmp/ray/session_latest/logs`` on each node); the user sees the stage's own
concise progress lines.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from gan import signals
from gan.console import quiet_console


def init_ray(num_cpus: int | None = None, *, stream_worker_output: bool = False) -> bool:
    """Connect to ``RAY_ADDRESS`` (or start a local Ray) once; return whether this call connected.

    ``stream_worker_output``: worker output reaches the driver's console (the train stage's
    rank 0 prints one progress line per report); otherwise it stays in Ray's log files.
    Ray's own console logs start at ERROR (``GAN_RAY_LOG_LEVEL`` changes that); full logs
    stay in /tmp/ray/session_latest/logs. ``num_cpus`` applies to a local Ray only.
    """
    quiet_console()
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS") or None
    if not address:
        # a local Ray inherits this environment; one machine is never preempted, and the
        # watcher would only add a polling actor and an error line at every start
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    ray.init(
        # "local": a new local instance, even when a `ray start` (or ray.cluster_utils) on
        # this machine wrote /tmp/ray/ray_current_cluster, which address=None would join;
        # RAY_ADDRESS=auto joins that one on purpose
        address=address or "local",
        num_cpus=None if address else num_cpus,
        include_dashboard=False,
        log_to_driver=stream_worker_output,
        logging_level=logging.WARNING,
        logging_config=ray.LoggingConfig(encoding="TEXT", log_level=os.environ.get("GAN_RAY_LOG_LEVEL", "ERROR")),
    )
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    signals.reinstall()  # ray.init replaced the SIGTERM handler with sys.exit(15)
    return True

# Ray-internal actors whose console output is noise to the user. PlacementGroupCleaner (Ray
# Train V2) looks its controller up through the State API without an address; with a second
# Ray instance on the machine that lookup raises "Found multiple active Ray instances" and
# its monitor thread prints a ~25-line traceback. It is harmless (the thread only cleans up
# after a crashed controller) and stays in Ray's log files.
HIDDEN_ACTORS = frozenset({"PlacementGroupCleaner"})


def without_actors(handler: Callable[[dict], None], actors: frozenset[str] = HIDDEN_ACTORS) -> Callable[[dict], None]:
    """``handler`` for Ray's worker-log batches, minus the batches printed by ``actors``."""

    def handle(data: dict) -> None:
        if data.get("actor_name") not in actors:
            handler(data)

    handle.__wrapped__ = handler  # type: ignore[attr-defined]
    return handle


def hide_actor_output(actors: frozenset[str] = HIDDEN_ACTORS) -> bool:
    """Keep ``actors``' output off this driver's console (``log_to_driver=True``); True when applied.

    Wraps the handler Ray registers as ``ray_print_logs``; a Ray without that hook is left
    alone (its output then shows, nothing breaks).
    """
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return False
    with dispatcher._lock:
        found = False
        for i, (name, handler) in enumerate(dispatcher.handlers):
            if name == "ray_print_logs" and not hasattr(handler, "__wrapped__"):
                dispatcher.handlers[i] = (name, without_actors(handler, actors))
                found = True
    return found
