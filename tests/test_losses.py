"""Losses and regularisers against their closed forms on hand-picked logits.

    .venv/bin/python -m pytest tests/test_losses.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from gan.losses import (
    d_loss_hinge,
    d_loss_least_squares,
    d_loss_minimax,
    d_loss_wasserstein,
    g_loss_hinge,
    g_loss_least_squares,
    g_loss_minimax,
    g_loss_nonsaturating,
    g_loss_wasserstein,
    gradient_penalty,
    infogan_mi_loss,
    loss_pair,
    r1_penalty,
)

torch.set_num_threads(1)

LOG2 = math.log(2.0)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def approx(value: torch.Tensor, expected: float) -> None:
    assert value.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_minimax_at_equilibrium_is_2_log_2() -> None:
    # D(x) = D(G(z)) = 1/2 <=> logits 0: loss_D = -[log 1/2 + log 1/2] = 2 log 2.
    zero = t(0.0, 0.0, 0.0)
    approx(d_loss_minimax(zero, zero), 2 * LOG2)
    approx(g_loss_minimax(zero), -LOG2)  # log(1 - 1/2)
    approx(g_loss_nonsaturating(zero), LOG2)  # -log 1/2


def test_minimax_on_hand_picked_probabilities() -> None:
    # D(x) = 0.9, 0.6 and D(G(z)) = 0.2, 0.7, written as logits.
    real, fake = t(logit(0.9), logit(0.6)), t(logit(0.2), logit(0.7))
    expected_d = -(math.log(0.9) + math.log(0.6)) / 2 - (math.log(0.8) + math.log(0.3)) / 2
    approx(d_loss_minimax(real, fake), expected_d)
    approx(g_loss_minimax(fake), (math.log(0.8) + math.log(0.3)) / 2)
    approx(g_loss_nonsaturating(fake), -(math.log(0.2) + math.log(0.7)) / 2)


def test_logit_losses_are_stable_at_extreme_logits() -> None:
    big = torch.tensor([1e4, -1e4], requires_grad=True)
    for loss in (d_loss_minimax(big, big), g_loss_minimax(big), g_loss_nonsaturating(big)):
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(big.grad).all()
        big.grad = None
    # A confident, correct D costs nothing; a confident, wrong one costs |logit|.
    approx(d_loss_minimax(t(1e4), t(-1e4)), 0.0)
    approx(d_loss_minimax(t(-1e4), t(1e4)), 2e4)
    approx(g_loss_nonsaturating(t(-1e4)), 1e4)


def test_hinge() -> None:
    real, fake = t(2.0, 0.5), t(-2.0, 0.3)
    # relu(1 - r): 0, 0.5 -> 0.25; relu(1 + f): 0, 1.3 -> 0.65.
    approx(d_loss_hinge(real, fake), 0.25 + 0.65)
    approx(g_loss_hinge(fake), -(-2.0 + 0.3) / 2)


def test_wasserstein() -> None:
    real, fake = t(3.0, 1.0), t(-1.0, 0.0)
    approx(d_loss_wasserstein(real, fake), -0.5 - 2.0)  # E[f] - E[r]
    approx(g_loss_wasserstein(fake), 0.5)


def test_least_squares() -> None:
    real, fake = t(1.0, 0.0), t(0.0, 2.0)
    # 1/2 E[(r - 1)^2] = 1/2 * (0 + 1) / 2; 1/2 E[f^2] = 1/2 * (0 + 4) / 2.
    approx(d_loss_least_squares(real, fake), 0.25 + 1.0)
    approx(g_loss_least_squares(fake), 0.5 * (1.0 + 1.0) / 2)


@pytest.mark.parametrize(
    ("name", "d_fn", "g_fn"),
    [
        ("minimax", d_loss_minimax, g_loss_minimax),
        ("nonsaturating", d_loss_minimax, g_loss_nonsaturating),
        ("hinge", d_loss_hinge, g_loss_hinge),
        ("wgan-gp", d_loss_wasserstein, g_loss_wasserstein),
        ("lsgan", d_loss_least_squares, g_loss_least_squares),
    ],
)
def test_loss_pair_maps_config_names(name: str, d_fn, g_fn) -> None:
    assert loss_pair(name) == (d_fn, g_fn)


def test_loss_pair_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown loss 'wgan'"):
        loss_pair("wgan")


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x> + b: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return (x.flatten(1) * self.w.flatten()).sum(dim=1) + 0.5


def test_gradient_penalty_on_a_linear_critic() -> None:
    w = torch.tensor([[[2.0, 1.0], [2.0, 0.0]]], dtype=torch.float64)  # ||w|| = 3
    D = LinearCritic(w)
    real = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    fake = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    gp = gradient_penalty(D, real, fake)
    approx(gp, (3.0 - 1.0) ** 2)
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||: the penalty trains the critic.
    gp.backward()
    torch.testing.assert_close(D.w.grad, 2 * 2.0 * w / 3.0)


def test_gradient_penalty_is_zero_for_a_unit_gradient_and_passes_labels() -> None:
    seen = []

    class Conditional(LinearCritic):
        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            seen.append(y)
            return super().forward(x)

    D = Conditional(torch.tensor([0.6, 0.8], dtype=torch.float64))
    x = torch.randn(4, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    assert gradient_penalty(D, x, x.flip(0), y).item() == pytest.approx(0.0, abs=1e-10)
    assert seen[0] is y


def test_gradient_penalty_on_a_nonlinear_critic_matches_a_hand_computation() -> None:
    # D(x) = sum(x^2): grad = 2 x_hat, with x_hat = eps real + (1 - eps) fake.
    real = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    fake = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    eps = torch.rand(1, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64).item()
    gp = gradient_penalty(lambda x: x.pow(2).sum(dim=1), real, fake, generator=gen)
    x_hat = torch.tensor([eps, 2 * (1 - eps)], dtype=torch.float64)
    approx(gp, ((2 * x_hat).norm().item() - 1.0) ** 2)


def test_r1_penalty_on_a_linear_critic_is_the_squared_weight_norm() -> None:
    w = torch.tensor([1.0, -2.0, 2.0], dtype=torch.float64)  # ||w||^2 = 9
    D = LinearCritic(w)
    real = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty(D(real), real)
    approx(r1, 9.0)
    r1.backward()
    torch.testing.assert_close(D.w.grad, 2 * w)  # d/dw ||w||^2


def test_infogan_mi_loss_closed_form() -> None:
    # categorical code of 3 (argmax 2 and 0), one continuous code.
    codes = t(0.1, 0.2, 0.9, 0.5, 0.7, -0.3, 0.2, -1.0).view(2, 4)
    q = t(0.0, 0.0, LOG2, 1.5, 1.0, 0.0, 0.0, -1.0).view(2, 4)
    # CE row 0: target 2, logits (0, 0, log 2) -> -log(2 / 4) = log 2.
    # CE row 1: target 0, logits (1, 0, 0) -> -log(e / (e + 2)).
    ce = (LOG2 - math.log(math.e / (math.e + 2))) / 2
    gauss = 0.5 * ((0.5 - 1.5) ** 2 + 0.0) / 2
    approx(infogan_mi_loss(q, codes, categorical=3, continuous=1), ce + gauss)
    approx(infogan_mi_loss(q[:, 3:], codes[:, 3:], categorical=0, continuous=1), gauss)
    with pytest.raises(ValueError, match="expected 3 \\+ 1"):
        infogan_mi_loss(q[:, :3], codes, categorical=3, continuous=1)
