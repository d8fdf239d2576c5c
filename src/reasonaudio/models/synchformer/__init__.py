"""Synchformer (v-iashin/Synchformer, AudioSet model ``24-01-04T16-39-21``), key-compatible with the
``synchformer_state_dict.pth`` that MMAudio and av-benchmark use.

Legend: B batch, T video frames at 25 fps, S windows, N = B·S windows run as one batch, D width (768).
A window is 16 frames (0.64 s) and windows start every 8 frames (0.32 s); the audio uses the same
0.64 s / 0.32 s windows at 16 kHz (10240 / 5120 samples).

* **Visual branch** (``vfeat_extractor``, MotionFormer "divided", ViT-B/16): a window
  ``[16, 3, 224, 224]`` → Conv3d patches (2, 16, 16) → 8 × 14 × 14 tokens + CLS, with a spatial
  (``pos_embed``) plus a temporal (``temp_embed``) position embedding → 12 divided space-time blocks
  (attention over the 8 time steps of each patch position, then over the 196 patches of each time
  step; the CLS token attends to every token) → LayerNorm → per time step, a TransformerEncoderLayer
  with its own CLS token pools the 196 patches → ``[8, D]``. 8 s = 200 frames = 24 windows = 192 tokens.
* **Audio branch** (``afeat_extractor``, AST with the transformers-4.x ``ASTModel`` names): a window
  → power mel (128 bins, n_fft 1024, window 400, hop 160) → ``log(x + 1e-6)`` → zero-pad 65 → 66
  frames → ``(x + 4.2677) / (2 · 4.5690)`` → 16 × 16 patches at stride 10 → 12 × 6 tokens + CLS +
  distillation → 12 ViT layers → LayerNorm → per time step, a CLS pooling layer over the 12
  frequency patches → ``[6, D]``.
* **Offset head** (``vproj``, ``aproj``, ``transformer``): both token streams are projected and
  layer-normed, arranged as ``[OFF, 14·8 visual, MOD, 14·6 audio]`` (198 tokens) + a learned position
  embedding → 3 GPT blocks (8 heads) → LayerNorm → a linear classifier on the OFF token → 21 logits
  over the offsets ``linspace(-2, 2, 21)`` s. A positive offset means the audio starts earlier than
  the video (Synchformer's ``example.py``). The position embedding fixes the head to 14 windows
  (4.8 s); av-benchmark's DeSync therefore scores the first and the last 14 windows of an 8 s clip.

Module names reproduce the checkpoint's key paths, which is why a few containers exist only to
carry a name (``patch_embed.proj``, ``attention.output.dense``, ``pos_emb_cfg.pos_emb``). Dropout
is left out: the model is only used frozen, in eval mode. The MotionFormer classification head
(``pre_logits``, ``head``) is replaced by Identity in the official feature extractor and has no keys.

Sizes (the official model; counts of this implementation, equal to the notes' analytic ones):

================  ======================================================  ===========
part              layout                                                  parameters
================  ======================================================  ===========
vfeat_extractor   ViT-B/16, depth 12, 12 heads, + spatial CLS pooling     122,440,704
afeat_extractor   AST-B, depth 12, 12 heads, 74 positions, + freq pooling  92,400,384
vproj, aproj      Linear 768 → 768 each                                     1,181,184
transformer       3 GPT blocks, 8 heads, 198 positions, 21 classes         21,437,973
total                                                                     237,460,245
================  ======================================================  ===========

Layout of this package (every name is importable from ``reasonaudio.models.synchformer``):

==============  =================================================================================
module          contents
==============  =================================================================================
``config``      window-layout constants, :class:`SynchformerConfig`, :data:`SYNCHFORMER_TINY`,
                window counts and the offset classes (:func:`offset_grid`, :func:`predicted_offset`)
``extractors``  the visual (:class:`MotionFormer`) and audio (:class:`ASTEncoder`,
                :class:`SynchformerMel`) branches and the layers they share
``head``        the offset head (:class:`SyncTransformer`)
``model``       :class:`Synchformer` and :class:`SynchformerVisualEncoder`
``checkpoint``  the ``make sync`` export (:func:`save_synchformer`, :func:`read_export_config`) and
                reading state dicts
==============  =================================================================================
"""
from __future__ import annotations

from reasonaudio.models.synchformer.checkpoint import EXPORT_FORMAT, read_export_config, save_synchformer
from reasonaudio.models.synchformer.config import (AST_PATCH, AST_STRIDE, AUDIO_HOP, AUDIO_TOKENS_PER_WINDOW,
                                                   AUDIO_WINDOW, FREQ_PATCHES, MAX_OFFSET, MEL_BINS, MEL_FRAMES,
                                                   MEL_HOP, MEL_LOG_EPS, MEL_MEAN, MEL_N_FFT, MEL_STD, MEL_WIN,
                                                   NUM_OFFSETS, SYNC_SAMPLE_RATE, SYNCHFORMER_TINY, TEMPORAL_PATCH,
                                                   VIDEO_MEAN, VIDEO_STD, VISUAL_PREFIX, SynchformerConfig,
                                                   audio_window_count, expected_abs_offset, offset_grid,
                                                   predicted_offset, video_window_count, zero_offset_contrast)
from reasonaudio.models.synchformer.extractors import (ASTEncoder, CLSPooling, DividedAttention, DividedSpaceTimeBlock,
                                                       Mlp, MotionFormer, SynchformerMel, motion_init_, onset_init_,
                                                       synchformer_visual)
from reasonaudio.models.synchformer.head import SyncTransformer
from reasonaudio.models.synchformer.model import Synchformer, SynchformerVisualEncoder

__all__ = [
    "AST_PATCH", "AST_STRIDE", "AUDIO_HOP", "AUDIO_TOKENS_PER_WINDOW", "AUDIO_WINDOW", "EXPORT_FORMAT", "FREQ_PATCHES",
    "MAX_OFFSET", "MEL_BINS", "MEL_FRAMES", "MEL_HOP", "MEL_LOG_EPS", "MEL_MEAN", "MEL_N_FFT", "MEL_STD", "MEL_WIN",
    "NUM_OFFSETS", "SYNC_SAMPLE_RATE", "SYNCHFORMER_TINY", "TEMPORAL_PATCH", "VIDEO_MEAN", "VIDEO_STD",
    "VISUAL_PREFIX", "ASTEncoder", "CLSPooling", "DividedAttention", "DividedSpaceTimeBlock", "Mlp", "MotionFormer",
    "SyncTransformer", "Synchformer", "SynchformerConfig", "SynchformerMel", "SynchformerVisualEncoder",
    "audio_window_count", "expected_abs_offset", "motion_init_", "offset_grid", "onset_init_", "predicted_offset",
    "read_export_config", "save_synchformer", "synchformer_visual", "video_window_count", "zero_offset_contrast",
]
