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
``encode_audio``, ``desync``); this module adds the input handling and the metric.

**The synthetic benchmark (4 s clips).** The official head sees 14 windows (4.8 s), more than a 4 s
clip has (11). The encoder trained by the ``sync`` stage (``make sync``; its config travels in its
``synchformer.safetensors``) sees 7 windows (2.56 s) and classifies 13 offsets of 0.2 s over
±1.2 s, so on a 4 s clip DeSync is the mean |offset| of the first and the last 7 of the 11 windows:
the same reduction as av-benchmark's first and last 14 of 24, scaled to the clip (docs/decisions.md).
:func:`load_sync_model` reads either file; :func:`clip_desync` and :func:`offset_accuracy` are the
per-clip entry points (e.g. for the demo's summary). Clips longer
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
from reasonaudio.media import load_video
from reasonaudio.metrics.backbones import resample
from reasonaudio.models.sync_offsets import cut_pairs, grid_pairs, mel_bank
from reasonaudio.models.synchformer import AUDIO_TOKENS_PER_WINDOW, SYNC_SAMPLE_RATE, Synchformer, read_export_config


def load_sync_model(path: str | os.PathLike) -> Synchformer:
    """The full Synchformer in ``path``, in eval mode: a ``make sync`` export (``synchformer.safetensors``,
    built from the config it records) or the official ``synchformer_state_dict.pth`` (official sizes).

    Raises:
        FileNotFoundError: ``path`` does not exist (``filename`` is the path).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(errno.ENOENT, "Synchformer checkpoint not found (a `make sync` export "
                                "synchformer.safetensors or synchformer_state_dict.pth)", str(path))
    if read_export_config(path) is not None:
        return Synchformer.from_export(path).requires_grad_(False)
    return Synchformer.from_checkpoint(path).requires_grad_(False)


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
    """Per-clip DeSync: mean |predicted offset| of the first and the last ``segments`` windows (14; 7 on 4 s).

    Args:
        model: the full Synchformer (eval mode).
        video: ``[B, T, ...]`` uint8 25-fps frames, or visual tokens ``[B, Sv·8, D]``.
        audio: ``[B, N]`` waveform at ``sample_rate``, or audio tokens ``[B, Sa·6, D]``.
        sample_rate: rate of a waveform ``audio``.

    Returns:
        ``[B]`` seconds (multiples of half the class step, 0.1 s: each half is a whole step).

    Raises:
        ValueError: fewer than ``segments`` common windows (14 = 4.8 s; 7 = 2.56 s for ``make sync``).
    """
    v = video_tokens(model, video)
    a = audio_tokens(model, audio, sample_rate).to(v.device)
    windows = min(v.shape[1] // SYNC_TOKENS_PER_WINDOW, a.shape[1] // AUDIO_TOKENS_PER_WINDOW)
    if windows < model.config.segments:
        raise ValueError(f"DeSync needs at least {model.config.segments} windows ({model.config.window_seconds:g} s) "
                         f"of both video and audio, got video tokens {tuple(v.shape)} and audio tokens {tuple(a.shape)}")
    return model.desync(v[:, :windows * SYNC_TOKENS_PER_WINDOW], a[:, :windows * AUDIO_TOKENS_PER_WINDOW])


class DeSync(Metric):
    """Mean DeSync (seconds, lower is better) of generated audio against its ground-truth video.

    ``update(video, audio, sample_rate)`` takes a batch of paired clips: 25-fps frames (or
    precomputed visual tokens) and the generated waveform at ``sample_rate`` (or audio tokens).

    Args:
        synchformer: the full Synchformer with the official weights
            (``Synchformer.from_checkpoint("synchformer_state_dict.pth")``) or a ``make sync`` model, or
            the path of either file (:func:`load_sync_model`; how a YAML config gives it; a missing file
            raises ``FileNotFoundError`` whose ``filename`` is the path).
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
            synchformer = load_sync_model(synchformer)
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


def _frames(model: Synchformer, video: torch.Tensor | str | os.PathLike | list, seconds: float) -> torch.Tensor:
    """``[B, T, ...]`` uint8 frames as given, or decoded from video file(s) at 25 fps and the model's frame side."""
    if isinstance(video, torch.Tensor):
        return video
    paths = [video] if isinstance(video, (str, os.PathLike)) else list(video)
    clips = [load_video(p, SYNC_FPS, duration=seconds, size=model.config.image_size).frames for p in paths]
    return torch.stack(clips)  # [B, T, H, W, 3]


@torch.no_grad()
def clip_desync(model: Synchformer | str | os.PathLike, video: torch.Tensor | str | os.PathLike | list,
                wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Per-clip DeSync seconds of waveforms against their videos (what the demo's summary reports).

    Args:
        model: the full Synchformer or the path of its file (:func:`load_sync_model`).
        video: ``[B, T, ...]`` uint8 25-fps frames, or the clips' video file(s) (one path or a list of B),
            decoded at 25 fps for the waveform's duration.
        wav: ``[B, N]`` (or ``[N]``) waveform at ``sample_rate`` (e.g. the audio preset's 16 kHz).
        sample_rate: rate of ``wav``.

    Returns:
        ``[B]`` float32 seconds: mean |predicted offset| of the first and the last ``segments`` windows.
    """
    model = load_sync_model(model) if not isinstance(model, Synchformer) else model.eval()
    wav = wav[None] if wav.ndim == 1 else wav
    frames = _frames(model, video, wav.shape[-1] / sample_rate)
    return desync_seconds(model, frames, wav, sample_rate).float().cpu()


@torch.no_grad()
def offset_accuracy(model: Synchformer | str | os.PathLike, frames: torch.Tensor, wav: torch.Tensor,
                    sample_rate: int = SYNC_SAMPLE_RATE, positions: int = 2) -> dict[str, float]:
    """Offset classification accuracy on shifted pairs of aligned clips (``sync_offset_acc``).

    Every clip at every offset class and ``positions`` video starts spanning the clip, as the
    ``sync`` stage validates (``models.sync_offsets.grid_pairs``).

    Args:
        model: the full Synchformer or the path of its file.
        frames: ``[B, T, ...]`` uint8 25-fps frames of aligned clips.
        wav: ``[B, N]`` their audio at ``sample_rate``.
        sample_rate: rate of ``wav``.
        positions: video starts per class and clip.

    Returns:
        ``{"top1", "within_one", "pairs"}``: the share of pairs whose predicted class is the true
        one, and within one class step (0.2 s) of it.
    """
    model = load_sync_model(model) if not isinstance(model, Synchformer) else model.eval()
    config = model.config
    wav = resample(wav.float(), sample_rate, SYNC_SAMPLE_RATE)
    classes, starts = grid_pairs(config, frames.shape[1], positions)
    hits = within = 0
    for clip in range(frames.shape[0]):
        bank = mel_bank(model, wav[clip])[None].expand(len(classes), -1, -1, -1)
        video, mel = cut_pairs(config, frames[clip:clip + 1].expand(len(classes), *frames.shape[1:]), bank,
                               classes, starts)
        pred = model.offset_logits(video_tokens(model, video), model.encode_mel(mel)).argmax(-1).cpu()
        hits += int((pred == classes).sum())
        within += int(((pred - classes).abs() <= 1).sum())
    pairs = frames.shape[0] * len(classes)
    return {"top1": hits / pairs, "within_one": within / pairs, "pairs": pairs}
