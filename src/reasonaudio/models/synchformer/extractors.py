"""Synchformer's two feature extractors and the layers they share.

* the visual branch, ``vfeat_extractor``: :class:`MotionFormer` (divided space-time ViT) with the
  initialisation helpers :func:`motion_init_` / :func:`onset_init_` and :func:`synchformer_visual`;
* the audio branch, ``afeat_extractor``: :class:`ASTEncoder` (AST with the transformers-4.x names) and
  :class:`SynchformerMel`, its log-mel front end.

Module and attribute names reproduce the checkpoint's key paths (see :mod:`reasonaudio.models.synchformer`).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from reasonaudio.config import SYNC_DIM, SYNC_TOKENS_PER_WINDOW, SYNC_WINDOW
from reasonaudio.models.synchformer.config import (AST_PATCH, AST_STRIDE, AUDIO_TOKENS_PER_WINDOW, FREQ_PATCHES,
                                                   MEL_BINS, MEL_FRAMES, MEL_HOP, MEL_N_FFT, MEL_WIN, SYNC_SAMPLE_RATE,
                                                   TEMPORAL_PATCH)

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
