"""Media I/O on PyAV: probe, decode (audio and video at exact times), write and mux.

Every per-file problem is raised as one exception type, :class:`MediaError`, carrying the path
and a short reason (``no audio stream``, ``cannot open: …``, ``decode error at 3.2 s``,
``too short: 2.0 s < 8.0 s``, ``silent audio (peak -91.3 dBFS)``), so datasets and the
``reasonaudio-data check`` tool can count, log and report bad inputs without crashing.

Conventions:

* Time zero is the container's start time; audio and video samples are placed by their own
  timestamps, so A/V sync survives streams that start late, variable frame rates and seeking.
* Audio comes out mono float32 ``[S]`` in [-1, 1]: channels are averaged (any layout, 5.1
  included — the same plain mean MMAudio and av-benchmark use), then resampled with a windowed
  sinc (Kaiser window, 64 zero crossings, roll-off 0.9475, β = 14.77: the ``kaiser_best``
  settings of resampy/librosa, computed by ``torchaudio.functional.resample``). A crop at
  ``start`` is the same samples as slicing the whole file's decode (resampler context is kept on
  both sides of the cut); starts past 30 s seek with 0.5 s of decoder pre-roll instead.
* Video comes out ``uint8 [T, H, W, 3]`` RGB sampled on an exact grid ``start + k / fps``:
  each output frame is the last source frame shown at that instant (what a player displays),
  so 12.5 fps, 30 fps and variable-rate sources all map onto the same timeline. Rotation
  metadata is applied before resizing.
* Lengths are exact: asking for ``duration`` seconds yields ``round(duration · rate)`` samples
  (frames). A shorter source is either padded with a validity mask or rejected, by policy —
  never silently truncated to whole seconds.
"""
from __future__ import annotations

import heapq
import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

PathLike = str | os.PathLike
PadPolicy = Literal["pad", "reject"]

SILENCE_DBFS = -60.0
"""Peak level below which a decoded audio track counts as silent."""

# Kaiser-windowed sinc resampling, the `kaiser_best` settings of resampy / librosa.
_RESAMPLE_KW = dict(lowpass_filter_width=64, rolloff=0.9475, resampling_method="sinc_interp_kaiser",
                    beta=14.769656459379492)


class MediaError(Exception):
    """A file that cannot be used, with the reason.

    Attributes:
        path: the offending file.
        reason: a short human-readable reason.
    """

    def __init__(self, path: PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a container."""

    index: int
    kind: str  # "video" | "audio" | "subtitle" | ...
    codec: str | None
    duration: float | None  # seconds, from stream or container metadata; None when unknown
    fps: float | None = None  # average frame rate
    width: int | None = None  # coded size, before ``rotation`` is applied
    height: int | None = None
    rotation: int = 0  # clockwise display rotation in degrees (0/90/180/270)
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns from a file's headers (no decoding unless asked)."""

    path: str
    container: str
    duration: float | None
    streams: tuple[StreamInfo, ...]

    @property
    def video(self) -> StreamInfo | None:
        """The stream that decoding uses by default (the first video stream)."""
        return next((s for s in self.streams if s.kind == "video"), None)

    @property
    def audio(self) -> StreamInfo | None:
        """The first audio stream."""
        return next((s for s in self.streams if s.kind == "audio"), None)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class AudioClip:
    """Decoded mono audio.

    Attributes:
        wav: ``[S]`` float32 in [-1, 1].
        mask: ``[S]`` bool, False on padding.
        sample_rate: rate of ``wav``.
        source_rate: the stream's native rate.
        source_channels: channels before the downmix.
        duration: seconds of real (unpadded) signal in ``wav``.
    """

    wav: torch.Tensor
    mask: torch.Tensor
    sample_rate: int
    source_rate: int
    source_channels: int
    duration: float


@dataclass
class VideoClip:
    """Decoded video frames on an exact time grid.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB.
        mask: ``[T]`` bool, False on padding frames.
        fps: the grid's frame rate.
        source_fps: the stream's average frame rate.
        duration: seconds covered by real frames.
    """

    frames: torch.Tensor
    mask: torch.Tensor
    fps: float
    source_fps: float | None
    duration: float


# --------------------------------------------------------------------------- probing


def _open(path: PathLike) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise MediaError(path, "cannot open: file does not exist")
    if p.is_dir():
        raise MediaError(path, "cannot open: is a directory")
    if p.stat().st_size == 0:
        raise MediaError(path, "cannot open: empty file (0 bytes)")
    try:
        return av.open(str(p), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise MediaError(path, f"cannot open: {_short(e)}") from e


def _short(e: BaseException) -> str:
    msg = str(e).split(":")[0] if isinstance(e, av.error.FFmpegError) and e.strerror else str(e)
    return getattr(e, "strerror", None) or msg


def _rotation(stream: av.video.stream.VideoStream, frame: av.VideoFrame | None = None) -> int:
    """Clockwise display rotation in degrees (0/90/180/270).

    FFmpeg exposes the container's display matrix on decoded frames as a counter-clockwise
    angle (a phone's portrait clip reads -90); older files may carry a ``rotate`` tag instead.
    """
    if frame is not None and frame.rotation:
        return int(round(-frame.rotation)) % 360
    tag = stream.metadata.get("rotate")
    try:
        return int(tag) % 360 if tag is not None else 0
    except ValueError:
        return 0


def _first_frame_rotation(c: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    try:
        for frame in c.decode(stream):
            return _rotation(stream, frame)
    except av.error.FFmpegError:
        pass  # the decode error is reported by whoever decodes the file
    return _rotation(stream)


def _stream_duration(stream: av.stream.Stream, container_duration: float | None) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:  # Matroska writes "HH:MM:SS.nnnnnnnnn"
        try:
            h, m, s = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
        except ValueError:
            pass
    return container_duration


def probe(path: PathLike) -> MediaInfo:
    """Read stream layout and durations from headers (decoding only the first video frame, whose
    side data carries the display rotation).

    Args:
        path: a media file.

    Returns:
        The container's streams; ``duration`` may be None for files that do not store one
        (use :func:`measure_duration` then).

    Raises:
        MediaError: when the file cannot be opened.
    """
    with _open(path) as c:
        cdur = c.duration / av.time_base if c.duration is not None else None
        streams = []
        first_video = next(iter(c.streams.video), None)
        rotation = _first_frame_rotation(c, first_video) if first_video is not None else 0
        for s in c.streams:
            cc = s.codec_context
            common = dict(index=s.index, kind=s.type, codec=cc.name if cc is not None else None,
                          duration=_stream_duration(s, cdur))
            if s.type == "video":
                rate = s.average_rate or s.guessed_rate or s.base_rate
                streams.append(StreamInfo(**common, fps=float(rate) if rate else None, width=cc.width,
                                          height=cc.height, rotation=rotation if s is first_video else _rotation(s)))
            elif s.type == "audio":
                streams.append(StreamInfo(**common, sample_rate=cc.sample_rate, channels=cc.layout.nb_channels))
            else:
                streams.append(StreamInfo(**common))
        return MediaInfo(path=str(path), container=c.format.name, duration=cdur, streams=tuple(streams))


def measure_duration(path: PathLike) -> float:
    """Duration from packet timestamps (demuxing only), for containers that store none.

    Returns:
        The end time of the last packet over all audio/video streams, in seconds.
    """
    with _open(path) as c:
        t0 = (c.start_time or 0) / av.time_base
        end = 0.0
        streams = [s for s in c.streams if s.type in ("audio", "video")]
        if not streams:
            raise MediaError(path, "no audio or video stream")
        try:
            for pkt in c.demux(streams):
                if pkt.pts is None or pkt.time_base is None:
                    continue
                end = max(end, float((pkt.pts + (pkt.duration or 0)) * pkt.time_base) - t0)
        except av.error.FFmpegError as e:
            raise MediaError(path, f"demux error at {end:.1f} s: {_short(e)}") from e
        return end


# --------------------------------------------------------------------------- audio


def _select(c: av.container.InputContainer, kind: str, path: PathLike, index: int | None):
    streams = c.streams.audio if kind == "audio" else c.streams.video
    if not streams:
        raise MediaError(path, f"no {kind} stream")
    if index is None:
        return streams[0]
    match = [s for s in streams if s.index == index]
    if not match:
        article = "an" if kind[0] in "aeiou" else "a"
        raise MediaError(path, f"stream {index} is not {article} {kind} stream")
    return match[0]


def _check_pad(pad: str) -> None:
    if pad not in ("pad", "reject"):
        raise ValueError(f"pad policy must be 'pad' or 'reject', got {pad!r}")


def _fit_length(x: torch.Tensor, n: int, path: PathLike, rate: float, valid: int, requested: float,
                pad: PadPolicy) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut or pad the leading axis of ``x`` to ``n``; returns (x, mask)."""
    _check_pad(pad)
    valid = max(0, min(valid, x.shape[0], n))
    if valid < n and pad == "reject":
        raise MediaError(path, f"too short: {valid / rate:.1f} s < {requested:.1f} s")
    if valid == n == x.shape[0]:  # nothing to cut or pad: no copy
        return x, torch.ones(n, dtype=torch.bool)
    out = x.new_zeros((n, *x.shape[1:]))
    out[:valid] = x[:valid]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[:valid] = True
    return out, mask


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


# --------------------------------------------------------------------------- video


def resize_short_side_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Synchformer / MMAudio policy: bicubic resize of the short side to ``size``, centre crop.

    Args:
        frames: ``[T, H, W, 3]`` uint8.
        size: output side.

    Returns:
        ``[T, size, size, 3]`` uint8.
    """
    t, h, w, _ = frames.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = _resize(frames, nh, nw)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top:top + size, left:left + size]


def resize_max_side(frames: torch.Tensor, max_side: int, multiple: int = 1) -> torch.Tensor:
    """MLLM policy: keep the aspect ratio, longest side at most ``max_side``, sides rounded to ``multiple``.

    Frames already small enough are only rounded (Qwen2.5-VL needs sides that are multiples of 28).
    A side never exceeds ``max_side`` after rounding (it is rounded down instead), except that
    each side is at least ``multiple``.
    """
    t, h, w, _ = frames.shape
    nh, nw = max_side_shape(h, w, max_side, multiple)
    return frames if (nh, nw) == (h, w) else _resize(frames, nh, nw)


def max_side_shape(height: int, width: int, max_side: int, multiple: int = 1) -> tuple[int, int]:
    """The ``(height, width)`` that :func:`resize_max_side` gives a ``height`` × ``width`` frame."""
    if max_side <= 0 or multiple <= 0:
        raise ValueError(f"max_side and multiple must be positive, got {max_side}, {multiple}")
    scale = min(1.0, max_side / max(height, width))
    cap = max(multiple, max_side // multiple * multiple)

    def side(x: int) -> int:
        return min(cap, max(multiple, round(x * scale / multiple) * multiple))

    return side(height), side(width)


def _resize(frames: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Antialiased bicubic resize of uint8 ``[T, H, W, 3]`` frames to ``[T, h, w, 3]``, in uint8.

    torch's native uint8 kernel (channels-last, fixed-point weights) is the one torchvision's
    ``v2.Resize`` runs on uint8 tensors, so on MMAudio's Synchformer transform. It is about 15×
    faster than resizing in float32 and rounding to uint8, and differs from that by rounding: 0.12 to
    0.16 levels on average, at most 7, over the VGGSound fixture clips (largest at clipped overshoots).
    """
    x = frames.permute(0, 3, 1, 2)  # [T, 3, H, W], channels-last in memory
    x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    return x.permute(0, 2, 3, 1).contiguous()


def _rotate(arr: np.ndarray, degrees: int) -> np.ndarray:
    # FFmpeg's display matrix angle is counter-clockwise; the displayed picture is the frame
    # rotated clockwise by `rotate` (the tag convention).
    k = {0: 0, 90: 3, 180: 2, 270: 1}.get(degrees % 360, 0)
    return np.ascontiguousarray(np.rot90(arr, k=k)) if k else arr


_TIMESTAMP_SLACK = 5e-4
"""Frame timestamps this close (seconds) to a grid instant count as on it. Matroska stores
milliseconds, so 30 fps frames sit up to 0.5 ms late — and stay late after a remux into a
finer time base."""


def _timestamp_tolerance(s: av.video.stream.VideoStream, fps: float) -> float:
    """How far a frame timestamp may be from the true time.

    At least :data:`_TIMESTAMP_SLACK`; half a tick when the time base is coarser and the frame
    period is not a whole number of ticks (so timestamps were rounded); never more than a quarter
    of the output or source frame period.
    """
    tol = _TIMESTAMP_SLACK
    tb, rate = s.time_base, s.average_rate or s.guessed_rate
    if tb and not (rate and (1 / (Fraction(rate) * tb)).denominator == 1):
        tol = max(tol, float(tb) / 2)
    return min(tol, 0.25 / fps, 0.25 / float(rate) if rate else math.inf)


_RESIZE_CHUNK = 16
"""Frames resized per call: whole clips at once waste memory, single frames pay the thread-pool
synchronisation of every small op (tens of times slower on a busy 2-core machine)."""


class _FrameSink:
    """Collects the distinct frames a clip shows: converts to RGB at the first frame's coded size,
    rotates for display, and resizes by policy in chunks."""

    def __init__(self, rotation: int, size: int | None, max_side: int | None, multiple: int):
        self.rotation, self.size, self.max_side, self.multiple = rotation, size, max_side, multiple
        self.coded: tuple[int, int] | None = None  # (width, height) of the first frame
        self.done: list[torch.Tensor] = []
        self.pending: list[np.ndarray] = []

    def add(self, frame: av.VideoFrame) -> int:
        """Queue one frame; returns its id (index into :meth:`images`)."""
        if self.coded is None:
            self.coded = (frame.width, frame.height)
        # a resolution change mid-stream is scaled back to the first frame's size
        kw = {} if (frame.width, frame.height) == self.coded else dict(width=self.coded[0], height=self.coded[1])
        self.pending.append(_rotate(frame.to_ndarray(format="rgb24", **kw), self.rotation))
        if len(self.pending) >= _RESIZE_CHUNK:
            self._flush()
        return len(self.done) + len(self.pending) - 1

    def _flush(self) -> None:
        if not self.pending:
            return
        x = torch.from_numpy(np.stack(self.pending))
        if self.size is not None:
            x = resize_short_side_crop(x, self.size)
        elif self.max_side is not None:
            x = resize_max_side(x, self.max_side, self.multiple)
        self.done.extend(x.unbind(0))
        self.pending.clear()

    def images(self) -> list[torch.Tensor]:
        self._flush()
        return self.done


def load_video(path: PathLike, fps: float, *, start: float = 0.0, duration: float | None = None,
               pad: PadPolicy = "pad", stream: int | None = None, size: int | None = None,
               max_side: int | None = None, multiple: int = 1) -> VideoClip:
    """Decode frames on the grid ``start + k / fps``.

    Each grid instant gets the last source frame whose timestamp is at or before it (timestamps
    are trusted to half a tick of the stream's time base: Matroska stores milliseconds); the last
    frame stays on screen for its own duration (else one average frame period). Grid instants
    before the first frame get the first frame.

    Args:
        path: a media file.
        fps: output frame rate.
        start: seconds from the container start.
        duration: seconds to return (``round(duration · fps)`` frames); None = to the end.
        pad: ``"pad"`` repeats nothing — missing frames are zeros with ``mask`` False; ``"reject"`` raises.
        stream: absolute stream index; default the first video stream.
        size: if set, the Synchformer policy (short side → ``size``, centre crop ``size``²).
        max_side: if set (and ``size`` is not), the MLLM policy (longest side ≤ ``max_side``).
        multiple: side rounding for the MLLM policy.

    Raises:
        MediaError: unreadable file, missing stream, decode error, too short (with ``pad="reject"``,
            or ``start`` past the end when ``duration`` is None).
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"start must be >= 0 and duration > 0, got start={start}, duration={duration}")
    _check_pad(pad)
    with _open(path) as c:
        s = _select(c, "video", path, stream)
        s.thread_type = "AUTO"
        src_fps = float(s.average_rate) if s.average_rate else None
        t0 = (c.start_time or 0) / av.time_base
        tol = _timestamp_tolerance(s, fps)
        if start > 0:
            try:
                c.seek(int((start + t0) * av.time_base), any_frame=False, backward=True)
            except av.error.FFmpegError:
                pass  # not seekable: frames before `start` are decoded and skipped
        n_req = None if duration is None else round(duration * fps)
        # Walk the decoded frames once; a frame is converted (and resized) only if some grid
        # instant shows it, and repeated grid instants share that one image.
        out: list[int] = []  # per grid instant, the id of the image shown
        sink: _FrameSink | None = None
        shown: av.VideoFrame | None = None
        shown_id: int | None = None
        shown_period: float | None = None
        last_time = start
        k = 0

        def image() -> int:
            nonlocal shown_id
            if shown_id is None:
                shown_id = sink.add(shown)
            return shown_id

        try:
            for frame in c.decode(s):
                t = frame.time - t0 if frame.time is not None else last_time
                # Emit grid instants that come before this frame appears.
                while shown is not None and (n_req is None or k < n_req) and start + k / fps < t - tol:
                    out.append(image())
                    k += 1
                if n_req is not None and k >= n_req:
                    break
                if sink is None:
                    sink = _FrameSink(_rotation(s, frame), size, max_side, multiple)
                shown, shown_id, last_time = frame, None, t
                shown_period = (float(frame.duration * frame.time_base)
                                if frame.duration and frame.time_base is not None else None)
            else:
                # End of stream: the last frame stays on screen for its duration.
                if shown is not None:
                    period = shown_period or 1.0 / (src_fps or fps)
                    while (n_req is None or k < n_req) and start + k / fps < last_time + period - tol:
                        out.append(image())
                        k += 1
            if shown is None:
                raise MediaError(path, "decode error at 0.0 s: no video frames")
            if not out and n_req is None:
                raise MediaError(path, f"too short: start {start:.1f} s is past the end "
                                       f"({last_time + (shown_period or 0.0):.1f} s)")
            blank_id = image() if not out else None  # gives the output frame shape of an all-padding clip
            images = sink.images()
        except av.error.FFmpegError as e:
            raise MediaError(path, f"decode error at {last_time:.1f} s: {_short(e)}") from e
    if out:
        frames = torch.stack([images[i] for i in out])  # [T, H, W, 3]
    else:
        frames = images[blank_id].new_zeros((0, *images[blank_id].shape))
    valid = frames.shape[0]
    n = valid if n_req is None else n_req
    frames, mask = _fit_length(frames, n, path, fps, valid, duration or 0.0, pad)
    return VideoClip(frames=frames, mask=mask, fps=fps, source_fps=src_fps, duration=valid / fps)


# --------------------------------------------------------------------------- writing


_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
"""FFmpeg's default channel layout for each channel count."""


def _as_numpy_wav(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    x = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"waveform must be [S] or [C, S], got shape {tuple(x.shape)}")
    if x.shape[0] not in _LAYOUTS:
        hint = " (channels last? pass [C, S])" if x.shape[1] in _LAYOUTS else ""
        raise ValueError(f"waveform must have 1 to 8 channels as [C, S], got shape {tuple(x.shape)}{hint}")
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _add_audio_stream(container, sample_rate: int, channels: int, codec: str, fmt: str | None = None):
    # All streams must exist before the first packet is muxed (the header is written then).
    st = container.add_stream(codec, rate=sample_rate, layout=_LAYOUTS[channels])
    if fmt is not None:
        st.format = fmt
    return st


def _encode_audio(st, wav: np.ndarray) -> list[av.Packet]:
    """Encode ``[C, S]`` float audio on ``st``; returns its packets (time 0 = the first sample)."""
    layout = st.codec_context.layout.name
    sample_rate = st.codec_context.sample_rate
    frame_size = st.codec_context.frame_size or 1024
    resampler = av.AudioResampler(format=st.codec_context.format.name, layout=layout, rate=sample_rate)
    frames = [av.AudioFrame.from_ndarray(np.ascontiguousarray(wav[:, i:i + frame_size]), format="fltp", layout=layout)
              for i in range(0, wav.shape[1], frame_size)]
    packets: list[av.Packet] = []
    for i, frame in enumerate(frames + [None]):
        if frame is not None:
            frame.sample_rate, frame.pts = sample_rate, i * frame_size
        for f in resampler.resample(frame):
            packets.extend(st.encode(f))
    packets.extend(st.encode(None))
    return packets


def _mux_interleaved(container, *streams_packets: list[av.Packet]) -> None:
    """Mux several streams' packets in decoding-time order (what players and the mp4 muxer expect)."""
    def key(pkt: av.Packet) -> float:
        ts = pkt.dts if pkt.dts is not None else pkt.pts
        return float(ts * pkt.time_base) if ts is not None and pkt.time_base is not None else 0.0

    for pkt in heapq.merge(*streams_packets, key=key):
        container.mux(pkt)


def write_audio(path: PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write ``[S]`` or ``[C, S]`` (1–8 channels) audio as 16-bit ``.wav`` or ``.flac`` (chosen by extension)."""
    ext = Path(path).suffix.lower()
    codecs = {".wav": ("pcm_s16le", None), ".flac": ("flac", "s16")}
    if ext not in codecs:
        raise ValueError(f"{path}: audio extension must be one of {sorted(codecs)}, got {ext!r}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    x = _as_numpy_wav(wav)
    codec, fmt = codecs[ext]
    with av.open(str(path), "w") as c:
        st = _add_audio_stream(c, sample_rate, x.shape[0], codec, fmt)
        _mux_interleaved(c, _encode_audio(st, x))


def write_video(path: PathLike, frames: torch.Tensor | np.ndarray, fps: float,
                audio: torch.Tensor | np.ndarray | None = None, sample_rate: int | None = None,
                crf: int = 18) -> None:
    """Write an H.264 (yuv420p) + AAC mp4.

    Args:
        path: output ``.mp4``.
        frames: ``[T, H, W, 3]`` uint8 RGB; H and W must be even (yuv420p).
        fps: frame rate (any positive rational-representable rate, e.g. 25 or 12.5).
        audio: optional ``[S]`` or ``[C, S]`` float waveform.
        sample_rate: required with ``audio``.
        crf: x264 quality (lower is better; 18 is visually lossless).
    """
    arr = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {arr.dtype} {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError("frames must hold at least one frame")
    if arr.shape[1] % 2 or arr.shape[2] % 2:
        raise ValueError(f"frame height and width must be even for yuv420p, got {arr.shape[1]}x{arr.shape[2]}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if audio is not None and sample_rate is None:
        raise ValueError("sample_rate is required when audio is given")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format="mp4") as c:
        vs = c.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = arr.shape[2], arr.shape[1], "yuv420p"
        vs.options = {"crf": str(crf), "preset": "medium"}
        wav = None if audio is None else _as_numpy_wav(audio)
        ast = None if wav is None else _add_audio_stream(c, int(sample_rate), wav.shape[0], "aac")
        video: list[av.Packet] = []
        for i, img in enumerate(arr):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            video.extend(vs.encode(vf))
        video.extend(vs.encode(None))
        _mux_interleaved(c, video, [] if ast is None else _encode_audio(ast, wav))


def mux_audio(video_path: PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int, out_path: PathLike,
              keep_audio: bool = False) -> float:
    """Put a generated waveform into a copy of ``video_path`` (mp4, AAC), cut or padded to the video's duration.

    The video stream is remuxed untouched (packets copied, display rotation kept) whenever mp4 can
    hold its codec (H.264, HEVC, VP9, AV1, MPEG-4, ...); otherwise it is re-encoded to H.264 (rotation
    applied to the pixels). The waveform's sample 0 is the container's start time, the instant
    :func:`load_video` calls 0.

    Args:
        keep_audio: also keep the source's first audio stream, as a second audio track after the
            generated one (copied when mp4 can hold its codec, else re-encoded to AAC).

    Returns:
        The video duration in seconds that the audio was fitted to.
    """
    x = _as_numpy_wav(wav)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    duration = video_duration(video_path)
    try:
        _remux_with_audio(video_path, _fit_wav(x, duration, sample_rate), sample_rate, out_path, keep_audio)
        return duration
    except _CannotCopy:
        Path(out_path).unlink(missing_ok=True)
    clip = load_video(video_path, fps=float(probe(video_path).video.fps or 25))
    duration = clip.duration
    x = _fit_wav(x, duration, sample_rate)
    w = clip.frames.shape[2] // 2 * 2
    h = clip.frames.shape[1] // 2 * 2
    write_video(out_path, clip.frames[:, :h, :w], clip.fps, x, sample_rate)
    if keep_audio and probe(video_path).audio is not None:
        tmp = Path(out_path).with_name(f".{Path(out_path).stem}.video{Path(out_path).suffix}")
        Path(out_path).replace(tmp)
        try:
            _remux_with_audio(tmp, x, sample_rate, out_path, keep_audio=True, audio_source=video_path)
        finally:
            tmp.unlink(missing_ok=True)
    return duration


class _CannotCopy(Exception):
    """mp4 cannot hold the source's video codec: re-encode instead."""


MP4_AUDIO_COPY = frozenset({"aac", "mp3", "alac", "flac", "opus", "ac3", "eac3"})
"""Audio codecs copied as they are into an mp4 (``keep_audio``); others are re-encoded to AAC."""


def _fit_wav(x: np.ndarray, duration: float, sample_rate: int) -> np.ndarray:
    n = round(duration * sample_rate)
    return np.pad(x[:, :n], ((0, 0), (0, max(0, n - x.shape[1]))))


def _remux_with_audio(video_path: PathLike, x: np.ndarray, sample_rate: int, out_path: PathLike, keep_audio: bool,
                      audio_source: PathLike | None = None) -> None:
    """Copy ``video_path``'s first video stream into an mp4 with ``x`` as AAC; with ``keep_audio``, the first
    audio stream of ``audio_source`` (default ``video_path``) follows as a second track, cut to ``x``'s length.

    Raises:
        _CannotCopy: the mp4 muxer refuses the video codec.
    """
    audio_source = audio_source or video_path
    end = x.shape[1] / sample_rate
    with _open(video_path) as src, _open(audio_source) as asrc, av.open(str(out_path), "w", format="mp4") as dst:
        vin = _select(src, "video", video_path, None)
        try:
            try:
                vout = dst.add_stream_from_template(vin)
            except av.codec.codec.UnknownCodecError:  # decoded by a library (libdav1d) that names no encoder
                vout = dst.add_stream_from_template(vin, opaque=True)
        except ValueError as e:  # "'mp4' format does not support 'rawvideo' codec"
            raise _CannotCopy(str(e)) from e
        # Keep the video where it was relative to the container start (= audio sample 0).
        t0 = round((src.start_time or 0) / av.time_base / vin.time_base)
        ast = _add_audio_stream(dst, sample_rate, x.shape[0], "aac")
        ain = asrc.streams.audio[0] if keep_audio and asrc.streams.audio else None
        aout = None
        if ain is not None:
            cc = ain.codec_context
            aout = (dst.add_stream_from_template(ain) if cc.name in MP4_AUDIO_COPY else
                    _add_audio_stream(dst, cc.sample_rate, min(8, cc.layout.nb_channels or 1), "aac"))
        try:
            dst.start_encoding()  # writes the header: this is where mp4 refuses a codec it cannot hold
        except av.error.FFmpegError as e:
            raise _CannotCopy(_short(e)) from e
        video: list[av.Packet] = []
        original: list[av.Packet] = []
        try:
            for pkt in src.demux(vin):
                if pkt.dts is None:
                    continue
                pkt.pts = None if pkt.pts is None else pkt.pts - t0
                pkt.dts -= t0
                pkt.stream = vout
                video.append(pkt)
        except av.error.FFmpegError as e:
            raise MediaError(video_path, f"demux error: {_short(e)}") from e
        if ain is not None:
            try:
                original = _original_audio(asrc, ain, aout, end)
            except av.error.FFmpegError as e:
                raise MediaError(audio_source, f"audio decode error: {_short(e)}") from e
        _mux_interleaved(dst, video, _encode_audio(ast, x), original)


def _original_audio(src: av.container.InputContainer, ain: av.audio.stream.AudioStream, out,
                    end: float) -> list[av.Packet]:
    """The source audio's packets up to ``end`` s on the output's timeline: copied, or re-encoded to AAC."""
    t0 = (src.start_time or 0) / av.time_base
    if out.codec_context.name == ain.codec_context.name:
        shift = round(t0 / ain.time_base)
        packets = []
        for pkt in src.demux(ain):
            if pkt.dts is None or pkt.pts is None:
                continue
            pkt.pts -= shift
            pkt.dts -= shift
            if float(pkt.pts * ain.time_base) >= end:
                break
            pkt.stream = out
            packets.append(pkt)
        return packets
    cc = out.codec_context
    resampler = av.AudioResampler(format="fltp", layout=cc.layout.name, rate=cc.sample_rate)
    chunks = [f.to_ndarray() for frame in src.decode(ain) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray() for f in resampler.resample(None)]
    wav = np.concatenate(chunks, axis=1) if chunks else np.zeros((cc.layout.nb_channels, 0), np.float32)
    return _encode_audio(out, _as_numpy_wav(wav[:, :round(end * cc.sample_rate)]))


def video_duration(path: PathLike) -> float:
    """Displayed duration of the first video stream on the container timeline: last frame's pts + its duration.

    Read from packet timestamps (demuxing only), so it holds for variable frame rates and for
    containers that store no duration.
    """
    with _open(path) as c:
        s = _select(c, "video", path, None)
        t0 = round((c.start_time or 0) / av.time_base / s.time_base)
        rate = s.average_rate or s.guessed_rate
        default = round(1 / (rate * s.time_base)) if rate else 0
        end, period = 0, 0
        for pkt in c.demux(s):
            if pkt.pts is None:
                continue
            if pkt.pts - t0 >= end:
                end, period = pkt.pts - t0, pkt.duration or default
        return float((end + period) * s.time_base)


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
