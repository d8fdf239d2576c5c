"""Video decoding: :func:`load_video` on an exact time grid (rotation applied, frames resized in chunks by
:class:`_FrameSink`) and the resize policies :func:`resize_short_side_crop`, :func:`resize_max_side` and
:func:`max_side_shape`.
"""
from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import torch
import torch.nn.functional as F

from reasonaudio.media.info import (MediaError, PadPolicy, PathLike, VideoClip, _check_pad, _open, _rotation, _select,
                                    _short)


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
