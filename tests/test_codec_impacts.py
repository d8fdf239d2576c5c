"""Impacts under stationary noise (issue 17, item 3): the clip kind whose impacts the demo codec lost.

Held-out synth_000000 (block + rain) and synth_000005 (ball, block, bell + hum + rain) scored onset F1 0
after VAE + vocoder while their raw audio scores 1. These tests pin down where the signal can be lost:
not in the clip (raw audio scores perfectly) and not in the ``tiny`` mel (a non-learned inversion of it,
Griffin-Lim, keeps every rain clip's impacts within 20 ms); what remains is the learned codec.
Clips come from a test seed (7), never from the demo's held-out seed.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio

from reasonaudio.data_modules.synthetic import render_audio, sample_scene
from reasonaudio.metrics import synthetic as S
from reasonaudio.models.mel import MelSpectrogram

RAIN_KINDS = [(["block"], ["rain"]), (["ball", "block", "bell"], ["hum", "rain"]), (["bell"], ["rain", "beeps"])]


def _rain_clips():
    return [sample_scene(7, idx, 4.0, "tiny", objects=objects, offscreen=offscreen)
            for objects, offscreen in RAIN_KINDS for idx in range(3)]


def _griffin_lim_from_tiny_mel(wav: np.ndarray) -> np.ndarray:
    """The waveform rebuilt from its ``tiny`` log-mel with no learned model: pseudo-inverse mel bank, then
    32 Griffin-Lim iterations (fixed seed). # [S]"""
    mel = MelSpectrogram("tiny")
    a = mel.audio
    power = mel(torch.from_numpy(wav)[None])[0].exp()  # [M, F]
    magnitude = (torch.linalg.pinv(mel.mel_basis) @ power).clamp(min=0)  # [K, F]
    torch.manual_seed(0)
    out = torchaudio.functional.griffinlim(magnitude[None], torch.hann_window(a.win_length), a.n_fft, a.hop_length,
                                           a.win_length, 1.0, 32, 0.99, None, False)[0]
    return out.numpy()


def test_rain_clips_score_perfectly_before_any_codec():
    for gt in _rain_clips():
        wav = render_audio(gt)
        assert S.onset_f1(wav, gt["sample_rate"], gt) == 1.0, gt["sources"]
        assert S.onset_sync_error(wav, gt["sample_rate"], gt) < 0.002


def test_tiny_mel_keeps_impacts_under_rain():
    """Measured on these 9 clips: F1 ≥ 0.909 (mean 0.982), error ≤ 17.7 ms (mean 10.9 ms)."""
    f1s, errors = [], []
    for gt in _rain_clips():
        wav = _griffin_lim_from_tiny_mel(render_audio(gt))
        f1s.append(S.onset_f1(wav, gt["sample_rate"], gt))
        errors.append(S.onset_sync_error(wav, gt["sample_rate"], gt))
    assert min(f1s) >= 0.9 and np.mean(f1s) >= 0.97
    assert max(errors) <= 0.020 and np.mean(errors) <= 0.012


@pytest.mark.parametrize("level", [0.015, 0.03])
def test_rain_floor_is_far_below_impacts(level):
    """The clip is fair: at the quietest and the loudest rain, every impact's spectral flux is ≥ 5× the
    detection threshold (measured: ≥ 187 and ≥ 72) while the flux away from impacts stays below it
    (measured: 8.0 and 8.2)."""
    gt = sample_scene(7, 0, 4.0, "tiny", objects=["block"], offscreen=["rain"])
    for source in gt["sources"]:
        if source["type"] == "rain":
            source["level"] = level
    wav = render_audio(gt)
    times, flux = S.onset_strength(wav, gt["sample_rate"])
    impacts = np.asarray(gt["sources"][0]["impact_times"])
    near = np.abs(times[:, None] - impacts[None]).min(axis=1) < 0.05
    at_impacts = [flux[np.abs(times - t) < 0.03].max() for t in impacts]
    assert min(at_impacts) >= 5 * S.ONSET_THRESHOLD
    inner = (times > 0.05) & (times < gt["duration"] - 0.05)
    assert flux[~near & inner].max() < S.ONSET_THRESHOLD
