"""Synchrony rewards ``r(audio, video) -> [B]`` for preference post-training (paper §4.4, §5.2).

Legend: B batch, T audio frames (VAE latents), C their channels, Ts Synchformer tokens, S their width
(768), W classifier width, N waveform samples.

* :class:`AlignmentClassifier` — a Diff-Foley-style audio-visual alignment classifier (the paper's
  reward, Luo et al. 2024): VAE latents ``[B, T, C]`` and the cache's Synchformer tokens
  ``[B, Ts, S]`` → a logit of "aligned". Each sync token is placed at its true time (tokens come
  from overlapping 16-frame windows every 8 frames, so they are not uniform in time): latent frame
  j averages the tokens whose 2-frame tubelet covers its centre (:func:`sync_to_audio_frames`).
  The two streams are projected to W, joined per frame as ``[a, v, a·v]`` and read by residual
  dilated 1-D convolutions (receptive field ±(k−1)/2·Σ dilations frames), then mean- and max-pooled
  over time into one logit. Trained by ``systems/reward.py::RewardTrain``.
* Rewards (a common interface, :class:`Reward`):

  - :class:`ClassifierReward`: latents + sync tokens ``[B, Ts, S]`` → P(aligned) (the paper's reward);
  - :class:`SynchformerOffsetReward`: waveform + the clip's video (or the cache's sync tokens of the same
    visual branch) → the zero-offset contrast ``logit(0) − mean_c logit(c)`` over every span (the default),
    ``1 − E|offset| / max_offset`` or ``(2 − |offset|) / 4``;
  - ``reasonaudio.metrics.synthetic.GroundTruthOnsetReward``: waveform + the clips' ground truth (impact
    times) → ``½ (onset F1 + exp(−onset error / τ))`` (synthetic corpus only; it lives with the metrics it is
    made of).

  ``audio_input`` says what a reward reads (``"latent"``: the DiT's normalised latents; ``"wav"``:
  decoded audio); :meth:`Reward.video_inputs` picks what it reads of the clip from a feature-cache
  batch; :meth:`Reward.prepare` loads weights (kept out of ``__init__`` so configs build without them).

Evaluation must not use the reward it trained with: the suite evaluates synchrony with the synthetic
ground-truth metrics (and DeSync), never with the classifier.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from safetensors.torch import load_file
from torch import nn

from reasonaudio.config import SYNC_DIM, SYNC_FPS, SYNC_STRIDE, SYNC_TOKENS_PER_WINDOW, SYNC_WINDOW
from reasonaudio.media import load_video
from reasonaudio.models.synchformer import (AUDIO_TOKENS_PER_WINDOW, SYNC_SAMPLE_RATE, read_export_config,
                                            zero_offset_contrast)

# --------------------------------------------------------------------------- time alignment


def sync_token_spans(num_tokens: int) -> torch.Tensor:
    """Start and end time in seconds of each Synchformer token's tubelet, ``[Ts, 2]``.

    Token ``k`` of window ``w`` covers frames ``8w + 2k`` and ``8w + 2k + 1`` at 25 fps (windows of 16
    frames every 8 frames, 8 tokens each).
    """
    if num_tokens % SYNC_TOKENS_PER_WINDOW:
        raise ValueError(f"{num_tokens} sync tokens are not whole windows of {SYNC_TOKENS_PER_WINDOW}")
    i = torch.arange(num_tokens, dtype=torch.float64)
    per_token = SYNC_WINDOW // SYNC_TOKENS_PER_WINDOW  # frames per tubelet (2)
    first = (i // SYNC_TOKENS_PER_WINDOW) * SYNC_STRIDE + (i % SYNC_TOKENS_PER_WINDOW) * per_token
    return torch.stack([first, first + per_token], dim=1) / SYNC_FPS


def sync_to_audio_frames(num_tokens: int, num_frames: int, frame_rate: float) -> torch.Tensor:
    """Averaging matrix ``[T, Ts]`` that puts sync tokens on the audio frame grid by their true times.

    Audio frame j (centre ``(j + 0.5) / frame_rate`` s) averages the tokens whose tubelet contains
    its centre (one or two: windows overlap by half); a frame past the last window takes the nearest
    token. Rows sum to 1.
    """
    spans = sync_token_spans(num_tokens)  # [Ts, 2]
    centres = (torch.arange(num_frames, dtype=torch.float64) + 0.5) / frame_rate  # [T]
    inside = (centres[:, None] >= spans[None, :, 0]) & (centres[:, None] < spans[None, :, 1])  # [T, Ts]
    mid = spans.mean(dim=1)
    nearest = F.one_hot((centres[:, None] - mid[None, :]).abs().argmin(dim=1), num_tokens).bool()
    weights = torch.where(inside.any(dim=1, keepdim=True), inside, nearest).double()
    return (weights / weights.sum(dim=1, keepdim=True)).float()


# --------------------------------------------------------------------------- classifier


class _ResidualConv(nn.Module):
    """``x + conv(gelu(norm(x)))`` with a dilated kernel over time; ``[B, W, T]``."""

    def __init__(self, width: int, kernel: int, dilation: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, width)
        self.conv = nn.Conv1d(width, width, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.gelu(self.norm(x)))


class AlignmentClassifier(nn.Module):
    """Audio-visual alignment classifier: latents + sync tokens → logit of "aligned" (module docstring).

    Args:
        audio_channels: audio feature width ``C`` (VAE latent channels; or mel bins for mel input).
        frame_rate: audio frames per second (the VAE's latent rate: 31.25 for ``tiny``, 68.9 for ``paper``, 25 for ``paper16k``).
        sync_dim: Synchformer token width ``S``.
        width: model width ``W``.
        dilations: one residual convolution per entry.
        kernel: convolution kernel size (odd).
    """

    def __init__(self, audio_channels: int = 8, frame_rate: float = 31.25, sync_dim: int = SYNC_DIM,
                 width: int = 64, dilations: Sequence[int] = (1, 2, 4, 8), kernel: int = 3):
        super().__init__()
        if kernel % 2 == 0 or frame_rate <= 0:
            raise ValueError(f"kernel must be odd and frame_rate positive, got kernel={kernel}, "
                             f"frame_rate={frame_rate}")
        self.audio_channels, self.frame_rate, self.sync_dim = audio_channels, frame_rate, sync_dim
        self.audio_in = nn.Sequential(nn.Linear(audio_channels, width), nn.GELU(), nn.Linear(width, width))
        self.video_in = nn.Sequential(nn.Linear(sync_dim, width), nn.GELU(), nn.Linear(width, width))
        self.joint = nn.Conv1d(3 * width, width, 1)
        self.blocks = nn.Sequential(*(_ResidualConv(width, kernel, d) for d in dilations))
        self.head = nn.Linear(2 * width, 1)
        self._grids: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def _grid(self, num_tokens: int, num_frames: int, device: torch.device) -> torch.Tensor:
        key = (num_tokens, num_frames, device)
        if key not in self._grids:
            self._grids[key] = sync_to_audio_frames(num_tokens, num_frames, self.frame_rate).to(device)
        return self._grids[key]

    def encode_video(self, sync: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Sync tokens ``[B, Ts, S]`` → video features on the audio frame grid ``[B, T, W]``."""
        if sync.ndim != 3 or sync.shape[-1] != self.sync_dim:
            raise ValueError(f"expected sync tokens [B, Ts, {self.sync_dim}], got {tuple(sync.shape)}")
        return self._grid(sync.shape[1], num_frames, sync.device) @ self.video_in(sync)

    def score(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]`` of audio ``[B, T, C]`` against frame-grid video features ``[B, T, W]``."""
        if audio.ndim != 3 or audio.shape[-1] != self.audio_channels or audio.shape[:2] != video.shape[:2]:
            raise ValueError(f"expected audio [B, T, {self.audio_channels}] matching video features "
                             f"{tuple(video.shape)}, got {tuple(audio.shape)}")
        a = self.audio_in(audio)  # [B, T, W]
        h = self.blocks(self.joint(torch.cat([a, video, a * video], dim=-1).transpose(1, 2)))  # [B, W, T]
        return self.head(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)).squeeze(1)

    def forward(self, audio: torch.Tensor, sync: torch.Tensor) -> torch.Tensor:
        """``audio [B, T, C]`` and ``sync [B, Ts, S]`` of the same clip span → logits ``[B]``."""
        if audio.ndim != 3 or sync.ndim != 3 or audio.shape[0] != sync.shape[0]:
            raise ValueError(f"expected audio [B, T, C] and sync [B, Ts, S], got {tuple(audio.shape)}, "
                             f"{tuple(sync.shape)}")
        return self.score(audio, self.encode_video(sync, audio.shape[1]))


# --------------------------------------------------------------------------- rewards


class Reward(nn.Module, ABC):
    """A synchrony reward ``r(audio, video) -> [B]`` (higher is better); see the module docstring."""

    audio_input: ClassVar[Literal["latent", "wav"]]
    """What :meth:`forward` reads as audio: normalised DiT latents ``[B, T, C]`` or waveforms ``[B, N]``."""

    def prepare(self) -> Reward:
        """Load weights from files (idempotent); returns the reward in eval mode."""
        return self.eval()

    @abstractmethod
    def video_inputs(self, batch: dict[str, Any]) -> Any:
        """What this reward reads of the clips, from a feature-cache batch (``ids``, ``sync``, ...)."""

    @abstractmethod
    def forward(self, audio: torch.Tensor, video: Any) -> torch.Tensor:
        """Rewards ``[B]`` (float32, on the audio's device)."""


class ClassifierReward(Reward):
    """P(aligned) of a trained :class:`AlignmentClassifier` (the paper's reward, ``r = Align(x0, y)``).

    Args:
        classifier: the classifier architecture.
        checkpoint: its weights: a ``RewardTrain`` checkpoint (``.ckpt``) or its export (``reward.safetensors``).
    """

    audio_input = "latent"

    def __init__(self, classifier: nn.Module, checkpoint: str | None = None):
        super().__init__()
        self.classifier = classifier
        self.checkpoint = checkpoint
        self._loaded = checkpoint is None

    def prepare(self) -> ClassifierReward:
        if not self._loaded:
            self.classifier.load_state_dict(load_classifier_state(self.checkpoint), strict=True)
            self._loaded = True
        self.requires_grad_(False)
        return self.eval()

    def video_inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        if "sync" not in batch:
            raise ValueError("ClassifierReward needs Synchformer tokens ('sync') in the batch")
        return batch["sync"]

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.classifier(audio, video.to(audio.device)).float())


def load_classifier_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The classifier's state dict from a ``RewardTrain`` checkpoint or its ``reward.safetensors`` export."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"reward classifier weights not found: {p}")
    if p.suffix == ".safetensors":
        return load_file(str(p))
    state = torch.load(p, map_location="cpu", weights_only=False).get("state_dict", {})
    prefix = "classifier."
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise ValueError(f"{p} holds no 'classifier.*' weights (not a RewardTrain checkpoint)")
    return out


SCORES = ("argmax", "expected", "contrast")
"""The readings of :class:`SynchformerOffsetReward`."""


class SynchformerOffsetReward(Reward):
    """A synchrony reward from a full Synchformer's offset head: ``argmax`` and ``expected`` read the first and the
    last ``config.segments`` windows of each clip (av-benchmark's DeSync windows), ``contrast`` every span.

    * ``score="argmax"``: ``(2 − |offset|) / 4`` with ``|offset|`` the mean |arg-max offset| (DeSync), in
      [0, 0.5]; it changes only in steps of the offset grid (0.2 s).
    * ``score="expected"``: ``1 − E|offset| / max_offset`` with ``E|offset|`` the mean expected |offset| under
      the head's softmax (:func:`~reasonaudio.models.synchformer.expected_abs_offset`), in [0, 1]; continuous,
      so it also orders candidates whose arg-max offsets tie.
    * ``score="contrast"``: the zero-offset logit's margin over the mean logit of the grid,
      ``logit(0) − mean_c logit(c)`` (= ``log P(0) − mean_c log P(c)``), averaged over every span of ``segments``
      consecutive windows (:meth:`~reasonaudio.models.synchformer.Synchformer.span_logits`: 5 spans of 7 windows
      for 4 s); unbounded, in log-odds. It keeps rising with how well the streams agree at zero lag after the
      softmax has saturated (P(0) ≈ 1, where ``expected`` rates every candidate alike), so it also separates
      candidates that miss or add an impact. The suite's default reward (docs/post_training.md).

    The video input is the cache's sync tokens (``video_root`` None), which must then come from this model's
    visual branch, or — for a separately trained model — the clip's own video, ``<video_root>/<id>.mp4`` or
    ``<video_root>/videos/<id>.mp4``, decoded at 25 fps and encoded once per file by this model. Clip ids are
    looked up in the roots in order, so the roots must not hold different clips under one id (the synthetic
    sets all start at ``synth_000000``: give the one set the cache was made from).

    Args:
        synchformer: a ``reasonaudio.models.synchformer.Synchformer``.
        checkpoint: its weights, ``synchformer_state_dict.pth`` or a ``make sync`` export (loaded strictly by
            :meth:`prepare`).
        sample_rate: rate of the waveforms it is given (resampled to 16 kHz).
        score: ``"argmax"``, ``"expected"`` or ``"contrast"`` (above).
        video_root: folder(s) of the clips' videos, searched in order (None: read the cache's sync tokens).
        cached_videos: visual tokens kept in memory, most recently used first (online rounds revisit the
            clips; ~0.3 MB per 4 s clip at 768 wide).
    """

    audio_input = "wav"

    def __init__(self, synchformer: nn.Module, checkpoint: str | None = None, sample_rate: int = 16000,
                 score: Literal["argmax", "expected", "contrast"] = "argmax",
                 video_root: str | list[str] | None = None, cached_videos: int = 1024):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if score == "contrast" and synchformer.config.num_offsets % 2 == 0:
            raise ValueError(f"score='contrast' needs a zero-offset class (an odd number of offset classes), "
                             f"got num_offsets={synchformer.config.num_offsets}")
        self.synchformer = synchformer
        self.checkpoint = checkpoint
        self.sample_rate = sample_rate
        self.score = score
        self.video_root = [video_root] if isinstance(video_root, (str, Path)) else video_root
        self._loaded = checkpoint is None
        self.cached_videos = cached_videos
        self._visual: OrderedDict[str, torch.Tensor] = OrderedDict()  # video file → visual tokens [Ts, D]

    def prepare(self) -> SynchformerOffsetReward:
        """Load the weights; a ``make sync`` export must record this model's config.

        Raises:
            ValueError: the export was trained with another config (windows, offset grid, head, sizes).
        """
        if not self._loaded:
            recorded = read_export_config(self.checkpoint)  # None for the released checkpoint
            if recorded is not None and recorded != self.synchformer.config:
                raise ValueError(f"{self.checkpoint} was trained with {recorded}, this reward's Synchformer is "
                                 f"{self.synchformer.config}: give the reward the export's config")
            self.synchformer.load_checkpoint(self.checkpoint)
            self._loaded = True
        self.requires_grad_(False)
        return self.eval()

    def video_file(self, clip_id: str) -> Path:
        """The video of ``clip_id``: the first ``<root>/<id>.mp4`` or ``<root>/videos/<id>.mp4`` of ``video_root``.

        Raises:
            FileNotFoundError: no root holds it.
        """
        for root in map(Path, self.video_root):
            for path in (root / f"{clip_id}.mp4", root / "videos" / f"{clip_id}.mp4"):
                if path.is_file():
                    return path
        raise FileNotFoundError(f"SynchformerOffsetReward: no video for clip {clip_id!r} in {self.video_root} "
                                f"(looked for {clip_id}.mp4 and videos/{clip_id}.mp4)")

    @torch.no_grad()
    def encode_videos(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """This model's visual tokens ``[B, Ts, D]`` of video files (25 fps); the last ``cached_videos`` files
        are not encoded again."""
        tokens = []
        for path in map(str, paths):
            if path in self._visual:
                self._visual.move_to_end(path)
            else:
                frames = load_video(path, SYNC_FPS, size=self.synchformer.config.image_size).frames
                self._visual[path] = self.synchformer.encode_video(frames[None])[0].cpu()
                while len(self._visual) > self.cached_videos:
                    self._visual.popitem(last=False)
            tokens.append(self._visual[path])
        return torch.stack(tokens)

    def video_inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.video_root is None:
            if "sync" not in batch:
                raise ValueError("SynchformerOffsetReward needs Synchformer tokens ('sync') in the batch")
            return batch["sync"]
        return self.encode_videos([self.video_file(i) for i in batch["id"]])

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        wav = audio.float()
        if self.sample_rate != SYNC_SAMPLE_RATE:
            wav = AF.resample(wav, self.sample_rate, SYNC_SAMPLE_RATE)
        a = self.synchformer.encode_audio(wav)
        v = video.to(wav.device).float()
        windows = min(v.shape[1] // SYNC_TOKENS_PER_WINDOW, a.shape[1] // AUDIO_TOKENS_PER_WINDOW)  # common span
        v, a = v[:, :windows * SYNC_TOKENS_PER_WINDOW], a[:, :windows * AUDIO_TOKENS_PER_WINDOW]
        if self.score == "contrast":
            return zero_offset_contrast(self.synchformer.span_logits(v, a)).mean(dim=1)  # [B, spans] → [B]
        if self.score == "expected":
            offset = self.synchformer.window_offsets(v, a, expected=True).mean(dim=1)
            return 1.0 - offset / self.synchformer.config.max_offset
        return (2.0 - self.synchformer.desync(v, a).abs()) / 4.0
