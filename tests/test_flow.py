"""Flow matching against closed forms: the Gaussian-data velocity field, solver grids, CFG algebra."""
from __future__ import annotations

import pytest
import torch
from torchdiffeq import odeint

from reasonaudio import flow


def gaussian_velocity(mu: float, sigma: float):
    """Optimal velocity for x1 ~ N(mu, sigma²), x0 ~ N(0, 1) independent: v*(x, t) = E[x1 − x0 | x_t = x].

    x_t = (1 − t)·x0 + t·x1 and v = x1 − x0 are jointly Gaussian with E[x_t] = t·mu, E[v] = mu,
    Var(x_t) = (1 − t)² + t²·sigma², Cov(v, x_t) = t·sigma² − (1 − t), so the regression is linear:
    v*(x, t) = mu + (t·sigma² − (1 − t)) / ((1 − t)² + t²·sigma²) · (x − t·mu). Its flow is the monotone
    map x_t = t·mu + s(t)·x0 with s(t) = sqrt((1 − t)² + t²·sigma²), so x0 ↦ mu + sigma·x0 at t = 1.
    """
    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, *([1] * (x.dim() - 1)))
        return mu + (t * sigma ** 2 - (1 - t)) / ((1 - t) ** 2 + t ** 2 * sigma ** 2) * (x - t * mu)
    return v


def test_gaussian_velocity_is_the_conditional_mean():
    """Monte-Carlo check of the derivation: regressing x1 − x0 on x_t recovers the analytic slope."""
    mu, sigma, t = 1.5, 0.5, 0.3
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(200_000, generator=g, dtype=torch.float64), mu + sigma * torch.randn(200_000, generator=g,
                                                                                             dtype=torch.float64)
    xt, v = flow.interpolate(x0, x1, torch.full_like(x0, t)), flow.target_velocity(x0, x1)
    slope = torch.cov(torch.stack([v, xt]))[0, 1] / xt.var()
    analytic = gaussian_velocity(mu, sigma)(torch.tensor([[0.0], [1.0]], dtype=torch.float64), torch.tensor(t))
    assert float(slope) == pytest.approx(float(analytic[1] - analytic[0]), abs=0.01)


@pytest.mark.parametrize("mu, sigma", [(2.0, 0.5), (-1.0, 2.0)])
def test_sampler_maps_noise_to_the_data_gaussian(mu, sigma):
    x0 = torch.randn(10_000, 1, generator=torch.Generator().manual_seed(0))
    v = gaussian_velocity(mu, sigma)
    exact = mu + sigma * x0
    adaptive = flow.sample(v, x0, method="dopri5")
    assert (adaptive - exact).abs().max() < 1e-3  # measured ~3e-5
    midpoint = flow.sample(v, x0, steps=25, method="midpoint")
    assert (midpoint - exact).abs().max() < 1e-2
    tol = 4 * sigma / 10_000 ** 0.5  # sampling error of the mean of 10k samples
    for x1, rel_std in ((adaptive, 0.01), (midpoint, 0.01), (flow.sample(v, x0), 0.08)):
        # Euler-25 is first order: on this curved field it lands ~6 % narrow (0.472 for sigma 0.5)
        assert float(x1.mean()) == pytest.approx(mu, abs=tol)
        assert float(x1.std()) == pytest.approx(sigma, rel=rel_std)


def test_euler_25_is_torchdiffeq_euler_with_step_004():
    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(3 * x) + t[:, None, None] * x ** 2

    x0 = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(1))
    calls = []
    ours = flow.sample(lambda x, t: calls.append(t) or v(x, t), x0)
    ref = odeint(lambda t, x: v(x, t.expand(x.shape[0])), x0, torch.tensor([0.0, 1.0]), method="euler",
                 options={"step_size": 0.04})[-1]
    assert torch.equal(ours, ref)
    assert len(calls) == 25 and all(t.shape == (3,) for t in calls)
    torch.testing.assert_close(torch.stack([t[0] for t in calls]), torch.arange(25) / 25)
    calls.clear()
    flow.sample(lambda x, t: calls.append(t) or v(x, t), x0, steps=7, method="midpoint")
    assert len(calls) == 14
    with pytest.raises(ValueError, match="method"):
        flow.sample(v, x0, method="rk4")


def conditional_model(calls: list):
    """A toy network whose output depends nonlinearly on x, t and every condition keyword."""
    def model(x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return torch.tanh(x * emb.mean(1, keepdim=True) + t[:, None]) + flag[:, None].float() * emb[:, :1]
    return model


def test_cfg_batched_equals_two_calls():
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(4, 6, generator=g), torch.rand(4, generator=g)
    cond = {"emb": torch.randn(4, 3, generator=g), "flag": torch.ones(4, dtype=torch.bool)}
    uncond = {"emb": torch.randn(4, 3, generator=g), "flag": torch.zeros(4, dtype=torch.bool)}
    calls: list = []
    model = conditional_model(calls)
    guided = flow.cfg_velocity(model, x, t, cond, uncond, w=4.5)
    assert calls == [8]  # one network call on the doubled batch
    v_c, v_u = model(x, t, **cond), model(x, t, **uncond)
    assert (guided - (v_u + 4.5 * (v_c - v_u))).abs().max() <= 1e-6
    torch.testing.assert_close(flow.cfg_velocity(model, x, t, cond, uncond, w=1.0), v_c, atol=1e-6, rtol=0)
    torch.testing.assert_close(flow.cfg_velocity(model, x, t[0], cond, uncond, w=0.0), model(x, t[0].expand(4),
                                                                                            **uncond))
    with pytest.raises(ValueError, match="same keys"):
        flow.cfg_velocity(model, x, t, cond, {"emb": uncond["emb"]})


def test_loss_path_and_t_sampler():
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(5, 7, 3, generator=g), torch.randn(5, 7, 3, generator=g)
    t = flow.sample_t(5, generator=g)
    xt = flow.interpolate(x0, x1, t)
    assert torch.equal(flow.interpolate(x0, x1, torch.zeros(5)), x0) and torch.equal(
        flow.interpolate(x0, x1, torch.ones(5)), x1)
    # the target is the path's time derivative
    eps = 1e-3
    torch.testing.assert_close((flow.interpolate(x0, x1, t + eps) - xt) / eps, flow.target_velocity(x0, x1),
                               atol=1e-3, rtol=0)
    assert flow.loss(x1 - x0, x0, x1) == 0
    assert flow.loss(x1 - x0 + 0.5, x0, x1) == pytest.approx(0.25)

    ts = flow.sample_t(100_000, generator=torch.Generator().manual_seed(4))
    assert ts.min() > 0 and ts.max() < 1
    assert float(ts.median()) == pytest.approx(0.5, abs=0.01)
    logits = torch.logit(ts.double())
    assert float(logits.mean()) == pytest.approx(0.0, abs=0.02) and float(logits.std()) == pytest.approx(1.0, abs=0.02)


def test_fixed_t_grid_loss_is_deterministic():
    x1 = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(5))

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * x + t[:, None, None]

    first = flow.fixed_t_grid_loss(model, x1, noise_seed=7)
    assert first.shape == (9,) and torch.equal(first, flow.fixed_t_grid_loss(model, x1, noise_seed=7))
    assert not torch.equal(first, flow.fixed_t_grid_loss(model, x1, noise_seed=8))
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(7))
    t = torch.full((3,), 0.3)
    assert float(first[2]) == pytest.approx(float(flow.loss(model(flow.interpolate(x0, x1, t), t), x0, x1)))
