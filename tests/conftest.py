"""Shared test fixtures: the real-media fixture folder and small generated media files.

Generic on purpose (several test modules use it):

* ``fixtures_dir`` — the read-only real-media fixtures (``$REASONAUDIO_FIXTURES``, default
  ``<repo root>/../shared/fixtures``); tests that need them are skipped, with the path in the
  message, only when that folder does not exist.
* ``make_audio`` / ``make_video`` — factories writing small files with PyAV directly (not with
  the code under test) into ``tmp_path``.
* ``frame_index`` — reads back the frame number that ``make_video`` encodes as brightness.
* ``set_mp4_rotation`` — patches an mp4's ``tkhd`` display matrix (PyAV writes no ``rotate`` tag).
"""
from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import av
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_ENV = "REASONAUDIO_FIXTURES"

# make_video's frames are flat grey, level BASE + STEP · index (flat frames survive any codec).
INDEX_BASE = 8
INDEX_STEP = 4
MAX_INDEX = (255 - INDEX_BASE) // INDEX_STEP  # 61

LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
"""FFmpeg's default channel layout per channel count."""


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The shared real-media fixtures folder (see its README.md)."""
    root = Path(os.environ.get(FIXTURES_ENV) or REPO_ROOT.parent / "shared" / "fixtures")
    if not root.is_dir():
        pytest.skip(f"real-media fixtures folder not found: {root} (set ${FIXTURES_ENV} to its location)")
    return root


# --------------------------------------------------------------------------- audio


def write_audio_file(path: Path, data: np.ndarray, rate: int, *, codec: str | None = None,
                     layout: str | None = None) -> Path:
    """Write ``data`` (``[S]`` or ``[C, S]`` float in [-1, 1]) with PyAV.

    The codec defaults from the extension (.wav → pcm_s16le, .flac → flac, .m4a/.mp4 → aac,
    .ogg/.opus → libopus, .mkv → flac); ``layout`` defaults to FFmpeg's default for the channel count.
    """
    x = np.asarray(data, dtype=np.float32)
    x = x[None] if x.ndim == 1 else x
    path = Path(path)
    default = {".wav": "pcm_s16le", ".flac": "flac", ".m4a": "aac", ".mp4": "aac", ".ogg": "libopus",
               ".opus": "libopus", ".mkv": "flac"}
    codec = codec or default[path.suffix.lower()]
    layout = layout or LAYOUTS[x.shape[0]]
    with av.open(str(path), "w") as c:
        st = c.add_stream(codec, rate=rate, layout=layout)
        if codec in ("pcm_s16le", "flac"):
            st.format = "s16"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        for pkt in st.encode(frame):
            c.mux(pkt)
        for pkt in st.encode(None):
            c.mux(pkt)
    return path


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    """``[S]`` float32 sine, ``round(seconds · rate)`` samples."""
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def make_audio(tmp_path: Path) -> Callable[..., Path]:
    """``make_audio(name, data, rate, codec=None, layout=None) -> Path`` in ``tmp_path``."""

    def make(name: str, data: np.ndarray, rate: int, **kw) -> Path:
        return write_audio_file(tmp_path / name, data, rate, **kw)

    return make


# --------------------------------------------------------------------------- video


def index_frame(i: int, height: int, width: int) -> np.ndarray:
    """A flat grey ``[H, W, 3]`` uint8 frame whose level encodes ``i``."""
    if not 0 <= i <= MAX_INDEX:
        raise ValueError(f"frame index {i} outside 0..{MAX_INDEX}")
    return np.full((height, width, 3), INDEX_BASE + INDEX_STEP * i, np.uint8)


def frame_index(frame) -> int:
    """Inverse of :func:`index_frame` for a decoded ``[H, W, 3]`` frame (tensor or array)."""
    level = float(np.asarray(frame, dtype=np.float64).mean())
    return int(round((level - INDEX_BASE) / INDEX_STEP))


def write_video_file(path: Path, *, n_frames: int | None = None, fps: float = 25.0,
                     pts_seconds: Sequence[float] | None = None, size: tuple[int, int] = (32, 32),
                     codec: str | None = None, frames: np.ndarray | None = None,
                     audio: np.ndarray | None = None, audio_rate: int = 16000,
                     audio_codec: str | None = None) -> Path:
    """Write a small video with PyAV; frame ``i`` is :func:`index_frame` ``(i)`` unless ``frames`` is given.

    Args:
        n_frames: number of frames at a constant ``fps`` (ignored when ``pts_seconds`` is given).
        pts_seconds: explicit presentation times (variable frame rate), on a 1/1000 s time base.
        size: ``(height, width)``.
        codec: default from the extension (.mp4/.mkv/.mov → libx264, .avi → mpeg4, .webm → libvpx-vp9).
        frames: explicit ``[T, H, W, 3]`` uint8 frames instead of index frames.
        audio: optional ``[S]`` or ``[C, S]`` float waveform muxed as a second stream.
    """
    path = Path(path)
    ext = path.suffix.lower()
    codec = codec or {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".avi": "mpeg4",
                      ".webm": "libvpx-vp9"}[ext]
    if frames is not None:
        frames = np.asarray(frames, np.uint8)
        n_frames, (h, w) = frames.shape[0], frames.shape[1:3]
    else:
        h, w = size
    if pts_seconds is not None:
        n_frames = len(pts_seconds)
        time_base = Fraction(1, 1000)
        pts = [round(t * 1000) for t in pts_seconds]
        rate = None
    else:
        rate = Fraction(fps).limit_denominator(1001)
        time_base = 1 / rate
        pts = list(range(n_frames))
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=rate) if rate is not None else c.add_stream(codec)
        vs.width, vs.height = w, h
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = time_base
        if rate is None:
            vs.time_base = time_base
        if codec == "libx264":
            vs.options = {"qp": "0", "preset": "ultrafast"}
        elif codec == "mpeg4":
            vs.options = {"qscale": "2"}
            vs.codec_context.qmin = vs.codec_context.qmax = 2
        ast = None
        if audio is not None:
            a = np.asarray(audio, np.float32)
            a = a[None] if a.ndim == 1 else a
            ast = c.add_stream(audio_codec or ("libopus" if ext == ".webm" else "aac"), rate=audio_rate,
                               layout=LAYOUTS[a.shape[0]])
        for i in range(n_frames):
            img = frames[i] if frames is not None else index_frame(i, h, w)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts, vf.time_base = pts[i], time_base
            for pkt in vs.encode(vf):
                c.mux(pkt)
        for pkt in vs.encode(None):
            c.mux(pkt)
        if ast is not None:
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(a), format="fltp", layout=ast.layout.name)
            af.sample_rate, af.pts = audio_rate, 0
            for pkt in ast.encode(af):
                c.mux(pkt)
            for pkt in ast.encode(None):
                c.mux(pkt)
    return path


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_video(name, **write_video_file kwargs) -> Path`` in ``tmp_path``."""

    def make(name: str, **kw) -> Path:
        return write_video_file(tmp_path / name, **kw)

    return make


# --------------------------------------------------------------------------- rotation

ROTATE_90_MATRIX = (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
"""tkhd display matrix of a clip shown rotated 90° clockwise (what phones write for portrait)."""


def set_mp4_rotation(path: Path, matrix: Sequence[int] = ROTATE_90_MATRIX) -> Path:
    """Overwrite the display matrix of every version-0 ``tkhd`` box of an mp4, in place.

    Version-0 ``tkhd`` layout after the 4-byte type: version/flags 4, creation 4, modification 4,
    track id 4, reserved 4, duration 4, reserved 8, layer 2, alternate group 2, volume 2,
    reserved 2 → the 9 × int32 matrix starts 40 bytes after the type field.
    """
    data = bytearray(Path(path).read_bytes())
    packed = struct.pack(">9i", *matrix)
    pos, patched = 0, 0
    while (pos := data.find(b"tkhd", pos)) >= 0:
        body = pos + 4
        if data[body] != 0:
            raise ValueError("only version-0 tkhd boxes are supported")
        data[body + 40:body + 76] = packed
        pos, patched = body, patched + 1
    if not patched:
        raise ValueError(f"no tkhd box in {path}")
    Path(path).write_bytes(bytes(data))
    return Path(path)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    models run as fast on one thread, and much faster on a shared machine (OpenMP threads busy-wait)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
