"""Triple-stream MM-DiT velocity network (paper §4.3, Table 7; DESIGN §5).

Legend: B batch, T latent tokens, C latent channels, Nq query tokens, Dq query width, Ts Synchformer
tokens, S Synchformer width (768), D model width, H heads, K head dim (D / H), L tokens of a stream.

Three token streams share one attention per joint block::

    audio latents  [B, T, C]   → Linear-SiLU-Linear → [B, T, D]   (RoPE at positions 0 … T−1)
    query tokens   [B, Nq, Dq] → Linear-SiLU-Linear → [B, Nq, D]  (no RoPE: a set, not a sequence)
    sync tokens    [B, Ts, S]  → Linear-SiLU-Linear → [B, Ts, D]  (RoPE at positions i · T / Ts)

A joint block gives every stream its own adaLN-Zero modulation, qkv projection (RMSNorm on q and k,
per head), output projection and SwiGLU MLP, and runs ONE scaled-dot-product attention over the
concatenation ``[audio | queries | sync]`` (SD3 / MMAudio). In the last joint block the query and
sync streams are "pre-only" (as in MMAudio): nothing reads their outputs, so they only offer keys
and values, and hold no weights without a gradient (MMAudio's pre-only blocks still compute an
unused query). The audio-only blocks that follow are the same block with one stream.

Sync tokens and audio latents share one time axis, in latent units (latent i at position i): sync
token j of window w pools frames 8w + 2j and 8w + 2j + 1 of the 25-fps video (windows of 16 frames
every 8), so it shows the moment (8w + 2j + 0.5) / 25 s and sits at that time × the latent rate
(:func:`sync_token_times`). The windows overlap by half: the 192 tokens of 8 s cover 0 … 8 s, most
frames twice, in an order that goes back 0.24 s at every window boundary. MMAudio spreads them uniformly
instead (token i at i · T / Ts), which puts a token up to 0.3 s away from what it shows (docs/
decisions.md, "Where the sync tokens sit in time"); ``latent_rate=None`` keeps that layout. A latent and
a sync token showing the same moment get the same rotation, so relative positions in attention are
time differences.

Conditioning: adaLN reads ``c = t_embed(t) + cond_mlp([mean(queries), mean(sync)])`` (projected
tokens, after null substitution), shape ``[B, 1, D]``. Dropped conditions (CFG dropout, T2A items
without video) are the flags ``has_text`` / ``has_video``: the whole query / sync sequence of such an
item is replaced by a learned null vector before projection (MMAudio's ``empty_*_feat``), so a
missing condition is never a tensor of zeros by accident. The final projection is zero-initialised
and every adaLN gate starts at zero, so the initial velocity is exactly 0.

``sync_adaln=True`` adds MMAudio's conditional synchronisation module: sync tokens plus a learnable
position-within-segment embedding (8 tokens per Synchformer window) are projected, brought to the T
latents and added to ``c`` per token, so the audio stream's adaLN (joint blocks, audio-only blocks
and the final layer) is modulated frame by frame. Latent i reads the tokens whose frames overlap its
span, weighted by the overlap (:func:`sync_latent_weights`; the nearest token past the last window);
with ``latent_rate=None`` it reads token floor((i + 0.5) · Ts / T), MMAudio's nearest-exact upsampling.
MMAudio's final layer reads the global ``c`` only (its issue #55, kept there for checkpoint
compatibility); this network is not checkpoint-compatible with MMAudio anyway, so the final layer
reads the per-token signal as well. Sync tokens stay attention tokens either way.

RoPE tables follow the input lengths: those of the configured duration are non-persistent buffers
(:meth:`MMDiT.set_lengths` changes it), any other duration's are built on first use and cached per
length (:meth:`MMDiT.rotations`); checkpoints do not depend on the duration.
"""
from __future__ import annotations

import math
from typing import Collection, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from reasonaudio import config

# --------------------------------------------------------------------------- sync token times


def sync_token_times(sync_len: int) -> torch.Tensor:
    """``[Ts]`` float64 seconds: the moment each Synchformer token shows.

    Window w starts at frame 8w; its token j pools frames 8w + 2j and 8w + 2j + 1 (temporal patch 2),
    which show the scene at their index / 25 s, so the token shows (8w + 2j + 0.5) / 25 s.
    """
    per_window = config.SYNC_TOKENS_PER_WINDOW
    if sync_len < 1 or sync_len % per_window:
        raise ValueError(f"sync length {sync_len} is not a positive multiple of {per_window} tokens per "
                         f"Synchformer window")
    frames_per_token = config.SYNC_WINDOW // per_window
    index = torch.arange(sync_len, dtype=torch.float64, device="cpu")
    first = config.SYNC_STRIDE * (index // per_window) + frames_per_token * (index % per_window)
    return (first + (frames_per_token - 1) / 2) / config.SYNC_FPS


def sync_latent_weights(sync_len: int, latent_len: int, latent_rate: float) -> torch.Tensor:
    """``[T, Ts]``: row i averages the sync tokens that show latent i's moments.

    Latent i stands for the span (i ± 0.5) / ``latent_rate`` s and a token for its two frames,
    (first − 0.5) / 25 … (first + 1.5) / 25 s; the weight is the length of their overlap, rows
    normalised to sum 1. A latent that no token overlaps (after the last window: the 88 tokens of 4 s
    end at 3.82 s) takes the token nearest in time.
    """
    if latent_len < 1 or not latent_rate > 0:
        raise ValueError(f"need latent_len >= 1 and latent_rate > 0, got {latent_len}, {latent_rate}")
    centre = sync_token_times(sync_len)  # [Ts]
    half_token = config.SYNC_WINDOW / config.SYNC_TOKENS_PER_WINDOW / config.SYNC_FPS / 2
    latent = torch.arange(latent_len, dtype=torch.float64, device="cpu") / latent_rate  # [T]
    lo = torch.maximum(latent[:, None] - 0.5 / latent_rate, centre - half_token)
    hi = torch.minimum(latent[:, None] + 0.5 / latent_rate, centre + half_token)
    weights = (hi - lo).clamp(min=0)  # [T, Ts]
    uncovered = weights.sum(1) == 0
    nearest = (latent[:, None] - centre).abs().argmin(1)
    weights[uncovered, nearest[uncovered]] = 1.0
    return (weights / weights.sum(1, keepdim=True)).float()


# --------------------------------------------------------------------------- rotary embedding


def rope_table(positions: torch.Tensor, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation table of 1-D RoPE: ``[L] positions → [L, dim / 2, 2]`` (cos, sin) of ``position · θ^(−2i/dim)``.

    Angles are computed in float64 so that equal positions reached by different arithmetic
    (``125`` and ``96 · 250 / 192``) give bit-identical tables.
    """
    inv_freq = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)  # [dim/2]
    angles = positions.to(torch.float64)[:, None] * inv_freq  # [L, dim/2]
    return torch.stack([angles.cos(), angles.sin()], dim=-1).float()


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of ``x [B, H, L, K]`` by ``table [L, K/2, 2]`` (Flux-style pairs)."""
    dtype = torch.promote_types(x.dtype, torch.float32)  # rotate in at least float32 (bf16 angles drift)
    pairs = x.to(dtype).unflatten(-1, (-1, 2))  # [B, H, L, K/2, 2]
    cos, sin = table[..., 0].to(dtype), table[..., 1].to(dtype)  # [L, K/2]
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2).type_as(x)


# --------------------------------------------------------------------------- attention kernel

ATTENTION_BACKENDS: dict[str, tuple[SDPBackend, ...]] = {
    "cuda": (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
             SDPBackend.MATH),
}
"""SDPA kernels the joint attention may use, by device type, in order of preference.

On a GPU: FlashAttention-2 (bf16/fp16, head dim ≤ 256: every preset under autocast), then the
memory-efficient kernel (also fp32), then cuDNN, then the math reference, so an unsupported case
falls back instead of failing. The order is set explicitly rather than left to torch's heuristics,
whose default order has changed between releases (cuDNN first on H100 in 2.5.0). A device type
not listed (the CPU) keeps torch's own choice (its flash kernel for CPU). The attention has no mask,
so nothing disqualifies flash.
"""


def joint_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled-dot-product attention ``[B, H, L, K]`` on the backends of :data:`ATTENTION_BACKENDS`."""
    backends = ATTENTION_BACKENDS.get(q.device.type)
    if backends is None:
        return F.scaled_dot_product_attention(q, k, v)
    with sdpa_kernel(list(backends), set_priority=True):
        return F.scaled_dot_product_attention(q, k, v)


# --------------------------------------------------------------------------- layers


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x · (1 + scale) + shift``; shift/scale ``[B, 1 | L, D]`` broadcast over ``x [B, L, D]``."""
    return x * (1 + scale) + shift


def projection(in_dim: int, width: int) -> nn.Sequential:
    """Input projection of a stream: Linear → SiLU → Linear."""
    return nn.Sequential(nn.Linear(in_dim, width), nn.SiLU(), nn.Linear(width, width))


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) ⊙ w3 x)`` without biases (LLaMA / MMAudio MLP)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(width, hidden, bias=False)
        self.w3 = nn.Linear(width, hidden, bias=False)
        self.w2 = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, D]
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of ``t · time_scale`` → Linear → SiLU → Linear (DiT).

    Args:
        width: output width ``D``.
        freq_dim: sinusoidal features (cos and sin halves).
        max_period: longest sinusoid period.
        time_scale: multiplies t ∈ [0, 1] first. With raw t (MMAudio v1) the periods 1 … 10⁴ leave
            most features nearly constant over [0, 1]; DiT's t ∈ [0, 1000) range resolves it.
    """

    def __init__(self, width: int, freq_dim: int = 256, max_period: float = 10000.0, time_scale: float = 1000.0):
        super().__init__()
        self.time_scale = time_scale
        freqs = torch.exp(-math.log(max_period) * torch.arange(freq_dim // 2, dtype=torch.float32) / (freq_dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)  # [F/2]
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # [B] → [B, D]
        args = t.float()[:, None] * self.time_scale * self.freqs  # [B, F/2]
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


class StreamLayer(nn.Module):
    """One stream's share of an MM-DiT block: adaLN-Zero, qkv with q/k RMSNorm, output projection, SwiGLU.

    Args:
        width: model width ``D``.
        num_heads: attention heads ``H``.
        mlp_hidden: SwiGLU hidden width.
        pre_only: the stream's tokens are not read after this block, so it only offers keys and
            values to the other streams (``qkv`` projects to k, v; adaLN gives shift and scale only);
            a query, output projection or MLP here would be weights without a gradient.
    """

    def __init__(self, width: int, num_heads: int, mlp_hidden: int, pre_only: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.pre_only = pre_only
        self.head_dim = head_dim = width // num_heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(width, (2 if pre_only else 6) * width))
        self.qkv = nn.Linear(width, (2 if pre_only else 3) * width)
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6)
        if not pre_only:
            self.q_norm = nn.RMSNorm(head_dim, eps=1e-6)
            self.proj = nn.Linear(width, width)
            self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
            self.mlp = SwiGLU(width, mlp_hidden)

    def pre_attention(self, x: torch.Tensor, c: torch.Tensor, rope: torch.Tensor | None
                      ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """``x [B, L, D]``, ``c [B, 1 | L, D]`` → q (None if pre-only), k, v ``[B, H, L, K]`` and the modulation."""
        mods = self.adaln(c).chunk(2 if self.pre_only else 6, dim=-1)  # each [B, 1 | L, D]
        proj = self.qkv(modulate(self.norm1(x), mods[0], mods[1]))  # [B, L, (2 | 3)·D]
        heads = rearrange(proj, "b l (n h k) -> n b h l k", h=self.num_heads, k=self.head_dim)  # [2 | 3, B, H, L, K]
        q, k, v = (None, *heads) if self.pre_only else heads
        k = self.k_norm(k) if rope is None else apply_rope(self.k_norm(k), rope)
        if q is not None:
            q = self.q_norm(q) if rope is None else apply_rope(self.q_norm(q), rope)
        return q, k, v, mods

    def post_attention(self, x: torch.Tensor, attn: torch.Tensor, mods: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Residual output projection and MLP, gated; ``x, attn [B, L, D]``."""
        _, _, gate_attn, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + gate_attn * self.proj(attn)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class MMDiTBlock(nn.Module):
    """Per-stream layers around one joint attention over the concatenated streams.

    With one stream this is a plain (audio-only) DiT block.

    Args:
        width: model width ``D``.
        num_heads: attention heads.
        mlp_hidden: SwiGLU hidden width.
        streams: stream names, in the order of the tensors passed to :meth:`forward`.
        pre_only: streams that only offer keys and values (see :class:`StreamLayer`).
    """

    def __init__(self, width: int, num_heads: int, mlp_hidden: int, streams: Sequence[str],
                 pre_only: Collection[str] = ()):
        super().__init__()
        self.streams = nn.ModuleDict({name: StreamLayer(width, num_heads, mlp_hidden, name in pre_only)
                                      for name in streams})

    def forward(self, xs: Sequence[torch.Tensor], conds: Sequence[torch.Tensor],
                ropes: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        """``xs[i] [B, L_i, D]`` with adaLN inputs ``conds[i] [B, 1 | L_i, D]`` and RoPE tables (or None).

        Returns the updated streams; a pre-only stream comes back unchanged.
        """
        layers = list(self.streams.values())
        pre = [layer.pre_attention(x, c, rope) for layer, x, c, rope in zip(layers, xs, conds, ropes)]
        q = torch.cat([p[0] for p in pre if p[0] is not None], dim=2)  # [B, H, ΣL (querying streams), K]
        k, v = (torch.cat([p[i] for p in pre], dim=2) for i in (1, 2))  # [B, H, ΣL, K]
        attn = rearrange(joint_attention(q, k, v), "b h l k -> b l (h k)")
        outs = iter(attn.split([x.shape[1] for x, p in zip(xs, pre) if p[0] is not None], dim=1))
        return [x if layer.pre_only else layer.post_attention(x, next(outs), p[3])
                for layer, x, p in zip(layers, xs, pre)]


class FinalLayer(nn.Module):
    """LayerNorm → adaLN (shift, scale) → zero-initialised Linear(D → C)."""

    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # [B, T, D], [B, 1 | T, D] → [B, T, C]
        shift, scale = self.adaln(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class SyncAdaLN(nn.Module):
    """MMAudio's conditional synchronisation module: sync tokens → per-latent adaLN offsets.

    Args:
        sync_dim: Synchformer width ``S``.
        width: model width ``D``.
        tokens_per_segment: sync tokens per Synchformer window; each position gets a learned offset
            because the tokens of a window are not evenly spaced in time.

    ``forward(sync [B, Ts, S], weights [T, Ts])``: ``weights`` (:func:`sync_latent_weights`, or
    MMAudio's nearest-exact one-hot rows) bring the projected tokens to the T latents.
    """

    def __init__(self, sync_dim: int, width: int, tokens_per_segment: int = config.SYNC_TOKENS_PER_WINDOW):
        super().__init__()
        self.segment_pos = nn.Parameter(torch.zeros(tokens_per_segment, sync_dim))  # zero-init as MMAudio
        self.proj = projection(sync_dim, width)

    def forward(self, sync: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # [B, Ts, S], [T, Ts] → [B, T, D]
        if sync.shape[1] % self.segment_pos.shape[0]:
            raise ValueError(f"sync length {sync.shape[1]} is not a multiple of {self.segment_pos.shape[0]} "
                             f"tokens per Synchformer window")
        segments = sync.unflatten(1, (-1, self.segment_pos.shape[0])) + self.segment_pos  # [B, Ts/8, 8, S]
        return weights @ self.proj(segments.flatten(1, 2))  # [B, T, D]


# --------------------------------------------------------------------------- network


class MMDiT(nn.Module):
    """Triple-stream MM-DiT predicting the flow-matching velocity of audio latents.

    Args:
        latent_channels: latent width ``C`` (the VAE's).
        query_dim: width ``Dq`` of the semantic query tokens (the conditioner's ``out_dim``).
        sync_dim: width ``S`` of Synchformer tokens.
        latent_len: latent tokens ``T`` of the configured (training) duration (``SequenceConfig.latent_len``).
        sync_len: Synchformer tokens ``Ts`` of that duration (``SequenceConfig.sync_len``).
        width: model width ``D``.
        depth: blocks in all (joint + audio-only).
        joint_depth: leading joint (three-stream) blocks, 1 … ``depth``.
        num_heads: attention heads; ``width / num_heads`` must be even (RoPE rotates pairs).
        mlp_ratio: SwiGLU hidden width / ``width``.
        sync_adaln: also modulate the audio stream per token with sync tokens (MMAudio's module).
        rope_theta: RoPE base.
        latent_rate: latents per second. Given, every sync token sits at the moment it shows
            (:func:`sync_token_times`); None spreads them uniformly, i · T / Ts (MMAudio).
    """

    def __init__(self, latent_channels: int, query_dim: int, sync_dim: int = config.SYNC_DIM, latent_len: int = 250,
                 sync_len: int = 192, width: int = 448, depth: int = 12, joint_depth: int = 9, num_heads: int = 7,
                 mlp_ratio: float = 6.0, sync_adaln: bool = False, rope_theta: float = 10000.0,
                 latent_rate: float | None = None):
        super().__init__()
        if latent_rate is not None and not latent_rate > 0:
            raise ValueError(f"latent_rate must be positive or None, got {latent_rate}")
        self.latent_rate = latent_rate
        if width % num_heads or (width // num_heads) % 2:
            raise ValueError(f"width / num_heads must be an even integer, got width={width}, num_heads={num_heads}")
        if not 1 <= joint_depth <= depth:
            raise ValueError(f"joint_depth must be in 1 … depth={depth}, got {joint_depth}")
        self.latent_channels, self.query_dim, self.sync_dim = latent_channels, query_dim, sync_dim
        self.head_dim = width // num_heads
        self.rope_theta = rope_theta
        mlp_hidden = round(width * mlp_ratio)

        self.audio_in = projection(latent_channels, width)
        self.query_in = projection(query_dim, width)
        self.sync_in = projection(sync_dim, width)
        self.null_query = nn.Parameter(torch.randn(query_dim) * 0.02)
        self.null_sync = nn.Parameter(torch.randn(sync_dim) * 0.02)
        self.time_embed = TimestepEmbedder(width)
        self.cond_mlp = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width))
        self.sync_adaln = SyncAdaLN(sync_dim, width) if sync_adaln else None

        streams = ("audio", "queries", "sync")
        self.joint_blocks = nn.ModuleList(
            MMDiTBlock(width, num_heads, mlp_hidden, streams, pre_only=streams[1:] if i == joint_depth - 1 else ())
            for i in range(joint_depth))
        self.audio_blocks = nn.ModuleList(MMDiTBlock(width, num_heads, mlp_hidden, ("audio",))
                                          for _ in range(depth - joint_depth))
        self.final = FinalLayer(width, latent_channels)
        self._init_weights()
        self.set_lengths(latent_len, sync_len)

    def _init_weights(self) -> None:
        """Xavier linears, N(0, 0.02) timestep MLP, zero adaLN and final projection (MMAudio / DiT)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for layer in self.time_embed.mlp[0], self.time_embed.mlp[2]:
            nn.init.normal_(layer.weight, std=0.02)
        for module in self.modules():
            if isinstance(module, (StreamLayer, FinalLayer)):
                nn.init.zeros_(module.adaln[-1].weight)
                nn.init.zeros_(module.adaln[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def set_lengths(self, latent_len: int, sync_len: int) -> None:
        """Make ``latent_len`` latents and ``sync_len`` sync tokens the configured lengths (RoPE tables as buffers)."""
        if latent_len < 1 or sync_len < 1:
            raise ValueError(f"lengths must be positive, got latent_len={latent_len}, sync_len={sync_len}")
        self.latent_len, self.sync_len = latent_len, sync_len
        audio, sync, weights = self._time_axis(latent_len, sync_len, self.null_sync.device)
        self.register_buffer("rope_audio", audio, persistent=False)  # [T, K/2, 2]
        self.register_buffer("rope_sync", sync, persistent=False)  # [Ts, K/2, 2]
        self.register_buffer("sync_weights", weights, persistent=False)  # [T, Ts]
        self._rope_cache: dict[tuple[int, int, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def sync_positions(self, latent_len: int, sync_len: int) -> torch.Tensor:
        """``[Ts]`` float64 latent positions of the sync tokens (latent i at position i)."""
        if self.latent_rate is None:
            return torch.arange(sync_len, dtype=torch.float64, device="cpu") * latent_len / sync_len
        return sync_token_times(sync_len) * self.latent_rate

    def _time_axis(self, latent_len: int, sync_len: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RoPE tables of the latents (positions 0 … T − 1) and the sync tokens, and the ``[T, Ts]`` sync weights."""
        audio_pos = torch.arange(latent_len, dtype=torch.float64, device="cpu")  # built on the CPU, even under meta
        if self.latent_rate is None:  # MMAudio: nearest-exact, latent i reads token floor((i + 0.5) · Ts / T)
            nearest = ((audio_pos + 0.5) * sync_len / latent_len).floor().long().clamp(max=sync_len - 1)
            weights = F.one_hot(nearest, sync_len).float()
        else:
            weights = sync_latent_weights(sync_len, latent_len, self.latent_rate)
        tables = (rope_table(audio_pos, self.head_dim, self.rope_theta),
                  rope_table(self.sync_positions(latent_len, sync_len), self.head_dim, self.rope_theta), weights)
        return tuple(x.to(device) for x in tables)

    def rotations(self, latent_len: int, sync_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE tables ``[T, K/2, 2]`` and ``[Ts, K/2, 2]`` for ``latent_len`` latents and ``sync_len`` sync tokens.

        The buffers at the configured lengths; for any other duration, built on first use and cached
        per (lengths, device).
        """
        return self._time_axis_of(latent_len, sync_len)[:2]

    def _time_axis_of(self, latent_len: int, sync_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if (latent_len, sync_len) == (self.latent_len, self.sync_len):
            return self.rope_audio, self.rope_sync, self.sync_weights
        key = (latent_len, sync_len, self.rope_audio.device)
        if key not in self._rope_cache:
            self._rope_cache[key] = self._time_axis(latent_len, sync_len, self.rope_audio.device)
        return self._rope_cache[key]

    def forward(self, x: torch.Tensor, t: torch.Tensor, queries: torch.Tensor, sync: torch.Tensor,
                has_text: torch.Tensor, has_video: torch.Tensor) -> torch.Tensor:
        """Velocity of the latents.

        Args:
            x: noisy latents ``[B, T, C]``.
            t: flow time ``[B]`` in [0, 1] (0 = noise, 1 = data); a scalar is broadcast.
            queries: semantic query tokens ``[B, Nq, Dq]``.
            sync: Synchformer tokens ``[B, Ts, S]`` (T and Ts may be those of any duration).
            has_text: bool ``[B]``; False replaces the item's queries by the learned null.
            has_video: bool ``[B]``; False replaces the item's sync tokens by the learned null.

        Returns:
            velocity ``[B, T, C]``.
        """
        batch, latent_len, channels = x.shape
        if (channels, queries.shape[-1], sync.shape[-1]) != (self.latent_channels, self.query_dim, self.sync_dim):
            raise ValueError(f"expected widths C={self.latent_channels}, Dq={self.query_dim}, S={self.sync_dim}; "
                             f"got {channels}, {queries.shape[-1]}, {sync.shape[-1]}")
        queries = torch.where(has_text.bool()[:, None, None], queries, self.null_query)  # [B, Nq, Dq]
        sync = torch.where(has_video.bool()[:, None, None], sync, self.null_sync)  # [B, Ts, S]
        a, q, s = self.audio_in(x), self.query_in(queries), self.sync_in(sync)  # [B, T | Nq | Ts, D]

        t = t.reshape(-1).expand(batch)
        c = (self.time_embed(t) + self.cond_mlp(torch.cat([q.mean(1), s.mean(1)], dim=-1)))[:, None]  # [B, 1, D]
        rope_audio, rope_sync, sync_weights = self._time_axis_of(latent_len, sync.shape[1])
        c_audio = c if self.sync_adaln is None else c + self.sync_adaln(sync, sync_weights.to(sync.dtype))  # [B, 1 | T, D]
        for block in self.joint_blocks:
            a, q, s = block([a, q, s], [c_audio, c, c], [rope_audio, None, rope_sync])
        for block in self.audio_blocks:
            (a,) = block([a], [c_audio], [rope_audio])
        return self.final(a, c_audio)


# --------------------------------------------------------------------------- presets


def _build(width: int, depth: int, joint_depth: int, num_heads: int, mlp_ratio: float, latent_channels: int | None,
           query_dim: int | None, sync_dim: int, duration: float, audio_preset: str, latent_len: int | None,
           sync_len: int | None, sync_adaln: bool) -> MMDiT:
    """Fill unset sizes from ``SequenceConfig(duration, audio_preset)`` and the model width."""
    audio = config.audio_preset(audio_preset)
    seq = config.SequenceConfig(duration, audio)
    return MMDiT(latent_channels=latent_channels or audio.latent_channels, query_dim=query_dim or width,
                 sync_dim=sync_dim, latent_len=latent_len or seq.latent_len, sync_len=sync_len or seq.sync_len,
                 width=width, depth=depth, joint_depth=joint_depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                 sync_adaln=sync_adaln, latent_rate=audio.latent_rate)


def dit_s(latent_channels: int | None = None, query_dim: int | None = None, sync_dim: int = config.SYNC_DIM,
          duration: float = 8.0, audio_preset: str = "s16k", latent_len: int | None = None,
          sync_len: int | None = None, sync_adaln: bool = False) -> MMDiT:
    """Table 7's small ("M", 160M) model: 12 blocks, width 448, 7 heads of 64; 9 joint + 3 audio-only, SwiGLU ×6.

    Why this split: with linear per-stream layers, a stream's share of a block holds about
    (10 + 3·r)·D² weights (adaLN 6, qkv 3, output projection 1, SwiGLU 3·r with r = hidden / D), a
    joint block three such shares (two in the last, whose context streams are pre-only) and an
    audio-only block one. Table 7's counts ask for ~66·D² per layer in S but only ~45·D² in L
    (160M / 12 / 448² vs 750M / 21 / 896²), so with one architecture S must spend a larger share of
    its layers in joint blocks than L. L keeps MMAudio-L's split (depth / 3 = 7 joint blocks); one MLP
    ratio for both, r = 6 (hidden 2688 / 5376), then puts L at 757.5M (+1.0 %) and S, with 9 joint
    blocks, at 161.6M (+1.0 %) (default sizes: s16k latents, queries as wide as the model). MMAudio-S
    reaches 157M with 4 joint + 8 fused blocks through kernel-3 convolutions in its audio and visual
    MLPs, which this network does not use (linear layers keep every stream's tokens independent
    outside attention, and LoRA targets plain linears).

    Args:
        latent_channels: default: the audio preset's.
        query_dim: conditioner width; default: the model width (448).
        sync_dim: Synchformer width.
        duration: training clip length in seconds, for the default lengths.
        audio_preset: ``s16k``, ``s44k``, ``paper`` or ``tiny``.
        latent_len: default: ``SequenceConfig(duration, audio_preset).latent_len``.
        sync_len: default: ``SequenceConfig(duration, audio_preset).sync_len``.
        sync_adaln: MMAudio's per-token sync adaLN (ablation).
    """
    return _build(448, 12, 9, 7, 6.0, latent_channels, query_dim, sync_dim, duration, audio_preset, latent_len,
                  sync_len, sync_adaln)


def dit_l(latent_channels: int | None = None, query_dim: int | None = None, sync_dim: int = config.SYNC_DIM,
          duration: float = 8.0, audio_preset: str = "s16k", latent_len: int | None = None,
          sync_len: int | None = None, sync_adaln: bool = False) -> MMDiT:
    """Table 7's large (750M) model: 21 blocks, width 896, 14 heads of 64; 7 joint + 14 audio-only, SwiGLU ×6.

    The split is MMAudio-L's (depth / 3 joint blocks); with :func:`dit_s`'s MLP ratio it has 757.5M
    parameters at the default sizes (see :func:`dit_s` for the arithmetic). Arguments as :func:`dit_s`
    (``query_dim`` defaults to 896).
    """
    return _build(896, 21, 7, 14, 6.0, latent_channels, query_dim, sync_dim, duration, audio_preset, latent_len,
                  sync_len, sync_adaln)


def dit_tiny(latent_channels: int | None = None, query_dim: int | None = None, sync_dim: int = config.SYNC_DIM,
             duration: float = 8.0, audio_preset: str = "tiny", latent_len: int | None = None,
             sync_len: int | None = None, sync_adaln: bool = True) -> MMDiT:
    """CPU-sized model: 3 blocks (2 joint + 1 audio-only), width 64, 2 heads of 32, SwiGLU ×4.

    Arguments as :func:`dit_s` (``query_dim`` defaults to 64; ``audio_preset`` to ``tiny``), except that
    ``sync_adaln`` defaults to True: with joint attention alone, 1 of 3 training seeds of the study had not
    picked up the sync tokens after its 3,000 CPU steps (docs/decisions.md, "Where the sync tokens sit in
    time"); MMAudio's per-latent synchronisation module makes every seed learn timing within that budget.
    """
    return _build(64, 3, 2, 2, 4.0, latent_channels, query_dim, sync_dim, duration, audio_preset, latent_len,
                  sync_len, sync_adaln)
