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
  settings of resampy/librosa, computed by ``torchaudio.functional.resample``).
* Video comes out ``uint8 [T, H, W, 3]`` RGB sampled on an exact grid ``start + k / fps``:
  each output frame is the last source frame shown at that instant (what a player displays),
  so 12.5 fps, 30 fps and variable-rate sources all map onto the same timeline. Rotation
  metadata is applied before resizing.
* Lengths are exact: asking for ``duration`` seconds yields ``round(duration · rate)`` samples
  (frames). A shorter source is either padded with a validity mask or rejected, by policy —
  never silently truncated to whole seconds.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
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
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    rotation: int = 0
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
    """Read stream layout and durations from headers.

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
        raise MediaError(path, f"stream {index} is not a {kind} stream")
    return match[0]


def _fit_length(x: torch.Tensor, n: int, path: PathLike, rate: float, valid: int, requested: float,
                pad: PadPolicy) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut or pad the leading axis of ``x`` to ``n``; returns (x, mask)."""
    valid = min(valid, x.shape[0], n)
    if valid < n:
        if pad == "reject":
            raise MediaError(path, f"too short: {valid / rate:.1f} s < {requested:.1f} s")
        if pad != "pad":
            raise ValueError(f"pad policy must be 'pad' or 'reject', got {pad!r}")
    out = x.new_zeros((n, *x.shape[1:]))
    out[:valid] = x[:valid]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[:valid] = True
    return out, mask


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

    Raises:
        MediaError: unreadable file, missing stream, decode error, too short, silent.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"start must be >= 0 and duration > 0, got start={start}, duration={duration}")
    with _open(path) as c:
        s = _select(c, "audio", path, stream)
        src_rate = s.codec_context.sample_rate
        channels = s.codec_context.layout.nb_channels
        t0 = (c.start_time or 0) / av.time_base
        # Codecs decode whole frames (AAC: 1024 samples), so the stored duration, when there
        # is one, says where the signal really ends.
        cdur = c.duration / av.time_base if c.duration is not None else None
        stored_end = _stream_duration(s, cdur)
        if start > 0:
            c.seek(int((start + t0) * av.time_base), any_frame=False, backward=True)
        # Convert every frame to planar float at the native rate; layout and rate stay untouched.
        resampler = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        decoded_until = start
        stop = None if duration is None else start + duration
        try:
            for frame in c.decode(s):
                if frame.time is not None and first_time is None:
                    first_time = frame.time - t0
                for f in resampler.resample(frame):
                    arr = f.to_ndarray()  # [C, n]
                    chunks.append(arr)
                got = sum(a.shape[1] for a in chunks) / src_rate
                decoded_until = (first_time or 0.0) + got
                if stop is not None and decoded_until >= stop + 0.1:
                    break
        except av.error.FFmpegError as e:
            raise MediaError(path, f"decode error at {decoded_until:.1f} s: {_short(e)}") from e
    if not chunks:
        raise MediaError(path, "decode error at 0.0 s: no audio frames")
    native = torch.from_numpy(np.concatenate(chunks, axis=1)).float().mean(dim=0)  # [S_native]
    # Place samples on the container timeline: drop what precedes `start`, zero-fill a late start.
    offset = round(((first_time or 0.0) - start) * src_rate)
    if offset < 0:
        native = native[-offset:]
    elif offset > 0:
        native = torch.cat([native.new_zeros(offset), native])
    real = max(0, native.shape[0] - max(offset, 0))  # samples that are signal, not the late-start fill
    if src_rate != sample_rate:
        native = AF.resample(native, src_rate, sample_rate, **_RESAMPLE_KW)
    real = round(real * sample_rate / src_rate)
    lead = round(max(offset, 0) * sample_rate / src_rate)
    if duration is not None:
        n = round(duration * sample_rate)
    elif stored_end is not None:
        n = min(native.shape[0], max(1, round((stored_end - start) * sample_rate)))
    else:
        n = native.shape[0]
    wav, mask = _fit_length(native, n, path, sample_rate, native.shape[0], duration or 0.0, pad)
    mask[:lead] = False
    wav = wav.clamp(-1.0, 1.0)
    if reject_silent:
        check_not_silent(wav[mask], path)
    return AudioClip(wav=wav, mask=mask, sample_rate=sample_rate, source_rate=src_rate,
                     source_channels=channels, duration=min(real + lead, n) / sample_rate)


def peak_dbfs(wav: torch.Tensor) -> float:
    """Peak level in dBFS (−inf for all zeros)."""
    peak = float(wav.abs().max()) if wav.numel() else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def check_not_silent(wav: torch.Tensor, path: PathLike, threshold_dbfs: float = SILENCE_DBFS) -> None:
    """Raise ``silent audio`` when the peak of ``wav`` is below ``threshold_dbfs``."""
    level = peak_dbfs(wav)
    if level < threshold_dbfs:
        raise MediaError(path, f"silent audio (peak {level:.1f} dBFS < {threshold_dbfs:.0f} dBFS)")


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
    """
    t, h, w, _ = frames.shape
    scale = min(1.0, max_side / max(h, w))
    nh = max(multiple, round(h * scale / multiple) * multiple)
    nw = max(multiple, round(w * scale / multiple) * multiple)
    return frames if (nh, nw) == (h, w) else _resize(frames, nh, nw)


def _resize(frames: torch.Tensor, h: int, w: int) -> torch.Tensor:
    x = frames.permute(0, 3, 1, 2).float()  # [T, 3, H, W]
    x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _rotate(arr: np.ndarray, degrees: int) -> np.ndarray:
    # FFmpeg's display matrix angle is counter-clockwise; the displayed picture is the frame
    # rotated clockwise by `rotate` (the tag convention).
    k = {0: 0, 90: 3, 180: 2, 270: 1}.get(degrees % 360, 0)
    return np.ascontiguousarray(np.rot90(arr, k=k)) if k else arr


def load_video(path: PathLike, fps: float, *, start: float = 0.0, duration: float | None = None,
               pad: PadPolicy = "pad", stream: int | None = None, size: int | None = None,
               max_side: int | None = None, multiple: int = 1) -> VideoClip:
    """Decode frames on the grid ``start + k / fps``.

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
        MediaError: unreadable file, missing stream, decode error, too short.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"start must be >= 0 and duration > 0, got start={start}, duration={duration}")
    with _open(path) as c:
        s = _select(c, "video", path, stream)
        s.thread_type = "AUTO"
        rotation: int | None = None
        src_fps = float(s.average_rate) if s.average_rate else None
        t0 = (c.start_time or 0) / av.time_base
        if start > 0:
            c.seek(int((start + t0) * av.time_base), any_frame=False, backward=True)
        n_req = None if duration is None else round(duration * fps)
        grid_end = None if n_req is None else start + (n_req - 1) / fps
        # Keep the newest frame shown at each grid instant: walk the decoded frames once.
        out: list[np.ndarray] = []
        shown: np.ndarray | None = None
        last_time = start
        k = 0
        eps = 1e-6
        try:
            for frame in c.decode(s):
                t = (frame.time if frame.time is not None else last_time) - t0
                # Emit grid points that happen before this frame appears.
                while shown is not None and start + k / fps < t - eps and (grid_end is None or k < n_req):
                    out.append(shown)
                    k += 1
                if n_req is not None and k >= n_req:
                    break
                if rotation is None:
                    rotation = _rotation(s, frame)
                shown = frame.to_ndarray(format="rgb24")  # [H, W, 3]
                last_time = t
            else:
                # End of stream: the last frame stays on screen for one frame period.
                if shown is not None:
                    period = 1.0 / (src_fps or fps)
                    while (n_req is None or k < n_req) and start + k / fps < last_time + period - eps:
                        out.append(shown)
                        k += 1
        except av.error.FFmpegError as e:
            raise MediaError(path, f"decode error at {last_time:.1f} s: {_short(e)}") from e
    if not out:
        if shown is None:
            raise MediaError(path, "decode error at 0.0 s: no video frames")
        out.append(shown)
    frames = torch.from_numpy(np.stack([_rotate(a, rotation or 0) for a in out]))  # [T, H, W, 3]
    if size is not None:
        frames = resize_short_side_crop(frames, size)
    elif max_side is not None:
        frames = resize_max_side(frames, max_side, multiple)
    valid = frames.shape[0]
    n = valid if n_req is None else n_req
    frames, mask = _fit_length(frames, n, path, fps, valid, duration or 0.0, pad)
    return VideoClip(frames=frames, mask=mask, fps=fps, source_fps=src_fps, duration=valid / fps)


# --------------------------------------------------------------------------- writing


def _as_numpy_wav(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    x = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"waveform must be [S] or [C, S], got shape {tuple(x.shape)}")
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _add_audio_stream(container, sample_rate: int, channels: int, codec: str, fmt: str | None = None):
    # All streams must exist before the first packet is muxed (the header is written then).
    st = container.add_stream(codec, rate=sample_rate, layout="mono" if channels == 1 else "stereo")
    if fmt is not None:
        st.format = fmt
    return st


def _encode_audio(container, st, wav: np.ndarray) -> None:
    layout = st.codec_context.layout.name
    sample_rate = st.codec_context.sample_rate
    frame_size = st.codec_context.frame_size or 1024
    resampler = av.AudioResampler(format=st.codec_context.format.name, layout=layout, rate=sample_rate)
    frames = [av.AudioFrame.from_ndarray(np.ascontiguousarray(wav[:, i:i + frame_size]), format="fltp", layout=layout)
              for i in range(0, wav.shape[1], frame_size)]
    for i, frame in enumerate(frames + [None]):
        if frame is not None:
            frame.sample_rate, frame.pts = sample_rate, i * frame_size
        for f in resampler.resample(frame):
            for pkt in st.encode(f):
                container.mux(pkt)
    for pkt in st.encode(None):
        container.mux(pkt)


def write_audio(path: PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write ``[S]`` or ``[C, S]`` audio as 16-bit ``.wav`` or ``.flac`` (chosen by extension)."""
    ext = Path(path).suffix.lower()
    codecs = {".wav": ("pcm_s16le", None), ".flac": ("flac", "s16")}
    if ext not in codecs:
        raise ValueError(f"{path}: audio extension must be one of {sorted(codecs)}, got {ext!r}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    x = _as_numpy_wav(wav)
    codec, fmt = codecs[ext]
    with av.open(str(path), "w") as c:
        _encode_audio(c, _add_audio_stream(c, sample_rate, x.shape[0], codec, fmt), x)


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
    if arr.shape[1] % 2 or arr.shape[2] % 2:
        raise ValueError(f"frame height and width must be even for yuv420p, got {arr.shape[1]}x{arr.shape[2]}")
    if audio is not None and sample_rate is None:
        raise ValueError("sample_rate is required when audio is given")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    from fractions import Fraction
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format="mp4") as c:
        vs = c.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = arr.shape[2], arr.shape[1], "yuv420p"
        vs.options = {"crf": str(crf), "preset": "medium"}
        wav = None if audio is None else _as_numpy_wav(audio)
        ast = None if wav is None else _add_audio_stream(c, int(sample_rate), wav.shape[0], "aac")
        for i, img in enumerate(arr):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            for pkt in vs.encode(vf):
                c.mux(pkt)
        for pkt in vs.encode(None):
            c.mux(pkt)
        if ast is not None:
            _encode_audio(c, ast, wav)


def mux_audio(video_path: PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int, out_path: PathLike) -> float:
    """Put a generated waveform into a copy of ``video_path`` (H.264 + AAC), cut or padded to the video's duration.

    H.264 sources are remuxed untouched; other codecs are re-encoded to H.264.

    Returns:
        The video duration in seconds that the audio was fitted to.
    """
    x = _as_numpy_wav(wav)
    clip = None
    with _open(video_path) as src:
        vin = _select(src, "video", video_path, None)
        copy = vin.codec_context.name == "h264"
    if copy:
        duration = _video_duration(video_path)
    else:
        clip = load_video(video_path, fps=float(probe(video_path).video.fps or 25))
        duration = clip.duration
    n = round(duration * sample_rate)
    x = np.pad(x[:, :n], ((0, 0), (0, max(0, n - x.shape[1]))))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        w = clip.frames.shape[2] // 2 * 2
        h = clip.frames.shape[1] // 2 * 2
        write_video(out_path, clip.frames[:, :h, :w], clip.fps, x, sample_rate)
        return duration
    with _open(video_path) as src, av.open(str(out_path), "w", format="mp4") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        t0 = vin.start_time or 0
        ast = _add_audio_stream(dst, sample_rate, x.shape[0], "aac")
        for pkt in src.demux(vin):
            if pkt.dts is None:
                continue
            pkt.pts = None if pkt.pts is None else pkt.pts - t0
            pkt.dts -= t0
            pkt.stream = vout
            dst.mux(pkt)
        _encode_audio(dst, ast, x)
    return duration


def _video_duration(path: PathLike) -> float:
    """Displayed duration of the first video stream: last frame's pts + one frame period."""
    with _open(path) as c:
        s = _select(c, "video", path, None)
        t0 = s.start_time or 0
        end, period = 0, 0
        for pkt in c.demux(s):
            if pkt.pts is None:
                continue
            if pkt.pts - t0 >= end:
                end, period = pkt.pts - t0, pkt.duration or 0
        return float((end + period) * s.time_base)


def validate_file(path: PathLike, *, duration: float | None = None,
                  require: Sequence[str] = (), allow_silent: bool = False) -> dict:
    """Decode a whole file and report what a training run would see.

    Args:
        path: a media file.
        duration: minimum duration in seconds (``too short`` below it).
        require: stream kinds that must exist (``audio``, ``video``); every stream present is decoded.
        allow_silent: accept a silent audio track (by default it is reported, since it cannot train).

    Returns:
        A dict with ``path``, ``ok``, ``reason`` (None when ok), ``duration``, ``video_fps``,
        ``audio_rate``, ``audio_channels``, ``width``, ``height``.
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
        durations = []
        if a is not None:
            clip = load_audio(path, a.sample_rate)
            durations.append(clip.duration)
        if v is not None:
            vclip = load_video(path, fps=v.fps or 25.0)
            durations.append(vclip.duration)
        known = info.duration if info.duration is not None else measure_duration(path)
        report["duration"] = round(known, 3)
        if duration is not None and known + 1e-3 < duration:
            raise MediaError(path, f"too short: {known:.1f} s < {duration:.1f} s")
        if a is not None and not allow_silent:
            check_not_silent(clip.wav, path)
        report.update(ok=True)
    except MediaError as e:
        report["reason"] = e.reason
    return report
