"""PANNs Cnn14 at 16 kHz (Kong et al.), key-compatible with ``Cnn14_16k_mAP=0.438.pth``.

Legend: B clips, S samples at 16 kHz, T STFT frames (S // 160 + 1), M mel bins (64), C channels.

* Front end (torchlibrosa, frozen, stored in the checkpoint): reflect-padded STFT as two Conv1d
  filter banks (``spectrogram_extractor.stft.conv_real`` / ``conv_imag``: periodic Hann 512 ×
  DFT, hop 160) → power → Slaney mel bank (``logmel_extractor.melW``, librosa's, 50–8000 Hz) →
  ``10 · log10(max(x, 1e-10))`` → ``bn0`` (BatchNorm over mel bins).
* Body: 6 ConvBlocks (two 3×3 conv + BN + ReLU, then 2×2 average pooling; the last pools 1×1),
  64 → 2048 channels → mean over frequency → max + mean over time → ``fc1`` + ReLU = the 2048-d
  embedding av-benchmark calls ``"2048"`` → ``fc_audioset`` = 527 logits (AudioSet classes).

av-benchmark uses the embedding for FD_PANNs and the logits (softmax) for KL_PANNs and IS.
``panns_inference.models.Cnn14`` computes the same network but returns only ``sigmoid(logits)``;
tests/test_metrics_backbones.py loads its state dict into this class and compares both outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from reasonaudio.metrics.backbones.base import AudioBackbone, AudioFeatures


@dataclass(frozen=True)
class Cnn14Config:
    """Sizes of a Cnn14; the defaults are the official 16 kHz model.

    Args:
        sample_rate: input rate (16000).
        window: STFT window and FFT size (512).
        hop: STFT hop (160).
        mel_bins: mel bands (64).
        fmin: lowest mel frequency in Hz (50).
        fmax: highest mel frequency in Hz (8000).
        channels: output channels of the 6 conv blocks; the last is the embedding width (2048).
        num_classes: classifier outputs (527 AudioSet classes).
    """

    sample_rate: int = 16000
    window: int = 512
    hop: int = 160
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 8000.0
    channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    num_classes: int = 527

    def __post_init__(self) -> None:
        if len(self.channels) != 6 or min(self.channels) < 1:
            raise ValueError(f"Cnn14 has 6 conv blocks with positive widths, got channels={self.channels}")


CNN14_TINY = Cnn14Config(channels=(4, 8, 8, 16, 16, 32), num_classes=10)
"""A CPU-sized Cnn14 with the official front end (tests; random weights)."""


class _Conv1dBank(nn.Module):
    """Holds one STFT filter bank under torchlibrosa's key names (``conv_real`` / ``conv_imag``)."""

    def __init__(self, real: torch.Tensor, imag: torch.Tensor, hop: int):
        super().__init__()
        self.conv_real = nn.Conv1d(1, real.shape[0], real.shape[-1], stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, imag.shape[0], imag.shape[-1], stride=hop, bias=False)
        with torch.no_grad():
            self.conv_real.weight.copy_(real)
            self.conv_imag.weight.copy_(imag)
        self.requires_grad_(False)


class _Spectrogram(nn.Module):
    """torchlibrosa ``Spectrogram(center=True, pad_mode="reflect", power=2)``: ``[B, S]`` → ``[B, 1, T, F]``."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft = n_fft
        n = np.arange(n_fft)
        k = np.arange(n_fft // 2 + 1)
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64).numpy()  # librosa's get_window
        angle = 2 * np.pi * np.outer(k, n) / n_fft
        real = torch.tensor(np.cos(angle) * window, dtype=torch.float32)[:, None]  # [F, 1, n_fft]
        imag = torch.tensor(-np.sin(angle) * window, dtype=torch.float32)[:, None]
        self.stft = _Conv1dBank(real, imag, hop)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = F.pad(wav[:, None], (self.n_fft // 2, self.n_fft // 2), mode="reflect")  # [B, 1, S + n_fft]
        real, imag = self.stft.conv_real(x), self.stft.conv_imag(x)  # [B, F, T]
        return (real ** 2 + imag ** 2).transpose(1, 2)[:, None]  # [B, 1, T, F]


class _LogMel(nn.Module):
    """torchlibrosa ``LogmelFilterBank(ref=1, amin=1e-10, top_db=None)``: ``[..., F]`` → ``[..., M]`` dB."""

    def __init__(self, sample_rate: int, n_fft: int, mel_bins: int, fmin: float, fmax: float):
        super().__init__()
        # librosa.filters.mel's Slaney scale and area normalisation (equal to it within 5e-8)
        mel = AF.melscale_fbanks(n_fft // 2 + 1, fmin, fmax, mel_bins, sample_rate, norm="slaney", mel_scale="slaney")
        self.melW = nn.Parameter(mel.float(), requires_grad=False)  # [F, M]

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=1e-10))


class _ConvBlock(nn.Module):
    """Two 3×3 conv (no bias) + BatchNorm + ReLU, then average pooling."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:  # [B, C, T, M]
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool)


class Cnn14(AudioBackbone):
    """PANNs Cnn14 (16 kHz): ``[B, S]`` → 2048-d embedding and 527 logits.

    Args:
        config: model sizes (the official 16 kHz model by default).
    """

    title = "PANNs Cnn14 16 kHz"
    checkpoint_name = "Cnn14_16k_mAP=0.438.pth"
    checkpoint_source = "https://zenodo.org/record/3987831"
    checkpoint_key = "model"

    def __init__(self, config: Cnn14Config = Cnn14Config()):
        super().__init__()
        self.config = config
        self.sample_rate = config.sample_rate
        self.embedding_dim = config.channels[-1]
        self.num_classes = config.num_classes
        self.spectrogram_extractor = _Spectrogram(config.window, config.hop)
        self.logmel_extractor = _LogMel(config.sample_rate, config.window, config.mel_bins, config.fmin, config.fmax)
        self.bn0 = nn.BatchNorm2d(config.mel_bins)
        widths = (1, *config.channels)
        for i in range(6):
            self.add_module(f"conv_block{i + 1}", _ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(self.embedding_dim, self.embedding_dim)
        self.fc_audioset = nn.Linear(self.embedding_dim, config.num_classes)
        self.eval()

    @property
    def min_samples(self) -> int:
        """Five 2× time poolings need 32 STFT frames: ``31 · hop`` samples (0.31 s)."""
        return 31 * self.config.hop

    def forward(self, wav: torch.Tensor) -> AudioFeatures:
        """``[B, S]`` waveform at 16 kHz → embedding ``[B, 2048]`` and logits ``[B, 527]``."""
        self.check_input(wav)
        x = self.logmel_extractor(self.spectrogram_extractor(wav))  # [B, 1, T, M]
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BatchNorm over mel bins
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, 2 if i < 5 else 1)  # [B, C, T', M']
        x = x.mean(dim=3)  # [B, C, T']
        x = x.amax(dim=2) + x.mean(dim=2)  # [B, C]
        embedding = F.relu(self.fc1(x))
        return AudioFeatures(embedding=embedding, logits=self.fc_audioset(embedding))
