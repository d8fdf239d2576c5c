"""Audio decoding: :func:`load_audio` (mono mean, Kaiser-windowed sinc resampling, sample-exact crops),
:func:`peak_dbfs` and :func:`check_not_silent`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import av
import numpy as np
import torch
import torchaudio.functional as AF

from reasonaudio.media.info import (SILENCE_DBFS, AudioClip, MediaError, PadPolicy, PathLike, _check_pad, _open,
                                    _select, _short, _stream_duration)

# Kaiser-windowed sinc resampling, the `kaiser_best` settings of resampy / librosa.
_RESAMPLE_KW = dict(lowpass_filter_width=64, rolloff=0.9475, resampling_method="sinc_interp_kaiser",
                    beta=14.769656459379492)

_AUDIO_SEEK_AFTER = 30.0
"""``start`` (seconds) from which :func:`load_audio` seeks; earlier starts decode from the beginning,
which is cheap and sample-exact (a seek is only as exact as the container's timestamps: Matroska
stores milliseconds)."""

_AUDIO_PREROLL = 0.5
"""Seconds decoded before ``start`` after a seek: AAC and Opus decoders need pre-roll to converge."""


@dataclass
class _DecodedAudio:
    wav: np.ndarray  # [n] float32, the plain channel mean at the native rate
    first_time: float  # container-relative time of wav[0]
    rate: int
    channels: int
    stored_end: float | None  # container-relative end of the stream from metadata, if stored


def _stream_end(s: av.stream.Stream, c: av.container.InputContainer) -> float | None:
    """Container-relative end time of ``s`` from metadata, or None."""
    cdur = c.duration / av.time_base if c.duration is not None else None
    dur = _stream_duration(s, cdur)
    if dur is None:
        return None
    if s.duration is not None and s.start_time is not None and s.time_base is not None:
        # a native stream duration counts from the stream's own first timestamp
        dur += float(s.start_time * s.time_base) - (c.start_time or 0) / av.time_base
    return dur


def _decode_audio(path: PathLike, stream: int | None, seek_to: float | None, stop: float | None,
                  target_rate: int) -> _DecodedAudio:
    """Decode one audio stream to a mono mean at its native rate.

    Decodes from ``seek_to`` (None: the beginning) until ``stop`` plus the context that resampling
    to ``target_rate`` needs (None: the end).
    """
    with _open(path) as c:
        s = _select(c, "audio", path, stream)
        rate = s.codec_context.sample_rate
        if not rate:
            raise MediaError(path, "decode error at 0.0 s: audio stream has no sample rate")
        channels = s.codec_context.layout.nb_channels
        t0 = (c.start_time or 0) / av.time_base
        if seek_to is not None:
            try:
                c.seek(int((seek_to + t0) * av.time_base), any_frame=False, backward=True)
            except av.error.FFmpegError:  # not seekable: decode from the beginning
                return _decode_audio(path, stream, None, stop, target_rate)
        # stop after `stop` plus what the resampler needs to the right of it
        until = None if stop is None else stop + 0.1 + _resample_context(rate, target_rate)[3] / rate
        # Planar float at the native rate (layout and rate untouched), averaged per frame so that
        # a layout change mid-stream (2 → 6 channels in broadcast AAC) cannot break the concatenation.
        resampler = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        got = 0
        try:
            for frame in c.decode(s):
                if first_time is None and not chunks:
                    first_time = None if frame.time is None else frame.time - t0
                for f in resampler.resample(frame):
                    arr = f.to_ndarray()  # [C, n]
                    chunks.append(arr.mean(axis=0, dtype=np.float32) if arr.shape[0] > 1 else arr[0])
                    got += arr.shape[1]
                if until is not None and (first_time or 0.0) + got / rate >= until:
                    break
        except av.error.FFmpegError as e:
            raise MediaError(path, f"decode error at {(first_time or 0.0) + got / rate:.1f} s: {_short(e)}") from e
        if first_time is None:
            if seek_to is not None:  # no timestamps after a seek: cannot place the samples
                return _decode_audio(path, stream, None, stop, target_rate)
            first_time = 0.0
        wav = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
        return _DecodedAudio(wav=wav, first_time=first_time, rate=rate, channels=channels,
                             stored_end=_stream_end(s, c))


def _resample_context(src_rate: int, sample_rate: int) -> tuple[int, int, int, int]:
    """Resampler periods: ``(step_in, step_out, periods, margin_in)``.

    The sinc resampler is periodic: input sample ``p · step_in`` lands exactly on output sample
    ``p · step_out``. ``periods`` whole periods (``margin_in`` input samples) cover the filter's reach.
    """
    if src_rate == sample_rate:
        return 1, 1, 0, 0
    g = math.gcd(src_rate, sample_rate)
    step_in, step_out = src_rate // g, sample_rate // g
    reach = math.ceil(_RESAMPLE_KW["lowpass_filter_width"] / _RESAMPLE_KW["rolloff"]
                      * src_rate / min(src_rate, sample_rate)) + 2
    periods = math.ceil(reach / step_in)
    return step_in, step_out, periods, periods * step_in


def load_audio(path: PathLike, sample_rate: int, *, start: float = 0.0, duration: float | None = None,
               pad: PadPolicy = "pad", stream: int | None = None, reject_silent: bool = False) -> AudioClip:
    """Decode one audio stream to mono float at ``sample_rate``.

    Args:
        path: a media file (audio-only or audio+video).
        sample_rate: the output rate.
        start: seconds from the container start.
        duration: seconds to return (exactly ``round(duration · sample_rate)`` samples);
            ``None`` returns everything after ``start``.
        pad: ``"pad"`` zero-pads a short file and marks it in ``mask``; ``"reject"`` raises.
        stream: absolute stream index; default the first audio stream.
        reject_silent: raise ``silent audio`` when the peak is below :data:`SILENCE_DBFS`.

    Returns:
        An :class:`AudioClip` whose sample ``m`` is the signal at ``start + m / sample_rate``.
        Time before the stream's first sample (a late-starting track) and after its end is zero
        with ``mask`` False.

    Raises:
        MediaError: unreadable file, missing stream, decode error, too short, silent.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"start must be >= 0 and duration > 0, got start={start}, duration={duration}")
    _check_pad(pad)
    seek_to = start - _AUDIO_PREROLL if start >= _AUDIO_SEEK_AFTER else None
    stop = None if duration is None else start + duration
    dec = _decode_audio(path, stream, seek_to, stop, sample_rate)
    if dec.wav.shape[0] == 0:
        raise MediaError(path, "decode error at 0.0 s: no audio frames")
    src_rate = dec.rate
    # Codecs decode whole frames (AAC: 1024 samples), so the stored duration, when there is one,
    # says where the signal really ends.
    end = dec.first_time + dec.wav.shape[0] / src_rate
    if dec.stored_end is not None:
        end = min(end, dec.stored_end)
    if duration is not None:
        n = round(duration * sample_rate)
    else:
        n = round((end - start) * sample_rate)
        if n <= 0:
            raise MediaError(path, f"too short: start {start:.1f} s is past the end ({end:.1f} s)")
    # Resample only the part that is needed, cut with filter context on both sides (zeros outside
    # the stream) at a whole resampler period, so the output samples fall on the same grid as
    # resampling the whole stream: a crop at `start` equals slicing the full decode, sample for
    # sample. Output index 0 is `start` rounded to that grid (anchored at the stream's first sample).
    step_in, step_out, periods, margin_in = _resample_context(src_rate, sample_rate)
    m0 = round((start - dec.first_time) * sample_rate)  # output index of `start` (negative: late stream)
    q = m0 // step_out - periods
    a, drop = q * step_in, m0 - q * step_out  # first input sample cut, output samples to drop
    length = math.ceil((drop + n) * src_rate / sample_rate) + margin_in + 1
    seg = np.zeros(length, np.float32)
    lo, hi = max(a, 0), min(a + length, dec.wav.shape[0])
    if hi > lo:
        seg[lo - a:hi - a] = dec.wav[lo:hi]
    x = torch.from_numpy(seg)
    if src_rate != sample_rate:
        x = AF.resample(x, src_rate, sample_rate, **_RESAMPLE_KW)
    wav = x[drop:drop + n].clone()
    lead = min(n, max(0, -m0))
    valid_end = min(n, max(0, round((end - start) * sample_rate)))
    if valid_end < n and pad == "reject":
        raise MediaError(path, f"too short: {valid_end / sample_rate:.1f} s < {duration:.1f} s")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[lead:valid_end] = True
    wav[~mask] = 0.0
    wav = wav.clamp(-1.0, 1.0)
    if reject_silent:
        check_not_silent(wav[mask], path)
    return AudioClip(wav=wav, mask=mask, sample_rate=sample_rate, source_rate=src_rate,
                     source_channels=dec.channels, duration=int(mask.sum()) / sample_rate)


def peak_dbfs(wav: torch.Tensor) -> float:
    """Peak level in dBFS (−inf for all zeros)."""
    peak = float(wav.abs().max()) if wav.numel() else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def check_not_silent(wav: torch.Tensor, path: PathLike, threshold_dbfs: float = SILENCE_DBFS) -> None:
    """Raise ``silent audio`` when the peak of ``wav`` is below ``threshold_dbfs``."""
    level = peak_dbfs(wav)
    if level < threshold_dbfs:
        raise MediaError(path, _silent_reason(level, threshold_dbfs))


def _silent_reason(level: float, threshold_dbfs: float) -> str:
    return f"silent audio (peak {level:.1f} dBFS < {threshold_dbfs:.0f} dBFS)"
