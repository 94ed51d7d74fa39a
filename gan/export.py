"""The exported generator: safetensors weights + config.json, loadable without training code.

    models/generator/
      model.safetensors   G_ema's state dict (tensors only: no pickle on the loading path)
      config.json         arch, G_kwargs, z_dim, num_classes, class_names, channels,
                          image_size, output_range, train config, metrics, weights_sha256

    G, spec = load_generator("models/generator")
    for x, y in sample(G, n=1000, labels=None, seed=0):   # x: [B, C, H, W] in [-1, 1]
        ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gan.atomic import atomic_dir, file_sha256
from gan.errors import GanError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
REQUIRED_KEYS = ("arch", "G_kwargs", "z_dim", "num_classes", "channels", "image_size")


def save_generator(G: torch.nn.Module, spec: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write G's weights and ``spec`` to ``out_dir`` atomically; return the directory."""
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise ValueError(f"generator spec lacks {missing}")
    state = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    spec = {"output_range": [-1.0, 1.0], "format": "gan-generator/1", **spec}
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"arch": str(spec["arch"])})
        # safetensors has no checksum: a flipped bit in the tensor data would load silently
        spec["weights_sha256"] = file_sha256(tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(spec, indent=2, sort_keys=True, default=str) + "\n")
    return Path(out_dir)


def read_spec(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``config.json`` of an exported generator."""
    path = Path(model_dir) / CONFIG
    if not path.exists():
        raise GanError(f"{path} does not exist; run the train stage (dvc repro train) to export a generator.")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise GanError(f"{path} is not valid JSON; re-export the generator with the train stage.") from None
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise GanError(f"{path} lacks the keys {', '.join(missing)}; re-export the generator with the train stage.")
    return spec


def load_generator(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild G from ``config.json`` and load its safetensors weights (eval mode)."""
    from gan.models import build_G

    spec = read_spec(model_dir)
    weights = Path(model_dir) / WEIGHTS
    if not weights.exists():
        raise GanError(f"{weights} does not exist; re-export the generator with the train stage.")
    expected = spec.get("weights_sha256")  # absent in generators exported before it was recorded
    if expected and file_sha256(weights) != expected:
        raise GanError(f"{weights} does not match the weights_sha256 in {Path(model_dir) / CONFIG}; the file is corrupt or was tampered with, re-export it.")
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise GanError(f"{weights} cannot be read ({type(err).__name__}); the file is corrupt or was tampered with, re-export it.") from None
    G = build_G(spec["arch"], **spec["G_kwargs"])
    try:
        G.load_state_dict(state, strict=True)
    except RuntimeError:
        raise GanError(f"{weights} does not match the architecture in {Path(model_dir) / CONFIG} ({spec['arch']}); re-export the generator.") from None
    return G.to(device).eval(), spec


def check_labels(labels: Sequence[int] | None, num_classes: int) -> None:
    """Raise GanError for labels the generator does not know."""
    if labels is None:
        return
    if num_classes == 0:
        raise GanError("labels were given but this generator is unconditional; omit labels.")
    bad = [int(v) for v in labels if not 0 <= int(v) < num_classes]
    if bad:
        raise GanError(f"label {bad[0]} is unknown to this generator; allowed labels are 0..{num_classes - 1}.")


def latents(n: int, z_dim: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """``n`` latent vectors ``[n, z_dim]`` from N(0, I), deterministic for ``seed``.

    With ``truncation`` (the truncation trick, Brock et al. 2019) values beyond
    +-truncation are resampled until inside.
    """
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, z_dim, generator=gen)
    if truncation is not None and truncation > 0:
        out = z.abs() > truncation
        while out.any():
            z[out] = torch.randn(int(out.sum()), generator=gen)
            out = z.abs() > truncation
    return z


def sample_labels(n: int, num_classes: int, labels: Sequence[int] | None, seed: int) -> torch.Tensor | None:
    """Labels for ``n`` samples: ``labels`` cycled, or uniform classes; None when unconditional."""
    if num_classes == 0:
        return None
    if labels:
        base = torch.as_tensor(list(labels), dtype=torch.long)
        return base.repeat((n + len(base) - 1) // len(base))[:n]
    gen = torch.Generator().manual_seed(int(seed) + 1)
    return torch.randint(0, num_classes, (n,), generator=gen)


@torch.no_grad()
def sample(
    G: torch.nn.Module,
    n: int,
    labels: Sequence[int] | None = None,
    seed: int = 0,
    truncation: float | None = None,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(x [B, C, H, W] in [-1, 1], y [B] | None)`` batches; deterministic for ``seed``.

    The whole latent batch is drawn up front from one generator so that results do
    not depend on ``batch_size``; only ``n * z_dim`` floats are held, never the images.
    """
    if n <= 0:
        raise GanError(f"n = {n} is invalid; ask for at least one sample.")
    num_classes = int(getattr(G, "num_classes", 0))
    check_labels(labels, num_classes)
    z = latents(n, G.z_dim, seed, truncation)
    y = sample_labels(n, num_classes, labels, seed)
    for start in range(0, n, batch_size):
        zb = z[start : start + batch_size].to(device)
        yb = None if y is None else y[start : start + batch_size].to(device)
        yield G(zb, yb).float().clamp_(-1, 1).cpu(), None if yb is None else yb.cpu()
