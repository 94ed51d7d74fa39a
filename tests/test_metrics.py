"""The metric functions against answers known in closed form or by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from gan.metrics import (
    class_histogram,
    class_kl,
    conditional_accuracy,
    density_coverage,
    fid,
    inception_score,
    kid,
    knn_radii,
    mode_coverage,
    modes_covered,
    per_class_accuracy,
    precision_recall,
)

torch.set_num_threads(1)


def _gaussian(rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    return rng.multivariate_normal(mean, cov, size=n)


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance of Heusel et al. eq. (6), computed independently with scipy's sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


def _random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fid_equals_closed_form_frechet_distance_of_two_gaussians():
    rng = np.random.default_rng(0)
    d = 16
    a = _gaussian(rng, 3000, rng.normal(size=d), _random_cov(rng, d))
    b = _gaussian(rng, 2000, rng.normal(size=d), _random_cov(rng, d))
    expected = _scipy_frechet(a, b)
    assert expected > 1.0  # the two sets are far apart, so a relative check is meaningful
    assert fid(a, b) == pytest.approx(expected, rel=1e-6)
    assert fid(torch.from_numpy(b).float(), torch.from_numpy(a).float()) == pytest.approx(expected, rel=1e-4)  # symmetric, float32 in


def test_fid_of_known_gaussians_approaches_population_value():
    # N(0, I) vs N(m, 4 I) in d dims: ||m||^2 + d (1 + 4 - 2 * 2) = ||m||^2 + d
    rng = np.random.default_rng(1)
    d, m = 4, np.full(4, 0.5)
    a = rng.normal(size=(100_000, d))
    b = m + 2.0 * rng.normal(size=(100_000, d))
    assert fid(a, b) == pytest.approx(float(m @ m) + d, rel=0.02)


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(2).normal(size=(500, 32)) * 3 + 1
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)


def test_kid_is_unbiased_for_two_draws_of_one_distribution():
    rng = np.random.default_rng(3)
    d, n = 8, 100
    unbiased, biased = [], []
    for i in range(40):
        a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        unbiased.append(kid(a, b, subset_size=n, subsets=1, seed=i))
        # the biased V-statistic keeps the diagonal k(x, x) terms and is positive in expectation
        k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
        biased.append(k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())
    se = np.std(unbiased) / math.sqrt(len(unbiased))
    assert abs(np.mean(unbiased)) < 3 * se
    assert min(unbiased) < 0 < max(unbiased)  # an unbiased estimate of 0 must go both ways
    assert np.mean(biased) > 10 * se  # the test above can tell the difference


def test_kid_grows_with_the_shift_and_is_deterministic_for_a_seed():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(400, 8))
    near, far = rng.normal(size=(400, 8)) + 0.2, rng.normal(size=(400, 8)) + 1.0
    assert 0 < kid(a, near, 200) < kid(a, far, 200)
    assert kid(a, near, 200, seed=7) == kid(a, near, 200, seed=7)


def _two_clusters(rng: np.random.Generator, n: int = 200, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Cluster A near the origin, cluster B 100 units away; each much smaller than the gap."""
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) + 100.0
    return a, b


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_one_cloud_inside_the_other(k):
    # real = A u B, fake = an exact copy of A: every fake lies on a real point (precision 1),
    # only A's half of the real points has a fake neighbour (recall = coverage = 1/2), and
    # each fake lies strictly inside the balls of its own real twin and that twin's k-1
    # nearer neighbours, so density = k M / (k M) = 1 exactly.
    a, b = _two_clusters(np.random.default_rng(5))
    real, fake = np.concatenate([a, b]), a.copy()
    precision, recall = precision_recall(real, fake, k)
    density, coverage = density_coverage(real, fake, k)
    assert (precision, recall) == (1.0, 0.5)
    assert density == pytest.approx(1.0, abs=1e-12)
    assert coverage == 0.5


def test_prdc_disjoint_clouds_are_all_zero():
    a, b = _two_clusters(np.random.default_rng(6))
    assert precision_recall(a, b, 5) == (0.0, 0.0)
    assert density_coverage(a, b, 5) == (0.0, 0.0)


def test_precision_counts_outliers_and_recall_ignores_them():
    # fake = a copy of the real cloud plus 50 far outliers: precision 200/250, recall still 1
    rng = np.random.default_rng(7)
    real = rng.normal(size=(200, 2))
    fake = np.concatenate([real, rng.normal(size=(50, 2)) + 1000.0])
    precision, recall = precision_recall(real, fake, 5)
    density, coverage = density_coverage(real, fake, 5)
    assert precision == pytest.approx(200 / 250)
    assert recall == 1.0
    assert coverage == 1.0
    assert density == pytest.approx(200 / 250)  # the outliers sit in no real ball


def test_knn_radii_are_kth_neighbour_distances():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    assert knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(ValueError, match="nearest_k"):
        knn_radii(x, 4)


def test_inception_score_bounds():
    n, k = 1000, 10
    confident_diverse = torch.nn.functional.one_hot(torch.arange(n) % k, k).double() * 50
    assert inception_score(confident_diverse) == pytest.approx(k, rel=1e-6)
    one_class = torch.zeros(n, k, dtype=torch.float64)
    one_class[:, 3] = 50
    assert inception_score(one_class) == pytest.approx(1.0, abs=1e-6)
    uncertain = torch.zeros(n, k)
    assert inception_score(uncertain) == pytest.approx(1.0, abs=1e-6)


def test_mode_coverage_and_class_kl_of_a_generator_that_emits_some_classes():
    real_hist = np.full(10, 0.1)
    three = np.repeat([0, 1, 2], 100)  # only classes 0-2, evenly
    assert mode_coverage(three, real_hist) == pytest.approx(0.3)
    assert class_kl(three, real_hist) == pytest.approx(math.log(10 / 3))
    all_ten = np.repeat(np.arange(10), 30)
    assert mode_coverage(all_ten, real_hist) == 1.0
    assert class_kl(all_ten, real_hist) == pytest.approx(0.0, abs=1e-12)
    # a few stray labels (classifier mistakes) do not count as modes, but do for the Stacked MNIST count
    stray = np.concatenate([three, [5, 7]])
    assert mode_coverage(stray, real_hist) == pytest.approx(0.3)
    assert modes_covered(stray, 10) == 5


def test_class_histogram_checks_labels():
    assert class_histogram([0, 0, 2, 3], 4).tolist() == [0.5, 0.0, 0.25, 0.25]
    with pytest.raises(ValueError):
        class_histogram([0, 4], 4)


def test_conditional_accuracy_per_class_and_balanced():
    requested = np.array([0, 0, 0, 0, 1, 1])
    predicted = np.array([0, 0, 0, 1, 0, 0])
    acc = per_class_accuracy(predicted, requested, 3)
    assert acc[:2].tolist() == [0.75, 0.0] and np.isnan(acc[2])
    assert conditional_accuracy(predicted, requested, 3) == pytest.approx(0.375)  # not 3/6: classes weigh the same


# ---- sliced Wasserstein distance on Laplacian-pyramid patches (ProGAN's metric) --------------


def test_laplacian_pyramid_reconstructs_the_image_and_swd_sees_blur_at_the_finest_level():
    from gan.metrics.swd import laplacian_pyramid, pyr_down, pyr_up, pyramid_swd

    g = torch.Generator().manual_seed(0)
    base = torch.rand(64, 3, 8, 8, generator=g) * 2 - 1
    images = torch.nn.functional.interpolate(base, size=32, mode="bilinear", align_corners=False)  # smooth structure
    images = (images + 0.3 * torch.randn(64, 3, 32, 32, generator=g)).clamp(-1, 1)  # and fine texture
    bands = laplacian_pyramid(images)
    assert [b.shape[-1] for b in bands] == [32, 16]
    assert torch.allclose(bands[0] + pyr_up(bands[1]), images, atol=1e-5)
    other = images[torch.randperm(64, generator=g)]
    same = pyramid_swd(images, other, nhoods_per_image=128)  # the same images: only the patch draw differs
    assert set(same) == {"swd/32", "swd/16", "swd"}
    blurred = pyramid_swd(images, pyr_up(pyr_down(images)), nhoods_per_image=128)
    # blur moves the fine band far more than the coarse one (here 4.7x against 1.6x)
    assert blurred["swd/32"] / same["swd/32"] > 2 * blurred["swd/16"] / same["swd/16"] > 2
    with pytest.raises(ValueError, match="must share channels and size"):
        pyramid_swd(images, images[:, :1])
