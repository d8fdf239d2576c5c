"""AudioConfig / SequenceConfig: derived lengths pinned to MMAudio's and the paper's numbers."""
import pytest

from reasonaudio.config import PRESETS, SequenceConfig, audio_preset


@pytest.mark.parametrize("preset, samples, mel, latent", [
    ("s16k", 128_000, 500, 250),   # MMAudio 16k: 8 s → 250 latents (31.25 Hz)
    ("s44k", 353_280, 690, 345),   # MMAudio 44k: 352,800 rounded up to 345 × 1024
    ("paper", 353_280, 1104, 552),  # 44.1 kHz, hop 320: 352,800 rounded up to 552 × 640 (68.9 latents/s)
    ("paper16k", 128_000, 400, 200),  # hop 320 → 50 mel frames/s → 25 latents/s (one per video frame)
    ("tiny", 128_000, 500, 250),
])
def test_eight_second_lengths(preset, samples, mel, latent):
    seq = SequenceConfig(8.0, audio_preset(preset))
    assert (seq.num_samples, seq.mel_frames, seq.latent_len) == (samples, mel, latent)
    assert seq.sync_frames == 200 and seq.sync_windows == 24 and seq.sync_len == 192
    assert seq.mllm_frames == 16


def test_latent_rates():
    assert audio_preset("s16k").latent_rate == 31.25
    assert audio_preset("s44k").latent_rate == pytest.approx(43.066, abs=1e-3)
    assert audio_preset("paper").latent_rate == 44100 / 640
    assert audio_preset("paper16k").latent_rate == 25.0


def test_other_durations_round_up_never_truncate():
    seq = SequenceConfig(10.0, audio_preset("s44k"))
    assert seq.latent_len == 431  # ceil(441000 / 1024) = 431 (430.66)
    assert seq.num_samples == 431 * 1024 >= seq.valid_samples == 441_000
    seq = SequenceConfig(4.0, audio_preset("s16k"))
    assert (seq.latent_len, seq.sync_len) == (125, ((100 - 16) // 8 + 1) * 8)
    assert SequenceConfig(2.3, audio_preset("s16k")).num_samples >= round(2.3 * 16000)


def test_preset_mel_parameters_match_reference_vocoders():
    s16, s44 = PRESETS["s16k"], PRESETS["s44k"]
    assert (s16.n_fft, s16.hop_length, s16.n_mels, s16.fmax, s16.log_base) == (1024, 256, 80, 8000.0, "10")
    assert (s44.n_fft, s44.hop_length, s44.n_mels, s44.fmax, s44.log_base) == (2048, 512, 128, None, "e")
    assert PRESETS["paper"].hop_length == PRESETS["paper16k"].hop_length == 5 * 4 * 2 * 2 * 2 * 2  # Table 7
    assert PRESETS["paper"].sample_rate == 44100  # "ReasonAudio generates 44 kHz audio" (Table 3's discussion)


@pytest.mark.parametrize("kwargs, match", [
    (dict(duration=0.0), "duration"),
    (dict(duration=0.5), "Synchformer window"),
])
def test_bad_durations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SequenceConfig(audio=audio_preset("s16k"), **kwargs).sync_len


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown audio preset 'x'"):
        audio_preset("x")
