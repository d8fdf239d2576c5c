"""PaSST-S (Koutini et al.), key-compatible with ``passt-s-f128-p16-s10-ap.476-swa.pt``.

Legend: B clips, S samples at 32 kHz (320000 = 10 s), T mel frames, F = 12 frequency and
P = 99 time patches, D width (768).

* Front end (hear21passt ``AugmentMelSTFT`` in eval mode, no parameters): pre-emphasis
  ``y[n] = x[n+1] − 0.97 x[n]`` → STFT (n_fft 1024, symmetric Hann 800, hop 320, centred,
  reflect) → power → Kaldi mel bank (128 bins, 0–15 kHz: hear21passt sets fmax to
  ``sr/2 − fmax_aug_range/2`` = 16000 − 1000) → ``log(x + 1e-5)`` → ``(x + 4.5) / 5`` →
  ``[B, 1, 128, T]`` (T = 1000 for 10 s).
* Network (DeiT-B distilled with PaSST's factorised position embeddings): Conv2d patches 16 × 16
  at stride 10 × 10 → ``[B, D, 12, 99]`` + ``time_new_pos_embed`` + ``freq_new_pos_embed`` →
  flattened frequency-major → [CLS + ``new_pos_embed[0]``, DIST + ``new_pos_embed[1]``, patches]
  → 12 pre-norm ViT blocks (12 heads, GELU MLP ×4, LayerNorm eps 1e-6) → ``norm`` → embedding =
  mean of the CLS and DIST outputs (768-d) → ``head`` (LayerNorm eps 1e-5 + Linear) = 527 logits.
  ``head_dist`` exists in the checkpoint but the inference path does not use it.

av-benchmark resamples to 32 kHz and zero-pads or cuts every clip to 10 s (:meth:`PaSST.fit_length`),
then takes ``get_basic_model(mode="all")``'s output: logits ``[:527]`` (KL_PaSST) and embedding
``[527:]`` (FD_PaSST). tests/test_metrics_backbones.py compares this class with hear21passt's
``PasstBasicWrapper(AugmentMelSTFT, PaSST)`` on shared random weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
from torch import nn

from reasonaudio.metrics.backbones.base import AudioBackbone, AudioFeatures


@dataclass(frozen=True)
class PaSSTConfig:
    """Sizes of a PaSST; the defaults are ``passt_s_swa_p16_128_ap476``.

    The front end (32 kHz, 128 mels, hop 320) and the 10 s input are fixed: they define the
    patch grid of the position embeddings.

    Args:
        dim: token width (768).
        depth: transformer blocks (12).
        heads: attention heads (12).
        mlp_ratio: MLP width / ``dim`` (4).
        num_classes: classifier outputs (527 AudioSet classes).
    """

    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: int = 4
    num_classes: int = 527

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.heads <= 0 or self.dim % self.heads or self.depth < 1:
            raise ValueError(f"dim must be a positive multiple of heads and depth >= 1, got {self}")


PASST_TINY = PaSSTConfig(dim=32, depth=1, heads=2, num_classes=10)
"""A CPU-sized PaSST with the official front end and patch grid (tests; random weights)."""

SAMPLE_RATE = 32000
CLIP_SAMPLES = 320000
"""Every clip is zero-padded or cut to 10 s at 32 kHz (av-benchmark)."""
N_FFT = 1024
WINDOW = 800
HOP = 320
MEL_BINS = 128
MEL_FMAX = 15000.0
"""hear21passt's eval-mode fmax: ``sr // 2 − fmax_aug_range // 2`` with fmax_aug_range 2000."""
PREEMPHASIS = 0.97
INPUT_FRAMES = 998
"""Time frames the position embeddings were made for (``input_tdim``)."""
PATCH = 16
STRIDE = 10
FREQ_PATCHES = (MEL_BINS - PATCH) // STRIDE + 1
"""12 frequency patches."""
TIME_PATCHES = INPUT_FRAMES // STRIDE
"""99 time patches (PaSST's ``grid_size``: ``input_tdim // stride``)."""


class PaSSTMel(nn.Module):
    """hear21passt's ``AugmentMelSTFT`` in eval mode: ``[B, S]`` at 32 kHz → log-mel ``[B, 128, (S − 1) // 320 + 1]``.

    The pre-emphasis filter drops one sample, hence ``S − 1``; 10 s give 1000 frames.
    """

    def __init__(self):
        super().__init__()
        banks, _ = kaldi.get_mel_banks(MEL_BINS, N_FFT, float(SAMPLE_RATE), 0.0, MEL_FMAX, 100.0, -500.0, 1.0)
        self.register_buffer("mel_basis", F.pad(banks, (0, 1)), persistent=False)  # [128, 513]
        self.register_buffer("window", torch.hann_window(WINDOW, periodic=False), persistent=False)
        self.register_buffer("preemphasis", torch.tensor([[[-PREEMPHASIS, 1.0]]]), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = F.conv1d(wav[:, None].float(), self.preemphasis)[:, 0]  # [B, S − 1]
        spec = torch.stft(x, N_FFT, hop_length=HOP, win_length=WINDOW, window=self.window, center=True,
                          pad_mode="reflect", normalized=False, return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2  # [B, 513, T]
        mel = torch.log(self.mel_basis @ power + 1e-5)  # [B, 128, T]
        return (mel + 4.5) / 5.0


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, D]
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, length, dim))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    """Holds the patch convolution under the checkpoint's name ``patch_embed.proj``."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, PATCH, stride=STRIDE)


class PaSST(AudioBackbone):
    """PaSST-S: ``[B, 320000]`` at 32 kHz → 768-d embedding and 527 logits.

    Args:
        config: model sizes (``passt_s_swa_p16_128_ap476`` by default).
    """

    title = "PaSST-S (passt_s_swa_p16_128_ap476)"
    checkpoint_name = "passt-s-f128-p16-s10-ap.476-swa.pt"
    checkpoint_source = ("https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/"
                         "passt-s-f128-p16-s10-ap.476-swa.pt")

    def __init__(self, config: PaSSTConfig = PaSSTConfig()):
        super().__init__()
        self.config = config
        self.sample_rate = SAMPLE_RATE
        self.embedding_dim = config.dim
        self.num_classes = config.num_classes
        d = config.dim
        self.mel = PaSSTMel()
        self.patch_embed = _PatchEmbed(d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, d))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, d, FREQ_PATCHES, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, d, 1, TIME_PATCHES))
        for p in (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed,
                  self.time_new_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        self.blocks = nn.Sequential(*(_Block(d, config.heads, config.mlp_ratio) for _ in range(config.depth)))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, config.num_classes))
        self.head_dist = nn.Linear(d, config.num_classes)
        self.eval()

    @property
    def min_samples(self) -> int:
        """:meth:`fit_length` always gives 10 s."""
        return CLIP_SAMPLES

    def fit_length(self, wav: torch.Tensor) -> torch.Tensor:
        """Zero-pad or cut ``[B, S]`` to 320000 samples (10 s), as av-benchmark does."""
        if wav.shape[-1] >= CLIP_SAMPLES:
            return wav[..., :CLIP_SAMPLES]
        return F.pad(wav, (0, CLIP_SAMPLES - wav.shape[-1]))

    def checkpoint_state(self, state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """Accept the bare network's keys (the release file) and hear21passt's wrapper keys (``net.*``)."""
        if any(k.startswith("net.") for k in state):
            state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        return state

    def forward(self, wav: torch.Tensor) -> AudioFeatures:
        """``[B, 320000]`` waveform at 32 kHz → embedding ``[B, 768]`` and logits ``[B, 527]``."""
        self.check_input(wav)
        x = self.patch_embed.proj(self.mel(wav)[:, None].to(self.cls_token.dtype))  # [B, D, 12, P']
        x = x + self.time_new_pos_embed[..., :x.shape[-1]] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)  # [B, 12·P', D], frequency-major
        b = x.shape[0]
        cls = (self.cls_token + self.new_pos_embed[:, :1]).expand(b, -1, -1)
        dist = (self.dist_token + self.new_pos_embed[:, 1:]).expand(b, -1, -1)
        x = self.norm(self.blocks(torch.cat([cls, dist, x], dim=1)))
        embedding = (x[:, 0] + x[:, 1]) / 2
        return AudioFeatures(embedding=embedding, logits=self.head(embedding))
