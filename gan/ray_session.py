"""Start or join Ray quietly: ``RAY_ADDRESS`` selects an existing cluster, else a local one.

    init_ray()      # RAY_ADDRESS=<head>:6379 dvc repro  -> joins that cluster (docs/cluster.md)

    with pipeline_cluster():                  # gan repro, gan retrain, make repro:
        subprocess.run(["dvc", "repro"])      # every Ray stage joins one local Ray

A stage run on its own starts a private local Ray and pays Ray's start-up (the GCS, the
raylet, Ray Train's detached helper actors) each time; :func:`pipeline_cluster` starts
one for a whole pipeline run and stops exactly that one afterwards (docs/benchmarks.md,
"Start-up").

Ray's own output (worker logs, progress tables, deprecation notes) stays in Ray's log
files (``/tmp/ray/session_latest/logs`` on each node); the user sees the stage's own
concise progress lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Callable, Iterator

from gan import signals
from gan.console import quiet_console

# Ray Train's controller takes a worker's report, and sees that a run has ended, only when it
# polls the workers: every 2 s by default, and a worker's next ray.train.report waits for
# it. Polling every 0.5 s takes that wait out of every checkpoint and evaluation
# (bench/train_poll.py; docs/benchmarks.md, "Ray Train's poll interval"). Ray Train passes
# the variable from the driver to its controller; a value the user set wins.
TRAIN_POLL_INTERVAL_S = "0.5"


def poll_ray_train_often() -> None:
    """Have the next Ray Train run made in this process poll at :data:`TRAIN_POLL_INTERVAL_S`, unless the user chose an interval."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", TRAIN_POLL_INTERVAL_S)


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


def joined_address() -> str | None:
    """The cluster address this process joins through ``RAY_ADDRESS`` (None: a private local Ray)."""
    return os.environ.get("RAY_ADDRESS") or None


def ray_where() -> str:
    """For a stage's first line: ``", on Ray at <address>"`` when it joined a cluster, else nothing."""
    address = joined_address()
    return f", on Ray at {address}" if address else ""


@contextlib.contextmanager
def pipeline_cluster() -> Iterator[str]:
    """One local Ray for every stage run inside the block: yields its address, exported as ``RAY_ADDRESS``.

    With ``RAY_ADDRESS`` already set (a cluster chosen by the user) nothing is started and
    that address is yielded. Otherwise this process starts a local Ray, the children it
    starts join it through ``RAY_ADDRESS``, and leaving the block shuts down exactly the
    processes it started: any other Ray on the machine keeps running (``ray stop`` would
    stop them all).
    """
    given = joined_address()
    if given:
        yield given
        return
    import ray

    init_ray()
    address = ray.get_runtime_context().gcs_address
    os.environ["RAY_ADDRESS"] = address
    try:
        yield address
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        ray.shutdown()


def run_child(cmd: list[str], **kwargs: object) -> int:
    """Run ``cmd`` to its end in its own process group and return its exit status.

    SIGINT and SIGTERM (Ctrl-C reaches only this process, whose group the terminal
    signals) are passed once to the child's whole group, as a terminal would, and the
    wait goes on: the child finishes its own clean-up (DVC's lock, a stage's temporary
    output) while the Ray it uses is still up.
    """
    import signal

    proc = subprocess.Popen(cmd, process_group=0, **kwargs)  # type: ignore[call-overload]
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt as err:  # SIGINT, or SIGTERM as signals.Terminated
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, getattr(err, "signum", signal.SIGINT))

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
