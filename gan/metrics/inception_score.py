"""Inception Score, computed with the domain classifier instead of Inception-v3.

Salimans, Goodfellow, Zaremba, Cheung, Radford, Chen 2016, "Improved Techniques for
Training GANs" (NeurIPS), sec. 4:

    IS = exp( E_x KL( p(y|x) || p(y) ) )

high when each sample is classified confidently (low-entropy p(y|x)) and the
classes are diverse (high-entropy marginal p(y)); at most the number of classes.
With a classifier trained on the user's own data the score speaks about that data
(the "domain" variant used e.g. for MNIST GANs) rather than about ImageNet classes.

Computed by torchmetrics' ``InceptionScore`` fed with precomputed logits. We use one
split by default (the paper used 10 splits of 5,000): our sample sets are small
and of different sizes, and the split-wise estimate is biased downwards by the
split size, so one split keeps the generator and the real floor comparable.
"""

from __future__ import annotations

import warnings

import torch
from torchmetrics.image.inception import InceptionScore

from gan.metrics._features import FeatureArray, PassThrough, as_float64


def inception_score(logits: FeatureArray, splits: int = 1, seed: int = 0) -> float:
    """IS of class logits ``[N, K]`` (mean over ``splits``); between 1 and K, higher is better."""
    logits_t = as_float64(logits, "logits")
    if len(logits_t) < splits:
        raise ValueError(f"Inception Score needs at least {splits} samples")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the "keeps features in memory" notice
        metric = InceptionScore(feature=PassThrough(logits_t.shape[1]), splits=splits, sync_on_compute=False)
    metric.update(logits_t)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)  # torchmetrics shuffles before splitting
        warnings.simplefilter("ignore", UserWarning)  # the std of a single split is undefined
        mean, _std = metric.compute()
    return float(mean)
