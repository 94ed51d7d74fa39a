"""The exported model: safetensors weights of any set of networks + config.json, loadable without training code.

    models/generator/
      model.safetensors   every exported network's state dict, keys "<network>.<parameter>"
                          (tensors only: no pickle on the loading path)
      config.json         task, networks ({name: {network, kwargs}}), what the task's
                          inference needs (generate: z_dim, num_classes, class_names,
                          channels, image_size), train config, metrics, weights_sha256

    nets, spec = load_networks("models/generator")          # {"G": ...}, config.json
    G, spec = load_generator("models/generator")            # the generate task's G
    for x, y in sample(G, n=1000, labels=None, seed=0):     # gan.sampling: x [B, C, H, W] in [-1, 1]
        ...

An export made before networks were named (format ``gan-generator/1``: ``arch`` and
``G_kwargs``, unprefixed weight keys) still loads, as the ``generate`` task's ``G``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gan.atomic import atomic_dir, file_sha256
from gan.errors import GanError
from gan.sampling import check_labels, latents, sample  # noqa: F401  (the sampling API, re-exported for callers of export)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "gan-model/2"
LEGACY_FORMAT = "gan-generator/1"
REQUIRED_KEYS = ("task", "networks", "channels", "image_size")


def legacy_networks(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``networks`` of a single-generator spec (``arch`` + ``G_kwargs``)."""
    return {"G": {"network": f"{spec['arch']}.G", "kwargs": dict(spec["G_kwargs"])}}


def save_networks(nets: Mapping[str, torch.nn.Module], spec: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write ``nets``' weights and ``spec`` (with ``task`` and ``networks``) to ``out_dir`` atomically."""
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise ValueError(f"model spec lacks {missing}")
    if set(nets) != set(spec["networks"]):
        raise ValueError(f"networks {sorted(nets)} do not match the spec's {sorted(spec['networks'])}")
    state = {f"{name}.{k}": v.detach().cpu().contiguous() for name, net in nets.items() for k, v in net.state_dict().items()}
    spec = {"output_range": [-1.0, 1.0], **spec, "format": FORMAT}
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"task": str(spec["task"])})
        # safetensors has no checksum: a flipped bit in the tensor data would load silently
        spec["weights_sha256"] = file_sha256(tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(spec, indent=2, sort_keys=True, default=str) + "\n")
    return Path(out_dir)


def save_generator(G: torch.nn.Module, spec: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Export a ``generate`` task's G: ``spec`` holds ``arch``, ``G_kwargs``, ``z_dim``, ``num_classes``, ``channels``, ``image_size``."""
    missing = [k for k in ("arch", "G_kwargs", "z_dim", "num_classes", "channels", "image_size") if k not in spec]
    if missing:
        raise ValueError(f"generator spec lacks {missing}")
    return save_networks({"G": G}, {"task": "generate", "networks": legacy_networks(spec), **spec}, out_dir)


def read_spec(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``config.json`` of an exported model (an older single-generator one is upgraded)."""
    path = Path(model_dir) / CONFIG
    if not path.exists():
        raise GanError(f"{path} does not exist; run the train stage (dvc repro train) to export a model.")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GanError(f"{path} is not valid JSON; re-export the model with the train stage.") from None
    if not isinstance(spec, dict):
        raise GanError(f"{path} holds a {type(spec).__name__}, not a mapping of model settings; re-export the model with the train stage.")
    if "networks" not in spec and "arch" in spec and "G_kwargs" in spec:  # gan-generator/1
        spec = {"task": "generate", **spec, "networks": None}
        try:
            spec["networks"] = legacy_networks(spec)
        except (TypeError, ValueError):
            raise GanError(f"{path}: G_kwargs must be a mapping of constructor arguments; re-export the model with the train stage.") from None
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise GanError(f"{path} lacks the keys {', '.join(missing)}; re-export the model with the train stage.")
    check_networks(spec["networks"], path)
    check_fields(spec, path)
    return spec


# Fields every export holds or a task's inference reads, with the type each must have:
# config.json is read by code that trusts these types, so a wrong one is named here.
FIELD_TYPES: dict[str, tuple[type, str]] = {
    "task": (str, "a task name"),
    "channels": (int, "1 or 3"),
    "image_size": (int, "a positive whole number"),
    "z_dim": (int, "a positive whole number"),
    "num_classes": (int, "a whole number >= 0"),
    "class_names": (list, "a list of class names"),
    "scale": (int, "2 or 4"),
}


def check_fields(spec: dict[str, Any], path: Path) -> None:
    """Raise GanError naming ``path`` and the field when a known field has the wrong type or value."""
    for key, (kind, want) in FIELD_TYPES.items():
        if key not in spec:
            continue
        value = spec[key]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok and key == "channels":
            ok = value in (1, 3)
        elif ok and key in ("image_size", "z_dim"):
            ok = value > 0
        elif ok and key == "num_classes":
            ok = value >= 0
        elif ok and key == "scale":
            ok = value in (2, 4)
        elif ok and key == "class_names":
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise GanError(f"{path}: {key} = {value!r} is invalid: it must be {want}; re-export the model with the train stage.")


def check_networks(networks: Any, path: Path) -> None:
    """Raise GanError unless ``networks`` maps names to ``{network: known key, kwargs: mapping}``."""
    from gan.models import NETWORKS

    if not isinstance(networks, dict) or not networks:
        raise GanError(f"{path}: 'networks' must map network names to their settings; re-export the model with the train stage.")
    for name, entry in networks.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("kwargs"), dict):
            raise GanError(f"{path}: networks.{name} must hold 'network' and a 'kwargs' mapping; re-export the model with the train stage.")
        if entry.get("network") not in NETWORKS:
            raise GanError(f"{path}: networks.{name}.network = {entry.get('network')!r} is unknown; known: {', '.join(NETWORKS)}.")


def load_networks(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """Rebuild every exported network from ``config.json`` and load its weights (eval mode)."""
    from gan.models import build_network

    spec = read_spec(model_dir)
    config = Path(model_dir) / CONFIG
    weights = Path(model_dir) / WEIGHTS
    if not weights.exists():
        raise GanError(f"{weights} does not exist; re-export the model with the train stage.")
    expected = spec.get("weights_sha256")  # absent in models exported before it was recorded
    if expected and file_sha256(weights) != expected:
        raise GanError(f"{weights} does not match the weights_sha256 in {config}; the file is corrupt or was tampered with, re-export it.")
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise GanError(f"{weights} cannot be read ({type(err).__name__}); the file is corrupt or was tampered with, re-export it.") from None
    legacy = spec.get("format") != FORMAT
    nets: dict[str, torch.nn.Module] = {}
    for name, entry in spec["networks"].items():
        try:
            net = build_network(entry["network"], **entry["kwargs"])
        except (TypeError, ValueError) as err:
            raise GanError(f"{config}: networks.{name} cannot be built from its kwargs ({err}); re-export the model with the train stage.") from None
        prefix = f"{name}."
        own = state if legacy else {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            net.load_state_dict(own, strict=True)
        except RuntimeError:
            arch = entry["network"].split(".")[0]
            raise GanError(f"{weights} does not match the architecture in {config} ({arch}) of network {name}; re-export the model.") from None
        nets[name] = net.to(device).eval()
    return nets, spec


def load_generator(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The ``G`` of an exported ``generate`` model, and its spec."""
    nets, spec = load_networks(model_dir, device)
    if "G" not in nets:
        raise GanError(f"{Path(model_dir) / CONFIG} holds no network G (task {spec.get('task')!r}); it is not a generator.")
    return nets["G"], spec


