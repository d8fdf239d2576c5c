"""Flow matching: the straight path, its loss, classifier-free guidance and the ODE sampler (DESIGN §6).

Convention (MMAudio, σ_min = 0): x0 ~ N(0, I) is noise at t = 0, x1 is data at t = 1,

    x_t = (1 − t)·x0 + t·x1,        target velocity v = dx_t/dt = x1 − x0.

A velocity function is ``velocity_fn(x [B, ...], t [B]) -> v [B, ...]``; bind the conditions with a
closure (or :func:`cfg_velocity`). Everything here is pure: no modules, no state.
"""
from __future__ import annotations

from typing import Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torchdiffeq import odeint

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(x [B, ...], t [B]) -> velocity [B, ...]``."""

DEFAULT_T_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t [B]`` → ``[B, 1, …, 1]`` broadcastable against ``x [B, ...]``."""
    return t.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Point on the path: ``(1 − t)·x0 + t·x1`` for ``x0, x1 [B, ...]``, ``t [B]``."""
    t = _bcast(t, x0)
    return (1 - t) * x0 + t * x1


def target_velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Regression target ``x1 − x0`` (constant along the straight path)."""
    return x1 - x0


def sample_t(batch: int, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None,
             device: torch.device | str | None = None) -> torch.Tensor:
    """Logit-normal flow times ``sigmoid(N(mean, std²))``, shape ``[batch]``, in (0, 1) (SD3 / MMAudio)."""
    z = torch.randn(batch, generator=generator, device=device)
    return torch.sigmoid(mean + std * z)


def loss(velocity: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Flow-matching MSE between predicted ``velocity`` and ``x1 − x0``, mean over all elements."""
    return F.mse_loss(velocity, target_velocity(x0, x1))


def fixed_t_grid_loss(model_fn: VelocityFn, x1: torch.Tensor, noise_seed: int,
                      ts: Sequence[float] = DEFAULT_T_GRID) -> torch.Tensor:
    """Validation loss at fixed times with fixed noise, comparable across runs and checkpoints.

    The noise is drawn on the CPU from ``noise_seed`` (so it is the same on any device) and shared by
    all ``ts``; a random t would add sampling noise that dwarfs the differences between checkpoints.

    Args:
        model_fn: velocity function with the conditions bound.
        x1: data ``[B, ...]``.
        noise_seed: seed of the noise x0.
        ts: flow times of the grid.

    Returns:
        ``[len(ts)]`` losses, one per time (their mean is the validation loss).
    """
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(noise_seed)).to(x1)
    losses = []
    for t in ts:
        tt = torch.full((x1.shape[0],), t, device=x1.device, dtype=x1.dtype)
        losses.append(loss(model_fn(interpolate(x0, x1, tt), tt), x0, x1))
    return torch.stack(losses)


def cfg_velocity(model_fn: Callable[..., torch.Tensor], x: torch.Tensor, t: torch.Tensor,
                 cond: Mapping[str, torch.Tensor], uncond: Mapping[str, torch.Tensor], w: float = 4.5) -> torch.Tensor:
    """Classifier-free guidance ``v_u + w·(v_c − v_u)`` from ONE network call on the doubled batch.

    ``model_fn(x, t, **kwargs)`` is called once with ``[x; x]``, ``[t; t]`` and every keyword
    ``[cond[k]; uncond[k]]`` concatenated along the batch. ``uncond`` is usually the null condition
    (e.g. ``has_text`` and ``has_video`` False); for a negative prompt it holds the negative
    condition instead (its query tokens with ``has_text`` True, video dropped, as MMAudio does).
    ``w = 1`` is the conditional velocity; ``w = 0`` the unconditional one.

    Args:
        model_fn: the network, e.g. :class:`reasonaudio.models.dit.MMDiT`.
        x: latents ``[B, ...]``.
        t: flow time ``[B]`` (or a scalar).
        cond: keyword tensors ``[B, ...]`` of the conditional branch.
        uncond: the same keywords for the unconditional (or negative) branch.
        w: guidance scale.
    """
    if cond.keys() != uncond.keys():
        raise ValueError(f"cond and uncond need the same keys, got {sorted(cond)} and {sorted(uncond)}")
    t = t.reshape(-1).expand(x.shape[0])
    kwargs = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
    v_cond, v_uncond = model_fn(torch.cat([x, x]), torch.cat([t, t]), **kwargs).chunk(2)
    return v_uncond + w * (v_cond - v_uncond)


def sample(velocity_fn: VelocityFn, x0: torch.Tensor, steps: int = 25,
           method: Literal["euler", "midpoint", "dopri5"] = "euler", rtol: float = 1e-5, atol: float = 1e-5
           ) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) from t = 0 (noise ``x0``) to t = 1 with torchdiffeq.

    Fixed-step methods take ``steps`` steps of ``1 / steps`` (Euler, 25 steps = step 0.04 by default;
    the grid is torchdiffeq's ``step_size`` grid, built here so that no rounding can add a step);
    ``dopri5`` adapts its steps to ``rtol`` / ``atol`` and ignores ``steps``. Run it under
    ``torch.no_grad()`` unless gradients through the sampler are wanted.

    Returns:
        ``x1 [B, ...]``.
    """
    if method not in ("euler", "midpoint", "dopri5"):
        raise ValueError(f"method must be 'euler', 'midpoint' or 'dopri5', got {method!r}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")

    def func(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return velocity_fn(x, t.expand(x.shape[0]))

    span = torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device)
    options = None
    if method != "dopri5":
        def grid(_func: object, _y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            points = torch.arange(steps + 1, dtype=t.dtype, device=t.device) * (1.0 / steps) + t[0]
            points[-1] = t[-1]
            return points
        options = {"grid_constructor": grid}
    return odeint(func, x0, span, rtol=rtol, atol=atol, method=method, options=options)[-1]
