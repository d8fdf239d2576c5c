"""Writing: :func:`write_audio` (wav / flac), :func:`write_video` (H.264 + AAC mp4) and :func:`mux_audio`
(a generated waveform into a copy of a video, its video stream remuxed untouched when mp4 can hold it).
"""
from __future__ import annotations

import heapq
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from reasonaudio.media.info import MediaError, PathLike, _open, _select, _short, probe, video_duration
from reasonaudio.media.video import load_video

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
