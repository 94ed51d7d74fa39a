"""A small caption encoder for text-conditioned generators (StackGAN).

    vocab = build_vocab(captions)                          # ["<pad>", "<unk>", "a", "bird", ...]
    tokens, unknown = encode_captions(captions, vocab, max_len=16)   # [N, 16] long, PAD-padded
    encoder, fit = train_text_encoder(tokens, image_features, vocab_size=len(vocab), embed_dim=64,
                                      text_dim=64, epochs=20, batch_size=128, lr=1e-3, seed=0)
    emb = encoder(tokens)                                  # [N, 64]
    class_agreement(emb, labels)                           # 1-NN class agreement in [0, 1]

StackGAN (Zhang et al. 2017) conditions on char-CNN-RNN caption embeddings (Reed et al.
2016) pretrained on CUB and COCO. No such weights exist offline, so the featurize stage
trains this small word encoder instead, with :func:`train_text_encoder`: the caption of
image i is pulled towards a linear projection of that image's fixed features (the
project's domain feature network) and pushed away from the other images of the batch
(symmetric InfoNCE, as CLIP; Radford et al. 2021). Reed et al.'s joint embedding has the
same aim: captions of alike images land near each other.

:class:`TextEncoder`: word embedding -> masked mean and max over the words (PAD excluded,
so padding never changes a caption's embedding) -> MLP. Word order is ignored: at this
scale captions are short attribute lists, and a bag of words trains in seconds on CPU.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PAD, UNK = 0, 1
SPECIALS = ["<pad>", "<unk>"]
_WORD = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """The words of ``text``: lower-cased runs of ``[a-z0-9]`` (punctuation splits words)."""
    return _WORD.findall(text.lower())


def build_vocab(captions: Sequence[str]) -> list[str]:
    """``["<pad>", "<unk>", *sorted unique words]``: id ``i`` is ``vocab[i]`` (PAD = 0, UNK = 1)."""
    return [*SPECIALS, *sorted({word for caption in captions for word in tokenize(caption)})]


def encode_captions(
    captions: Sequence[str], vocab: Sequence[str], max_len: int
) -> tuple[torch.Tensor, list[str]]:
    """``(tokens [N, max_len] long, unknown words)`` for ``captions``.

    Word ids are PAD-padded and truncated to ``max_len``; words not in ``vocab`` map to UNK
    and are reported, sorted and unique, so the caller can say which words the encoder
    does not know. Raises ValueError for a caption with no word at all.
    """
    if max_len < 1:
        raise ValueError(f"max_len = {max_len} is invalid: must be at least 1")
    index = {word: i for i, word in enumerate(vocab)}
    tokens = torch.full((len(captions), max_len), PAD, dtype=torch.long)  # [N, L]
    unknown: set[str] = set()
    for i, caption in enumerate(captions):
        words = tokenize(caption)
        if not words:
            raise ValueError(f"caption {i} ({caption!r}) has no words")
        words = words[:max_len]
        unknown.update(w for w in words if w not in index)
        tokens[i, : len(words)] = torch.tensor([index.get(w, UNK) for w in words], dtype=torch.long)
    return tokens, sorted(unknown)


class TextEncoder(nn.Module):
    """``TextEncoder(vocab_size)(tokens [B, L] long) -> [B, text_dim]``.

    Embedding (PAD row fixed at zero) -> [masked mean ++ masked max] over the words ->
    Linear -> LeakyReLU(0.2) -> Linear. A row of PADs only (no words) embeds to the MLP's
    value at a zero pooled vector: finite, never NaN.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, text_dim: int = 64) -> None:
        super().__init__()
        if vocab_size < len(SPECIALS) or embed_dim < 1 or text_dim < 1:
            raise ValueError(
                f"vocab_size = {vocab_size}, embed_dim = {embed_dim}, text_dim = {text_dim}: "
                f"need vocab_size >= {len(SPECIALS)} (PAD and UNK), embed_dim >= 1 and text_dim >= 1"
            )
        self.vocab_size, self.embed_dim, self.text_dim = vocab_size, embed_dim, text_dim
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.mlp = nn.Sequential(
            nn.Linear(2 * embed_dim, text_dim), nn.LeakyReLU(0.2), nn.Linear(text_dim, text_dim)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape [B, L], got {list(tokens.shape)}")
        mask = (tokens != PAD).unsqueeze(-1)  # [B, L, 1]
        e = self.embed(tokens)  # [B, L, E]
        count = mask.sum(dim=1)  # [B, 1]
        mean = (e * mask).sum(dim=1) / count.clamp(min=1)  # [B, E]
        # -inf at PADs so they never win the max; rows without words get 0 instead of -inf
        peak = e.masked_fill(~mask, float("-inf")).amax(dim=1)  # [B, E]
        peak = torch.where(count > 0, peak, torch.zeros_like(peak))
        return self.mlp(torch.cat([mean, peak], dim=1))  # [B, text_dim]


def info_nce(text: torch.Tensor, image: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE (van den Oord et al. 2018; CLIP, Radford et al. 2021): row i of each matches row i of the other.

    L = 1/2 [CE(t_i . v_j / tau, j = i) + CE(v_i . t_j / tau, j = i)],  t, v L2-normalised
    """
    t, v = F.normalize(text, dim=1), F.normalize(image, dim=1)
    logits = t @ v.T / temperature  # [B, B]
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def drop_words(tokens: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """``tokens`` with each word (non-PAD) replaced by UNK with probability ``p``.

    Unknown words become UNK at inference; training with it gives UNK the meaning "some
    word", not an untrained vector.
    """
    drop = torch.rand(tokens.shape, generator=generator, device=tokens.device) < p
    return tokens.masked_fill(drop & (tokens != PAD), UNK)


def train_text_encoder(
    tokens: torch.Tensor,
    image_features: torch.Tensor,
    *,
    vocab_size: int,
    embed_dim: int,
    text_dim: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    word_dropout: float = 0.1,
    temperature: float = 0.1,
) -> tuple[TextEncoder, dict[str, float]]:
    """Train a :class:`TextEncoder` so caption i lands near image i's features; ``(encoder in eval mode, fit)``.

    ``tokens [N, L]`` from :func:`encode_captions`; ``image_features [N, F]`` are fixed
    (no gradient reaches them); a ``Linear(F, text_dim)`` projection is trained with the
    encoder and dropped afterwards. Adam, shuffled mini-batches (a last batch of one is
    skipped: InfoNCE needs a negative), symmetric InfoNCE on L2-normalised embeddings.
    ``fit = {"loss": mean loss of the last epoch, "loss_first": of the first}``.
    Deterministic for a seed on CPU; the global RNG is left as it was.
    """
    n = tokens.shape[0]
    if tokens.dim() != 2 or image_features.dim() != 2 or image_features.shape[0] != n:
        raise ValueError(
            f"tokens [N, L] and image_features [N, F] must agree on N, got {list(tokens.shape)} and {list(image_features.shape)}"
        )
    if n < 2 or epochs < 1 or batch_size < 2:
        raise ValueError(
            f"need at least 2 captions, epochs >= 1 and batch_size >= 2; got N = {n}, epochs = {epochs}, batch_size = {batch_size}"
        )
    if not 0.0 <= word_dropout < 1.0 or temperature <= 0.0:
        raise ValueError(
            f"word_dropout = {word_dropout} must be in [0, 1) and temperature = {temperature} positive"
        )
    device = tokens.device
    features = image_features.detach().float()
    # seeded initialisation without touching the caller's RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = TextEncoder(vocab_size, embed_dim, text_dim)
        projection = nn.Linear(features.shape[1], text_dim)
    encoder, projection = encoder.to(device).train(), projection.to(device).train()
    opt = torch.optim.Adam([*encoder.parameters(), *projection.parameters()], lr=lr)
    gen = torch.Generator(device=device).manual_seed(seed)
    epoch_losses: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen, device=device)
        total, batches = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue
            text = encoder(drop_words(tokens[idx], word_dropout, gen))  # [B, text_dim]
            loss = info_nce(text, projection(features[idx]), temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, batches = total + float(loss.detach()), batches + 1
        epoch_losses.append(total / batches)
    return encoder.eval(), {"loss": epoch_losses[-1], "loss_first": epoch_losses[0]}


@torch.no_grad()
def class_agreement(text_emb: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> float:
    """Leave-one-out 1-nearest-neighbour class agreement of ``text_emb [N, T]`` (cosine), in [0, 1].

    The fraction of rows whose most similar other row has the same label ``labels [N]``:
    how well the embeddings separate the classes. Rows are compared ``chunk`` at a time,
    so memory stays ``chunk x N``.
    """
    n = text_emb.shape[0]
    if n < 2 or labels.shape != (n,):
        raise ValueError(
            f"need text_emb [N, T] with N >= 2 and labels [N]; got {list(text_emb.shape)} and {list(labels.shape)}"
        )
    emb = F.normalize(text_emb.float(), dim=1)
    labels = labels.to(emb.device)
    hits = 0
    for start in range(0, n, chunk):
        sim = emb[start : start + chunk] @ emb.T  # [c, N]
        rows = torch.arange(start, start + len(sim), device=emb.device)
        sim[torch.arange(len(sim), device=emb.device), rows] = float("-inf")  # leave oneself out
        hits += int((labels[sim.argmax(dim=1)] == labels[rows]).sum())
    return hits / n
