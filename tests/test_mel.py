"""The mel front end equals BigVGAN's own `mel_spectrogram` (the `bigvgan` PyPI package) on real audio."""
from __future__ import annotations

import math

import pytest
import torch

from reasonaudio.media import load_audio
from reasonaudio.models.mel import MelSpectrogram

bigvgan_mel = pytest.importorskip("bigvgan.meldataset", reason="test-only dependency `bigvgan` (pip install -e '.[dev]')")


@pytest.mark.parametrize("preset", ["s16k", "s44k", "paper", "paper16k", "tiny"])
@pytest.mark.parametrize("clip", ["dog.wav", "00008004.flac"])
def test_matches_bigvgan_mel(fixtures_dir, preset, clip):
    ours = MelSpectrogram(preset)
    a = ours.audio
    wav = load_audio(fixtures_dir / "media" / "audio" / clip, a.sample_rate, duration=2.0).wav[None]  # [1, S]
    wav = wav[:, : wav.shape[1] // a.hop_length * a.hop_length]
    ref = bigvgan_mel.mel_spectrogram(wav, a.n_fft, a.n_mels, a.sample_rate, a.hop_length, a.win_length,
                                      a.fmin, a.fmax, center=False)  # natural log
    if a.log_base == "10":
        ref = ref / math.log(10)
    got = ours(wav)
    assert got.shape == ref.shape == (1, a.n_mels, wav.shape[1] // a.hop_length)
    assert float((got - ref).abs().max()) <= 1e-4


def test_frames_and_log_floor():
    mel = MelSpectrogram("s16k")
    silence = mel(torch.zeros(2, 256 * 10))
    assert silence.shape == (2, 80, 10)
    # sqrt(1e-9) magnitudes sit below the 1e-5 clamp: silence is exactly log10(1e-5) = -5
    assert torch.allclose(silence, torch.full_like(silence, -5.0))
