"""1-D convolutional mel VAE (Make-An-Audio 2 / MMAudio topology: ×2 time downsampling, mid attention).

Legend: B batch, M mel bands, F mel frames, C latent channels, T = F / downsample latent tokens.

mel ``[B, M, F]`` → (normalise per bin) → encoder → posterior mean, std ``[B, C, T]`` → decoder →
mel ``[B, M, F]``. Per-bin mel statistics (``data_mean`` / ``data_std``) normalise the input; per-channel
latent statistics (``latent_mean`` / ``latent_std``, computed by a ``predict`` pass after training)
travel with the checkpoint so the DiT can normalise latents with them.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reasonaudio.config import audio_preset


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, ch), ch, eps=1e-6)


class ResBlock1D(nn.Module):
    """GroupNorm → SiLU → conv, twice, with a 1×1 shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3):
        super().__init__()
        pad = kernel_size // 2
        self.body = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv1d(cin, cout, kernel_size, padding=pad),
                                  _norm(cout), nn.SiLU(), nn.Conv1d(cout, cout, kernel_size, padding=pad))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        return self.skip(x) + self.body(x)


class AttnBlock1D(nn.Module):
    """Single-head self-attention over time (the VAE's middle block), residual."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = nn.Conv1d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        q, k, v = self.qkv(self.norm(x)).transpose(1, 2).chunk(3, dim=-1)  # [B, T, C] each
        h = F.scaled_dot_product_attention(q, k, v)  # [B, T, C]
        return x + self.proj(h.transpose(1, 2))


class MelVAE(nn.Module):
    """Mel-spectrogram VAE.

    Args:
        n_mels: mel bands in and out.
        latent_channels: latent width ``C``.
        hidden: width of the first level.
        channel_mult: width multiplier per level.
        num_res_blocks: residual blocks per level.
        downsample: total time downsampling (a power of two, applied in the first levels).
        kernel_size: kernel of the input / output convolutions (5 in Make-An-Audio 2).
        mid_attention: self-attention in the middle blocks (Make-An-Audio 2 and MMAudio have it).
    """

    def __init__(self, n_mels: int = 80, latent_channels: int = 20, hidden: int = 384,
                 channel_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2, downsample: int = 2,
                 kernel_size: int = 5, mid_attention: bool = True):
        super().__init__()
        n_down = downsample.bit_length() - 1
        if downsample < 1 or 2 ** n_down != downsample or n_down > len(channel_mult):
            raise ValueError(f"downsample must be a power of two ≤ 2**{len(channel_mult)}, got {downsample}")
        self.downsample = downsample
        self.latent_channels = latent_channels
        widths = [hidden * m for m in channel_mult]
        pad = kernel_size // 2

        def mid(ch: int) -> list[nn.Module]:
            return [ResBlock1D(ch, ch)] + ([AttnBlock1D(ch)] if mid_attention else []) + [ResBlock1D(ch, ch)]

        enc: list[nn.Module] = [nn.Conv1d(n_mels, widths[0], kernel_size, padding=pad)]
        ch = widths[0]
        for level, w in enumerate(widths):
            for _ in range(num_res_blocks):
                enc.append(ResBlock1D(ch, w))
                ch = w
            if level < n_down:
                enc.append(nn.Conv1d(w, w, 4, stride=2, padding=1))
        enc += mid(ch) + [_norm(ch), nn.SiLU(), nn.Conv1d(ch, 2 * latent_channels, kernel_size, padding=pad)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv1d(latent_channels, ch, kernel_size, padding=pad)] + mid(ch)
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks + 1):
                dec.append(ResBlock1D(ch, w))
                ch = w
            if level < n_down:
                dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv1d(w, w, 3, padding=1)]
        dec += [_norm(ch), nn.SiLU(), nn.Conv1d(ch, n_mels, kernel_size, padding=pad)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("data_mean", torch.zeros(1, n_mels, 1))
        self.register_buffer("data_std", torch.ones(1, n_mels, 1))
        self.register_buffer("latent_mean", torch.zeros(1, latent_channels, 1))
        self.register_buffer("latent_std", torch.ones(1, latent_channels, 1))

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight of the decoder's output convolution (for the adaptive GAN weight)."""
        return self.decoder[-1].weight

    def encode(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel ``[B, M, F]`` (F divisible by ``downsample``) → posterior mean, std ``[B, C, F / downsample]``."""
        if mel.shape[-1] % self.downsample:
            raise ValueError(f"mel frames ({mel.shape[-1]}) must be divisible by the VAE downsampling {self.downsample}")
        mean, logvar = self.encoder((mel - self.data_mean) / self.data_std).chunk(2, dim=1)
        return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latent ``[B, C, T]`` → mel ``[B, M, T · downsample]``."""
        return self.decoder(z) * self.data_std + self.data_mean

    def forward(self, mel: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct: returns (mel_hat ``[B, M, F]``, mean, std ``[B, C, T]``)."""
        mean, std = self.encode(mel)
        z = mean + torch.randn_like(mean) * std if sample else mean
        return self.decode(z), mean, std

    def normalize_latent(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` latents → zero-mean unit-variance per channel (the DiT's input space)."""
        return (z - self.latent_mean) / self.latent_std

    def unnormalize_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_latent`."""
        return z * self.latent_std + self.latent_mean


def mel_vae_tiny(**kwargs) -> MelVAE:
    """CPU-demo VAE for the ``tiny`` preset (32 mels → 8 latent channels, ~0.2M parameters)."""
    a = audio_preset("tiny")
    return MelVAE(**{**dict(n_mels=a.n_mels, latent_channels=a.latent_channels, hidden=32, channel_mult=(1, 2),
                            num_res_blocks=1), **kwargs})


def mel_vae_s16k(**kwargs) -> MelVAE:
    """MMAudio-16k-sized VAE (80 mels → 20 channels, hidden 384, kernel 5)."""
    a = audio_preset("s16k")
    return MelVAE(**{**dict(n_mels=a.n_mels, latent_channels=a.latent_channels, hidden=384), **kwargs})


def mel_vae_s44k(**kwargs) -> MelVAE:
    """MMAudio-44k-sized VAE (128 mels → 40 channels, hidden 512)."""
    a = audio_preset("s44k")
    return MelVAE(**{**dict(n_mels=a.n_mels, latent_channels=a.latent_channels, hidden=512), **kwargs})


def mel_vae_paper(**kwargs) -> MelVAE:
    """VAE for the ``paper`` preset (128 mels at 44.1 kHz, hop 320 → 40 channels at 68.9 latents/s, hidden 512)."""
    a = audio_preset("paper")
    return MelVAE(**{**dict(n_mels=a.n_mels, latent_channels=a.latent_channels, hidden=512), **kwargs})


def mel_vae_paper16k(**kwargs) -> MelVAE:
    """VAE for the ``paper16k`` preset (80 mels at hop 320 → 20 channels at 25 latents/s)."""
    a = audio_preset("paper16k")
    return MelVAE(**{**dict(n_mels=a.n_mels, latent_channels=a.latent_channels, hidden=384), **kwargs})
