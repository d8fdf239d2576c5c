"""Whole-file validation: :func:`validate_file` decodes the default audio and video streams in full and
reports what a training run would see (the ``reasonaudio-data check`` tool), never raising for a bad file.
"""
from __future__ import annotations

import math
from typing import Sequence

import av
import numpy as np

from reasonaudio.media.audio import _silent_reason
from reasonaudio.media.info import SILENCE_DBFS, MediaError, PathLike, _open, _short, measure_duration, probe


def _scan_stream(path: PathLike, index: int) -> tuple[float, float | None]:
    """Decode every frame of one stream without keeping it.

    Returns:
        ``(end, peak_dbfs)``: the container-relative time at which the last frame ends, and for
        audio the peak of the channel mean (what :func:`load_audio` returns), else None.
    """
    with _open(path) as c:
        s = c.streams[index]
        s.thread_type = "AUTO"
        t0 = (c.start_time or 0) / av.time_base
        end, peak = 0.0, 0.0
        audio = s.type == "audio"
        resampler = av.AudioResampler(format="fltp") if audio else None
        rate = None if audio else (s.average_rate or s.guessed_rate)
        try:
            for frame in c.decode(s):
                if audio:
                    n = 0
                    for f in resampler.resample(frame):
                        arr = f.to_ndarray()
                        n += arr.shape[1]
                        if arr.size:
                            peak = max(peak, float(np.abs(arr.mean(axis=0)).max()))
                    length = n / (frame.sample_rate or 1)
                else:
                    length = (float(frame.duration * frame.time_base) if frame.duration and frame.time_base
                              else 1.0 / float(rate) if rate else 0.0)
                if frame.time is not None:
                    end = max(end, frame.time - t0 + length)
                else:
                    end += length
        except av.error.FFmpegError as e:
            raise MediaError(path, f"decode error at {end:.1f} s: {_short(e)}") from e
        if end == 0.0:
            raise MediaError(path, f"decode error at 0.0 s: no {s.type} frames")
    return end, (20 * math.log10(peak) if peak > 0 else -math.inf) if audio else None


def validate_file(path: PathLike, *, duration: float | None = None,
                  require: Sequence[str] = (), allow_silent: bool = False) -> dict:
    """Decode a whole file and report what a training run would see; never raises for a bad file.

    The default (first) audio and video streams — the ones the loaders use — are decoded in full,
    frame by frame, without keeping the frames.

    Args:
        path: a media file.
        duration: minimum duration in seconds (``too short`` below it).
        require: stream kinds that must exist (``audio``, ``video``).
        allow_silent: accept a silent audio track (by default it is reported, since it cannot train).

    Returns:
        A dict with ``path``, ``ok``, ``reason`` (None when ok), ``duration``, ``video_fps``,
        ``audio_rate``, ``audio_channels``, ``width``, ``height``. Reasons: ``cannot open: …``,
        ``no audio stream``, ``decode error at T s: …``, ``truncated: video decodes to 2.0 s of
        10.0 s``, ``too short: 4.9 s < 8.0 s``, ``silent audio (peak -inf dBFS < -60 dBFS)``, and
        ``unexpected error: …`` for anything else the decoder library throws.
    """
    report = dict(path=str(path), ok=False, reason=None, duration=None, video_fps=None,
                  audio_rate=None, audio_channels=None, width=None, height=None)
    for kind in require:
        if kind not in ("audio", "video"):
            raise ValueError(f"require must name 'audio' and/or 'video', got {kind!r}")
    try:
        info = probe(path)
        v, a = info.video, info.audio
        if v is not None:
            report.update(video_fps=v.fps, width=v.width, height=v.height)
        if a is not None:
            report.update(audio_rate=a.sample_rate, audio_channels=a.channels)
        for kind, st in (("audio", a), ("video", v)):
            if kind in require and st is None:
                raise MediaError(path, f"no {kind} stream")
        if v is None and a is None:
            raise MediaError(path, "no audio or video stream")
        known = info.duration if info.duration is not None else measure_duration(path)
        report["duration"] = round(known, 3)
        if duration is not None and known + 1e-3 < duration:  # cheap checks first
            raise MediaError(path, f"too short: {known:.1f} s < {duration:.1f} s")
        scanned = {kind: (st, _scan_stream(path, st.index)) for kind, st in (("audio", a), ("video", v))
                   if st is not None}
        for kind, (st, (end, _)) in scanned.items():
            # A file cut short keeps its header: the header promises more than the decoder finds.
            stored = st.duration
            if stored is not None and end < stored - max(0.5, 0.02 * stored):
                raise MediaError(path, f"truncated: {kind} decodes to {end:.1f} s of {stored:.1f} s")
        if "audio" in scanned and not allow_silent:
            level = scanned["audio"][1][1]
            if level < SILENCE_DBFS:
                raise MediaError(path, _silent_reason(level, SILENCE_DBFS))
        report.update(ok=True)
    except MediaError as e:
        report["reason"] = e.reason
    except Exception as e:  # noqa: BLE001 - a checker reports, it does not crash on one bad file
        report["reason"] = f"unexpected error: {type(e).__name__}: {e}"
    return report
