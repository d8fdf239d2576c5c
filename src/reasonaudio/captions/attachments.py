"""What a model is shown of a clip: sampled video frames and the audio track, and their encodings.

Frames are decoded with :func:`reasonaudio.media.load_video` at the centres of ``num_frames`` equal
slices of the clip, longest side at most ``max_side``; audio with :func:`reasonaudio.media.load_audio`,
mono at ``sample_rate``. Chat APIs take images as base64 JPEG or PNG and audio as base64 WAV:
JPEG needs Pillow; PNG and WAV are written here with the standard library (``zlib``, ``wave``), so
the OpenAI-compatible backend works without Pillow when ``image_format`` is ``png``.
"""
from __future__ import annotations

import base64
import io
import struct
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reasonaudio.media import MediaError, load_audio, load_video, measure_duration

IMAGE_FORMATS: tuple[str, ...] = ("jpeg", "png")


@dataclass(frozen=True)
class MediaSpec:
    """How a clip is sampled for a model.

    Args:
        num_frames: frames per clip (at least 1).
        max_side: longest frame side in pixels; frames are downscaled, never upscaled.
        send_audio: attach the audio track (only for models that accept audio input).
        sample_rate: audio rate in Hz.
    """

    num_frames: int = 8
    max_side: int = 512
    send_audio: bool = False
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.max_side < 16 or self.sample_rate < 1000:
            raise ValueError(f"MediaSpec needs num_frames >= 1, max_side >= 16 and sample_rate >= 1000, got {self}")


@dataclass(frozen=True)
class ClipMedia:
    """The decoded inputs of one clip.

    Args:
        frames: ``[T, H, W, 3]`` uint8 RGB, ``T <= num_frames``.
        times: seconds of each frame from the clip start.
        wav: ``[S]`` float32 mono audio in [-1, 1], or ``None`` when audio is not sent.
        sample_rate: rate of ``wav``.
    """

    frames: np.ndarray
    times: tuple[float, ...]
    wav: np.ndarray | None
    sample_rate: int


def load_clip_media(video: str | Path | None, audio: str | Path | None, spec: MediaSpec,
                    duration: float | None = None) -> ClipMedia:
    """Decodes the frames (and audio) a model sees of one clip.

    Args:
        video: the clip's video file (frames; also its audio when ``audio`` is None).
        audio: a separate audio file, or None.
        spec: sampling settings.
        duration: clip length in seconds; measured from the video when None.

    Raises:
        MediaError: a missing video, an undecodable file or a missing audio stream.
    """
    if video is None:
        raise MediaError(audio or "?", "no video file for this clip (the annotation prompts need frames)")
    if duration is None:
        duration = measure_duration(video)
    if not duration > 0:
        raise MediaError(video, f"clip duration must be positive, got {duration}")
    fps = spec.num_frames / duration
    clip = load_video(video, fps, start=0.5 / fps, duration=spec.num_frames / fps, max_side=spec.max_side)
    keep = clip.mask.numpy()
    if not keep.any():
        raise MediaError(video, "no video frames decoded")
    frames = clip.frames.numpy()[keep]  # [T, H, W, 3]
    times = tuple(float((k + 0.5) / fps) for k in np.flatnonzero(keep))
    wav = None
    if spec.send_audio:
        wav = load_audio(audio or video, spec.sample_rate, duration=duration).wav.numpy()  # [S]
    return ClipMedia(frames=frames, times=times, wav=wav, sample_rate=spec.sample_rate)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray) -> bytes:
    """Encodes an ``[H, W, 3]`` uint8 RGB image as PNG (8-bit truecolour, filter type 0 on every row)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] image, got shape {image.shape}")
    height, width = image.shape[:2]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def encode_image(image: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encodes an ``[H, W, 3]`` uint8 RGB image as JPEG (Pillow) or PNG.

    Raises:
        ValueError: an unknown format, or JPEG without Pillow installed.
    """
    if fmt == "png":
        return encode_png(image)
    if fmt != "jpeg":
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {fmt!r}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def encode_wav(wav: np.ndarray, sample_rate: int) -> bytes:
    """Encodes ``[S]`` float audio in [-1, 1] as 16-bit mono PCM WAV."""
    pcm = np.round(np.clip(np.asarray(wav, np.float64), -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def data_url(payload: bytes, mime: str) -> str:
    """``data:<mime>;base64,<payload>``."""
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"
