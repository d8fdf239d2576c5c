"""The video frames a clip gives the model's two visual streams, decoded one way for training and for generation.

The features stage (``ClipDataset``) and ``reasonaudio-generate`` (``InferenceDataset``) both call
:func:`decode_video_streams`, so a clip's Synchformer and MLLM frames are the same tensors whichever
path reads it: the same time grids (25 fps for Synchformer, ``mllm_fps`` for the MLLM, placed by
timestamps, so variable, 12.5 and 60 fps sources all land on them), the same rotation handling and
the same resize policies (``reasonaudio.media``).
"""
from __future__ import annotations

from typing import Any

import torch

from reasonaudio.config import SYNC_FPS, SequenceConfig
from reasonaudio.media import PadPolicy, load_video


def decode_video_streams(path: str, seq: SequenceConfig, *, has_video: bool = True, start: float = 0.0,
                         pad: PadPolicy = "pad", load_sync_video: bool = True, sync_size: int = 224,
                         load_mllm_video: bool = False, mllm_max_side: int = 448,
                         mllm_multiple: int = 28) -> dict[str, Any]:
    """Synchformer and MLLM frames of ``seq.duration`` seconds of a clip from ``start``.

    Args:
        path: the media file (ignored when ``has_video`` is False).
        seq: lengths: ``seq.sync_frames`` frames at 25 fps, ``seq.mllm_frames`` at ``seq.mllm_fps``.
        has_video: False for audio-only / text-only items: blank Synchformer frames with an all-False
            mask and no MLLM video.
        start: seconds from the container start.
        pad: ``"pad"`` fills missing frames with zeros (mask False); ``"reject"`` raises ``MediaError``.
        load_sync_video: decode the Synchformer stream.
        sync_size: Synchformer frame side (short side resized, centre crop).
        load_mllm_video: decode the MLLM stream.
        mllm_max_side: longest MLLM frame side.
        mllm_multiple: MLLM frame sides are multiples of this (28 for Qwen2.5-VL).

    Returns:
        ``sync_video`` ``[Ts, 3, H, H]`` uint8 and ``sync_mask`` ``[Ts]`` bool when ``load_sync_video``;
        ``mllm_video`` ``[Tm, 3, h, w]`` uint8 (or None) and ``mllm_mask`` ``[Tm]`` bool (or None) when
        ``load_mllm_video``.
    """
    item: dict[str, Any] = {}
    if load_sync_video:
        if has_video:
            v = load_video(path, SYNC_FPS, start=start, duration=seq.duration, pad=pad, size=sync_size)
            item["sync_video"] = v.frames.permute(0, 3, 1, 2).contiguous()  # [Ts, 3, H, H]
            item["sync_mask"] = v.mask
        else:
            item["sync_video"] = torch.zeros(seq.sync_frames, 3, sync_size, sync_size, dtype=torch.uint8)
            item["sync_mask"] = torch.zeros(seq.sync_frames, dtype=torch.bool)
    if load_mllm_video:
        if has_video:
            v = load_video(path, seq.mllm_fps, start=start, duration=seq.mllm_frames / seq.mllm_fps, pad=pad,
                           max_side=mllm_max_side, multiple=mllm_multiple)
            item["mllm_video"] = v.frames.permute(0, 3, 1, 2).contiguous()  # [Tm, 3, h, w]
            item["mllm_mask"] = v.mask
        else:
            item["mllm_video"] = None
            item["mllm_mask"] = None
    return item
