"""Media I/O (``reasonaudio.media``) on the real fixture clips and on small generated edge cases.

Every test asserts numbers: stream layouts, durations, sample counts, which source frame lands on
which grid instant, spectral levels, sample offsets, byte-identical remuxed packets.
"""
from __future__ import annotations

import bisect
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import frame_index, index_frame, set_mp4_rotation, sine

from reasonaudio import media as M
from reasonaudio.media import MediaError

# (file, width, height, audio channels) — fixtures/README.md, media/vggsound/
VGGSOUND = [
    ("0nib7bMm8BA_000015.mp4", 480, 360, 1),
    ("1aDnyPubxdY_000118.mp4", 320, 240, 1),
    ("-Qowmc0P9ic_000034.mp4", 640, 360, 2),
    ("6zlMP_kQ_-w_000030.mp4", 480, 360, 2),
    ("54bz5yqN2IA_000004.mp4", 480, 360, 2),
    ("7tMPoaU2oL4_000000.mp4", 480, 360, 2),
]
# (file, sample rate, channels, duration)
AUDIO_FILES = [
    ("dog.wav", 44100, 2, 11.0),
    ("rain.wav", 44100, 2, 12.319592),
    ("typing.wav", 48000, 2, 11.885625),
    ("00008004.flac", 48000, 1, 29.008292),
]
# the VGGSound clips go through probe, validate_file, load_audio and load_video in their own tests
OTHER_FIXTURES = ([f"audio/{a[0]}" for a in AUDIO_FILES]
                  + ["edge/silent_audio.mp4", "edge/opus_audio.mkv", "edge/no_duration.webm", "edge/multi_stream.mp4"])

INT16_STEP = 1 / 32768


@pytest.fixture(scope="session")
def media_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "media"


def spectrum_db(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, level in dB re the peak) of a Blackman-Harris-windowed segment (sidelobes < -92 dB)."""
    n = len(x)
    k = np.arange(n)
    w = (0.35875 - 0.48829 * np.cos(2 * np.pi * k / n) + 0.14128 * np.cos(4 * np.pi * k / n)
         - 0.01168 * np.cos(6 * np.pi * k / n))
    mag = np.abs(np.fft.rfft(x * w))
    return np.fft.rfftfreq(n, 1 / rate), 20 * np.log10(np.maximum(mag, 1e-20) / mag.max())


def peak_freq(x: np.ndarray, rate: int) -> float:
    f, db = spectrum_db(x, rate)
    return float(f[np.argmax(db)])


def click_positions(x: np.ndarray, expected: list[int], window: int) -> list[int]:
    """Index of the largest |x| within ±window of each expected index."""
    out = []
    for e in expected:
        lo = max(0, e - window)
        out.append(lo + int(np.argmax(np.abs(x[lo:e + window]))))
    return out


# =========================================================================== probe


@pytest.mark.parametrize("name,width,height,channels", VGGSOUND)
def test_probe_vggsound_clip(media_dir, name, width, height, channels):
    info = M.probe(media_dir / "vggsound" / name)
    assert info.container.startswith("mov,mp4")
    assert info.duration == pytest.approx(10.0, abs=1e-3)
    assert [s.kind for s in info.streams] == ["video", "audio"]
    v, a = info.video, info.audio
    assert (v.codec, v.width, v.height, v.rotation) == ("h264", width, height, 0)
    assert v.fps == pytest.approx(30.0)
    assert v.duration == pytest.approx(10.0, abs=1e-3)
    assert (a.codec, a.sample_rate, a.channels) == ("aac", 44100, channels)
    assert a.duration == pytest.approx(10.0, abs=1e-3)
    assert M.measure_duration(media_dir / "vggsound" / name) == pytest.approx(10.0, abs=1e-3)


@pytest.mark.parametrize("name,rate,channels,duration", AUDIO_FILES)
def test_probe_audio_only_file(media_dir, name, rate, channels, duration):
    info = M.probe(media_dir / "audio" / name)
    assert info.video is None
    assert len(info.streams) == 1
    a = info.audio
    assert (a.sample_rate, a.channels) == (rate, channels)
    assert a.codec == ("flac" if name.endswith(".flac") else "pcm_s16le")
    assert info.duration == pytest.approx(duration, abs=1e-5)
    assert a.duration == pytest.approx(duration, abs=1e-5)


def test_probe_silent_audio_fixture(media_dir):
    info = M.probe(media_dir / "edge/silent_audio.mp4")
    assert info.duration == pytest.approx(7.0356, abs=1e-3)
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 320, 240)
    assert info.video.fps == pytest.approx(30000 / 1001)
    assert info.video.duration == pytest.approx(6.9736, abs=1e-3)
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 44100, 2)


def test_probe_opus_mkv(media_dir):
    info = M.probe(media_dir / "edge/opus_audio.mkv")
    assert info.container == "matroska,webm"
    assert info.duration == pytest.approx(10.381, abs=1e-3)
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 426, 240)
    assert info.video.fps == pytest.approx(30.0)
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("opus", 48000, 1)
    # Matroska keeps per-track durations in DURATION tags
    assert info.audio.duration == pytest.approx(10.381, abs=1e-3)
    assert info.video.duration == pytest.approx(10.333, abs=1e-3)
    assert M.measure_duration(media_dir / "edge/opus_audio.mkv") == pytest.approx(10.374, abs=1e-3)


def test_probe_webm_without_duration(media_dir):
    path = media_dir / "edge/no_duration.webm"
    info = M.probe(path)
    assert info.duration is None
    assert info.video.duration is None and info.audio.duration is None
    assert (info.video.codec, info.video.width, info.video.height) == ("vp9", 1280, 720)
    assert info.video.fps == pytest.approx(15000 / 1001)
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("opus", 48000, 2)
    # from packet timestamps: the last video frame (4.872 s) plus its 66 ms
    assert M.measure_duration(path) == pytest.approx(4.938, abs=1e-3)
    assert M.measure_duration(path) == pytest.approx(4.94, abs=0.1)


def test_probe_multi_stream_lists_all_and_defaults_to_first(media_dir):
    info = M.probe(media_dir / "edge/multi_stream.mp4")
    assert [s.kind for s in info.streams] == ["video", "audio", "subtitle", "video", "audio", "subtitle"]
    assert [s.index for s in info.streams] == list(range(6))
    assert info.duration == pytest.approx(13.056, abs=1e-3)
    v0, a1, sub2, v3, a4, _ = info.streams
    assert info.video is v0 and info.audio is a1
    assert (v0.codec, v0.width, v0.height, v0.fps) == ("h264", 320, 180, 25.0)
    assert v0.duration == pytest.approx(13.0, abs=1e-3)
    assert (v3.codec, v3.width, v3.height) == ("h264", 480, 270)
    assert v3.fps == pytest.approx(30000 / 1001)
    assert v3.duration == pytest.approx(13.013, abs=1e-3)
    assert (a1.codec, a1.sample_rate, a1.channels) == ("aac", 8000, 2)
    assert (a4.codec, a4.sample_rate, a4.channels) == ("aac", 16000, 2)
    assert a1.duration == pytest.approx(13.056, abs=1e-3) and a4.duration == pytest.approx(13.056, abs=1e-3)
    assert (sub2.codec, sub2.sample_rate, sub2.fps) == ("mov_text", None, None)
    assert sub2.duration == pytest.approx(16.57, abs=1e-3)
    as_dict = info.to_dict()
    assert as_dict["streams"][4]["sample_rate"] == 16000


def test_probe_missing_file_raises_media_error(tmp_path):
    with pytest.raises(MediaError, match="cannot open: file does not exist") as e:
        M.probe(tmp_path / "nope.mp4")
    assert e.value.path == str(tmp_path / "nope.mp4")
    assert e.value.reason == "cannot open: file does not exist"


# =========================================================================== load_audio: channels and rates


def test_stereo_downmix_is_the_channel_mean(make_audio):
    left = sine(440, 1.0, 16000, amplitude=0.8)
    path = make_audio("left_only.wav", np.stack([left, np.zeros_like(left)]), 16000)
    clip = M.load_audio(path, 16000)
    assert clip.source_channels == 2 and clip.source_rate == 16000
    assert clip.wav.dtype == torch.float32 and clip.wav.shape == (16000,)
    assert float(clip.wav.abs().max()) == pytest.approx(0.4, abs=2 * INT16_STEP)
    np.testing.assert_allclose(clip.wav.numpy(), left / 2, atol=INT16_STEP)
    # opposite channels cancel: a mean, not the left channel or a sum
    anti = make_audio("anti.wav", np.stack([left, -left]), 16000)
    assert float(M.load_audio(anti, 16000).wav.abs().max()) <= INT16_STEP


@pytest.mark.parametrize("ext", [".flac", ".wav"])
def test_5_1_audio_is_averaged_over_six_channels(make_audio, ext):
    tone = sine(440, 1.0, 48000, amplitude=1.0)
    gains = np.array([0.6, 0.3, 0.0, 0.0, 0.0, 0.3], np.float32)  # FL, FR, FC, LFE, BL, BR
    path = make_audio("surround" + ext, gains[:, None] * tone[None], 48000, layout="5.1")
    info = M.probe(path)
    assert info.audio.channels == 6
    clip = M.load_audio(path, 48000)
    assert clip.source_channels == 6
    assert float(clip.wav.abs().max()) == pytest.approx(gains.sum() / 6, abs=1e-3)  # 0.2
    np.testing.assert_allclose(clip.wav.numpy(), tone * gains.sum() / 6, atol=2 * INT16_STEP)


def test_8k_audio_is_resampled_to_16k(make_audio):
    path = make_audio("narrow.flac", sine(1000, 2.0, 8000, amplitude=0.5), 8000)
    clip = M.load_audio(path, 16000)
    assert clip.source_rate == 8000 and clip.sample_rate == 16000
    assert clip.wav.shape == (32000,) and bool(clip.mask.all()) and clip.duration == 2.0
    body = clip.wav[8000:24000].numpy()
    assert peak_freq(body, 16000) == pytest.approx(1000.0, abs=1.0)
    assert float(np.abs(body).max()) == pytest.approx(0.5, abs=0.005)
    f, db = spectrum_db(body, 16000)
    assert db[f > 4100].max() < -80  # nothing new above the source's 4 kHz Nyquist


def test_resampling_44k1_to_16k_has_no_leakage_and_no_aliasing(make_audio):
    rate = 44100
    # 1 kHz in band; 10 kHz above the new 8 kHz Nyquist, where a bad filter aliases it to 6 kHz.
    x = sine(1000, 2.0, rate, amplitude=0.5) + sine(10000, 2.0, rate, amplitude=0.4)
    path = make_audio("tones.flac", x, rate)
    clip = M.load_audio(path, 16000)
    assert clip.wav.shape == (32000,)
    f, db = spectrum_db(clip.wav[8000:24000].numpy(), 16000)
    assert f[np.argmax(db)] == pytest.approx(1000.0, abs=1.0)
    outside = np.abs(f - 1000) > 8  # Blackman-Harris main lobe is ±4 bins of 1 Hz
    assert db[outside].max() < -60
    assert db[np.abs(f - 6000) < 10].max() < -60  # the 10 kHz tone's alias
    # amplitude of the kept tone: 0.5 within the filter's pass-band ripple
    assert float(clip.wav[8000:24000].abs().max()) == pytest.approx(0.5, abs=0.01)


# =========================================================================== load_audio: lengths and offsets


@pytest.mark.parametrize("name", [v[0] for v in VGGSOUND[:3]])
def test_exact_sample_count_for_requested_duration(media_dir, name):
    clip = M.load_audio(media_dir / "vggsound" / name, 16000, start=1.5, duration=8.0)
    assert clip.wav.shape == (128000,) and clip.mask.shape == (128000,)
    assert bool(clip.mask.all()) and clip.duration == 8.0
    assert clip.wav.dtype == torch.float32
    assert float(clip.wav.abs().max()) <= 1.0
    full = M.load_audio(media_dir / "vggsound" / name, 16000)
    assert full.wav.shape == (160000,) and full.duration == 10.0


def test_short_file_is_padded_with_a_mask(make_audio):
    path = make_audio("two_seconds.wav", sine(440, 2.0, 16000, amplitude=0.5), 16000)
    clip = M.load_audio(path, 16000, duration=8.0, pad="pad")
    assert clip.wav.shape == (128000,)
    assert int(clip.mask.sum()) == 32000
    assert bool(clip.mask[:32000].all()) and not bool(clip.mask[32000:].any())
    assert bool((clip.wav[32000:] == 0).all())
    assert float(clip.wav[:32000].abs().max()) == pytest.approx(0.5, abs=1e-3)
    assert clip.duration == 2.0


def test_short_file_is_rejected_with_its_length(make_audio):
    path = make_audio("two_seconds.wav", sine(440, 2.0, 16000), 16000)
    with pytest.raises(MediaError) as e:
        M.load_audio(path, 16000, duration=8.0, pad="reject")
    assert e.value.reason == "too short: 2.0 s < 8.0 s"
    assert e.value.path == str(path)
    with pytest.raises(ValueError, match="pad policy"):
        M.load_audio(path, 16000, duration=1.0, pad="repeat")


def _impulses(seconds: float, rate: int, at: list[float], amplitude: float = 0.9) -> np.ndarray:
    x = np.zeros(round(seconds * rate), np.float32)
    for t in at:
        x[round(t * rate)] = amplitude
    return x


def test_start_offset_places_a_click_at_the_known_index(make_audio):
    path = make_audio("clicks.wav", _impulses(5.0, 44100, [1.25, 3.5]), 44100)
    native = M.load_audio(path, 44100, start=1.0)
    assert native.wav.shape == (round(4.0 * 44100),)
    assert np.flatnonzero(native.wav.numpy() > 0.5).tolist() == [round(0.25 * 44100), round(2.5 * 44100)]
    resampled = M.load_audio(path, 16000, start=1.0, duration=3.0)
    assert resampled.wav.shape == (48000,)
    assert click_positions(resampled.wav.numpy(), [4000, 40000], 200) == [4000, 40000]


@pytest.mark.parametrize("name,rate", [("vggsound/-Qowmc0P9ic_000034.mp4", 16000),
                                       ("edge/opus_audio.mkv", 16000),
                                       ("audio/00008004.flac", 16000),
                                       ("audio/dog.wav", 22050),
                                       ("edge/multi_stream.mp4", 16000)])
def test_a_crop_equals_the_slice_of_the_full_decode(media_dir, name, rate):
    """Offsets land on the full decode's sample grid, with resampler context on both sides."""
    path = media_dir / name
    full = M.load_audio(path, rate).wav
    for start in (0.5, 1.28, 3.333, 7.1):
        crop = M.load_audio(path, rate, start=start, duration=2.0).wav
        i = round(start * rate)
        assert crop.shape == (2 * rate,)
        assert float((crop - full[i:i + 2 * rate]).abs().max()) <= 1e-5, start


def test_seeking_deep_into_a_long_file_is_sample_exact(make_audio):
    """Starts after 30 s seek (with decoder pre-roll) instead of decoding from the beginning."""
    x = _impulses(45.0, 8000, [35.25, 40.0])
    path = make_audio("long.flac", x, 8000)
    clip = M.load_audio(path, 8000, start=35.0, duration=6.0)
    assert clip.wav.shape == (48000,)
    assert np.flatnonzero(clip.wav.numpy() > 0.5).tolist() == [2000, 40000]
    up = M.load_audio(path, 16000, start=35.0, duration=6.0)
    assert click_positions(up.wav.numpy(), [4000, 80000], 100) == [4000, 80000]


def test_seeking_in_a_long_aac_file_matches_the_full_decode(make_audio):
    x = _impulses(40.0, 16000, [33.5, 36.0]) + sine(300, 40.0, 16000, amplitude=0.2)
    path = make_audio("long.m4a", x, 16000)
    full = M.load_audio(path, 16000).wav
    clip = M.load_audio(path, 16000, start=33.0, duration=4.0)
    assert clip.wav.shape == (64000,)
    # AAC needs the pre-roll: the first samples after a bare seek would be garbage
    assert float((clip.wav - full[33 * 16000:37 * 16000]).abs().max()) < 1e-3
    assert click_positions(clip.wav.numpy(), [8000, 48000], 400) == pytest.approx([8000, 48000], abs=16)


def test_start_past_the_end(make_audio):
    path = make_audio("one_second.wav", sine(440, 1.0, 16000), 16000)
    clip = M.load_audio(path, 16000, start=3.0, duration=2.0)
    assert clip.wav.shape == (32000,) and not bool(clip.mask.any()) and bool((clip.wav == 0).all())
    assert clip.duration == 0.0
    with pytest.raises(MediaError, match=r"too short: 0\.0 s < 2\.0 s"):
        M.load_audio(path, 16000, start=3.0, duration=2.0, pad="reject")
    with pytest.raises(MediaError, match=r"too short: start 3\.0 s is past the end \(1\.0 s\)"):
        M.load_audio(path, 16000, start=3.0)


def test_audio_stream_selection_by_absolute_index(media_dir):
    path = media_dir / "edge/multi_stream.mp4"
    default = M.load_audio(path, 16000)
    assert default.source_rate == 8000 and default.source_channels == 2
    second = M.load_audio(path, 16000, stream=4)
    assert second.source_rate == 16000
    assert default.wav.shape == second.wav.shape == (round(13.056 * 16000),)
    with pytest.raises(MediaError, match="stream 3 is not an audio stream"):
        M.load_audio(path, 16000, stream=3)


def test_reject_silent_on_the_silent_fixture(media_dir):
    path = media_dir / "edge/silent_audio.mp4"
    clip = M.load_audio(path, 16000)
    assert M.peak_dbfs(clip.wav) < -90  # README: digital silence (about -91 dB)
    assert clip.wav.shape == (round(7.035646 * 16000),)
    with pytest.raises(MediaError, match=r"^.*: silent audio \(peak .* dBFS < -60 dBFS\)$") as e:
        M.load_audio(path, 16000, reject_silent=True)
    assert e.value.reason.startswith("silent audio")
    loud = M.load_audio(media_dir / "vggsound/-Qowmc0P9ic_000034.mp4", 16000, reject_silent=True)
    assert M.peak_dbfs(loud.wav) > -6


def test_opus_mkv_audio(media_dir):
    clip = M.load_audio(media_dir / "edge/opus_audio.mkv", 48000)
    assert (clip.source_rate, clip.source_channels) == (48000, 1)
    # 497651 decoded samples (the Opus pre-skip removed) end before the 10.381 s DURATION tag
    assert clip.wav.shape == (497651,) and bool(clip.mask.all())
    assert -20 < M.peak_dbfs(clip.wav) < 0


def test_webm_audio_that_starts_late_is_masked_before_its_first_sample(media_dir):
    clip = M.load_audio(media_dir / "edge/no_duration.webm", 48000)
    assert clip.source_channels == 2
    # the Opus track starts at 15 ms and holds 81 frames of 60 ms: it ends at 4.875 s
    assert clip.wav.shape == (round(4.875 * 48000),)
    assert not bool(clip.mask[:720].any()) and bool(clip.mask[720:].all())
    assert clip.duration == pytest.approx(81 * 0.060, abs=1e-9)


def test_audio_from_a_video_only_file_is_a_media_error(make_video):
    path = make_video("video_only.mp4", n_frames=5, fps=25)
    with pytest.raises(MediaError, match="no audio stream"):
        M.load_audio(path, 16000)


def test_peak_dbfs_and_silence_check():
    assert M.peak_dbfs(torch.tensor([0.5, -0.25])) == pytest.approx(-6.0206, abs=1e-4)
    assert M.peak_dbfs(torch.zeros(10)) == -math.inf
    assert M.peak_dbfs(torch.zeros(0)) == -math.inf
    M.check_not_silent(torch.full((4,), 1e-3), "x.wav")  # -60 dBFS is not below -60
    with pytest.raises(MediaError, match=r"silent audio \(peak -66\.0 dBFS < -60 dBFS\)"):
        M.check_not_silent(torch.full((4,), 5e-4), "x.wav")


# =========================================================================== load_video: the time grid


def test_30fps_source_on_a_25fps_grid_shows_the_right_frames(make_video):
    path = make_video("idx30.mp4", n_frames=60, fps=30)
    clip = M.load_video(path, 25)
    assert clip.frames.shape == (50, 32, 32, 3) and clip.frames.dtype == torch.uint8
    assert bool(clip.mask.all()) and clip.duration == 2.0
    assert clip.source_fps == 30.0 and clip.fps == 25
    # grid instant k/25 shows source frame floor(k·30/25): 0 1 2 3 4 6 7 ...
    assert [frame_index(f) for f in clip.frames] == [k * 30 // 25 for k in range(50)]


def test_grid_with_start_and_duration(make_video):
    path = make_video("idx30.mp4", n_frames=60, fps=30)
    clip = M.load_video(path, 25, start=0.52, duration=1.0)
    assert clip.frames.shape == (25, 32, 32, 3)
    assert [frame_index(f) for f in clip.frames] == [math.floor((0.52 + k / 25) * 30 + 1e-9) for k in range(25)]


def test_12_5_fps_source(make_video):
    path = make_video("idx12_5.mp4", n_frames=25, fps=12.5)
    assert M.probe(path).video.fps == 12.5
    up = M.load_video(path, 25)
    assert up.frames.shape[0] == 50 and up.source_fps == 12.5
    assert [frame_index(f) for f in up.frames] == [k // 2 for k in range(50)]
    down = M.load_video(path, 8)
    assert down.frames.shape[0] == 16
    assert [frame_index(f) for f in down.frames] == [math.floor(k * 12.5 / 8) for k in range(16)]


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_variable_frame_rate(make_video, ext):
    pts = [0.0, 0.04, 0.1, 0.3, 0.35, 0.36, 0.7, 0.9, 1.0]
    path = make_video("vfr" + ext, pts_seconds=pts)
    clip = M.load_video(path, 10)
    # the last frame (1.0 s) lasts its 41.7 ms: grid 0.0 … 1.0 s → 11 instants
    assert clip.frames.shape[0] == 11
    expected = [bisect.bisect_right(pts, k / 10 + 1e-9) - 1 for k in range(11)]
    assert expected == [0, 2, 2, 3, 5, 5, 5, 6, 6, 7, 8]
    assert [frame_index(f) for f in clip.frames] == expected


def test_mkv_millisecond_timestamps_do_not_shift_the_grid(make_video):
    """Matroska stores 66.667 ms as 67 ms: frame 2 of 30 fps must still be shown at 1/15 s."""
    path = make_video("idx30.mkv", n_frames=30, fps=30)
    half = M.load_video(path, 15)
    assert half.frames.shape[0] == 15
    assert [frame_index(f) for f in half.frames] == [2 * k for k in range(15)]
    clip = M.load_video(path, 25)
    assert clip.frames.shape[0] == 25 and clip.duration == 1.0
    assert [frame_index(f) for f in clip.frames] == [k * 30 // 25 for k in range(25)]


def test_avi_with_mpeg4(make_video):
    path = make_video("idx30.avi", n_frames=30, fps=30)
    info = M.probe(path)
    assert (info.container, info.video.codec, info.video.fps) == ("avi", "mpeg4", 30.0)
    clip = M.load_video(path, 25)
    assert clip.frames.shape == (25, 32, 32, 3)
    assert [frame_index(f) for f in clip.frames] == [k * 30 // 25 for k in range(25)]


def test_tiny_16x16_frames(make_video):
    path = make_video("tiny.mkv", n_frames=30, fps=30, size=(16, 16))
    clip = M.load_video(path, 25)
    assert clip.frames.shape == (25, 16, 16, 3)
    assert [frame_index(f) for f in clip.frames] == [k * 30 // 25 for k in range(25)]
    big = M.load_video(path, 25, size=224)
    assert big.frames.shape == (25, 224, 224, 3)
    assert [frame_index(f) for f in big.frames] == [k * 30 // 25 for k in range(25)]
    assert float(big.frames[10].float().std()) < 1.0  # a flat frame stays flat when upscaled


def test_video_shorter_than_requested_is_padded_or_rejected(make_video):
    path = make_video("one_second.mp4", n_frames=25, fps=25)
    clip = M.load_video(path, 25, duration=2.0)
    assert clip.frames.shape == (50, 32, 32, 3)
    assert int(clip.mask.sum()) == 25 and bool(clip.mask[:25].all())
    assert bool((clip.frames[25:] == 0).all())
    assert clip.duration == 1.0
    with pytest.raises(MediaError) as e:
        M.load_video(path, 25, duration=2.0, pad="reject")
    assert e.value.reason == "too short: 1.0 s < 2.0 s"
    with pytest.raises(ValueError, match="pad policy"):
        M.load_video(path, 25, duration=0.5, pad="loop")


def test_video_start_past_the_end(make_video):
    path = make_video("one_second.mp4", n_frames=25, fps=25)
    clip = M.load_video(path, 25, start=5.0, duration=1.0, size=64)
    assert clip.frames.shape == (25, 64, 64, 3)
    assert not bool(clip.mask.any()) and bool((clip.frames == 0).all()) and clip.duration == 0.0
    with pytest.raises(MediaError, match=r"too short: start 5\.0 s is past the end \(1\.0 s\)"):
        M.load_video(path, 25, start=5.0)


def test_video_stream_selection_by_absolute_index(media_dir):
    path = media_dir / "edge/multi_stream.mp4"
    first = M.load_video(path, 5, duration=2.0)
    assert first.frames.shape == (10, 180, 320, 3) and first.source_fps == 25.0
    second = M.load_video(path, 5, duration=2.0, stream=3)
    assert second.frames.shape == (10, 270, 480, 3)
    assert second.source_fps == pytest.approx(30000 / 1001)
    with pytest.raises(MediaError, match="stream 1 is not a video stream"):
        M.load_video(path, 5, stream=1)


def test_video_from_an_audio_file_is_a_media_error(media_dir):
    with pytest.raises(MediaError, match="no video stream"):
        M.load_video(media_dir / "audio/dog.wav", 25)


# =========================================================================== load_video: sizes and rotation


def test_synchformer_policy_on_a_whole_vggsound_clip(media_dir):
    clip = M.load_video(media_dir / "vggsound/-Qowmc0P9ic_000034.mp4", 25, size=224)
    assert clip.frames.shape == (250, 224, 224, 3) and clip.frames.dtype == torch.uint8
    assert bool(clip.mask.all()) and clip.duration == 10.0 and clip.source_fps == 30.0


@pytest.mark.parametrize("name,width,height,channels", VGGSOUND)
def test_synchformer_policy_on_vggsound(media_dir, name, width, height, channels):
    path = media_dir / "vggsound" / name
    # after the clips' second keyframe (8.0 or 8.33 s), so the seek skips most of the decoding
    clip = M.load_video(path, 25, start=8.4, duration=1.6, size=224)
    assert clip.frames.shape == (40, 224, 224, 3)
    assert bool(clip.mask.all()) and clip.source_fps == 30.0
    # the same as resizing the full-resolution frames afterwards
    raw = M.load_video(path, 25, start=8.8, duration=0.2)
    assert raw.frames.shape == (5, height, width, 3)
    assert torch.equal(M.resize_short_side_crop(raw.frames, 224), clip.frames[10:15])
    # to the end: instants 9.90, 9.94, 9.98 s fall before the last frame (9.967 s + 1/30) ends
    tail = M.load_video(path, 25, start=9.9, size=224)
    assert tail.frames.shape == (3, 224, 224, 3) and tail.duration == pytest.approx(0.12)


@pytest.mark.parametrize("name,width,height,channels", VGGSOUND[:3])
def test_mllm_policy_on_vggsound(media_dir, name, width, height, channels):
    clip = M.load_video(media_dir / "vggsound" / name, 2, max_side=448, multiple=28)
    expected = {(480, 360): (336, 448), (320, 240): (252, 308), (640, 360): (252, 448)}[(width, height)]
    assert clip.frames.shape == (20, *expected, 3)
    assert clip.frames.shape[1] % 28 == 0 and clip.frames.shape[2] % 28 == 0


def test_resize_max_side_never_exceeds_max_side():
    frames = torch.zeros(1, 360, 640, 3, dtype=torch.uint8)
    # 500/640 · 640 = 500 → 18·28 = 504 would overshoot; rounded down to 17·28 = 476
    assert M.resize_max_side(frames, 500, 28).shape == (1, 280, 476, 3)
    assert M.resize_max_side(frames, 448, 28).shape == (1, 252, 448, 3)
    small = torch.zeros(1, 56, 84, 3, dtype=torch.uint8)
    assert M.resize_max_side(small, 448, 28) is small  # already a multiple of 28: untouched
    assert M.resize_max_side(frames, 448).shape == (1, 252, 448, 3)


def _ramp(h: int, w: int) -> torch.Tensor:
    """``[1, H, W, 3]`` with a horizontal ramp 0…255 over the wide side's columns (vertical if tall)."""
    n = max(h, w)
    line = torch.linspace(0, 255, n).round().to(torch.uint8)
    img = line[None, :, None].expand(h, w, 3) if w >= h else line[:, None, None].expand(h, w, 3)
    return img[None].contiguous()


@pytest.mark.parametrize("h,w", [(16, 320), (320, 16)])
def test_extreme_aspect_ratio_short_side_crop_keeps_the_centre(h, w):
    out = M.resize_short_side_crop(_ramp(h, w), 224)
    assert out.shape == (1, 224, 224, 3)
    # scale 14: the 224-pixel crop covers the middle 16 source pixels of the ramp (152…167 of 320)
    along = out[0, 112, :, 0] if w > h else out[0, :, 112, 0]
    assert float(along.float().mean()) == pytest.approx(127.5, abs=2.0)
    assert int(along[0]) == pytest.approx(255 * 152 / 319, abs=3)
    assert int(along[-1]) == pytest.approx(255 * 167 / 319, abs=3)
    assert bool((along[1:].int() - along[:-1].int() >= 0).all())


@pytest.mark.parametrize("h,w", [(16, 320), (320, 16)])
def test_extreme_aspect_ratio_files(make_video, h, w):
    path = make_video(f"strip_{h}x{w}.mp4", n_frames=10, fps=25, size=(h, w))
    plain = M.load_video(path, 25)
    assert plain.frames.shape == (10, h, w, 3)
    sq = M.load_video(path, 25, size=224)
    assert sq.frames.shape == (10, 224, 224, 3)
    assert [frame_index(f) for f in sq.frames] == list(range(10))
    mllm = M.load_video(path, 25, max_side=448, multiple=28)
    assert mllm.frames.shape == ((10, 28, 308, 3) if w > h else (10, 308, 28, 3))


_BAND_WHERE = {  # where the left white band of the stored frame ends up on screen
    90: lambda f: (f.shape[:2] == (32, 16), f[:8], f[8:]),  # top
    180: lambda f: (f.shape[:2] == (16, 32), f[:, 24:], f[:, :24]),  # right
    270: lambda f: (f.shape[:2] == (32, 16), f[24:], f[:24]),  # bottom
}
_MATRICES = {
    90: (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000),
    180: (-0x10000, 0, 0, 0, -0x10000, 0, 0, 0, 0x40000000),
    270: (0, -0x10000, 0, 0x10000, 0, 0, 0, 0, 0x40000000),
}


def _banded(n: int = 4) -> np.ndarray:
    frames = np.zeros((n, 16, 32, 3), np.uint8)  # 16 rows × 32 cols, white left band 8 cols wide
    frames[:, :, :8] = 255
    return frames


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata_is_applied(make_video, degrees):
    path = set_mp4_rotation(make_video("rotated.mp4", frames=_banded(), fps=25), _MATRICES[degrees])
    info = M.probe(path).video
    assert (info.width, info.height, info.rotation) == (32, 16, degrees)  # coded size, display rotation
    clip = M.load_video(path, 25)
    assert clip.frames.shape[0] == 4
    shape_ok, band, rest = _BAND_WHERE[degrees](clip.frames[0])
    assert shape_ok, tuple(clip.frames.shape)
    assert float(band.float().mean()) > 230 and float(rest.float().mean()) < 25


def test_rotation_is_applied_before_resizing(make_video):
    path = set_mp4_rotation(make_video("rotated.mp4", frames=_banded(), fps=25))
    clip = M.load_video(path, 25, max_side=16)
    assert clip.frames.shape == (4, 16, 8, 3)
    assert float(clip.frames[0, :3].float().mean()) > 230 and float(clip.frames[0, 5:].float().mean()) < 25
    sq = M.load_video(path, 25, size=16)  # 32×16 portrait → 16 wide, crop the middle 16 rows
    assert sq.frames.shape == (4, 16, 16, 3)


# =========================================================================== writing and muxing


def test_write_video_keeps_audio_in_sync(tmp_path):
    sr, fps = 16000, 25
    audio = _impulses(2.0, sr, [0.5, 1.3])
    frames = np.stack([index_frame(i, 32, 48) for i in range(50)])
    path = tmp_path / "av.mp4"
    M.write_video(path, frames, fps, audio, sr)
    info = M.probe(path)
    assert (info.video.codec, info.audio.codec) == ("h264", "aac")
    assert (info.video.width, info.video.height, info.video.fps) == (48, 32, 25.0)
    assert (info.audio.sample_rate, info.audio.channels) == (sr, 1)
    assert info.video.duration == pytest.approx(2.0, abs=1e-3)
    assert info.audio.duration == pytest.approx(2.0, abs=1e-3)
    wav = M.load_audio(path, sr).wav.numpy()
    assert wav.shape == (32000,)
    clicks = click_positions(wav, [8000, 20800], 800)
    assert clicks == pytest.approx([8000, 20800], abs=16)  # 1 ms after AAC encode/decode
    video = M.load_video(path, fps)
    assert [frame_index(f) for f in video.frames] == list(range(50))


def test_write_video_at_12_5_fps_round_trips(tmp_path):
    frames = np.stack([index_frame(i, 16, 16) for i in range(10)])
    M.write_video(tmp_path / "slow.mp4", torch.from_numpy(frames), 12.5)
    info = M.probe(tmp_path / "slow.mp4")
    assert info.video.fps == 12.5 and info.audio is None
    assert info.duration == pytest.approx(0.8, abs=1e-3)
    assert [frame_index(f) for f in M.load_video(tmp_path / "slow.mp4", 12.5).frames] == list(range(10))


def test_write_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="even"):
        M.write_video(tmp_path / "odd.mp4", np.zeros((2, 15, 16, 3), np.uint8), 25)
    with pytest.raises(ValueError, match="uint8"):
        M.write_video(tmp_path / "float.mp4", np.zeros((2, 16, 16, 3), np.float32), 25)
    with pytest.raises(ValueError, match="sample_rate"):
        M.write_video(tmp_path / "a.mp4", np.zeros((2, 16, 16, 3), np.uint8), 25, audio=np.zeros(100))


def _read_s16(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().reshape(-1, f.samples) if f.format.is_planar
                               else f.to_ndarray().reshape(f.samples, -1).T
                               for f in c.decode(audio=0)], axis=1)


def test_write_wav_is_exact_to_16_bit(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 22050)).astype(np.float32)
    x[:, :4] = [[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, -0.5, INT16_STEP]]
    M.write_audio(tmp_path / "x.wav", x, 22050)
    info = M.probe(tmp_path / "x.wav")
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("pcm_s16le", 22050, 2)
    back = _read_s16(tmp_path / "x.wav")
    assert back.dtype == np.int16 and back.shape == (2, 22050)
    err = np.abs(back / 32768.0 - x)
    assert err.max() <= INT16_STEP * 1.01
    assert back[0, 2] == 16384 and back[1, 3] == 1  # 0.5 and 1/32768 exactly
    # and through the loader (channel mean)
    mono = M.load_audio(tmp_path / "x.wav", 22050).wav.numpy()
    assert np.abs(mono - x.mean(0)).max() <= INT16_STEP * 1.01


def test_write_flac_is_lossless_over_16_bit(tmp_path):
    x = (0.7 * np.sin(np.linspace(0, 400 * np.pi, 48000))).astype(np.float32)
    M.write_audio(tmp_path / "x.flac", x, 48000)
    M.write_audio(tmp_path / "x.wav", torch.from_numpy(x), 48000)
    info = M.probe(tmp_path / "x.flac")
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("flac", 48000, 1)
    assert info.duration == pytest.approx(1.0, abs=1e-6)
    assert np.array_equal(_read_s16(tmp_path / "x.flac"), _read_s16(tmp_path / "x.wav"))


def test_write_audio_six_channels_and_bad_inputs(tmp_path):
    x = np.stack([sine(220 * (c + 1), 0.5, 16000, 0.1) for c in range(6)])
    M.write_audio(tmp_path / "six.flac", x, 16000)
    assert M.probe(tmp_path / "six.flac").audio.channels == 6
    assert np.abs(_read_s16(tmp_path / "six.flac") / 32768.0 - x).max() <= INT16_STEP * 1.01
    with pytest.raises(ValueError, match="extension"):
        M.write_audio(tmp_path / "x.mp3", x, 16000)
    with pytest.raises(ValueError, match=r"channels last\? pass \[C, S\]"):
        M.write_audio(tmp_path / "x.wav", x.T, 16000)


def _video_packets(path: Path) -> list[tuple[int | None, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.video[0]) if p.size]


def test_mux_audio_into_a_vggsound_copy_remuxes_the_video(media_dir, tmp_path):
    src = media_dir / "vggsound/-Qowmc0P9ic_000034.mp4"  # the id starts with '-'
    out = tmp_path / "-out.mp4"
    wav = sine(440, 12.0, 16000, amplitude=0.5)  # longer than the video: cut
    assert M.mux_audio(src, torch.from_numpy(wav), 16000, out) == 10.0
    info = M.probe(out)
    assert (info.video.codec, info.audio.codec) == ("h264", "aac")
    assert info.duration == pytest.approx(10.0, abs=1e-3)
    assert info.video.duration == pytest.approx(10.0, abs=1e-3)
    assert info.audio.duration == pytest.approx(10.0, abs=1e-3)
    assert (info.audio.sample_rate, info.audio.channels) == (16000, 1)
    assert (info.video.width, info.video.height, info.video.fps) == (640, 360, 30.0)
    src_packets, out_packets = _video_packets(src), _video_packets(out)
    assert len(out_packets) == 300
    assert out_packets == src_packets  # byte-identical, same timestamps: no re-encode
    back = M.load_audio(out, 16000).wav.numpy()
    assert back.shape == (160000,)
    assert peak_freq(back[16000:48000], 16000) == pytest.approx(440, abs=1)
    assert float(np.sqrt(np.mean(back[16000:144000] ** 2))) == pytest.approx(0.5 / math.sqrt(2), rel=0.02)
    assert M.validate_file(out, require=("audio", "video"))["ok"]


def test_mux_audio_pads_a_short_waveform(media_dir, tmp_path):
    out = tmp_path / "padded.mp4"
    M.mux_audio(media_dir / "vggsound/1aDnyPubxdY_000118.mp4", sine(440, 3.0, 16000), 16000, out)
    assert M.probe(out).audio.duration == pytest.approx(10.0, abs=1e-3)
    back = M.load_audio(out, 16000).wav
    assert back.shape == (160000,)
    assert M.peak_dbfs(back[:48000]) > -7
    assert M.peak_dbfs(back[round(3.2 * 16000):]) < -60


def test_mux_audio_keeps_rotation_of_a_remuxed_file(make_video, tmp_path):
    src = set_mp4_rotation(make_video("rotated.mp4", frames=_banded(), fps=25))
    out = tmp_path / "rotated_out.mp4"
    assert M.mux_audio(src, np.zeros(4000, np.float32), 16000, out) == pytest.approx(0.16)
    assert M.probe(out).video.rotation == 90
    assert M.load_video(out, 25).frames.shape == (4, 32, 16, 3)


def test_mux_audio_remuxes_h264_from_matroska(make_video, tmp_path):
    """Millisecond timestamps carried into mp4's finer time base still put frame 2 at 1/15 s."""
    src = make_video("idx30.mkv", n_frames=30, fps=30)
    out = tmp_path / "from_mkv.mp4"
    assert M.mux_audio(src, sine(440, 1.0, 16000), 16000, out) == pytest.approx(1.0, abs=1e-3)
    # byte-identical packets (timestamps move from 1/1000 to the mp4 muxer's time base)
    assert [b for _, b in _video_packets(out)] == [b for _, b in _video_packets(src)]
    assert [frame_index(f) for f in M.load_video(out, 15).frames] == [2 * k for k in range(15)]
    assert [frame_index(f) for f in M.load_video(out, 25).frames] == [k * 30 // 25 for k in range(25)]


def test_mux_audio_copies_vp9_from_webm_into_mp4(media_dir, tmp_path):
    src = media_dir / "edge/no_duration.webm"
    out = tmp_path / "vp9.mp4"
    duration = M.mux_audio(src, sine(440, 6.0, 16000), 16000, out)
    assert duration == pytest.approx(4.94, abs=0.1)
    assert duration == pytest.approx(M.video_duration(src), abs=1e-9)
    info = M.probe(out)
    assert (info.video.codec, info.audio.codec) == ("vp9", "aac")  # mp4 holds VP9: no re-encode
    assert [b for _, b in _video_packets(out)] == [b for _, b in _video_packets(src)]
    assert (info.video.width, info.video.height) == (1280, 720)
    assert info.video.duration == pytest.approx(duration, abs=2e-3)
    assert info.audio.duration == pytest.approx(duration, abs=2e-3)


def test_mux_audio_reencodes_a_codec_mp4_cannot_hold(tmp_path):
    """Raw video (an AVI's rawvideo stream) cannot go into mp4: it is re-encoded to H.264, same duration."""
    src = tmp_path / "raw.avi"
    with av.open(str(src), "w") as c:
        st = c.add_stream("rawvideo", rate=25)
        st.width, st.height, st.pix_fmt = 32, 32, "yuv420p"
        for i in range(20):
            vf = av.VideoFrame.from_ndarray(index_frame(i, 32, 32), format="rgb24")
            vf.pts = i
            for pkt in st.encode(vf):
                c.mux(pkt)
        for pkt in st.encode(None):
            c.mux(pkt)
    out = tmp_path / "raw.mp4"
    assert M.mux_audio(src, sine(440, 1.0, 16000), 16000, out) == pytest.approx(0.8)
    info = M.probe(out)
    assert (info.video.codec, info.audio.codec) == ("h264", "aac")
    assert info.audio.duration == pytest.approx(0.8, abs=1024 / 16000)
    shown = [frame_index(f) for f in M.load_video(out, 25).frames]  # lossy H.264: levels within one index step
    assert len(shown) == 20 and all(abs(k - i) <= 1 for i, k in enumerate(shown))


def test_mux_audio_keeps_the_original_audio_as_a_second_track(media_dir, tmp_path):
    src = media_dir / "edge/opus_audio.mkv"  # H.264 + Opus 48 kHz in Matroska
    out = tmp_path / "kept.mp4"
    duration = M.mux_audio(src, sine(440, 11.0, 16000), 16000, out, keep_audio=True)
    info = M.probe(out)
    audio = [s for s in info.streams if s.kind == "audio"]
    assert [(s.codec, s.sample_rate) for s in audio] == [("aac", 16000), ("opus", 48000)]
    assert all(abs(s.duration - duration) <= 1024 / 16000 for s in audio)
    generated = M.load_audio(out, 16000, stream=audio[0].index).wav
    original = M.load_audio(out, 48000, stream=audio[1].index).wav
    reference = M.load_audio(src, 48000).wav
    assert peak_freq(generated[16000:48000].numpy(), 16000) == pytest.approx(440, abs=1)
    # The Opus packets, copied untouched: the same samples, placed within 1 ms (Matroska stores milliseconds).
    seg = reference[48000:96000]
    lag = max(range(-96, 97), key=lambda k: float(original[48000 + k:96000 + k] @ seg))
    assert abs(lag) <= 48 and float((original[48000 + lag:96000 + lag] - seg).abs().max()) < 1e-6
    assert M.probe(out).audio.codec == "aac"  # players pick the generated track first


# =========================================================================== validate_file and broken inputs


def _reason(report: dict) -> str:
    assert report["ok"] is False, report
    return report["reason"]


def test_validate_zero_byte_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert _reason(M.validate_file(tmp_path / "empty.mp4")) == "cannot open: empty file (0 bytes)"


def test_validate_text_file_renamed_mp4(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 40)
    assert _reason(M.validate_file(tmp_path / "notes.mp4")) == "cannot open: Invalid data found when processing input"


def test_validate_missing_file_and_directory(tmp_path):
    assert _reason(M.validate_file(tmp_path / "gone.mp4")) == "cannot open: file does not exist"
    assert _reason(M.validate_file(tmp_path)) == "cannot open: is a directory"


def test_validate_truncated_mp4_with_index_at_the_end(media_dir, tmp_path):
    data = (media_dir / "vggsound/0nib7bMm8BA_000015.mp4").read_bytes()
    assert data.find(b"moov") > len(data) * 0.9  # the index is lost with the tail
    (tmp_path / "cut.mp4").write_bytes(data[:int(len(data) * 0.3)])
    assert _reason(M.validate_file(tmp_path / "cut.mp4")).startswith("cannot open: ")


def _faststart_copy(src: Path, dst: Path) -> bytes:
    with av.open(str(src)) as i, av.open(str(dst), "w", format="mp4", options={"movflags": "faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if p.dts is not None:
                p.stream = streams[p.stream.index]
                o.mux(p)
    return dst.read_bytes()


def test_validate_truncated_mp4_with_index_in_front(media_dir, tmp_path):
    """The header survives and still says 10 s: only decoding shows the file is cut."""
    data = _faststart_copy(media_dir / "vggsound/0nib7bMm8BA_000015.mp4", tmp_path / "fast.mp4")
    assert data.find(b"moov") < 100
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:int(len(data) * 0.3)])
    report = M.validate_file(cut)
    assert _reason(report) == "truncated: audio decodes to 2.0 s of 10.0 s"
    assert report["duration"] == 10.0  # what the header claims
    cut.write_bytes(data[:int(len(data) * 0.95)])
    assert _reason(M.validate_file(cut)).startswith("decode error at 9.0 s: ")


def test_validate_requires_streams(make_video, media_dir):
    video_only = make_video("video_only.mp4", n_frames=25, fps=25)
    assert _reason(M.validate_file(video_only, require=("audio",))) == "no audio stream"
    ok = M.validate_file(video_only)
    assert ok["ok"] and ok["audio_rate"] is None and (ok["width"], ok["height"]) == (32, 32)
    assert ok["duration"] == 1.0
    assert _reason(M.validate_file(media_dir / "audio/dog.wav", require=("video",))) == "no video stream"
    with pytest.raises(ValueError, match="require"):
        M.validate_file(video_only, require=("subtitle",))


def test_validate_silent_fixture(media_dir):
    report = M.validate_file(media_dir / "edge/silent_audio.mp4")
    assert "silent" in _reason(report)
    assert report["reason"] == "silent audio (peak -inf dBFS < -60 dBFS)"
    assert report["duration"] == pytest.approx(7.036, abs=1e-3)
    assert M.validate_file(media_dir / "edge/silent_audio.mp4", allow_silent=True)["ok"]


def test_validate_webm_without_duration(media_dir):
    report = M.validate_file(media_dir / "edge/no_duration.webm", allow_silent=True)
    assert report["ok"] and report["duration"] == pytest.approx(4.94, abs=0.1)
    assert (report["width"], report["height"], report["audio_rate"], report["audio_channels"]) == (1280, 720, 48000, 2)
    assert "silent" in _reason(M.validate_file(media_dir / "edge/no_duration.webm"))


def test_validate_opus_mkv_and_multi_stream(media_dir):
    opus = M.validate_file(media_dir / "edge/opus_audio.mkv", require=("audio", "video"))
    assert opus["ok"] and opus["duration"] == pytest.approx(10.38, abs=0.01)
    assert (opus["audio_rate"], opus["audio_channels"], opus["video_fps"]) == (48000, 1, 30.0)
    multi = M.validate_file(media_dir / "edge/multi_stream.mp4")
    assert multi["ok"] and multi["duration"] == 13.056
    assert (multi["video_fps"], multi["width"], multi["height"]) == (25.0, 320, 180)
    assert (multi["audio_rate"], multi["audio_channels"]) == (8000, 2)


@pytest.mark.parametrize("name,width,height,channels", VGGSOUND)
def test_validate_vggsound(media_dir, name, width, height, channels):
    report = M.validate_file(media_dir / "vggsound" / name, duration=8.0, require=("audio", "video"))
    assert report == dict(path=str(media_dir / "vggsound" / name), ok=True, reason=None, duration=10.0,
                          video_fps=30.0, audio_rate=44100, audio_channels=channels, width=width, height=height)
    too_long = M.validate_file(media_dir / "vggsound" / name, duration=12.0)
    assert _reason(too_long) == "too short: 10.0 s < 12.0 s"


@pytest.mark.parametrize("name", OTHER_FIXTURES)
def test_every_other_fixture_goes_through_without_exceptions(media_dir, name):
    path = media_dir / name
    info = M.probe(path)
    report = M.validate_file(path, allow_silent=True)
    assert report["ok"], report
    end = M.measure_duration(path)
    assert end == pytest.approx(info.duration if info.duration is not None else 4.938, abs=0.01)
    if info.audio is not None:
        audio = M.load_audio(path, 16000)
        expected = info.audio.duration if info.audio.duration is not None else 4.875
        assert audio.wav.shape[0] / 16000 == pytest.approx(expected, abs=0.02)
    if info.video is not None:
        video = M.load_video(path, 4, size=32)
        expected = info.video.duration if info.video.duration is not None else 4.938
        assert video.frames.shape[1:] == (32, 32, 3)
        assert video.frames.shape[0] == math.ceil(expected * 4 - 1e-6)
