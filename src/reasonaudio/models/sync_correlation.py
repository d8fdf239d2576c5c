"""A correlation offset head for the Synchformer: compare the two streams at every class's lag.

Synchformer's own head (``SyncTransformer``) reads the offset out of a joint transformer over both
streams' tokens; it has to discover that the answer is a *shift*, and at CPU scale (a 64-wide model,
a few hundred steps on 48 clips) it does not (docs/decisions.md, "Synchrony encoder"). This head
builds the shift in: both token streams are put on the 25-fps frame grid of the pair's span, and
the logit of class c is the correlation of the visual features at frame t with the audio features
at frame t − o_c (o_c the class offset in frames), over the frames where both exist:

    logit_c = exp(log_scale) · mean_t ⟨v̂(t), â(t − o_c)⟩ / D + bias_c

with v̂, â each stream's features minus their mean over the span and divided by their RMS (a steady
scene or a steady sound correlates with nothing). The objective is unchanged — cross-entropy over
the offset grid — and so is the interface: ``[B, S·8, D]`` visual and ``[B, S·6, D]`` audio tokens in,
``[B, C]`` logits out, so DeSync and the ``sync`` stage use either head.

Token times (S windows of 16 frames every 8): visual token i of window w covers frames 8w + 2i and
8w + 2i + 1 (temporal patch 2); audio token j of window w is AST patch j, mel frames 10j … 10j + 15 of
the window's 10 ms hops, centred at 0.32 w + 0.075 + 0.1 j s. A frame's visual feature is the mean of
the tokens covering it; its audio feature is the linear interpolation, within each window whose
token centres bracket the frame's centre, between those two tokens, averaged over such windows (the
nearest token of the covering window at the span's two ends).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from reasonaudio.config import SYNC_FPS, SYNC_STRIDE, SYNC_TOKENS_PER_WINDOW, SYNC_WINDOW

AUDIO_TOKENS = 6
"""Audio tokens per window (AST patches over time)."""
AUDIO_TOKEN_CENTRE = 0.075
"""Centre of audio token 0 in seconds from its window's start (mel frames 0 … 15 at 10 ms, centred STFT)."""
AUDIO_TOKEN_STEP = 0.1
"""Seconds between audio token centres (AST time stride of 10 mel frames)."""


def visual_frame_map(segments: int) -> torch.Tensor:
    """``[F, S·8]``: row f averages the visual tokens covering frame f (F = 16 + 8 · (S − 1))."""
    frames = SYNC_WINDOW + SYNC_STRIDE * (segments - 1)
    step = SYNC_WINDOW // SYNC_TOKENS_PER_WINDOW
    m = torch.zeros(frames, segments * SYNC_TOKENS_PER_WINDOW)
    for w in range(segments):
        for i in range(SYNC_TOKENS_PER_WINDOW):
            first = SYNC_STRIDE * w + step * i
            m[first:first + step, w * SYNC_TOKENS_PER_WINDOW + i] = 1.0
    return m / m.sum(1, keepdim=True)


def audio_frame_map(segments: int) -> torch.Tensor:
    """``[F, S·6]``: row f interpolates the audio tokens at frame f's centre, averaged over covering windows."""
    frames = SYNC_WINDOW + SYNC_STRIDE * (segments - 1)
    m = torch.zeros(frames, segments * AUDIO_TOKENS)
    for f in range(frames):
        t = (f + 0.5) / SYNC_FPS
        span = (AUDIO_TOKENS - 1) * AUDIO_TOKEN_STEP
        inside = [w for w in range(segments)
                  if 0 <= t - SYNC_STRIDE * w / SYNC_FPS - AUDIO_TOKEN_CENTRE <= span + 1e-9]
        covering = inside or [w for w in range(segments) if SYNC_STRIDE * w <= f < SYNC_STRIDE * w + SYNC_WINDOW]
        for w in covering:
            pos = (t - SYNC_STRIDE * w / SYNC_FPS - AUDIO_TOKEN_CENTRE) / AUDIO_TOKEN_STEP
            pos = min(max(pos, 0.0), AUDIO_TOKENS - 1.0)
            lo = min(int(math.floor(pos)), AUDIO_TOKENS - 2)
            frac = pos - lo
            m[f, w * AUDIO_TOKENS + lo] += (1 - frac) / len(covering)
            m[f, w * AUDIO_TOKENS + lo + 1] += frac / len(covering)
    return m


class CorrelationHead(nn.Module):
    """Offset logits from the lagged correlation of the two streams (see the module docstring).

    Args:
        dim: width of the projected tokens (``sync_dim``).
        segments: windows per stream.
        lags: ``[C]`` class offsets in whole frames (positive: the audio window starts later).
    """

    def __init__(self, dim: int, segments: int, lags: torch.Tensor):
        super().__init__()
        frames = SYNC_WINDOW + SYNC_STRIDE * (segments - 1)
        if int(lags.abs().max()) >= frames:
            raise ValueError(f"lags up to {int(lags.abs().max())} frames leave no overlap in {frames} frames")
        self.vis_norm = nn.LayerNorm(dim)
        self.aud_norm = nn.LayerNorm(dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.zeros(len(lags)))
        self.register_buffer("vmap", visual_frame_map(segments), persistent=False)
        self.register_buffer("amap", audio_frame_map(segments), persistent=False)
        self.register_buffer("lags", lags.long(), persistent=False)

    @staticmethod
    def _standardise(x: torch.Tensor) -> torch.Tensor:  # [B, F, D] → zero mean over time, unit RMS
        x = x - x.mean(dim=1, keepdim=True)
        return x / x.pow(2).mean(dim=(1, 2), keepdim=True).add(1e-6).sqrt()

    def profile(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` mean lagged correlation ⟨v̂(t), â(t − o_c)⟩ / D of each class."""
        v = self._standardise(self.vmap.to(video.dtype) @ self.vis_norm(video))  # [B, F, D]
        a = self._standardise(self.amap.to(audio.dtype) @ self.aud_norm(audio))  # [B, F, D]
        frames, dim = v.shape[1], v.shape[2]
        out = []
        for lag in self.lags.tolist():  # video frame t against audio frame t − lag
            if lag >= 0:
                out.append((v[:, lag:] * a[:, :frames - lag]).sum(-1).mean(1))
            else:
                out.append((v[:, :frames + lag] * a[:, -lag:]).sum(-1).mean(1))
        return torch.stack(out, dim=1) / dim

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``[B, S·8, D]`` and ``[B, S·6, D]`` projected tokens → ``[B, C]`` logits."""
        return self.log_scale.exp() * self.profile(video, audio) + self.bias
