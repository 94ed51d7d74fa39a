"""Training checkpoints: everything needed to resume, loadable without pickle.

    <checkpoint dir>/
      state.pt        torch.save of tensors and plain types only: G, D, G_ema, opt_G, opt_D,
                      scaler, step, per-rank RNG states, data position, full config, history
      state.sha256    sha256 of state.pt: torch's zip format has no checksum of the tensor
                      data, so a flipped byte would otherwise load silently
      samples/*.png   the sample grids made so far (G_ema on fixed z)
      history.csv     the logged rows, for people (state.pt holds the same rows)

    save_checkpoint(ckpt, "ckpt/")
    ckpt = load_checkpoint("ckpt/")     # torch.load(weights_only=True)
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gan.errors import GanError

STATE = "state.pt"
DIGEST = "state.sha256"
SAMPLES = "samples"
HISTORY = "history.csv"
FIRST_COLUMNS = ("loss/D", "loss/G", "D(x)", "D(G(z))", "grad_norm/D", "grad_norm/G", "throughput/img_s")


@dataclass
class TrainCheckpoint:
    """A resumable training state.

    ``state`` is :meth:`GANTrainer.state_dict` (tensors and plain types), ``history`` the
    logged metric rows so far and ``samples`` maps file names (``step-0000500.png``) to PNG
    bytes.
    """

    state: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    samples: dict[str, bytes] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.state["step"])


def save_checkpoint(ckpt: TrainCheckpoint, directory: str | os.PathLike) -> Path:
    """Write ``ckpt`` into ``directory`` (created if missing) and return it."""
    directory = Path(directory)
    (directory / SAMPLES).mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({**ckpt.state, "history": ckpt.history}, buf)
    (directory / STATE).write_bytes(buf.getvalue())
    (directory / DIGEST).write_text(hashlib.sha256(buf.getvalue()).hexdigest() + "\n")
    for name, data in ckpt.samples.items():
        (directory / SAMPLES / name).write_bytes(data)
    (directory / HISTORY).write_text(history_csv(ckpt.history))
    return directory


def load_checkpoint(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainCheckpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    directory = Path(directory)
    path = directory / STATE
    if not path.exists():
        raise GanError(f"{path} does not exist; the checkpoint is incomplete, delete it to start the run afresh.")
    digest = directory / DIGEST
    # save_checkpoint always writes the digest (and checkpoints of older code belong to
    # other run names, whose hash covers the training code), so a missing one is damage too
    if not digest.exists():
        raise GanError(f"{digest} does not exist; the checkpoint is incomplete or was tampered with, delete it to start afresh.")
    data = path.read_bytes()
    if digest.read_text().strip() != hashlib.sha256(data).hexdigest():
        raise GanError(f"{path} does not match {digest}; the checkpoint is corrupt or was tampered with, delete it to start afresh.")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError/RuntimeError for corrupt or unsafe files
        raise GanError(f"{path} cannot be loaded ({type(err).__name__}); the checkpoint is corrupt, delete it to start afresh.") from None
    history = state.pop("history", [])
    samples = {p.name: p.read_bytes() for p in sorted((directory / SAMPLES).glob("*.png"))}
    return TrainCheckpoint(state=state, history=history, samples=samples)


def history_csv(rows: list[dict[str, float]]) -> str:
    """The rows as CSV text: step, the losses and D's outputs first, then the rest as first seen."""
    columns: list[str] = ["step"]
    present = {k for row in rows for k in row}
    columns += [k for k in FIRST_COLUMNS if k in present]
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
