"""InfoGAN latent codes (Chen et al. 2016, "InfoGAN: Interpretable Representation
Learning by Information Maximizing Generative Adversarial Nets").

The codes are the last ``c_dim = categorical + continuous`` entries of ``z``, laid out
``z = [noise | categorical slice | continuous codes]``, and every entry of ``z`` is
drawn from N(0, I) like the noise, so any sampler that fills ``z`` with
``torch.randn`` draws valid codes:

- the categorical code is ``argmax`` of its slice, which is uniform over the
  categories by symmetry; G sees it as a one-hot vector (:func:`encode_latent`);
- the continuous codes are the N(0, 1) values themselves (the paper's factored
  Gaussian Q; its MNIST runs used Unif(-1, 1), N(0, 1) is the same family up to scale).

:func:`code_targets` turns the codes back into the targets of the mutual-information
loss (:func:`gan.losses.infogan_mi_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_codes(z_dim: int, categorical: int, continuous: int) -> None:
    """Raise ValueError for code sizes that do not fit in ``z_dim`` or make no sense."""
    if categorical < 0 or continuous < 0:
        raise ValueError("InfoGAN code sizes must be >= 0")
    if categorical == 1:
        raise ValueError("an InfoGAN categorical code needs at least 2 categories (0 = off)")
    if categorical + continuous >= z_dim:
        raise ValueError(
            f"z_dim = {z_dim} must exceed the InfoGAN codes ({categorical} + {continuous}) to leave room for noise"
        )


def encode_latent(z: torch.Tensor, categorical: int, continuous: int) -> torch.Tensor:
    """``z [N, z_dim]`` with its categorical slice replaced by the one-hot of its argmax.

    No-op without a categorical code. ``argmax`` carries no gradient to ``z``, which is
    fine: ``z`` is sampled, never optimised.
    """
    if categorical == 0:
        return z
    c_dim = categorical + continuous
    start = z.shape[1] - c_dim
    cat = z[:, start : start + categorical]  # [N, categorical]
    one_hot = F.one_hot(cat.argmax(dim=1), categorical).to(z.dtype)  # [N, categorical]
    return torch.cat([z[:, :start], one_hot, z[:, start + categorical :]], dim=1)


def code_targets(codes: torch.Tensor, categorical: int, continuous: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Split ``codes [N, c_dim]`` (the last c_dim entries of z) into Q's targets.

    Returns ``(category [N] long | None, continuous [N, continuous] | None)``.
    """
    if codes.shape[1] != categorical + continuous:
        raise ValueError(f"codes have {codes.shape[1]} entries, expected {categorical} + {continuous}")
    category = codes[:, :categorical].argmax(dim=1) if categorical else None
    values = codes[:, categorical:] if continuous else None
    return category, values


def check_latent(z: torch.Tensor, z_dim: int) -> None:
    """Raise ValueError unless ``z`` is ``[N, z_dim]``."""
    if z.dim() != 2 or z.shape[1] != z_dim:
        raise ValueError(f"z must have shape [N, {z_dim}], got {list(z.shape)}")
