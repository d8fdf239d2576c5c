"""Synchformer's offset head: ``GlobalTransformer`` (:class:`SyncTransformer`, minGPT blocks, ``transformer.*`` keys).

It reads the projected visual and audio tokens of ``segments`` windows and gives logits over the
offset classes (:func:`~reasonaudio.models.synchformer.offset_grid`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reasonaudio.models.synchformer.config import NUM_OFFSETS


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
