"""Euler sampling with classifier-free guidance, each step one compiled graph (CUDA graphs on a GPU).

:func:`reasonaudio.flow.sample` integrates with torchdiffeq and calls the network eagerly: at batch 1 on a
GPU, a step of a small DiT is a few hundred short kernel launches, and sampling is bound by launching
them, not by the GPU (docs/benchmarks.md: an 8 s clip took 1.23 s at batch 1 and 1.25 s at batch 16).
:class:`CompiledEulerSampler` compiles the whole guided step,

    x ← x + dt · (v_u + w · (v_c − v_u)),   [v_c; v_u] = net([x; x], [t; t], [cond; uncond]),

with :func:`torch.compile` and static shapes: each (batch, length) bucket gets its own graph, compiled on
first use. On CUDA the mode is ``reduce-overhead``, which records the graph as a CUDA graph and replays it
(one launch per step); on the CPU it is the default mode (inductor's fused kernels, no graphs). The time
grid is :func:`reasonaudio.flow.sample`'s Euler grid, so both paths compute the same integral (tested on
the CPU against the eager path; ``make gpu-check`` compares them on a GPU).
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from reasonaudio import flow

MAX_SHAPES = 64
"""Graphs kept for the compiled step, one per (batch, length) bucket; torch's default recompile limit (8) would
silently send a run with more buckets back to eager."""

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
"""Inductor modes that record CUDA graphs: their outputs live in the graph's memory, overwritten by the next
replay."""


class CompiledEulerSampler:
    """Guided Euler sampler whose step is compiled once per shape.

    Args:
        net: the velocity network, called as ``net(x, t, **condition)``.
        mode: :func:`torch.compile` mode (inductor); default ``reduce-overhead`` (CUDA graphs) on CUDA inputs
            and the default mode elsewhere.
        backend: :func:`torch.compile` backend (``inductor``; tests use ``aot_eager`` or a counting backend).
    """

    def __init__(self, net: nn.Module, mode: str | None = None, backend: str | Callable = "inductor"):
        self.net = net
        self.mode = mode
        self.backend = backend
        self._compiled: dict[str, Callable[..., torch.Tensor]] = {}  # per device type

    def _guided_step(self, x: torch.Tensor, t: torch.Tensor, dt: torch.Tensor, cond: Mapping[str, torch.Tensor],
                     uncond: Mapping[str, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        return x + dt * flow.cfg_velocity(self.net, x, t, cond, uncond, w)

    def step_fn(self, device: torch.device) -> Callable[..., torch.Tensor]:
        """The compiled step for tensors on ``device`` (compiled lazily; shapes are static)."""
        kind = device.type
        if kind not in self._compiled:
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, MAX_SHAPES)
            options = {"mode": self._mode(device)} if self.backend == "inductor" else {}
            self._compiled[kind] = torch.compile(self._guided_step, backend=self.backend, dynamic=False, **options)
        return self._compiled[kind]

    def _mode(self, device: torch.device) -> str:
        return self.mode or ("reduce-overhead" if device.type == "cuda" else "default")

    @torch.no_grad()
    def __call__(self, x0: torch.Tensor, cond: Mapping[str, torch.Tensor], uncond: Mapping[str, torch.Tensor],
                 steps: int = 25, w: float = 4.5) -> torch.Tensor:
        """Integrate from noise ``x0 [B, ...]`` (t = 0) to t = 1 in ``steps`` Euler steps with guidance ``w``.

        ``cond`` / ``uncond`` are the network's keyword tensors ``[B, ...]`` (see
        :func:`reasonaudio.flow.cfg_velocity`). Returns ``x1 [B, ...]``.
        """
        if steps < 1:
            raise ValueError(f"steps must be positive, got {steps}")
        step = self.step_fn(x0.device)
        cuda_graphs = self.backend == "inductor" and self._mode(x0.device) in CUDA_GRAPH_MODES \
            and x0.device.type == "cuda"
        grid = torch.arange(steps + 1, dtype=x0.dtype) * (1.0 / steps)  # flow.sample's Euler grid
        grid[-1] = 1.0
        grid = grid.to(x0.device)
        weight = torch.tensor(w, dtype=x0.dtype, device=x0.device)
        batch = x0.shape[0]
        x = x0
        for i in range(steps):
            if cuda_graphs:  # a new replay: the previous step's output is read (cloned) before it is overwritten
                torch.compiler.cudagraph_mark_step_begin()
            x = step(x, grid[i].expand(batch), grid[i + 1] - grid[i], cond, uncond, weight)
            if cuda_graphs:
                x = x.clone()
        return x
