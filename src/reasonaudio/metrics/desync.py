"""DeSync: how far (in seconds) generated audio is out of sync with its video, by the full Synchformer.

av-benchmark's procedure (notes/anchors-mmaudio-avbench.md §7, pretrained-components.md §2.5):

1. the ground-truth video at 25 fps, short side → 224 (bicubic), centre crop 224², normalised
   with mean = std = 0.5, cut into 16-frame windows every 8 frames → visual tokens
   ``[B, S·8, 768]`` (S = 24 for 8 s);
2. the generated audio, mono, resampled to 16 kHz with torchaudio's default resampler (no DC
   removal), cut into 0.64 s windows every 0.32 s → log-mel → AST → audio tokens ``[B, S·6, 768]``;
3. the offset head classifies the first 14 and the last 14 windows (4.8 s each) into 21 offsets
   ``linspace(−2, 2, 21)`` s; DeSync = mean |arg-max offset| over both halves and all clips.

Steps 1–3 are :class:`~reasonaudio.models.synchformer.Synchformer` (``encode_video``,
``encode_audio``, ``desync``); this module adds the input handling and the metric. Clips longer
than 8 s work too (the first and the last 4.8 s are scored); when video and audio give a
different number of windows, both are cut to the shorter, which must be at least 14 windows
(4.8 s). av-benchmark requires exactly 8 s and silently skips shorter clips; the folder
evaluator reports them instead.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import torch
from torchmetrics import Metric

from reasonaudio.config import SYNC_FPS, SYNC_TOKENS_PER_WINDOW
from reasonaudio.metrics.backbones import resample
from reasonaudio.models.synchformer import AUDIO_TOKENS_PER_WINDOW, SYNC_SAMPLE_RATE, Synchformer


def video_tokens(model: Synchformer, video: torch.Tensor) -> torch.Tensor:
    """``[B, S·8, D]`` visual tokens of 25-fps frames (any ``encode_video`` input), or ``video`` if already tokens."""
    if video.ndim == 3 and video.is_floating_point():
        return video
    weight = model.vfeat_extractor.patch_embed_3d.proj.weight
    return model.encode_video(video.to(weight.device))


def audio_tokens(model: Synchformer, audio: torch.Tensor, sample_rate: int = SYNC_SAMPLE_RATE) -> torch.Tensor:
    """``[B, S·6, D]`` audio tokens of a ``[B, N]`` waveform at ``sample_rate``, or ``audio`` if already tokens."""
    if audio.ndim == 3:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"expected a waveform [B, N] or audio tokens [B, S·6, D], got shape {tuple(audio.shape)}")
    wav = resample(audio.float(), sample_rate, SYNC_SAMPLE_RATE)
    weight = model.afeat_extractor.ast.embeddings.patch_embeddings.projection.weight
    return model.encode_audio(wav.to(weight.device))


@torch.no_grad()
def desync_seconds(model: Synchformer, video: torch.Tensor, audio: torch.Tensor,
                   sample_rate: int = SYNC_SAMPLE_RATE) -> torch.Tensor:
    """Per-clip DeSync: mean |predicted offset| of the first and the last 14 windows.

    Args:
        model: the full Synchformer (eval mode).
        video: ``[B, T, ...]`` uint8 25-fps frames, or visual tokens ``[B, Sv·8, D]``.
        audio: ``[B, N]`` waveform at ``sample_rate``, or audio tokens ``[B, Sa·6, D]``.
        sample_rate: rate of a waveform ``audio``.

    Returns:
        ``[B]`` seconds (multiples of 0.1: each half is a multiple of the 0.2 s class step).

    Raises:
        ValueError: fewer than 14 common windows (4.8 s).
    """
    v = video_tokens(model, video)
    a = audio_tokens(model, audio, sample_rate).to(v.device)
    windows = min(v.shape[1] // SYNC_TOKENS_PER_WINDOW, a.shape[1] // AUDIO_TOKENS_PER_WINDOW)
    if windows < model.config.segments:
        raise ValueError(f"DeSync needs at least {model.config.segments} windows (4.8 s) of both video and audio, "
                         f"got video tokens {tuple(v.shape)} and audio tokens {tuple(a.shape)}")
    return model.desync(v[:, :windows * SYNC_TOKENS_PER_WINDOW], a[:, :windows * AUDIO_TOKENS_PER_WINDOW])


class DeSync(Metric):
    """Mean DeSync (seconds, lower is better) of generated audio against its ground-truth video.

    ``update(video, audio, sample_rate)`` takes a batch of paired clips: 25-fps frames (or
    precomputed visual tokens) and the generated waveform at ``sample_rate`` (or audio tokens).

    Args:
        synchformer: the full Synchformer with the official weights
            (``Synchformer.from_checkpoint("synchformer_state_dict.pth")``), or the path of that file
            (how a YAML config gives it; a missing file raises ``FileNotFoundError`` whose
            ``filename`` is the path).
        max_seconds: frames and waveforms are cut to this duration first (av-benchmark: 8 s);
            None keeps them whole.
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, synchformer: Synchformer | str | os.PathLike, max_seconds: float | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(synchformer, Synchformer):
            if not Path(synchformer).is_file():
                raise FileNotFoundError(errno.ENOENT, "Synchformer checkpoint not found (expected "
                                        "synchformer_state_dict.pth)", str(synchformer))
            synchformer = Synchformer.from_checkpoint(synchformer)
        self.synchformer = synchformer.eval().requires_grad_(False)
        self.max_seconds = max_seconds
        self.add_state("desync_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, video: torch.Tensor, audio: torch.Tensor, sample_rate: int = SYNC_SAMPLE_RATE) -> None:
        """Add paired clips; see the class docstring for the inputs."""
        if self.max_seconds is not None:
            if not (video.ndim == 3 and video.is_floating_point()):
                video = video[:, :round(self.max_seconds * SYNC_FPS)]
            if audio.ndim == 2:
                audio = audio[:, :round(self.max_seconds * sample_rate)]
        per_clip = desync_seconds(self.synchformer, video, audio, sample_rate)
        self.desync_sum += per_clip.double().sum().to(self.desync_sum.device)
        self.count += per_clip.shape[0]

    def compute(self) -> torch.Tensor:
        """Mean DeSync in seconds (float64 scalar tensor)."""
        if self.count == 0:
            raise ValueError("DeSync has no clips")
        return self.desync_sum / self.count
