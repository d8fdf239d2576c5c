"""The public Synchformer models: :class:`Synchformer` (both branches and the offset head) and
:class:`SynchformerVisualEncoder` (the visual branch alone), with preprocessing, token encoding,
DeSync and strict checkpoint loading.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping, Self

import torch
import torch.nn.functional as F
from torch import nn

from reasonaudio.config import SYNC_FPS, SYNC_STRIDE, SYNC_TOKENS_PER_WINDOW, SYNC_WINDOW
from reasonaudio.media import resize_short_side_crop
from reasonaudio.models.checkpoints import check_state_dict
from reasonaudio.models.sync_correlation import CorrelationHead
from reasonaudio.models.synchformer.checkpoint import _read_state_dict, read_export_config
from reasonaudio.models.synchformer.config import (AUDIO_HOP, AUDIO_TOKENS_PER_WINDOW, AUDIO_WINDOW, MEL_FRAMES,
                                                   MEL_LOG_EPS, MEL_MEAN, MEL_STD, SYNC_SAMPLE_RATE, VIDEO_MEAN,
                                                   VIDEO_STD, VISUAL_PREFIX, SynchformerConfig, audio_window_count,
                                                   expected_abs_offset, offset_grid, predicted_offset,
                                                   video_window_count)
from reasonaudio.models.synchformer.extractors import ASTEncoder, MotionFormer, SynchformerMel
from reasonaudio.models.synchformer.head import SyncTransformer


class _SynchformerBase(nn.Module):
    """The visual front end shared by both public models, and checkpoint loading."""

    def __init__(self, config: SynchformerConfig):
        super().__init__()
        self.config = config
        self.vfeat_extractor = MotionFormer(config.image_size, config.patch_size, config.dim, config.visual_depth,
                                            config.visual_heads, config.mlp_ratio, config.token_dim)

    @staticmethod
    def _keep(key: str) -> bool:
        """Whether a checkpoint key belongs to this model."""
        return True

    def preprocess_video(self, frames: torch.Tensor) -> torch.Tensor:
        """25-fps uint8 frames → MotionFormer input.

        Frames not already ``image_size``² get the Synchformer policy first (short side → ``image_size``
        bicubic, centre crop; :func:`reasonaudio.media.resize_short_side_crop`), then ``[0, 255]`` →
        ``[0, 1]`` → ``(x − 0.5) / 0.5``.

        Args:
            frames: ``[B, T, 3, H, W]`` or ``[B, T, H, W, 3]`` uint8 RGB.

        Returns:
            ``[B, T, 3, image_size, image_size]`` float32 in [−1, 1].
        """
        if frames.dtype != torch.uint8 or frames.ndim != 5:
            raise ValueError(f"expected uint8 frames [B, T, 3, H, W] or [B, T, H, W, 3], "
                             f"got {frames.dtype} {tuple(frames.shape)}")
        if frames.shape[2] == 3:
            frames = frames.permute(0, 1, 3, 4, 2)  # the resize helper is channels-last
        elif frames.shape[-1] != 3:
            raise ValueError(f"frames have no RGB axis at dim 2 or -1: {tuple(frames.shape)}")
        b, t, h, w, _ = frames.shape
        size = self.config.image_size
        if (h, w) != (size, size):
            frames = resize_short_side_crop(frames.reshape(b * t, h, w, 3), size).view(b, t, size, size, 3)
        x = frames.permute(0, 1, 4, 2, 3).float() / 255.0  # [B, T, 3, s, s]
        return (x - VIDEO_MEAN) / VIDEO_STD

    def video_windows(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, ...]`` frames → ``[B, S, 16, ...]`` windows of 16 frames starting every 8 frames (views)."""
        count = video_window_count(x.shape[1])
        windows = x.unfold(1, SYNC_WINDOW, SYNC_STRIDE).movedim(-1, 2)  # [B, S, 16, ...]
        assert windows.shape[1] == count
        return windows

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Sync tokens of a clip of any length ≥ 0.64 s.

        Args:
            frames: 25-fps uint8 frames (any layout :meth:`preprocess_video` takes) or already
                preprocessed float frames ``[B, T, 3, image_size, image_size]``.

        Returns:
            ``[B, S·8, D]`` tokens, S = (T − 16) // 8 + 1: ``[B, 192, 768]`` for 8 s (200 frames).
        """
        x = self.preprocess_video(frames) if frames.dtype == torch.uint8 else frames
        windows = self.video_windows(x)  # [B, S, 16, 3, s, s]
        b, s = windows.shape[:2]
        weight = self.vfeat_extractor.patch_embed_3d.proj.weight
        tokens = self.vfeat_extractor(windows.flatten(0, 1).to(weight.dtype))  # [B·S, 8, D]
        return tokens.reshape(b, s * SYNC_TOKENS_PER_WINDOW, -1)

    def weights_hash(self) -> str:
        """SHA-256 (hex) of the state dict: names, dtypes, shapes and bytes, in key order.

        Feature caches record it: two caches whose sync tokens came from different weights hold
        incomparable tokens and must not be mixed (``reasonaudio.data_modules.features``).
        """
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def load_checkpoint(self, path: str | os.PathLike) -> Self:
        """Load ``synchformer_state_dict.pth`` into this model, strictly and offline.

        For systems that receive the model by injection and load weights when they start. The
        visual encoder keeps only the ``vfeat_extractor.*`` keys; the full model takes them all.
        Synchformer's own ``<run id>.pt`` layout, ``{"model": state_dict, ...}``, is accepted too when
        it loads with ``weights_only=True``.

        Args:
            path: the checkpoint file.

        Returns:
            This model, in eval mode.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: not a state dict, or keys / shapes that do not match (the message lists
                missing and unexpected keys and shape mismatches).
        """
        return self._load_state(_read_state_dict(path), Path(path))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, config: SynchformerConfig = SynchformerConfig()) -> Self:
        """Build a model of ``config`` (the official sizes by default) and :meth:`load_checkpoint` ``path``."""
        state = _read_state_dict(path)  # a missing or unreadable file fails before the model is built
        return cls(config)._load_state(state, Path(path))

    @classmethod
    def from_export(cls, path: str | os.PathLike) -> Self:
        """Build the model a :func:`save_synchformer` file describes and load its weights (eval mode).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: the file carries no Synchformer config (e.g. the official ``.pth``: use
                :meth:`from_checkpoint` with its config).
        """
        config = read_export_config(path)
        if config is None:
            raise ValueError(f"{path} carries no Synchformer config (not a save_synchformer export); "
                             "use from_checkpoint(path, config)")
        return cls(config)._load_state(_read_state_dict(path), Path(path))

    def _visual_fields(self) -> tuple[str, ...]:
        """Config fields that change what this model computes (all of them for the full model)."""
        return tuple(SynchformerConfig.__dataclass_fields__)

    def _load_state(self, state: Mapping[str, torch.Tensor], path: Path) -> Self:
        made = read_export_config(path) if path.suffix == ".safetensors" else None
        if made is not None:  # head counts change the computation, not the shapes: compare the configs
            clash = {f: (getattr(made, f), getattr(self.config, f)) for f in self._visual_fields()
                     if getattr(made, f) != getattr(self.config, f)}
            if clash:
                raise ValueError(f"{path} was trained with another Synchformer config (file, this model): {clash}")
        state = {k: v for k, v in state.items() if self._keep(k)}
        check_state_dict(self, state, f"{path} does not match {type(self).__name__}({self.config})")
        self.load_state_dict(state, strict=True)
        return self.eval()


class SynchformerVisualEncoder(_SynchformerBase):
    """The visual branch alone: 25-fps frames → ``[B, Ts, 768]`` sync tokens for the DiT.

    Its state dict is the checkpoint's ``vfeat_extractor.*`` subset, so :meth:`from_checkpoint`
    keeps those keys of the full checkpoint (as MMAudio does) and loads them strictly.

    Args:
        config: model sizes (only the visual ones are used).
    """

    def __init__(self, config: SynchformerConfig = SynchformerConfig()):
        super().__init__(config)

    @staticmethod
    def _keep(key: str) -> bool:
        return key.startswith(VISUAL_PREFIX)

    def _visual_fields(self) -> tuple[str, ...]:
        return ("image_size", "patch_size", "dim", "visual_depth", "visual_heads", "mlp_ratio", "token_dim")

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`encode_video`: frames ``[B, T, ...]`` → ``[B, S·8, D]``."""
        return self.encode_video(frames)


class Synchformer(_SynchformerBase):
    """The full model: both branches and the offset head (DeSync, synchrony reward).

    Args:
        config: model sizes.
    """

    def __init__(self, config: SynchformerConfig = SynchformerConfig()):
        super().__init__(config)
        self.afeat_extractor = ASTEncoder(config.dim, config.audio_depth, config.audio_heads, config.mlp_ratio)
        self.vproj = nn.Linear(config.visual_token_dim, config.sync_dim)
        self.aproj = nn.Linear(config.dim, config.sync_dim)
        if config.head == "transformer":
            self.transformer = SyncTransformer(config.sync_dim, config.sync_depth, config.sync_heads,
                                               config.sync_tokens, config.num_offsets)
        else:
            lags = torch.round(offset_grid(config.num_offsets, config.max_offset) * SYNC_FPS).long()
            self.correlation = CorrelationHead(config.sync_dim, config.segments, lags)
        self.mel = SynchformerMel()

    def audio_windows(self, wav: torch.Tensor, hop: int = AUDIO_HOP) -> torch.Tensor:
        """16 kHz audio → normalised log-mel windows, as av-benchmark's ``encode_audio_with_sync``.

        Windows of 10240 samples every 5120 → power mel (65 frames) → ``log(x + 1e-6)`` → zero-pad
        to 66 frames → ``(x + 4.2677393) / (2 · 4.5689974)``.

        Args:
            wav: ``[B, N]`` mono 16 kHz waveform, N ≥ 10240.
            hop: samples between windows (5120; ``SyncTrain`` precomputes every 640-sample = one-frame
                start once, and cuts shifted pairs from that bank).

        Returns:
            ``[B, S, 128, 66]`` with S = (N − 10240) // hop + 1 (24 for 8 s at the default hop).
        """
        if wav.ndim != 2:
            raise ValueError(f"expected a waveform [B, N] at {SYNC_SAMPLE_RATE} Hz, got {tuple(wav.shape)}")
        audio_window_count(wav.shape[1])  # rejects clips shorter than one window
        segments = wav.float().unfold(1, AUDIO_WINDOW, hop)  # [B, S, 10240]
        mel = torch.log(self.mel(segments) + MEL_LOG_EPS)  # [B, S, 128, 65]
        mel = F.pad(mel, (0, MEL_FRAMES - mel.shape[-1]))  # zeros in the log domain, as the original
        return (mel - MEL_MEAN) / (2 * MEL_STD)

    def encode_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` 16 kHz audio → ``[B, S·6, D]`` audio tokens (``[B, 144, 768]`` for 8 s)."""
        return self.encode_mel(self.audio_windows(wav))

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, S, 128, 66]`` windows of :meth:`audio_windows` → ``[B, S·6, D]`` audio tokens."""
        b, s = mel.shape[:2]
        weight = self.afeat_extractor.ast.embeddings.patch_embeddings.projection.weight
        tokens = self.afeat_extractor(mel.flatten(0, 1).to(weight.dtype))  # [B·S, 6, D]
        return tokens.reshape(b, s * AUDIO_TOKENS_PER_WINDOW, -1)

    def offset_logits(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Offset logits of ``config.segments`` (14) windows of both streams.

        Args:
            video: ``[B, 14·8, D]`` tokens from :meth:`encode_video`.
            audio: ``[B, 14·6, D]`` tokens from :meth:`encode_audio`.

        Returns:
            ``[B, 21]`` logits over :func:`offset_grid` (see :func:`predicted_offset`).
        """
        s = self.config.segments
        want_v, want_a = s * SYNC_TOKENS_PER_WINDOW, s * AUDIO_TOKENS_PER_WINDOW
        if video.ndim != 3 or audio.ndim != 3 or video.shape[1] != want_v or audio.shape[1] != want_a:
            raise ValueError(f"the offset head takes {s} windows: video [B, {want_v}, D] and audio [B, {want_a}, D], "
                             f"got {tuple(video.shape)} and {tuple(audio.shape)} (use desync() for longer clips)")
        head = self.transformer if self.config.head == "transformer" else self.correlation
        return head(self.vproj(video), self.aproj(audio))

    def window_offsets(self, video: torch.Tensor, audio: torch.Tensor, expected: bool = False) -> torch.Tensor:
        """Signed predicted offsets of the first and the last ``segments`` windows of each clip.

        Args:
            video: ``[B, S·8, D]`` tokens, S ≥ ``segments`` (24 for 8 s).
            audio: ``[B, S·6, D]`` tokens with the same S.
            expected: give the expected |offset| of each (:func:`expected_abs_offset`) instead.

        Returns:
            ``[B, 2]`` seconds (positive: the audio is early); both columns are one window when
            S = ``segments``.
        """
        s = self.config.segments
        sv, sa = video.shape[1] // SYNC_TOKENS_PER_WINDOW, audio.shape[1] // AUDIO_TOKENS_PER_WINDOW
        if (sv != sa or sv < s or video.shape[1] % SYNC_TOKENS_PER_WINDOW
                or audio.shape[1] % AUDIO_TOKENS_PER_WINDOW):
            raise ValueError(f"DeSync needs the same number (>= {s}) of whole windows in both streams, got "
                             f"video {tuple(video.shape)} and audio {tuple(audio.shape)}")
        v, a = s * SYNC_TOKENS_PER_WINDOW, s * AUDIO_TOKENS_PER_WINDOW
        read = expected_abs_offset if expected else predicted_offset
        first = read(self.offset_logits(video[:, :v], audio[:, :a]), self.config.max_offset)
        last = read(self.offset_logits(video[:, -v:], audio[:, -a:]), self.config.max_offset)
        return torch.stack([first, last], dim=1)

    def span_logits(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Offset logits of every run of ``segments`` consecutive windows, one window apart.

        Args:
            video: ``[B, S·8, D]`` tokens, S ≥ ``segments``.
            audio: ``[B, S·6, D]`` tokens with the same S.

        Returns:
            ``[B, S − segments + 1, C]`` logits (5 spans of 7 windows for a 4 s clip's 11 windows).
        """
        s = self.config.segments
        windows = video.shape[1] // SYNC_TOKENS_PER_WINDOW
        if (windows != audio.shape[1] // AUDIO_TOKENS_PER_WINDOW or windows < s
                or video.shape[1] % SYNC_TOKENS_PER_WINDOW or audio.shape[1] % AUDIO_TOKENS_PER_WINDOW):
            raise ValueError(f"span logits need the same number (>= {s}) of whole windows in both streams, got "
                             f"video {tuple(video.shape)} and audio {tuple(audio.shape)}")
        v = video.unfold(1, s * SYNC_TOKENS_PER_WINDOW, SYNC_TOKENS_PER_WINDOW)  # [B, n, D, s·8]
        a = audio.unfold(1, s * AUDIO_TOKENS_PER_WINDOW, AUDIO_TOKENS_PER_WINDOW)  # [B, n, D, s·6]
        spans = v.shape[1]
        logits = self.offset_logits(v.flatten(0, 1).transpose(1, 2), a.flatten(0, 1).transpose(1, 2))
        return logits.unflatten(0, (video.shape[0], spans))

    def desync(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """av-benchmark's DeSync per clip: mean |predicted offset| of the first and the last ``segments`` windows.

        14 of 24 windows for the official model on 8 s; the synthetic benchmark's model sees 7
        windows (2.56 s), the first and the last 7 of a 4 s clip's 11 (docs/decisions.md).

        Args:
            video: ``[B, S·8, D]`` tokens, S ≥ ``segments``.
            audio: ``[B, S·6, D]`` tokens with the same S.

        Returns:
            ``[B]`` seconds.
        """
        return self.window_offsets(video, audio).abs().mean(dim=1)

    def forward(self, frames: torch.Tensor, wav: torch.Tensor) -> torch.Tensor:
        """Offset logits ``[B, 21]`` of a 4.8 s clip: 120 frames (any :meth:`encode_video` input) and 76800 samples."""
        return self.offset_logits(self.encode_video(frames), self.encode_audio(wav))

    @property
    def offsets(self) -> torch.Tensor:
        """``[num_offsets]`` seconds of the head's classes (:func:`offset_grid` of the config)."""
        return offset_grid(self.config.num_offsets, self.config.max_offset)
