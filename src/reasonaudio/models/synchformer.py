"""Synchformer (v-iashin/Synchformer, AudioSet model ``24-01-04T16-39-21``), key-compatible with the
``synchformer_state_dict.pth`` that MMAudio and av-benchmark use.

Legend: B batch, T video frames at 25 fps, S windows, N = B·S windows run as one batch, D width (768).
A window is 16 frames (0.64 s) and windows start every 8 frames (0.32 s); the audio uses the same
0.64 s / 0.32 s windows at 16 kHz (10240 / 5120 samples).

* **Visual branch** (``vfeat_extractor``, MotionFormer "divided", ViT-B/16): a window
  ``[16, 3, 224, 224]`` → Conv3d patches (2, 16, 16) → 8 × 14 × 14 tokens + CLS, with a spatial
  (``pos_embed``) plus a temporal (``temp_embed``) position embedding → 12 divided space-time blocks
  (attention over the 8 time steps of each patch position, then over the 196 patches of each time
  step; the CLS token attends to every token) → LayerNorm → per time step, a TransformerEncoderLayer
  with its own CLS token pools the 196 patches → ``[8, D]``. 8 s = 200 frames = 24 windows = 192 tokens.
* **Audio branch** (``afeat_extractor``, AST with the transformers-4.x ``ASTModel`` names): a window
  → power mel (128 bins, n_fft 1024, window 400, hop 160) → ``log(x + 1e-6)`` → zero-pad 65 → 66
  frames → ``(x + 4.2677) / (2 · 4.5690)`` → 16 × 16 patches at stride 10 → 12 × 6 tokens + CLS +
  distillation → 12 ViT layers → LayerNorm → per time step, a CLS pooling layer over the 12
  frequency patches → ``[6, D]``.
* **Offset head** (``vproj``, ``aproj``, ``transformer``): both token streams are projected and
  layer-normed, arranged as ``[OFF, 14·8 visual, MOD, 14·6 audio]`` (198 tokens) + a learned position
  embedding → 3 GPT blocks (8 heads) → LayerNorm → a linear classifier on the OFF token → 21 logits
  over the offsets ``linspace(-2, 2, 21)`` s. A positive offset means the audio starts earlier than
  the video (Synchformer's ``example.py``). The position embedding fixes the head to 14 windows
  (4.8 s); av-benchmark's DeSync therefore scores the first and the last 14 windows of an 8 s clip.

Module names reproduce the checkpoint's key paths, which is why a few containers exist only to
carry a name (``patch_embed.proj``, ``attention.output.dense``, ``pos_emb_cfg.pos_emb``). Dropout
is left out: the model is only used frozen, in eval mode. The MotionFormer classification head
(``pre_logits``, ``head``) is replaced by Identity in the official feature extractor and has no keys.

Sizes (the official model; counts of this implementation, equal to the notes' analytic ones):

================  ======================================================  ===========
part              layout                                                  parameters
================  ======================================================  ===========
vfeat_extractor   ViT-B/16, depth 12, 12 heads, + spatial CLS pooling     122,440,704
afeat_extractor   AST-B, depth 12, 12 heads, 74 positions, + freq pooling  92,400,384
vproj, aproj      Linear 768 → 768 each                                     1,181,184
transformer       3 GPT blocks, 8 heads, 198 positions, 21 classes         21,437,973
total                                                                     237,460,245
================  ======================================================  ===========
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Mapping, Self

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from reasonaudio.config import (SYNC_DIM, SYNC_FPS, SYNC_STRIDE, SYNC_TOKENS_PER_WINDOW, SYNC_WINDOW,
                                SequenceConfig)
from reasonaudio.media import resize_short_side_crop
from reasonaudio.models.checkpoints import check_state_dict
from reasonaudio.models.sync_correlation import CorrelationHead

SYNC_SAMPLE_RATE = 16000
"""Audio rate of the Synchformer audio branch."""
AUDIO_WINDOW = SYNC_WINDOW * SYNC_SAMPLE_RATE // SYNC_FPS
"""Samples per audio window: 0.64 s = 10240 samples, the span of one 16-frame video window."""
AUDIO_HOP = SYNC_STRIDE * SYNC_SAMPLE_RATE // SYNC_FPS
"""Samples between audio windows: 0.32 s = 5120 samples."""
MEL_BINS = 128
MEL_N_FFT = 1024
MEL_WIN = 400
MEL_HOP = 160
MEL_FRAMES = 66
"""AST input length (``max_spec_t``): one window gives 65 mel frames, zero-padded to 66."""
MEL_LOG_EPS = 1e-6
MEL_MEAN = -4.2677393
"""AudioSet log-mel mean used by AST; audio windows are normalised as (x − mean) / (2 · std)."""
MEL_STD = 4.5689974
VIDEO_MEAN = 0.5
"""MotionFormer input normalisation of frames scaled to [0, 1] (mean = std = 0.5 per channel)."""
VIDEO_STD = 0.5
TEMPORAL_PATCH = SYNC_WINDOW // SYNC_TOKENS_PER_WINDOW
"""Frames per MotionFormer tubelet (2): 16 frames → 8 tokens per window."""
AST_PATCH = 16
AST_STRIDE = 10
FREQ_PATCHES = (MEL_BINS - AST_PATCH) // AST_STRIDE + 1
"""AST patches along frequency (12)."""
AUDIO_TOKENS_PER_WINDOW = (MEL_FRAMES - AST_PATCH) // AST_STRIDE + 1
"""AST tokens per audio window after frequency pooling (6)."""
NUM_OFFSETS = 21
"""Offset classes of the sync head."""
MAX_OFFSET = 2.0
"""Largest offset class in seconds: the classes are linspace(−2, 2, 21), 0.2 s apart."""
VISUAL_PREFIX = "vfeat_extractor."
"""Key prefix of the visual branch in the full checkpoint (what MMAudio keeps)."""


@dataclass(frozen=True)
class SynchformerConfig:
    """Sizes of a Synchformer; the defaults are the official model.

    The window layout (16 frames, temporal patch 2, 0.64 s audio windows, 128-bin mel, AST patch 16
    at stride 10) is fixed: it defines the sync tokens. Only widths, depths, heads and the image
    side change, so tests and CPU demos can build a tiny model.

    Args:
        image_size: frame side fed to the MotionFormer (224).
        patch_size: spatial patch side (16).
        dim: width of both feature extractors, i.e. of the sync tokens (768).
        visual_depth: MotionFormer blocks (12).
        visual_heads: MotionFormer attention heads (12).
        audio_depth: AST layers (12).
        audio_heads: AST attention heads (12).
        mlp_ratio: MLP width / ``dim`` in both extractors and their pooling layers (4).
        sync_dim: width of the offset transformer (768).
        sync_depth: offset transformer blocks (3).
        sync_heads: offset transformer heads (8).
        segments: windows the offset head sees at once (14 = 4.8 s).
        token_dim: width of the visual (sync) tokens; ``None`` = ``dim``. A narrow trainable model
            (``dim`` 64) sets 768 to keep the DiT's ``[B, Ts, 768]`` contract: a linear
            ``vfeat_extractor.token_proj`` then maps its tokens to that width (the official model
            has no such layer, so its key layout is unchanged).
        num_offsets: offset classes of the head (21).
        max_offset: offset of the last class in seconds (2.0): classes are
            ``linspace(−max_offset, max_offset, num_offsets)``.
        head: the offset head. ``"transformer"`` is Synchformer's (``transformer.*`` keys, what the
            released checkpoint holds); ``"correlation"`` compares the two streams at each class's
            lag (:class:`~reasonaudio.models.sync_correlation.CorrelationHead`, ``correlation.*``
            keys), the head the CPU-trained synthetic model uses (docs/decisions.md).
    """

    image_size: int = 224
    patch_size: int = 16
    dim: int = SYNC_DIM
    visual_depth: int = 12
    visual_heads: int = 12
    audio_depth: int = 12
    audio_heads: int = 12
    mlp_ratio: int = 4
    sync_dim: int = 768
    sync_depth: int = 3
    sync_heads: int = 8
    segments: int = 14
    token_dim: int | None = None
    num_offsets: int = NUM_OFFSETS
    max_offset: float = MAX_OFFSET
    head: Literal["transformer", "correlation"] = "transformer"

    def __post_init__(self) -> None:
        if self.head not in ("transformer", "correlation"):
            raise ValueError(f"head must be 'transformer' or 'correlation', got {self.head!r}")
        if self.image_size <= 0 or self.patch_size <= 0 or self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a positive multiple of "
                             f"patch_size {self.patch_size}")
        for name, width, heads in (("visual", self.dim, self.visual_heads), ("audio", self.dim, self.audio_heads),
                                   ("sync", self.sync_dim, self.sync_heads)):
            if heads <= 0 or width <= 0 or width % heads:
                raise ValueError(f"{name} width {width} must be a positive multiple of its heads ({heads})")
        if min(self.visual_depth, self.audio_depth, self.sync_depth, self.mlp_ratio, self.segments) < 1:
            raise ValueError(f"depths, mlp_ratio and segments must be >= 1, got {self}")
        if self.token_dim is not None and self.token_dim < 1:
            raise ValueError(f"token_dim must be >= 1 or None, got {self.token_dim}")
        if self.num_offsets < 2 or not self.max_offset > 0:
            raise ValueError(f"need num_offsets >= 2 and max_offset > 0, got {self.num_offsets}, {self.max_offset}")

    @property
    def visual_token_dim(self) -> int:
        """Width of the visual tokens :meth:`encode_video` returns (``token_dim`` or ``dim``)."""
        return self.token_dim or self.dim

    @property
    def offset_step(self) -> float:
        """Seconds between two offset classes (0.2 for the official head)."""
        return 2 * self.max_offset / (self.num_offsets - 1)

    @property
    def window_seconds(self) -> float:
        """Span of the ``segments`` windows the head sees: 0.64 + 0.32 · (segments − 1) s (4.8 s)."""
        return (SYNC_WINDOW + SYNC_STRIDE * (self.segments - 1)) / SYNC_FPS

    @property
    def sync_tokens(self) -> int:
        """Tokens of the offset transformer: OFF + segments·8 visual + MOD + segments·6 audio (198)."""
        return 2 + self.segments * (SYNC_TOKENS_PER_WINDOW + AUDIO_TOKENS_PER_WINDOW)

    def to_dict(self) -> dict:
        """Plain dict for artifacts and configs."""
        return asdict(self)


SYNCHFORMER_TINY = SynchformerConfig(image_size=32, patch_size=16, dim=64, visual_depth=2, visual_heads=2,
                                     audio_depth=2, audio_heads=2, sync_dim=64, sync_depth=1, sync_heads=2)
"""A CPU-sized Synchformer with the official window layout (tests, toy demos; random weights)."""


def video_window_count(frames: int) -> int:
    """Windows of 16 frames with stride 8 in ``frames`` 25-fps frames: ``(frames − 16) // 8 + 1``.

    Raises:
        ValueError: fewer than 16 frames (0.64 s).
    """
    if frames < SYNC_WINDOW:
        raise ValueError(f"{frames} frames are shorter than one Synchformer window ({SYNC_WINDOW} frames = 0.64 s)")
    return SequenceConfig(duration=frames / SYNC_FPS).sync_windows


def audio_window_count(samples: int) -> int:
    """Audio windows of 10240 samples with hop 5120 in ``samples`` 16 kHz samples (av-benchmark's rule).

    Counted on samples, not on the duration, because a partial window cannot be cut.

    Raises:
        ValueError: fewer than 10240 samples (0.64 s).
    """
    if samples < AUDIO_WINDOW:
        raise ValueError(f"{samples} samples are shorter than one Synchformer window "
                         f"({AUDIO_WINDOW} samples = 0.64 s at {SYNC_SAMPLE_RATE} Hz)")
    return (samples - AUDIO_WINDOW) // AUDIO_HOP + 1


def offset_grid(num_classes: int = NUM_OFFSETS, max_offset: float = MAX_OFFSET) -> torch.Tensor:
    """Offset of each class in seconds: ``linspace(−max_offset, max_offset, num_classes)`` ``[C]`` float32.

    Computed as numpy's float64 ``linspace`` and rounded to float32, which is Synchformer's
    ``make_class_grid``; the centre class is exactly 0 (``torch.linspace`` would give about −3e-8).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    grid = torch.arange(num_classes, dtype=torch.float64) * (2 * max_offset / (num_classes - 1)) - max_offset
    grid[-1] = max_offset
    return grid.float()


def expected_abs_offset(logits: torch.Tensor, max_offset: float = MAX_OFFSET) -> torch.Tensor:
    """Expected |offset| in seconds under the softmax of the offset logits, ``Σ_c p_c |o_c|``.

    A continuous counterpart of ``|predicted_offset|``: it moves with the head's confidence, not only when
    the arg-max class changes (the synchrony reward's score; docs/post_training.md).

    Args:
        logits: ``[..., C]`` offset logits.
        max_offset: offset of the last class in seconds.

    Returns:
        ``[...]`` seconds in ``[0, max_offset]``.
    """
    grid = offset_grid(logits.shape[-1], max_offset).to(logits.device, torch.float32)
    return (logits.float().softmax(dim=-1) * grid.abs()).sum(dim=-1)


def predicted_offset(logits: torch.Tensor, max_offset: float = MAX_OFFSET) -> torch.Tensor:
    """Offset in seconds of the arg-max class.

    Args:
        logits: ``[..., C]`` offset logits (C = 21 for the official head).
        max_offset: offset of the last class in seconds.

    Returns:
        ``[...]`` seconds; positive means the audio starts earlier than the video.
    """
    grid = offset_grid(logits.shape[-1], max_offset).to(logits.device)
    return grid[logits.argmax(dim=-1)]


# --------------------------------------------------------------------------- shared layers


class CLSPooling(nn.TransformerEncoderLayer):
    """A pre-norm TransformerEncoderLayer with its own CLS token; returns the CLS output.

    This is Synchformer's ``BaseEncoderLayer`` (``spatial_attn_agg`` / ``freq_attn_agg``): GELU,
    LayerNorm eps 1e-6, keys ``cls_token``, ``self_attn.{in_proj_weight,in_proj_bias,out_proj}``,
    ``linear1``, ``linear2``, ``norm1``, ``norm2``.

    Args:
        dim: token width.
        heads: attention heads.
        hidden: MLP width.
    """

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__(dim, heads, hidden, dropout=0.0, activation="gelu", layer_norm_eps=1e-6,
                         batch_first=True, norm_first=True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [M, L, D] → [M, D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return super().forward(x)[:, 0]


class Mlp(nn.Module):
    """timm-style MLP: ``fc1`` → exact GELU → ``fc2``.

    Args:
        dim: input and output width.
        hidden: hidden width.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., D]
        return self.fc2(F.gelu(self.fc1(x)))


class _Named(nn.Module):
    """A container that exists to reproduce a checkpoint key path (e.g. ``patch_embed.proj``)."""

    def __init__(self, **children: nn.Module):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


# --------------------------------------------------------------------------- visual branch


class DividedAttention(nn.Module):
    """MotionFormer's divided attention: patch tokens attend within one time step or one patch position.

    Tokens are ``[CLS, (frames × patches)]`` in frame-major order. The CLS token attends to all
    tokens; a patch token attends to the CLS token and to the tokens of its group: same patch
    position over time (``"time"``) or same time step over space (``"space"``).

    Args:
        dim: token width.
        heads: attention heads.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, frames: int, over: Literal["time", "space"]) -> torch.Tensor:
        n, length, dim = x.shape  # [N, 1 + F·P, D]
        h = self.heads
        patches = (length - 1) // frames
        q, k, v = self.qkv(x).view(n, length, 3, h, dim // h).permute(2, 0, 3, 1, 4)  # 3 × [N, h, L, d]
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # [N, h, 1, d]

        def grouped(t: torch.Tensor) -> torch.Tensor:  # [N, h, L, d] → [N, h, G, group, d]
            t = t[:, :, 1:].unflatten(2, (frames, patches))  # [N, h, F, P, d]
            return t.transpose(2, 3) if over == "time" else t

        q_, k_, v_ = grouped(q), grouped(k), grouped(v)
        groups = q_.shape[2]
        # every group also sees the CLS key / value
        k_ = torch.cat([k[:, :, None, :1].expand(-1, -1, groups, -1, -1), k_], dim=3)
        v_ = torch.cat([v[:, :, None, :1].expand(-1, -1, groups, -1, -1), v_], dim=3)
        out = F.scaled_dot_product_attention(q_.flatten(1, 2), k_.flatten(1, 2), v_.flatten(1, 2))
        out = out.unflatten(1, (h, groups))  # [N, h, G, group, d]
        if over == "time":
            out = out.transpose(2, 3)
        out = torch.cat([cls_out, out.flatten(2, 3)], dim=2)  # [N, h, L, d]
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class DividedSpaceTimeBlock(nn.Module):
    """time attention (``norm3``, ``timeattn``) → space attention (``norm1``, ``attn``) → MLP (``norm2``, ``mlp``).

    Args:
        dim: token width.
        heads: attention heads.
        mlp_ratio: MLP width / ``dim``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DividedAttention(dim, heads)
        self.timeattn = DividedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio * dim)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:  # [N, 1 + F·P, D]
        x = x + self.timeattn(self.norm3(x), frames, "time")
        x = x + self.attn(self.norm1(x), frames, "space")
        return x + self.mlp(self.norm2(x))


class MotionFormer(nn.Module):
    """The visual branch: 16-frame windows → 8 spatially pooled tokens each.

    Args:
        image_size: frame side (224).
        patch_size: spatial patch side (16).
        dim: token width (768).
        depth: divided space-time blocks (12).
        heads: attention heads (12).
        mlp_ratio: MLP width / ``dim`` (4).
        out_dim: token width after a linear ``token_proj``; ``None`` (or ``dim``) adds no layer.
    """

    def __init__(self, image_size: int = 224, patch_size: int = 16, dim: int = SYNC_DIM, depth: int = 12,
                 heads: int = 12, mlp_ratio: int = 4, out_dim: int | None = None):
        super().__init__()
        self.image_size = image_size
        grid = image_size // patch_size
        # The 2-D patch embedding is unused (the 3-D one tokenises) but is part of the checkpoint.
        self.patch_embed = _Named(proj=nn.Conv2d(3, dim, patch_size, stride=patch_size)).requires_grad_(False)
        tubelet = (TEMPORAL_PATCH, patch_size, patch_size)
        self.patch_embed_3d = _Named(proj=nn.Conv3d(3, dim, tubelet, stride=tubelet))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))  # CLS + one per patch position
        self.temp_embed = nn.Parameter(torch.zeros(1, SYNC_TOKENS_PER_WINDOW, dim))  # one per time step
        for p in (self.cls_token, self.pos_embed, self.temp_embed):
            nn.init.trunc_normal_(p, std=0.02)
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.spatial_attn_agg = CLSPooling(dim, heads, mlp_ratio * dim)
        if out_dim is not None and out_dim != dim:
            self.token_proj = nn.Linear(dim, out_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """``[N, 16, 3, H, W]`` normalised windows → ``[N, 8, D]`` tokens."""
        if windows.ndim != 5 or tuple(windows.shape[1:]) != (SYNC_WINDOW, 3, self.image_size, self.image_size):
            raise ValueError(f"expected windows [N, {SYNC_WINDOW}, 3, {self.image_size}, {self.image_size}], "
                             f"got {tuple(windows.shape)}")
        x = self.patch_embed_3d.proj(windows.transpose(1, 2))  # [N, D, 8, g, g]
        n, dim, steps, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)  # [N, 8·g·g, D], time-major
        pos = self.pos_embed[:, 1:].repeat(1, steps, 1) + self.temp_embed.repeat_interleave(gh * gw, dim=1)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(n, -1, -1)
        x = torch.cat([cls, x + pos], dim=1)  # [N, 1 + 8·g·g, D]
        for block in self.blocks:
            x = block(x, steps)
        x = self.norm(x[:, 1:])  # the CLS token is dropped, as in the official feature extractor
        x = self.spatial_attn_agg(x.reshape(n * steps, gh * gw, dim)).view(n, steps, dim)  # [N, 8, D]
        return self.token_proj(x) if hasattr(self, "token_proj") else x


@torch.no_grad()
def motion_init_(motionformer: MotionFormer) -> MotionFormer:
    """Make the tubelet embedding respond to change only: the second frame's kernel is minus the first's.

    A from-scratch initialisation for training (``SyncTrain(event_init=True)``): at random init a
    tubelet's embedding is dominated by the static scene, so every visual token looks alike and the
    offset head sits at chance for hundreds of steps; with antisymmetric kernels a still background
    embeds to the bias alone and the tokens start out as motion features. Training may change the
    kernels freely afterwards. Returns the module.
    """
    weight = motionformer.patch_embed_3d.proj.weight  # [D, 3, 2, p, p]
    assert weight.shape[2] == TEMPORAL_PATCH == 2
    weight[:, :, 1] = -weight[:, :, 0]
    return motionformer


@torch.no_grad()
def onset_init_(ast: "ASTEncoder") -> "ASTEncoder":
    """Make the AST patch embedding respond to change over time only: the later half of each
    16-frame kernel is minus the earlier half, mirrored (the audio counterpart of :func:`motion_init_`:
    a steady sound embeds to the bias alone, onsets and offsets stand out). Returns the module."""
    weight = ast.ast.embeddings.patch_embeddings.projection.weight  # [D, 1, freq 16, time 16]
    half = weight.shape[-1] // 2
    weight[..., half:] = -weight[..., :half].flip(-1)
    return ast


def synchformer_visual() -> MotionFormer:
    """The official visual branch: ViT-B/16, depth 12, 12 heads, 224² input (122.44 M parameters)."""
    return MotionFormer(image_size=224, patch_size=16, dim=SYNC_DIM, depth=12, heads=12, mlp_ratio=4)


# --------------------------------------------------------------------------- audio branch


class _ASTSelfAttention(nn.Module):
    """Multi-head self-attention with separate ``query`` / ``key`` / ``value`` projections."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [M, L, D] → [M, L, D] (before the output dense)
        m, length, dim = x.shape
        q, k, v = (proj(x).view(m, length, self.heads, -1).transpose(1, 2)  # [M, h, L, d]
                   for proj in (self.query, self.key, self.value))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(m, length, dim)


class _ASTLayer(nn.Module):
    """Pre-norm ViT layer with transformers-4.x ``ASTLayer`` names (LayerNorm eps 1e-12, exact GELU)."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.attention = _Named(attention=_ASTSelfAttention(dim, heads), output=_Named(dense=nn.Linear(dim, dim)))
        self.intermediate = _Named(dense=nn.Linear(dim, hidden))
        self.output = _Named(dense=nn.Linear(hidden, dim))
        self.layernorm_before = nn.LayerNorm(dim, eps=1e-12)
        self.layernorm_after = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [M, L, D]
        x = x + self.attention.output.dense(self.attention.attention(self.layernorm_before(x)))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class _ASTModel(nn.Module):
    """HF ``ASTModel`` (transformers 4.x names) with the position embedding cut to 66 mel frames.

    transformers 5 renamed these modules (``layers.i.attention.q_proj``, ``mlp.fc1``, …), so the
    checkpoint's names are reproduced here rather than taken from the installed package.
    """

    def __init__(self, dim: int, depth: int, heads: int, hidden: int):
        super().__init__()
        self.embeddings = _Named(patch_embeddings=_Named(
            projection=nn.Conv2d(1, dim, AST_PATCH, stride=(AST_STRIDE, AST_STRIDE))))
        # cls / distillation / position embeddings are parameters of `embeddings` itself
        self.embeddings.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.embeddings.distillation_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.embeddings.position_embeddings = nn.Parameter(
            torch.zeros(1, FREQ_PATCHES * AUDIO_TOKENS_PER_WINDOW + 2, dim))
        for p in self.embeddings.parameters(recurse=False):
            nn.init.trunc_normal_(p, std=0.02)
        self.encoder = _Named(layer=nn.ModuleList(_ASTLayer(dim, heads, hidden) for _ in range(depth)))
        self.layernorm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``[M, 128, 66]`` normalised log-mel → ``[M, 2 + 12·6, D]``: CLS, distillation, frequency-major patches."""
        emb = self.embeddings
        x = emb.patch_embeddings.projection(mel.unsqueeze(1)).flatten(2).transpose(1, 2)  # [M, 12·6, D]
        aux = torch.cat([emb.cls_token, emb.distillation_token], dim=1).expand(x.shape[0], -1, -1)
        x = torch.cat([aux, x], dim=1) + emb.position_embeddings
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)


class ASTEncoder(nn.Module):
    """The audio branch: one 0.64 s log-mel window → 6 frequency-pooled tokens.

    Args:
        dim: token width (768).
        depth: AST layers (12).
        heads: attention heads (12).
        mlp_ratio: MLP width / ``dim`` (4).
    """

    def __init__(self, dim: int = SYNC_DIM, depth: int = 12, heads: int = 12, mlp_ratio: int = 4):
        super().__init__()
        self.ast = _ASTModel(dim, depth, heads, mlp_ratio * dim)
        self.freq_attn_agg = CLSPooling(dim, heads, mlp_ratio * dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``[M, 128, 66]`` normalised log-mel windows → ``[M, 6, D]`` tokens."""
        if mel.ndim != 3 or tuple(mel.shape[1:]) != (MEL_BINS, MEL_FRAMES):
            raise ValueError(f"expected log-mel windows [M, {MEL_BINS}, {MEL_FRAMES}], got {tuple(mel.shape)}")
        x = self.ast(mel)[:, 2:]  # [M, 12·6, D] without CLS / distillation
        m, _, dim = x.shape
        x = x.view(m, FREQ_PATCHES, AUDIO_TOKENS_PER_WINDOW, dim).transpose(1, 2)  # [M, 6, 12, D]
        x = self.freq_attn_agg(x.reshape(m * AUDIO_TOKENS_PER_WINDOW, FREQ_PATCHES, dim))  # [M·6, D]
        return x.view(m, AUDIO_TOKENS_PER_WINDOW, dim)


class SynchformerMel(nn.Module):
    """``torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, win_length=400, hop_length=160, n_mels=128)``.

    Power 2, centred reflect-padded STFT with a periodic Hann window, HTK mel filters without
    normalisation. Its buffers are not persistent, so the model's state dict stays the checkpoint's.
    """

    def __init__(self) -> None:
        super().__init__()
        # constants, built on the CPU even under a meta-device context (melscale_fbanks reads values)
        with torch.device("cpu"):
            fb = AF.melscale_fbanks(MEL_N_FFT // 2 + 1, 0.0, SYNC_SAMPLE_RATE / 2, MEL_BINS, SYNC_SAMPLE_RATE,
                                    norm=None, mel_scale="htk")  # [n_freqs, n_mels]
            window = torch.hann_window(MEL_WIN)
        self.register_buffer("fb", fb, persistent=False)
        self.register_buffer("window", window, persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:  # [..., L] → [..., 128, L // 160 + 1]
        spec = torch.stft(wav.reshape(-1, wav.shape[-1]), MEL_N_FFT, hop_length=MEL_HOP, win_length=MEL_WIN,
                          window=self.window, center=True, pad_mode="reflect", return_complex=True)
        mel = torch.matmul(spec.abs().pow(2).transpose(-1, -2), self.fb).transpose(-1, -2)  # [M, 128, F]
        return mel.reshape(*wav.shape[:-1], *mel.shape[-2:])


# --------------------------------------------------------------------------- offset head


class _GPTAttention(nn.Module):
    """minGPT self-attention: ``key``, ``query``, ``value``, ``proj``; no mask."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.key = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, D]
        b, length, dim = x.shape
        q, k, v = (proj(x).view(b, length, self.heads, -1).transpose(1, 2)  # [B, h, L, d]
                   for proj in (self.query, self.key, self.value))
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, length, dim))


class _GPTBlock(nn.Module):
    """minGPT block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))`` with ``mlp`` = Linear, GELU, Linear."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.attn = _GPTAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, D]
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class SyncTransformer(nn.Module):
    """Synchformer's ``GlobalTransformer``: offset logits from projected visual and audio tokens.

    Args:
        dim: width (768).
        depth: blocks (3).
        heads: attention heads (8).
        tokens: sequence length, OFF + visual + MOD + audio (198).
        num_classes: offset classes (21).
    """

    def __init__(self, dim: int = 768, depth: int = 3, heads: int = 8, tokens: int = 198,
                 num_classes: int = NUM_OFFSETS):
        super().__init__()
        self.vis_in_lnorm = nn.LayerNorm(dim)
        self.aud_in_lnorm = nn.LayerNorm(dim)
        self.OFF_tok = nn.Parameter(torch.randn(1, 1, dim))
        self.MOD_tok = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_emb_cfg = nn.ParameterDict({"pos_emb": nn.Parameter(torch.randn(1, tokens, dim))})
        self.blocks = nn.Sequential(*(_GPTBlock(dim, heads) for _ in range(depth)))
        self.ln_f = nn.LayerNorm(dim)
        self.off_head = nn.Linear(dim, num_classes)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``[B, Lv, D]`` and ``[B, La, D]`` projected tokens (2 + Lv + La = ``tokens``) → ``[B, num_classes]``."""
        b = video.shape[0]
        x = torch.cat([self.OFF_tok.expand(b, -1, -1), self.vis_in_lnorm(video),
                       self.MOD_tok.expand(b, -1, -1), self.aud_in_lnorm(audio)], dim=1)  # [B, L, D]
        x = self.blocks(x + self.pos_emb_cfg["pos_emb"])
        return self.off_head(self.ln_f(x)[:, 0])


# --------------------------------------------------------------------------- public models


class _SynchformerBase(nn.Module):
    """The visual front end shared by both public models, and checkpoint loading."""

    def __init__(self, config: SynchformerConfig):
        super().__init__()
        self.config = config
        self.vfeat_extractor = MotionFormer(config.image_size, config.patch_size, config.dim, config.visual_depth,
                                            config.visual_heads, config.mlp_ratio, config.token_dim)

    @staticmethod
    def _keep(key: str) -> bool:
        """Whether a checkpoint key belongs to this model."""
        return True

    def preprocess_video(self, frames: torch.Tensor) -> torch.Tensor:
        """25-fps uint8 frames → MotionFormer input.

        Frames not already ``image_size``² get the Synchformer policy first (short side → ``image_size``
        bicubic, centre crop; :func:`reasonaudio.media.resize_short_side_crop`), then ``[0, 255]`` →
        ``[0, 1]`` → ``(x − 0.5) / 0.5``.

        Args:
            frames: ``[B, T, 3, H, W]`` or ``[B, T, H, W, 3]`` uint8 RGB.

        Returns:
            ``[B, T, 3, image_size, image_size]`` float32 in [−1, 1].
        """
        if frames.dtype != torch.uint8 or frames.ndim != 5:
            raise ValueError(f"expected uint8 frames [B, T, 3, H, W] or [B, T, H, W, 3], "
                             f"got {frames.dtype} {tuple(frames.shape)}")
        if frames.shape[2] == 3:
            frames = frames.permute(0, 1, 3, 4, 2)  # the resize helper is channels-last
        elif frames.shape[-1] != 3:
            raise ValueError(f"frames have no RGB axis at dim 2 or -1: {tuple(frames.shape)}")
        b, t, h, w, _ = frames.shape
        size = self.config.image_size
        if (h, w) != (size, size):
            frames = resize_short_side_crop(frames.reshape(b * t, h, w, 3), size).view(b, t, size, size, 3)
        x = frames.permute(0, 1, 4, 2, 3).float() / 255.0  # [B, T, 3, s, s]
        return (x - VIDEO_MEAN) / VIDEO_STD

    def video_windows(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, ...]`` frames → ``[B, S, 16, ...]`` windows of 16 frames starting every 8 frames (views)."""
        count = video_window_count(x.shape[1])
        windows = x.unfold(1, SYNC_WINDOW, SYNC_STRIDE).movedim(-1, 2)  # [B, S, 16, ...]
        assert windows.shape[1] == count
        return windows

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Sync tokens of a clip of any length ≥ 0.64 s.

        Args:
            frames: 25-fps uint8 frames (any layout :meth:`preprocess_video` takes) or already
                preprocessed float frames ``[B, T, 3, image_size, image_size]``.

        Returns:
            ``[B, S·8, D]`` tokens, S = (T − 16) // 8 + 1: ``[B, 192, 768]`` for 8 s (200 frames).
        """
        x = self.preprocess_video(frames) if frames.dtype == torch.uint8 else frames
        windows = self.video_windows(x)  # [B, S, 16, 3, s, s]
        b, s = windows.shape[:2]
        weight = self.vfeat_extractor.patch_embed_3d.proj.weight
        tokens = self.vfeat_extractor(windows.flatten(0, 1).to(weight.dtype))  # [B·S, 8, D]
        return tokens.reshape(b, s * SYNC_TOKENS_PER_WINDOW, -1)

    def weights_hash(self) -> str:
        """SHA-256 (hex) of the state dict: names, dtypes, shapes and bytes, in key order.

        Feature caches record it: two caches whose sync tokens came from different weights hold
        incomparable tokens and must not be mixed (``reasonaudio.data_modules.features``).
        """
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def load_checkpoint(self, path: str | os.PathLike) -> Self:
        """Load ``synchformer_state_dict.pth`` into this model, strictly and offline.

        For systems that receive the model by injection and load weights when they start. The
        visual encoder keeps only the ``vfeat_extractor.*`` keys; the full model takes them all.
        Synchformer's own ``<run id>.pt`` layout, ``{"model": state_dict, ...}``, is accepted too when
        it loads with ``weights_only=True``.

        Args:
            path: the checkpoint file.

        Returns:
            This model, in eval mode.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: not a state dict, or keys / shapes that do not match (the message lists
                missing and unexpected keys and shape mismatches).
        """
        return self._load_state(_read_state_dict(path), Path(path))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, config: SynchformerConfig = SynchformerConfig()) -> Self:
        """Build a model of ``config`` (the official sizes by default) and :meth:`load_checkpoint` ``path``."""
        state = _read_state_dict(path)  # a missing or unreadable file fails before the model is built
        return cls(config)._load_state(state, Path(path))

    @classmethod
    def from_export(cls, path: str | os.PathLike) -> Self:
        """Build the model a :func:`save_synchformer` file describes and load its weights (eval mode).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: the file carries no Synchformer config (e.g. the official ``.pth``: use
                :meth:`from_checkpoint` with its config).
        """
        config = read_export_config(path)
        if config is None:
            raise ValueError(f"{path} carries no Synchformer config (not a save_synchformer export); "
                             "use from_checkpoint(path, config)")
        return cls(config)._load_state(_read_state_dict(path), Path(path))

    def _visual_fields(self) -> tuple[str, ...]:
        """Config fields that change what this model computes (all of them for the full model)."""
        return tuple(SynchformerConfig.__dataclass_fields__)

    def _load_state(self, state: Mapping[str, torch.Tensor], path: Path) -> Self:
        made = read_export_config(path) if path.suffix == ".safetensors" else None
        if made is not None:  # head counts change the computation, not the shapes: compare the configs
            clash = {f: (getattr(made, f), getattr(self.config, f)) for f in self._visual_fields()
                     if getattr(made, f) != getattr(self.config, f)}
            if clash:
                raise ValueError(f"{path} was trained with another Synchformer config (file, this model): {clash}")
        state = {k: v for k, v in state.items() if self._keep(k)}
        check_state_dict(self, state, f"{path} does not match {type(self).__name__}({self.config})")
        self.load_state_dict(state, strict=True)
        return self.eval()


class SynchformerVisualEncoder(_SynchformerBase):
    """The visual branch alone: 25-fps frames → ``[B, Ts, 768]`` sync tokens for the DiT.

    Its state dict is the checkpoint's ``vfeat_extractor.*`` subset, so :meth:`from_checkpoint`
    keeps those keys of the full checkpoint (as MMAudio does) and loads them strictly.

    Args:
        config: model sizes (only the visual ones are used).
    """

    def __init__(self, config: SynchformerConfig = SynchformerConfig()):
        super().__init__(config)

    @staticmethod
    def _keep(key: str) -> bool:
        return key.startswith(VISUAL_PREFIX)

    def _visual_fields(self) -> tuple[str, ...]:
        return ("image_size", "patch_size", "dim", "visual_depth", "visual_heads", "mlp_ratio", "token_dim")

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`encode_video`: frames ``[B, T, ...]`` → ``[B, S·8, D]``."""
        return self.encode_video(frames)


class Synchformer(_SynchformerBase):
    """The full model: both branches and the offset head (DeSync, synchrony reward).

    Args:
        config: model sizes.
    """

    def __init__(self, config: SynchformerConfig = SynchformerConfig()):
        super().__init__(config)
        self.afeat_extractor = ASTEncoder(config.dim, config.audio_depth, config.audio_heads, config.mlp_ratio)
        self.vproj = nn.Linear(config.visual_token_dim, config.sync_dim)
        self.aproj = nn.Linear(config.dim, config.sync_dim)
        if config.head == "transformer":
            self.transformer = SyncTransformer(config.sync_dim, config.sync_depth, config.sync_heads,
                                               config.sync_tokens, config.num_offsets)
        else:
            lags = torch.round(offset_grid(config.num_offsets, config.max_offset) * SYNC_FPS).long()
            self.correlation = CorrelationHead(config.sync_dim, config.segments, lags)
        self.mel = SynchformerMel()

    def audio_windows(self, wav: torch.Tensor, hop: int = AUDIO_HOP) -> torch.Tensor:
        """16 kHz audio → normalised log-mel windows, as av-benchmark's ``encode_audio_with_sync``.

        Windows of 10240 samples every 5120 → power mel (65 frames) → ``log(x + 1e-6)`` → zero-pad
        to 66 frames → ``(x + 4.2677393) / (2 · 4.5689974)``.

        Args:
            wav: ``[B, N]`` mono 16 kHz waveform, N ≥ 10240.
            hop: samples between windows (5120; ``SyncTrain`` precomputes every 640-sample = one-frame
                start once, and cuts shifted pairs from that bank).

        Returns:
            ``[B, S, 128, 66]`` with S = (N − 10240) // hop + 1 (24 for 8 s at the default hop).
        """
        if wav.ndim != 2:
            raise ValueError(f"expected a waveform [B, N] at {SYNC_SAMPLE_RATE} Hz, got {tuple(wav.shape)}")
        audio_window_count(wav.shape[1])  # rejects clips shorter than one window
        segments = wav.float().unfold(1, AUDIO_WINDOW, hop)  # [B, S, 10240]
        mel = torch.log(self.mel(segments) + MEL_LOG_EPS)  # [B, S, 128, 65]
        mel = F.pad(mel, (0, MEL_FRAMES - mel.shape[-1]))  # zeros in the log domain, as the original
        return (mel - MEL_MEAN) / (2 * MEL_STD)

    def encode_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` 16 kHz audio → ``[B, S·6, D]`` audio tokens (``[B, 144, 768]`` for 8 s)."""
        return self.encode_mel(self.audio_windows(wav))

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, S, 128, 66]`` windows of :meth:`audio_windows` → ``[B, S·6, D]`` audio tokens."""
        b, s = mel.shape[:2]
        weight = self.afeat_extractor.ast.embeddings.patch_embeddings.projection.weight
        tokens = self.afeat_extractor(mel.flatten(0, 1).to(weight.dtype))  # [B·S, 6, D]
        return tokens.reshape(b, s * AUDIO_TOKENS_PER_WINDOW, -1)

    def offset_logits(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Offset logits of ``config.segments`` (14) windows of both streams.

        Args:
            video: ``[B, 14·8, D]`` tokens from :meth:`encode_video`.
            audio: ``[B, 14·6, D]`` tokens from :meth:`encode_audio`.

        Returns:
            ``[B, 21]`` logits over :func:`offset_grid` (see :func:`predicted_offset`).
        """
        s = self.config.segments
        want_v, want_a = s * SYNC_TOKENS_PER_WINDOW, s * AUDIO_TOKENS_PER_WINDOW
        if video.ndim != 3 or audio.ndim != 3 or video.shape[1] != want_v or audio.shape[1] != want_a:
            raise ValueError(f"the offset head takes {s} windows: video [B, {want_v}, D] and audio [B, {want_a}, D], "
                             f"got {tuple(video.shape)} and {tuple(audio.shape)} (use desync() for longer clips)")
        head = self.transformer if self.config.head == "transformer" else self.correlation
        return head(self.vproj(video), self.aproj(audio))

    def window_offsets(self, video: torch.Tensor, audio: torch.Tensor, expected: bool = False) -> torch.Tensor:
        """Signed predicted offsets of the first and the last ``segments`` windows of each clip.

        Args:
            video: ``[B, S·8, D]`` tokens, S ≥ ``segments`` (24 for 8 s).
            audio: ``[B, S·6, D]`` tokens with the same S.
            expected: give the expected |offset| of each (:func:`expected_abs_offset`) instead.

        Returns:
            ``[B, 2]`` seconds (positive: the audio is early); both columns are one window when
            S = ``segments``.
        """
        s = self.config.segments
        sv, sa = video.shape[1] // SYNC_TOKENS_PER_WINDOW, audio.shape[1] // AUDIO_TOKENS_PER_WINDOW
        if (sv != sa or sv < s or video.shape[1] % SYNC_TOKENS_PER_WINDOW
                or audio.shape[1] % AUDIO_TOKENS_PER_WINDOW):
            raise ValueError(f"DeSync needs the same number (>= {s}) of whole windows in both streams, got "
                             f"video {tuple(video.shape)} and audio {tuple(audio.shape)}")
        v, a = s * SYNC_TOKENS_PER_WINDOW, s * AUDIO_TOKENS_PER_WINDOW
        read = expected_abs_offset if expected else predicted_offset
        first = read(self.offset_logits(video[:, :v], audio[:, :a]), self.config.max_offset)
        last = read(self.offset_logits(video[:, -v:], audio[:, -a:]), self.config.max_offset)
        return torch.stack([first, last], dim=1)

    def desync(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """av-benchmark's DeSync per clip: mean |predicted offset| of the first and the last ``segments`` windows.

        14 of 24 windows for the official model on 8 s; the synthetic benchmark's model sees 7
        windows (2.56 s), the first and the last 7 of a 4 s clip's 11 (docs/decisions.md).

        Args:
            video: ``[B, S·8, D]`` tokens, S ≥ ``segments``.
            audio: ``[B, S·6, D]`` tokens with the same S.

        Returns:
            ``[B]`` seconds.
        """
        return self.window_offsets(video, audio).abs().mean(dim=1)

    def forward(self, frames: torch.Tensor, wav: torch.Tensor) -> torch.Tensor:
        """Offset logits ``[B, 21]`` of a 4.8 s clip: 120 frames (any :meth:`encode_video` input) and 76800 samples."""
        return self.offset_logits(self.encode_video(frames), self.encode_audio(wav))

    @property
    def offsets(self) -> torch.Tensor:
        """``[num_offsets]`` seconds of the head's classes (:func:`offset_grid` of the config)."""
        return offset_grid(self.config.num_offsets, self.config.max_offset)


EXPORT_FORMAT = "reasonaudio.synchformer/1"
"""``format`` entry of the safetensors metadata that :func:`save_synchformer` writes."""


def save_synchformer(model: Synchformer, path: str | os.PathLike) -> Path:
    """Write ``model``'s state dict (checkpoint key layout) and its config into one safetensors file.

    The config travels in the metadata (``config``: JSON), so :meth:`Synchformer.from_export` and
    :meth:`SynchformerVisualEncoder.from_export` rebuild the model from the file alone, and
    ``load_checkpoint`` refuses it for a model of another config. Written atomically (``.tmp`` then rename).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": EXPORT_FORMAT, "config": json.dumps(model.config.to_dict())})
    tmp.replace(path)
    return path


def read_export_config(path: str | os.PathLike) -> SynchformerConfig | None:
    """The config a :func:`save_synchformer` file records, or None for any other file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Synchformer checkpoint not found: {path}")
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != EXPORT_FORMAT:
        return None
    return SynchformerConfig(**json.loads(meta["config"]))


def _read_state_dict(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """The flat state dict in ``path`` (or its ``"model"`` entry), read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Synchformer checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} does not load with weights_only=True; save its state dict alone "
                         f"(torch.save(ckpt['model'], ...)) as MMAudio did") from err
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state
