"""Fréchet distance: closed forms, pytorch-fid's reference implementation, the epsilon retry, and metric states."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from reasonaudio.metrics import frechet
from reasonaudio.metrics.backbones.panns import CNN14_TINY, Cnn14
from reasonaudio.metrics.backbones.vggish import VGGISH_TINY, VGGish
from reasonaudio.metrics.frechet import FrechetDistance, frechet_distance, gaussian_statistics


def _random_cov(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_identical_sets_have_zero_distance():
    rng = np.random.default_rng(0)
    feats = torch.from_numpy(rng.normal(size=(300, 16)) * 2 + 1)
    metric = FrechetDistance(num_features=16)
    metric.update(feats, real=True)
    metric.update(feats, real=False)
    assert abs(float(metric.compute())) < 1e-9
    mu, sigma = gaussian_statistics(feats)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_closed_form_diagonal_and_scaled_covariances():
    mu1, mu2 = np.array([1.0, -2.0, 0.5]), np.array([0.0, 1.0, 0.5])
    a, b = np.array([4.0, 1.0, 0.25]), np.array([1.0, 9.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # 10 + 1 + 4 + 0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(15.0)
    # Σ₂ = c²Σ₁ (full, non-diagonal): tr(Σ₁ + c²Σ₁ − 2cΣ₁) = (1 − c)² tr Σ₁
    rng = np.random.default_rng(1)
    s1, c = _random_cov(6, rng), 1.7
    assert frechet_distance(np.zeros(6), s1, np.zeros(6), c * c * s1) == pytest.approx((1 - c) ** 2 * np.trace(s1),
                                                                                       rel=1e-10)


def test_general_covariances_match_the_eigenvalue_form():
    """tr (Σ₁Σ₂)^½ = Σ √λ(Σ₁Σ₂): the eigenvalues of a product of SPD matrices are real and positive."""
    rng = np.random.default_rng(2)
    s1, s2 = _random_cov(8, rng), _random_cov(8, rng)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    trace_sqrt = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).real))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_sampled_gaussians_approach_the_analytic_distance():
    rng = np.random.default_rng(3)
    d, n = 4, 40000
    mu1, mu2 = np.array([0.0, 1.0, 2.0, -1.0]), np.array([0.5, 1.0, 1.0, -1.5])
    s1, s2 = _random_cov(d, rng), _random_cov(d, rng)
    analytic = frechet_distance(mu1, s1, mu2, s2)
    metric = FrechetDistance(num_features=d)
    for half in range(2):  # two batches per side
        metric.update(torch.from_numpy(rng.multivariate_normal(mu1, s1, n // 2)), real=True)
        metric.update(torch.from_numpy(rng.multivariate_normal(mu2, s2, n // 2)), real=False)
    assert float(metric.compute()) == pytest.approx(analytic, rel=0.03)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("n,d", [(500, 32), (40, 64)])  # the second has singular covariances (n < d)
def test_matches_pytorch_fid(n, d):
    rng = np.random.default_rng(4)
    real = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d) + rng.normal(size=d)
    fake = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d)
    mu_f, s_f = gaussian_statistics(fake)
    mu_r, s_r = gaussian_statistics(real)
    expected = calculate_frechet_distance(mu_f, s_f, mu_r, s_r)
    assert frechet_distance(mu_f, s_f, mu_r, s_r) == pytest.approx(expected, rel=1e-6)
    # the metric's float64 running sums give the same statistics as np.cov
    metric = FrechetDistance(num_features=d)
    for chunk in np.array_split(real, 3):
        metric.update(torch.from_numpy(chunk).float(), real=True)
    metric.update(torch.from_numpy(fake).float(), real=False)
    mu32, s32 = gaussian_statistics(real.astype(np.float32))
    mu, cov = metric.statistics(real=True)
    np.testing.assert_allclose(mu.numpy(), mu32, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), s32, rtol=1e-7, atol=1e-9)
    assert float(metric.compute()) == pytest.approx(
        calculate_frechet_distance(*gaussian_statistics(fake.astype(np.float32)), mu32, s32), rel=1e-6)


def test_non_finite_square_root_is_retried_with_epsilon(monkeypatch):
    rng = np.random.default_rng(5)
    s1, s2 = _random_cov(5, rng), _random_cov(5, rng)
    calls = []
    real_sqrtm = scipy.linalg.sqrtm

    def flaky_sqrtm(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(frechet.scipy.linalg, "sqrtm", flaky_sqrtm)
    value = frechet_distance(np.zeros(5), s1, np.ones(5), s2, eps=1e-3)
    assert len(calls) == 2
    offset = np.eye(5) * 1e-3
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset))
    expected = 5 + np.trace(s1) + np.trace(s2) - 2 * np.trace(real_sqrtm((s1 + offset) @ (s2 + offset)).real)
    assert value == pytest.approx(expected, rel=1e-12)


def test_invalid_inputs_are_errors():
    with pytest.raises(ValueError, match="imaginary component"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="one D"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="finite"):
        frechet_distance(np.array([np.nan, 0]), np.eye(2), np.zeros(2), np.eye(2))
    metric = FrechetDistance(num_features=3)
    metric.update(torch.zeros(1, 3), real=True)
    metric.update(torch.zeros(5, 3), real=False)
    with pytest.raises(ValueError, match="at least 2 real"):
        metric.compute()
    with pytest.raises(ValueError, match=r"embeddings \[N, 3\]"):
        metric.update(torch.zeros(2, 4), real=True)
    with pytest.raises(ValueError, match="backbone or num_features"):
        FrechetDistance()


def test_states_merge_like_one_process():
    """Two ranks' states (sums) merge into exactly the single-process statistics."""
    rng = np.random.default_rng(6)
    real, fake = torch.from_numpy(rng.normal(size=(90, 8))), torch.from_numpy(rng.normal(size=(70, 8)) + 0.3)
    single = FrechetDistance(num_features=8)
    single.update(real, real=True)
    single.update(fake, real=False)
    rank0, rank1 = FrechetDistance(num_features=8), FrechetDistance(num_features=8)
    rank0.update(real[:50], real=True)
    rank0.update(fake[:20], real=False)
    rank1.update(real[50:], real=True)
    rank1.update(fake[20:], real=False)
    rank0.merge_state(rank1)
    assert float(rank0.real_count) == 90 and float(rank0.fake_count) == 70
    assert float(rank0.compute()) == pytest.approx(float(single.compute()), rel=1e-12)


def test_reset_can_keep_the_ground_truth_statistics():
    rng = np.random.default_rng(7)
    real = torch.from_numpy(rng.normal(size=(40, 4)))
    metric = FrechetDistance(num_features=4, reset_real_features=False)
    metric.update(real, real=True)
    metric.update(real + 1, real=False)
    first = float(metric.compute())
    metric.reset()
    assert float(metric.real_count) == 40 and float(metric.fake_count) == 0
    metric.update(real + 1, real=False)
    assert float(metric.compute()) == pytest.approx(first, rel=1e-12) and first == pytest.approx(4.0, rel=1e-9)
    plain = FrechetDistance(num_features=4)
    plain.update(real, real=True)
    plain.reset()
    assert float(plain.real_count) == 0


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 3 clips of 32-d embeddings
def test_backbone_waveforms_and_pooled_vggish_windows():
    torch.manual_seed(0)
    wav_real, wav_fake = 0.1 * torch.randn(3, 32000), 0.1 * torch.randn(3, 32000)
    panns = Cnn14(CNN14_TINY)
    metric = FrechetDistance(panns)
    metric.update(wav_real, real=True, sample_rate=32000)
    metric.update(wav_fake, real=False, sample_rate=32000)
    direct = FrechetDistance(num_features=panns.embedding_dim)
    direct.update(panns.embed(wav_real, 32000).embedding, real=True)
    direct.update(panns.embed(wav_fake, 32000).embedding, real=False)
    assert float(metric.compute()) == pytest.approx(float(direct.compute()), rel=1e-9)
    vggish = FrechetDistance(VGGish(VGGISH_TINY), max_seconds=1.5)
    vggish.update(wav_real, real=True, sample_rate=16000)  # 2 s cut to 1.5 s → one 0.96 s window per clip
    vggish.update(torch.cat([wav_fake, wav_fake]), real=False, sample_rate=8000)  # 4 s cut → 1 window each
    assert float(vggish.real_count) == 3 and float(vggish.fake_count) == 6
    with pytest.raises(ValueError, match="sample_rate"):
        metric.update(wav_real, real=True)
