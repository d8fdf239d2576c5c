"""Shared media types and probing: :class:`MediaError`, the stream and clip dataclasses, :func:`probe`,
:func:`measure_duration` and :func:`video_duration` (headers and packet timestamps, no full decode), and
the private helpers the other submodules share (opening a file, choosing a stream, error text, rotation).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import av
import torch

PathLike = str | os.PathLike
PadPolicy = Literal["pad", "reject"]

SILENCE_DBFS = -60.0
"""Peak level below which a decoded audio track counts as silent."""


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
