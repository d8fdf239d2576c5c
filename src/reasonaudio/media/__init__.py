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

Submodules (everything public is re-exported here, so ``from reasonaudio.media import X`` works):

* :mod:`~reasonaudio.media.info`: :class:`MediaError`, stream/clip dataclasses, :func:`probe`, the durations.
* :mod:`~reasonaudio.media.audio`: :func:`load_audio` (decode, downmix, resample), the silence checks.
* :mod:`~reasonaudio.media.video`: :func:`load_video` (exact-grid frames, rotation) and the resize policies.
* :mod:`~reasonaudio.media.write`: :func:`write_audio`, :func:`write_video`, :func:`mux_audio` (remux or re-encode).
* :mod:`~reasonaudio.media.validate`: :func:`validate_file`, the full-decode check behind ``reasonaudio-data check``.
"""
from __future__ import annotations

from reasonaudio.media.audio import check_not_silent, load_audio, peak_dbfs
from reasonaudio.media.info import (SILENCE_DBFS, AudioClip, MediaError, MediaInfo, PadPolicy, PathLike, StreamInfo,
                                    VideoClip, measure_duration, probe, video_duration)
from reasonaudio.media.validate import validate_file
from reasonaudio.media.video import load_video, max_side_shape, resize_max_side, resize_short_side_crop
from reasonaudio.media.write import MP4_AUDIO_COPY, mux_audio, write_audio, write_video

__all__ = ["MP4_AUDIO_COPY", "SILENCE_DBFS", "AudioClip", "MediaError", "MediaInfo", "PadPolicy", "PathLike",
           "StreamInfo", "VideoClip", "check_not_silent", "load_audio", "load_video", "max_side_shape",
           "measure_duration", "mux_audio", "peak_dbfs", "probe", "resize_max_side", "resize_short_side_crop",
           "validate_file", "video_duration", "write_audio", "write_video"]
