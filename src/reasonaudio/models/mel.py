"""Log-mel front end, BigVGAN's definition driven by :class:`~reasonaudio.config.AudioConfig`.

Steps (BigVGAN ``meldataset.mel_spectrogram``): reflect-pad (n_fft − hop)/2 on both sides,
STFT with a periodic Hann window and ``center=False``, magnitude ``sqrt(re² + im² + 1e-9)``,
Slaney-scale Slaney-normalised mel filters, then ``log(clamp(x, 1e-5))`` (natural log, or
log10 for the MMAudio-16k / Make-An-Audio 2 preset). A waveform of ``k · hop`` samples gives
exactly ``k`` frames.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from reasonaudio.config import AudioConfig, audio_preset


class MelSpectrogram(nn.Module):
    """Waveform ``[B, S]`` → log-mel ``[B, n_mels, S // hop]``.

    Args:
        preset: ``AudioConfig`` preset name.
    """

    def __init__(self, preset: str = "s16k"):
        super().__init__()
        self.audio: AudioConfig = audio_preset(preset)
        a = self.audio
        fb = AF.melscale_fbanks(a.n_fft // 2 + 1, a.fmin, a.fmax if a.fmax is not None else a.sample_rate / 2,
                                a.n_mels, a.sample_rate, norm="slaney", mel_scale="slaney")  # [n_freqs, n_mels]
        self.register_buffer("mel_basis", fb.T.contiguous(), persistent=False)  # [n_mels, n_freqs]
        self.register_buffer("window", torch.hann_window(a.win_length), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        a = self.audio
        pad = (a.n_fft - a.hop_length) // 2
        x = F.pad(wav.float().unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)  # [B, S + 2·pad]
        spec = torch.stft(x, a.n_fft, hop_length=a.hop_length, win_length=a.win_length, window=self.window,
                          center=False, normalized=False, onesided=True, return_complex=True)
        mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)  # [B, n_freqs, F]
        mel = torch.matmul(self.mel_basis, mag).clamp(min=1e-5)  # [B, n_mels, F]
        return torch.log10(mel) if a.log_base == "10" else torch.log(mel)
