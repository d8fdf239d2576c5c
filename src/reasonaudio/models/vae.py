"""1-D convolutional mel VAE (Make-An-Audio 2 / MMAudio topology, ×2 time downsampling).

Shapes: mel ``[B, M, F]`` → posterior mean / log-variance ``[B, C, F / 2]`` → mel ``[B, M, F]``.
Mels are normalised per bin by the ``data_mean`` / ``data_std`` buffers (set from training-set
statistics; identity by default) before encoding and de-normalised after decoding.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, ch), ch, eps=1e-6)


class ResBlock1D(nn.Module):
    """GroupNorm → SiLU → conv, twice, with a 1×1 shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3):
        super().__init__()
        self.body = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv1d(cin, cout, kernel_size, padding=kernel_size // 2),
                                  _norm(cout), nn.SiLU(), nn.Conv1d(cout, cout, kernel_size, padding=kernel_size // 2))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


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
    """

    def __init__(self, n_mels: int = 80, latent_channels: int = 20, hidden: int = 384,
                 channel_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2, downsample: int = 2,
                 kernel_size: int = 5):
        super().__init__()
        n_down = downsample.bit_length() - 1
        if downsample < 1 or 2 ** n_down != downsample or n_down > len(channel_mult):
            raise ValueError(f"downsample must be a power of two ≤ 2**{len(channel_mult)}, got {downsample}")
        self.downsample = downsample
        widths = [hidden * m for m in channel_mult]
        enc: list[nn.Module] = [nn.Conv1d(n_mels, widths[0], kernel_size, padding=kernel_size // 2)]
        cin = widths[0]
        for level, w in enumerate(widths):
            for _ in range(num_res_blocks):
                enc.append(ResBlock1D(cin, w))
                cin = w
            if level < n_down:
                enc.append(nn.Conv1d(w, w, 4, stride=2, padding=1))
        enc += [ResBlock1D(cin, cin), _norm(cin), nn.SiLU(),
                nn.Conv1d(cin, 2 * latent_channels, kernel_size, padding=kernel_size // 2)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv1d(latent_channels, cin, kernel_size, padding=kernel_size // 2),
                                ResBlock1D(cin, cin)]
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks + 1):
                dec.append(ResBlock1D(cin, w))
                cin = w
            if level < n_down:
                dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv1d(w, w, 3, padding=1)]
        dec += [_norm(cin), nn.SiLU(), nn.Conv1d(cin, n_mels, kernel_size, padding=kernel_size // 2)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("data_mean", torch.zeros(1, n_mels, 1))
        self.register_buffer("data_std", torch.ones(1, n_mels, 1))

    def encode(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel ``[B, M, F]`` (F divisible by ``downsample``) → mean, logvar ``[B, C, F / downsample]``."""
        assert mel.shape[-1] % self.downsample == 0, f"mel frames {mel.shape[-1]} not divisible by {self.downsample}"
        h = self.encoder((mel - self.data_mean) / self.data_std)
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latent ``[B, C, T]`` → mel ``[B, M, T · downsample]``."""
        return self.decoder(z) * self.data_std + self.data_mean

    def forward(self, mel: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct: returns (mel_hat, mean, logvar)."""
        mean, logvar = self.encode(mel)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if sample else mean
        return self.decode(z), mean, logvar


def mel_vae_tiny(**kwargs) -> MelVAE:
    """CPU-demo VAE for the ``tiny`` preset (32 mels → 8 latent channels)."""
    return MelVAE(**{**dict(n_mels=32, latent_channels=8, hidden=32, channel_mult=(1, 2), num_res_blocks=1), **kwargs})


def mel_vae_s16k(**kwargs) -> MelVAE:
    """MMAudio-16k-sized VAE (80 mels → 20 channels, hidden 384)."""
    return MelVAE(**{**dict(n_mels=80, latent_channels=20, hidden=384), **kwargs})


def mel_vae_s44k(**kwargs) -> MelVAE:
    """MMAudio-44k-sized VAE (128 mels → 40 channels, hidden 512)."""
    return MelVAE(**{**dict(n_mels=128, latent_channels=40, hidden=512), **kwargs})
