"""The caption encoder for text-conditioned generators (StackGAN): trained in featurize, read by train.

    python pipelines/featurize.py          # prepared data with captions -> models/features/text_encoder.*
    encoder, spec = load_text_encoder("models/features")      # TextEncoder (eval) + {"vocab", "kwargs", ...}
    emb = embed_captions(encoder, spec, ["a thick slanted seven"])   # [1, text_dim]

StackGAN-Pytorch conditions on char-CNN-RNN embeddings pretrained on CUB and COCO. No
such weights exist offline, so featurize trains a small word encoder
(:class:`gan.models.text.TextEncoder`) on the training captions against the domain
feature network's embeddings of their images (symmetric InfoNCE, word dropout to
``<unk>``): captions that describe alike images land near each other, and words the
encoder never saw map to ``<unk>``, a token it was trained with.

Files beside the feature network (written in the same atomic directory):
``text_encoder.safetensors`` (weights) and ``text_encoder.json`` (vocabulary, kwargs,
settings and validation figures).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from gan.errors import GanError
from gan.models.text import (
    TextEncoder,
    build_vocab,
    class_agreement,
    encode_captions,
    train_text_encoder,
)

WEIGHTS = "text_encoder.safetensors"
CONFIG = "text_encoder.json"
FORMAT = "gan-text-encoder/1"


def fit_text_encoder(
    image_features: torch.Tensor,
    captions: Sequence[str],
    settings: Any,
    seed: int,
    val: tuple[Sequence[str], np.ndarray | None] | None = None,
) -> tuple[TextEncoder, dict[str, Any]]:
    """Train the encoder on ``captions`` (one per row of ``image_features [N, F]``); return it and its spec.

    ``settings`` is featurize.text (embed_dim, text_dim, max_len, epochs, batch_size, lr).
    ``val``: the validation captions and labels, for ``metrics["class_agreement"]`` (how
    often a validation caption's nearest other caption names the same class).
    """
    vocab = build_vocab(captions)
    tokens, _ = encode_captions(list(captions), vocab, settings.max_len)
    kwargs = {"vocab_size": len(vocab), "embed_dim": int(settings.embed_dim), "text_dim": int(settings.text_dim)}
    encoder, fit = train_text_encoder(tokens, image_features, epochs=int(settings.epochs), batch_size=int(settings.batch_size),
                                      lr=float(settings.lr), seed=seed, **kwargs)  # fmt: skip
    metrics: dict[str, float] = {"loss": float(fit["loss"]), "vocab_size": float(len(vocab))}
    if val is not None:
        val_captions, val_y = val
        val_tokens, unknown = encode_captions(list(val_captions), vocab, settings.max_len)
        metrics["val_unknown_words"] = float(len(unknown))
        if val_y is not None and len(val_captions) > 1:
            with torch.no_grad():
                metrics["class_agreement"] = float(class_agreement(encoder(val_tokens), torch.as_tensor(np.array(val_y))))
    spec = {"format": FORMAT, "vocab": vocab, "kwargs": kwargs, "max_len": int(settings.max_len), "metrics": metrics}
    return encoder, spec


def save_text_encoder(encoder: TextEncoder, spec: dict[str, Any], folder: str | os.PathLike) -> None:
    """Write the two files into ``folder`` (featurize's temporary output directory)."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": FORMAT})
    (folder / CONFIG).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def load_text_encoder(features_dir: str | os.PathLike | None) -> tuple[TextEncoder, dict[str, Any]]:
    """The encoder featurize trained (eval mode, CPU) and its spec; GanError naming the file when absent or broken."""
    if features_dir is None:
        raise GanError("model.arch stackgan needs the caption encoder the featurize stage trains; run dvc repro featurize and pass its output (--features models/features).")
    folder = Path(features_dir)
    config, weights = folder / CONFIG, folder / WEIGHTS
    if not config.exists():
        raise GanError(f"{config} does not exist: the featurize stage trains it only for data prepared with captions; "
                       "set prepare.captions.source and run dvc repro featurize.")  # fmt: skip
    try:
        spec = json.loads(config.read_text())
        encoder = TextEncoder(**spec["kwargs"])
        encoder.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as err:  # a missing/corrupt file or a mismatched state: one message, the fix
        raise GanError(f"{folder}: the caption encoder cannot be loaded ({type(err).__name__}); re-run the featurize stage (dvc repro -f featurize).") from None
    return encoder.eval().requires_grad_(False), spec


@torch.no_grad()
def embed_captions(encoder: TextEncoder, spec: dict[str, Any], captions: Sequence[str], batch_size: int = 1024) -> torch.Tensor:
    """``[N, text_dim]`` embeddings of ``captions`` (unknown words as ``<unk>``)."""
    tokens, _ = encode_captions(list(captions), spec["vocab"], int(spec["max_len"]))
    return torch.cat([encoder(tokens[s : s + batch_size]) for s in range(0, len(tokens), batch_size)])
