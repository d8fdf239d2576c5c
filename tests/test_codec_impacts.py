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


# ---------------------------------------------------------------- codec training against rain (adopted fixes)

def test_renderer_and_augmentation_share_the_rain_spectrum():
    """The rendered rain is white noise shaped by ``rain_spectrum``: dividing its spectrum by the shape gives back
    the seeded white noise, so the codec's augmentation (same shape) mixes the corpus's own rain."""
    from data_modules.synthetic import _render_source  # noqa: PLC0415 (private renderer, the thing under test)
    from reasonaudio.synthetic_world import rain_spectrum

    gt = sample_scene(7, 0, 4.0, "tiny", objects=["block"], offscreen=["rain"])
    rain = next(s for s in gt["sources"] if s["type"] == "rain")
    wav = _render_source(rain, gt)
    n, sr = wav.size, gt["sample_rate"]
    white = np.random.default_rng(rain["noise_seed"]).standard_normal(n)
    shaped = np.fft.irfft(np.fft.rfft(white) * rain_spectrum(np.maximum(np.fft.rfftfreq(n, 1 / sr), 1.0)), n)
    np.testing.assert_allclose(wav, rain["level"] * shaped / np.sqrt(np.mean(shaped**2)), rtol=1e-9, atol=1e-12)
    freqs = torch.tensor([100.0, 300.0, 1000.0, 5000.0])
    # closed form: (1 + (300/f)^2)^-1 (1 + (f/5000)^2)^-1, equal in numpy and torch
    expected = [1 / 10 / (1 + 0.02**2), 0.5 / (1 + 0.06**2), 1 / (1 + 0.09) / (1 + 0.04), 1 / (1 + 0.06**2) / 2]
    np.testing.assert_allclose(rain_spectrum(freqs).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(rain_spectrum(freqs.numpy().astype(np.float64)), expected, rtol=1e-12)


def test_mix_rain_levels_mask_fraction_and_band():
    from reasonaudio.synthetic_world import RAIN_AUGMENT_RMS, mix_rain

    sr, n = 16_000, 32_000
    torch.manual_seed(0)
    wav = torch.zeros(64, n)
    mask = torch.ones(64, n, dtype=torch.bool)
    mask[:, 24_000:] = False  # the last 0.5 s is padding
    out = mix_rain(wav, sr, 0.5, mask)
    assert torch.equal(wav, torch.zeros(64, n))  # input untouched
    assert out[:, 24_000:].abs().max() == 0  # nothing where the clip is padding
    rms = out[:, :24_000].pow(2).mean(1).sqrt()
    chosen = rms > 0
    assert 20 <= int(chosen.sum()) <= 44  # Binomial(64, 0.5): 99.9 % inside
    assert rms[chosen].min() >= RAIN_AUGMENT_RMS[0] - 1e-6 and rms[chosen].max() <= RAIN_AUGMENT_RMS[1] + 1e-6
    power = torch.fft.rfft(out[chosen, :24_000]).abs().pow(2).mean(0)
    freqs = torch.fft.rfftfreq(24_000, 1 / sr)
    band = lambda lo, hi: power[(freqs >= lo) & (freqs < hi)].mean()  # noqa: E731
    # rain_spectrum² at 100 Hz ≈ 0.01 of its 1–2 kHz plateau, at 7.5 kHz ≈ 0.12
    assert band(50, 150) < 0.03 * band(1000, 2000)
    assert band(7000, 8000) < 0.25 * band(1000, 2000)
    assert torch.equal(mix_rain(wav, sr, 0.0), wav)
    assert mix_rain(torch.full((4, n), 0.999), sr, 1.0).max() <= 1.0
    with pytest.raises(ValueError, match=r"rain fraction must be in \[0, 1\]"):
        mix_rain(wav, sr, 1.5)


def test_transient_loss_is_the_l1_of_one_hop_rises():
    from reasonaudio.losses import transient_loss

    real = torch.zeros(1, 2, 6)
    real[0, 0, 3:] = 3.0  # a step: one rise of 3 in band 0
    smeared = torch.zeros(1, 2, 6)
    smeared[0, 0, 3:] = torch.tensor([1.0, 2.0, 3.0])  # the same level reached over three hops
    # rises: real [0,0,3,0,0] vs smeared [0,0,1,1,1] in band 0, zeros in band 1 → |diffs| 2+1+1 over 10
    assert torch.isclose(transient_loss(smeared, real), torch.tensor(0.4))
    assert float(torch.nn.functional.l1_loss(smeared, real)) < 0.4  # plain L1 charges the smear less (0.25)
    assert transient_loss(real - 1.0, real) == 0  # a level offset has the same rises
    falling = real.flip(-1)
    assert transient_loss(falling, torch.zeros_like(falling)) == 0  # decays are not onsets
    valid = torch.ones(1, 1, 6)
    valid[..., 5] = 0  # frame 5 is padding: the pair (4, 5) is left out, 4 pairs × 2 bands remain
    assert torch.isclose(transient_loss(smeared, real, valid), torch.tensor(3 / 8))
    padded = real.clone()
    padded[..., 5] = 20.0  # a rise into a padding frame is ignored
    assert torch.equal(transient_loss(smeared, padded, valid), transient_loss(smeared, real, valid))
