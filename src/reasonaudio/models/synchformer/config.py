"""Synchformer's fixed window layout, its model sizes (:class:`SynchformerConfig`) and the offset classes.

The constants define the sync tokens (16-frame / 0.64 s windows every 8 frames / 0.32 s, 128-bin
log-mel audio windows, AST patch 16 at stride 10) and cannot change; :class:`SynchformerConfig` holds
what can (widths, depths, heads, image side, the offset head). :func:`offset_grid`,
:func:`predicted_offset` and :func:`expected_abs_offset` read the head's logits as seconds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch

from reasonaudio.config import SYNC_DIM, SYNC_FPS, SYNC_STRIDE, SYNC_TOKENS_PER_WINDOW, SYNC_WINDOW, SequenceConfig

SYNC_SAMPLE_RATE = 16000
"""Audio rate of the Synchformer audio branch."""
AUDIO_WINDOW = SYNC_WINDOW * SYNC_SAMPLE_RATE // SYNC_FPS
"""Samples per audio window: 0.64 s = 10240 samples, the span of one 16-frame video window."""
AUDIO_HOP = SYNC_STRIDE * SYNC_SAMPLE_RATE // SYNC_FPS
"""Samples between audio windows: 0.32 s = 5120 samples."""
MEL_BINS = 128
MEL_N_FFT = 1024
MEL_WIN = 400
MEL_HOP = 160
MEL_FRAMES = 66
"""AST input length (``max_spec_t``): one window gives 65 mel frames, zero-padded to 66."""
MEL_LOG_EPS = 1e-6
MEL_MEAN = -4.2677393
"""AudioSet log-mel mean used by AST; audio windows are normalised as (x − mean) / (2 · std)."""
MEL_STD = 4.5689974
VIDEO_MEAN = 0.5
"""MotionFormer input normalisation of frames scaled to [0, 1] (mean = std = 0.5 per channel)."""
VIDEO_STD = 0.5
TEMPORAL_PATCH = SYNC_WINDOW // SYNC_TOKENS_PER_WINDOW
"""Frames per MotionFormer tubelet (2): 16 frames → 8 tokens per window."""
AST_PATCH = 16
AST_STRIDE = 10
FREQ_PATCHES = (MEL_BINS - AST_PATCH) // AST_STRIDE + 1
"""AST patches along frequency (12)."""
AUDIO_TOKENS_PER_WINDOW = (MEL_FRAMES - AST_PATCH) // AST_STRIDE + 1
"""AST tokens per audio window after frequency pooling (6)."""
NUM_OFFSETS = 21
"""Offset classes of the sync head."""
MAX_OFFSET = 2.0
"""Largest offset class in seconds: the classes are linspace(−2, 2, 21), 0.2 s apart."""
VISUAL_PREFIX = "vfeat_extractor."
"""Key prefix of the visual branch in the full checkpoint (what MMAudio keeps)."""


@dataclass(frozen=True)
class SynchformerConfig:
    """Sizes of a Synchformer; the defaults are the official model.

    The window layout (16 frames, temporal patch 2, 0.64 s audio windows, 128-bin mel, AST patch 16
    at stride 10) is fixed: it defines the sync tokens. Only widths, depths, heads and the image
    side change, so tests and CPU demos can build a tiny model.

    Args:
        image_size: frame side fed to the MotionFormer (224).
        patch_size: spatial patch side (16).
        dim: width of both feature extractors, i.e. of the sync tokens (768).
        visual_depth: MotionFormer blocks (12).
        visual_heads: MotionFormer attention heads (12).
        audio_depth: AST layers (12).
        audio_heads: AST attention heads (12).
        mlp_ratio: MLP width / ``dim`` in both extractors and their pooling layers (4).
        sync_dim: width of the offset transformer (768).
        sync_depth: offset transformer blocks (3).
        sync_heads: offset transformer heads (8).
        segments: windows the offset head sees at once (14 = 4.8 s).
        token_dim: width of the visual (sync) tokens; ``None`` = ``dim``. A narrow trainable model
            (``dim`` 64) sets 768 to keep the DiT's ``[B, Ts, 768]`` contract: a linear
            ``vfeat_extractor.token_proj`` then maps its tokens to that width (the official model
            has no such layer, so its key layout is unchanged).
        num_offsets: offset classes of the head (21).
        max_offset: offset of the last class in seconds (2.0): classes are
            ``linspace(−max_offset, max_offset, num_offsets)``.
        head: the offset head. ``"transformer"`` is Synchformer's (``transformer.*`` keys, what the
            released checkpoint holds); ``"correlation"`` compares the two streams at each class's
            lag (:class:`~reasonaudio.models.sync_correlation.CorrelationHead`, ``correlation.*``
            keys), the head the CPU-trained synthetic model uses (docs/decisions.md).
    """

    image_size: int = 224
    patch_size: int = 16
    dim: int = SYNC_DIM
    visual_depth: int = 12
    visual_heads: int = 12
    audio_depth: int = 12
    audio_heads: int = 12
    mlp_ratio: int = 4
    sync_dim: int = 768
    sync_depth: int = 3
    sync_heads: int = 8
    segments: int = 14
    token_dim: int | None = None
    num_offsets: int = NUM_OFFSETS
    max_offset: float = MAX_OFFSET
    head: Literal["transformer", "correlation"] = "transformer"

    def __post_init__(self) -> None:
        if self.head not in ("transformer", "correlation"):
            raise ValueError(f"head must be 'transformer' or 'correlation', got {self.head!r}")
        if self.image_size <= 0 or self.patch_size <= 0 or self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a positive multiple of "
                             f"patch_size {self.patch_size}")
        for name, width, heads in (("visual", self.dim, self.visual_heads), ("audio", self.dim, self.audio_heads),
                                   ("sync", self.sync_dim, self.sync_heads)):
            if heads <= 0 or width <= 0 or width % heads:
                raise ValueError(f"{name} width {width} must be a positive multiple of its heads ({heads})")
        if min(self.visual_depth, self.audio_depth, self.sync_depth, self.mlp_ratio, self.segments) < 1:
            raise ValueError(f"depths, mlp_ratio and segments must be >= 1, got {self}")
        if self.token_dim is not None and self.token_dim < 1:
            raise ValueError(f"token_dim must be >= 1 or None, got {self.token_dim}")
        if self.num_offsets < 2 or not self.max_offset > 0:
            raise ValueError(f"need num_offsets >= 2 and max_offset > 0, got {self.num_offsets}, {self.max_offset}")

    @property
    def visual_token_dim(self) -> int:
        """Width of the visual tokens :meth:`encode_video` returns (``token_dim`` or ``dim``)."""
        return self.token_dim or self.dim

    @property
    def offset_step(self) -> float:
        """Seconds between two offset classes (0.2 for the official head)."""
        return 2 * self.max_offset / (self.num_offsets - 1)

    @property
    def window_seconds(self) -> float:
        """Span of the ``segments`` windows the head sees: 0.64 + 0.32 · (segments − 1) s (4.8 s)."""
        return (SYNC_WINDOW + SYNC_STRIDE * (self.segments - 1)) / SYNC_FPS

    @property
    def sync_tokens(self) -> int:
        """Tokens of the offset transformer: OFF + segments·8 visual + MOD + segments·6 audio (198)."""
        return 2 + self.segments * (SYNC_TOKENS_PER_WINDOW + AUDIO_TOKENS_PER_WINDOW)

    def to_dict(self) -> dict:
        """Plain dict for artifacts and configs."""
        return asdict(self)


SYNCHFORMER_TINY = SynchformerConfig(image_size=32, patch_size=16, dim=64, visual_depth=2, visual_heads=2,
                                     audio_depth=2, audio_heads=2, sync_dim=64, sync_depth=1, sync_heads=2)
"""A CPU-sized Synchformer with the official window layout (tests, toy demos; random weights)."""


def video_window_count(frames: int) -> int:
    """Windows of 16 frames with stride 8 in ``frames`` 25-fps frames: ``(frames − 16) // 8 + 1``.

    Raises:
        ValueError: fewer than 16 frames (0.64 s).
    """
    if frames < SYNC_WINDOW:
        raise ValueError(f"{frames} frames are shorter than one Synchformer window ({SYNC_WINDOW} frames = 0.64 s)")
    return SequenceConfig(duration=frames / SYNC_FPS).sync_windows


def audio_window_count(samples: int) -> int:
    """Audio windows of 10240 samples with hop 5120 in ``samples`` 16 kHz samples (av-benchmark's rule).

    Counted on samples, not on the duration, because a partial window cannot be cut.

    Raises:
        ValueError: fewer than 10240 samples (0.64 s).
    """
    if samples < AUDIO_WINDOW:
        raise ValueError(f"{samples} samples are shorter than one Synchformer window "
                         f"({AUDIO_WINDOW} samples = 0.64 s at {SYNC_SAMPLE_RATE} Hz)")
    return (samples - AUDIO_WINDOW) // AUDIO_HOP + 1


def offset_grid(num_classes: int = NUM_OFFSETS, max_offset: float = MAX_OFFSET) -> torch.Tensor:
    """Offset of each class in seconds: ``linspace(−max_offset, max_offset, num_classes)`` ``[C]`` float32.

    Computed as numpy's float64 ``linspace`` and rounded to float32, which is Synchformer's
    ``make_class_grid``; the centre class is exactly 0 (``torch.linspace`` would give about −3e-8).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    grid = torch.arange(num_classes, dtype=torch.float64) * (2 * max_offset / (num_classes - 1)) - max_offset
    grid[-1] = max_offset
    return grid.float()


def expected_abs_offset(logits: torch.Tensor, max_offset: float = MAX_OFFSET) -> torch.Tensor:
    """Expected |offset| in seconds under the softmax of the offset logits, ``Σ_c p_c |o_c|``.

    A continuous counterpart of ``|predicted_offset|``: it moves with the head's confidence, not only when
    the arg-max class changes (the synchrony reward's score; docs/post_training.md).

    Args:
        logits: ``[..., C]`` offset logits.
        max_offset: offset of the last class in seconds.

    Returns:
        ``[...]`` seconds in ``[0, max_offset]``.
    """
    grid = offset_grid(logits.shape[-1], max_offset).to(logits.device, torch.float32)
    return (logits.float().softmax(dim=-1) * grid.abs()).sum(dim=-1)


def zero_offset_contrast(logits: torch.Tensor) -> torch.Tensor:
    """How much better offset 0 explains a pair than the grid on average: ``logit(0) − mean_c logit(c)``, in log-odds
    (= ``log P(0) − mean_c log P(c)``). Unlike :func:`expected_abs_offset` it keeps growing after the softmax has
    settled on 0 (the synchrony reward's score; docs/post_training.md).

    Args:
        logits: ``[..., C]`` offset logits over a symmetric grid with a zero class (C odd).

    Returns:
        ``[...]`` log-odds.

    Raises:
        ValueError: C is even (no zero-offset class).
    """
    classes = logits.shape[-1]
    if classes % 2 == 0:
        raise ValueError(f"a zero-offset class needs an odd number of offset classes, got {classes}")
    logits = logits.float()
    return logits[..., (classes - 1) // 2] - logits.mean(dim=-1)


def predicted_offset(logits: torch.Tensor, max_offset: float = MAX_OFFSET) -> torch.Tensor:
    """Offset in seconds of the arg-max class.

    Args:
        logits: ``[..., C]`` offset logits (C = 21 for the official head).
        max_offset: offset of the last class in seconds.

    Returns:
        ``[...]`` seconds; positive means the audio starts earlier than the video.
    """
    grid = offset_grid(logits.shape[-1], max_offset).to(logits.device)
    return grid[logits.argmax(dim=-1)]
