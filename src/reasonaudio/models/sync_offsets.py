"""Shifted audio-visual pairs for Synchformer's offset classification, cut from whole clips.

Legend: B clips, T 25-fps frames, N 16 kHz samples, S = ``config.segments`` windows, F = 16 + 8·(S − 1)
frames (the span the offset head sees: 64 frames = 2.56 s for S = 7), C = ``config.num_offsets``.

A pair of class c takes the video frames ``[v, v + F)`` and the audio of the same span moved by
the class offset o_c seconds: samples ``[(v/25 + o_c) · 16000, … + F · 640)``. A positive offset is
audio that starts later in the clip, so its events sound earlier than they are seen (Synchformer's
convention: "the audio starts earlier than the video"). Both windows are plain cuts of the real
streams: no padding and no wrap-around, so only the timing tells the classes apart.

Offsets must be whole frames (0.2 s = 5 frames), so every audio window starts on the 640-sample
frame grid. :func:`mel_bank` precomputes the Synchformer log-mel window at every frame of a clip
once (``[P, 128, 66]``, P = (N − 10240) // 640 + 1); a pair's S audio windows are then rows
``a, a + 8, …`` of that bank, bit-identical to :meth:`Synchformer.audio_windows` of the cut audio.
"""
from __future__ import annotations

import torch

from reasonaudio.config import SYNC_FPS, SYNC_STRIDE, SYNC_WINDOW
from reasonaudio.models.synchformer import SYNC_SAMPLE_RATE, Synchformer, SynchformerConfig

FRAME_SAMPLES = SYNC_SAMPLE_RATE // SYNC_FPS
"""16 kHz samples per 25-fps frame (640)."""


def pair_frames(config: SynchformerConfig) -> int:
    """Frames F a pair spans: ``16 + 8 · (segments − 1)`` (64 for 7 windows, 120 for the official 14)."""
    return SYNC_WINDOW + SYNC_STRIDE * (config.segments - 1)


def offset_frames(config: SynchformerConfig) -> torch.Tensor:
    """``[C]`` long: each class's offset in whole frames.

    Raises:
        ValueError: the class step is not a whole number of frames.
    """
    frames = config.offset_step * SYNC_FPS
    if abs(frames - round(frames)) > 1e-6:
        raise ValueError(f"offset step {config.offset_step} s is not a whole number of {SYNC_FPS}-fps frames")
    return (torch.arange(config.num_offsets) - (config.num_offsets - 1) // 2) * round(frames)


def start_range(config: SynchformerConfig, classes: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last valid video start (frames) of each class for clips of ``frames`` frames, ``[B]`` each.

    Raises:
        ValueError: the largest offset does not fit the clip (F + max shift > ``frames``).
    """
    shift = offset_frames(config)[classes]
    span = pair_frames(config)
    if span + offset_frames(config).abs().max() > frames:
        raise ValueError(f"pairs of {span} frames shifted by up to {config.max_offset} s do not fit clips of "
                         f"{frames} frames ({frames / SYNC_FPS} s)")
    return (-shift).clamp_min(0), frames - span - shift.clamp_min(0)


@torch.no_grad()
def mel_bank(model: Synchformer, wav: torch.Tensor) -> torch.Tensor:
    """The normalised log-mel window starting at every frame of a clip: ``[N]`` 16 kHz → ``[P, 128, 66]``."""
    return model.audio_windows(wav[None], hop=FRAME_SAMPLES)[0]


def cut_pairs(config: SynchformerConfig, frames: torch.Tensor, banks: torch.Tensor, classes: torch.Tensor,
              starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Video windows and audio mel windows of shifted pairs.

    Args:
        config: the model's config (segments, offset grid).
        frames: ``[B, T, ...]`` 25-fps frames of each pair's clip (any ``encode_video`` input).
        banks: ``[B, P, 128, 66]`` :func:`mel_bank` of each pair's clip.
        classes: ``[B]`` offset class of each pair.
        starts: ``[B]`` video start frame of each pair, within :func:`start_range`.

    Returns:
        ``[B, F, ...]`` frames and ``[B, S, 128, 66]`` mel windows (for :meth:`Synchformer.encode_mel`).
    """
    lo, hi = start_range(config, classes.cpu(), frames.shape[1])
    if ((starts.cpu() < lo) | (starts.cpu() > hi)).any():
        raise ValueError(f"video starts {starts.tolist()} outside the valid ranges {lo.tolist()}…{hi.tolist()}")
    rows = torch.arange(frames.shape[0], device=frames.device)[:, None]
    video = frames[rows, starts.to(frames.device)[:, None] + torch.arange(pair_frames(config), device=frames.device)]
    audio_start = starts.to(banks.device) + offset_frames(config).to(banks.device)[classes.to(banks.device)]
    windows = audio_start[:, None] + SYNC_STRIDE * torch.arange(config.segments, device=banks.device)
    return video, banks[rows.to(banks.device), windows]


def random_pairs(config: SynchformerConfig, batch: int, frames: int, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform classes and uniform valid video starts for ``batch`` pairs: ``([B], [B])`` long."""
    classes = torch.randint(0, config.num_offsets, (batch,), generator=generator)
    lo, hi = start_range(config, classes, frames)
    starts = lo + (torch.rand(batch, generator=generator) * (hi - lo + 1)).long().clamp_max(hi - lo)
    return classes, starts


def grid_pairs(config: SynchformerConfig, frames: int, positions: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Every class at ``positions`` evenly spaced valid starts (first and last for 2): ``([C·positions], …)``.

    The deterministic held-out set: each class equally often, starts spanning the clip.
    """
    if positions < 1:
        raise ValueError(f"positions must be >= 1, got {positions}")
    classes = torch.arange(config.num_offsets).repeat_interleave(positions)
    lo, hi = start_range(config, classes, frames)
    where = torch.linspace(0, 1, positions).repeat(config.num_offsets) if positions > 1 else torch.zeros(len(classes))
    return classes, (lo + (where * (hi - lo)).round().long())


def window_pairs(config: SynchformerConfig, batch: int, frames: int, per_clip: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``per_clip`` pairs per clip whose video starts on a window boundary (a multiple of 8 frames).

    Such a pair's video tokens are a run of ``segments`` consecutive windows of the whole clip's
    ``encode_video`` (the tokens the features stage writes), so one visual pass per clip serves all
    of its pairs; its audio windows are rows ``8·w + shift + 8·k`` of the clip's :func:`mel_bank`.
    Classes are uniform; the window w is uniform among those that keep the pair inside the clip.

    Returns:
        ``[P]`` clip index, ``[P]`` class and ``[P]`` first window (video start = 8·w frames), P = batch · per_clip.
    """
    classes = torch.randint(0, config.num_offsets, (batch * per_clip,), generator=generator)
    lo, hi = start_range(config, classes, frames)
    first, last = (lo + SYNC_STRIDE - 1) // SYNC_STRIDE, hi // SYNC_STRIDE
    assert (first <= last).all(), "every class fits a window boundary when the clip holds the largest offset"
    windows = first + (torch.rand(len(classes), generator=generator) * (last - first + 1)).long().clamp_max(last - first)
    return torch.arange(batch).repeat_interleave(per_clip), classes, windows
