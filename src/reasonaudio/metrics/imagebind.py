"""IBScore: video–audio cosine similarity in ImageBind space, with our own ImageBind audio and vision towers.

The towers (:class:`ImageBindAV`) are written here, Lightning-free, with the module names of the
official ``facebookresearch/ImageBind`` model, so the vision and audio entries of
``imagebind_huge.pth`` (a plain state dict holding all six modalities) load strictly after the
other modalities' keys are dropped:

- ``modality_preprocessors.vision``: ``cls_token`` ``[1, 1, D]``, ``rgbt_stem.proj.1.weight`` (a bias-free
  Conv3d with kernel = stride = ``(2, 14, 14)``; ``proj.0`` is the parameter-free ``PadIm2Video``),
  ``pos_embedding_helper.pos_embed`` ``[1, 1 + 256, D]``.
- ``modality_preprocessors.audio``: ``cls_token``, ``rgbt_stem.proj.weight`` (Conv2d kernel 16, stride 10,
  no bias), ``rgbt_stem.norm_layer.{weight,bias}`` (LayerNorm, eps 1e-5),
  ``pos_embedding_helper.pos_embed`` ``[1, 1 + 12 · 19, D]``.
- ``modality_trunks.{vision,audio}``: ``pre_transformer_layer.0.{weight,bias}`` (LayerNorm eps 1e-6, vision
  only; audio has an Identity there), ``blocks.{i}.{norm_1,norm_2}`` (eps 1e-6),
  ``blocks.{i}.attn.{in_proj_weight,in_proj_bias,out_proj.*}`` (``nn.MultiheadAttention``; the audio trunk
  adds ``bias_k`` / ``bias_v``), ``blocks.{i}.mlp.{fc1,fc2}`` (GELU, ratio 4).
- ``modality_heads.{vision,audio}``: ``0`` LayerNorm (eps 1e-6), ``1`` select the CLS token, ``2`` bias-free
  Linear to the joint space.
- ``modality_postprocessors.audio.1.log_logit_scale``: the fixed logit scale log(20) (a buffer);
  vision has only an L2 normalisation.

``imagebind_huge`` sizes (:data:`IMAGEBIND_HUGE`): vision ViT-H (1280 wide, 32 blocks, 16 heads), audio
ViT-B (768, 12 blocks, 12 heads), joint dimension 1024. :data:`IMAGEBIND_TINY` keeps the input
pipeline and shrinks the widths and depths for tests.

Inputs follow av-benchmark (``extract_video.py``, ``av_bench/data``), which follows ImageBind's
``data.py``:

- video (ground truth): frames at 0.5 fps from the start (``video_length`` s → ``int(0.5 · length)``
  frames; 4 for 8 s), short side resized to 224 (bicubic, antialiased), scaled to [0, 1] and
  normalised with CLIP's mean/std, three 224² crops along the long side (start, centre, end;
  ImageBind's ``SpatialCrop``), and clips of two consecutive frames (frames 0–1, 1–2, 2–3): 3 crops ×
  3 clips = 9 clips of ``[3, 2, 224, 224]``; a single frame is repeated to two (``PadIm2Video``).
- audio (generated): mono, resampled to 16 kHz (torchaudio's default resampler, as av-benchmark),
  truncated to ``audio_length`` s, cut into 3 clips of 2 s by pytorchvideo's
  ``ConstantClipsPerVideoSampler`` (starts ``k · max(D − 2, 0) / 3`` for k = 0, 1, 2: 0, 2 and 4 s for
  8 s; the last 2 s are not used), each clip with its mean removed, a Kaldi fbank (HTK-compatible,
  Hanning window, 128 bins, 25 ms / 10 ms, no dither), padded or cut to 204 frames, normalised with
  mean −4.268 and std 9.138 → ``[3, 1, 128, 204]``.

Each tower embeds every clip, L2-normalises it (audio: and multiplies by 20), and averages over
clips, as ImageBind's ``forward`` does for inputs with a clip axis. The score of a pair is the cosine
of the two averages; :class:`IBScore` returns the mean over pairs (sum and count states, DDP-correct).
Papers (ReasonAudio's Table 2 among them) report it as is (0.30); av-benchmark issue #5 notes that
others report it ×100.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF
from torch import nn

from reasonaudio.media import load_video
from reasonaudio.metrics.means import MeanCosine

CHECKPOINT_NAME = "imagebind_huge.pth"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AUDIO_MEAN, AUDIO_STD = -4.268, 9.138
AUDIO_RATE = 16000
VIDEO_FPS = 0.5


@dataclass(frozen=True)
class ImageBindConfig:
    """Sizes of the ImageBind vision and audio towers.

    Args:
        out_dim: joint embedding dimension.
        vision_dim: vision width. vision_depth: vision blocks. vision_heads: vision attention heads.
        image_size: crop side. patch_size: spatial patch. video_frames: frames per clip (temporal patch).
        audio_dim: audio width. audio_depth: audio blocks. audio_heads: audio attention heads.
        audio_kernel: audio patch side. audio_stride: audio patch stride.
        mel_bins: fbank bins. target_length: fbank frames per clip.
        audio_logit_scale: fixed scale of the audio postprocessor.
    """

    out_dim: int = 1024
    vision_dim: int = 1280
    vision_depth: int = 32
    vision_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    video_frames: int = 2
    audio_dim: int = 768
    audio_depth: int = 12
    audio_heads: int = 12
    audio_kernel: int = 16
    audio_stride: int = 10
    mel_bins: int = 128
    target_length: int = 204
    audio_logit_scale: float = 20.0

    @property
    def vision_tokens(self) -> int:
        """CLS + patches of one clip (the temporal kernel spans all ``video_frames``)."""
        return 1 + (self.image_size // self.patch_size) ** 2

    @property
    def audio_tokens(self) -> int:
        """CLS + patches of one fbank clip."""
        def n(size: int) -> int:
            return (size - self.audio_kernel) // self.audio_stride + 1

        return 1 + n(self.mel_bins) * n(self.target_length)


IMAGEBIND_HUGE = ImageBindConfig()
"""``imagebind_huge``: the sizes of the released checkpoint."""
IMAGEBIND_TINY = replace(IMAGEBIND_HUGE, out_dim=16, vision_dim=32, vision_depth=1, vision_heads=2,
                         audio_dim=32, audio_depth=1, audio_heads=2)
"""The same input pipeline with tiny towers, for CPU tests."""
CONFIGS = {"huge": IMAGEBIND_HUGE, "tiny": IMAGEBIND_TINY}


# --------------------------------------------------------------------------- towers


class _PadIm2Video(nn.Module):
    """``[B, C, T, H, W]`` with T = 1 → the frame repeated to ``frames`` (ImageBind's ``PadIm2Video``)."""

    def __init__(self, frames: int):
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(1, 1, self.frames, 1, 1) if x.shape[2] == 1 else x


class _Stem(nn.Module):
    """Patch projection (``proj``) and optional LayerNorm (``norm_layer``): input → ``[B, L, D]``."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None):
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class _PosEmbed(nn.Module):
    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * dim**-0.5)


class _Preprocessor(nn.Module):
    """Stem, CLS token and learned position embedding (``RGBDTPreprocessor`` / ``AudioPreprocessor``)."""

    def __init__(self, stem: _Stem, tokens: int, dim: int):
        super().__init__()
        self.rgbt_stem = stem
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.pos_embedding_helper = _PosEmbed(tokens, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.rgbt_stem(x)  # [B, L, D]
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embedding_helper.pos_embed


class _Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm transformer block (``BlockWithMasking`` without masking, drop path or layer scale)."""

    def __init__(self, dim: int, heads: int, bias_kv: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=bias_kv, batch_first=True)
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm_2(x))


class _Trunk(nn.Module):
    """``SimpleTransformer``: optional pre-LayerNorm, then the blocks. ``[B, L, D]`` → ``[B, L, D]``."""

    def __init__(self, dim: int, depth: int, heads: int, pre_norm: bool, bias_kv: bool):
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-6) if pre_norm else nn.Identity())
        self.blocks = nn.Sequential(*[_Block(dim, heads, bias_kv) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pre_transformer_layer(x))


class _SelectCLS(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class _Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


class _LogitScale(nn.Module):
    """Fixed scale stored as ``log_logit_scale`` (a buffer, as ``LearnableLogitScaling(learnable=False)``)."""

    def __init__(self, scale: float):
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(math.log(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=100.0) * x


class ImageBindAV(nn.Module):
    """ImageBind's vision and audio towers, key-compatible with ``imagebind_huge.pth``.

    Args:
        config: tower sizes (:data:`IMAGEBIND_HUGE` for the released weights).
    """

    def __init__(self, config: ImageBindConfig = IMAGEBIND_HUGE):
        super().__init__()
        c = self.config = config
        k = (c.video_frames, c.patch_size, c.patch_size)
        vision_stem = _Stem(nn.Sequential(_PadIm2Video(c.video_frames),
                                          nn.Conv3d(3, c.vision_dim, kernel_size=k, stride=k, bias=False)))
        audio_stem = _Stem(nn.Conv2d(1, c.audio_dim, kernel_size=c.audio_kernel, stride=c.audio_stride, bias=False),
                           nn.LayerNorm(c.audio_dim))
        self.modality_preprocessors = nn.ModuleDict({
            "vision": _Preprocessor(vision_stem, c.vision_tokens, c.vision_dim),
            "audio": _Preprocessor(audio_stem, c.audio_tokens, c.audio_dim)})
        self.modality_trunks = nn.ModuleDict({
            "vision": _Trunk(c.vision_dim, c.vision_depth, c.vision_heads, pre_norm=True, bias_kv=False),
            "audio": _Trunk(c.audio_dim, c.audio_depth, c.audio_heads, pre_norm=False, bias_kv=True)})
        self.modality_heads = nn.ModuleDict({
            name: nn.Sequential(nn.LayerNorm(dim, eps=1e-6), _SelectCLS(), nn.Linear(dim, c.out_dim, bias=False))
            for name, dim in (("vision", c.vision_dim), ("audio", c.audio_dim))})
        self.modality_postprocessors = nn.ModuleDict({
            "vision": _Normalize(),
            "audio": nn.Sequential(_Normalize(), _LogitScale(c.audio_logit_scale))})

    def _embed(self, modality: str, clips: torch.Tensor) -> torch.Tensor:
        """``[B, N, ...]`` clips → the mean over N of the per-clip embeddings. # [B, out_dim]"""
        b, n = clips.shape[:2]
        x = clips.reshape(b * n, *clips.shape[2:])
        x = self.modality_trunks[modality](self.modality_preprocessors[modality](x))
        x = self.modality_postprocessors[modality](self.modality_heads[modality](x))
        return x.reshape(b, n, -1).mean(dim=1)

    def embed_video(self, clips: torch.Tensor) -> torch.Tensor:
        """``[B, N, 3, T, H, W]`` normalised clips → ``[B, out_dim]``."""
        return self._embed("vision", clips)

    def embed_audio(self, clips: torch.Tensor) -> torch.Tensor:
        """``[B, N, 1, mel_bins, target_length]`` normalised fbanks → ``[B, out_dim]``."""
        return self._embed("audio", clips)


TOWER_PREFIXES = tuple(f"{group}.{m}." for group in ("modality_preprocessors", "modality_trunks", "modality_heads",
                                                        "modality_postprocessors") for m in ("vision", "audio"))
"""Key prefixes of the two towers inside the full six-modality checkpoint."""


def load_imagebind(checkpoint: str | Path, config: ImageBindConfig = IMAGEBIND_HUGE) -> ImageBindAV:
    """Build :class:`ImageBindAV` and load the vision and audio entries of an ImageBind state dict.

    Raises:
        FileNotFoundError: naming the checkpoint.
        ValueError: the file's tower keys or shapes do not fit ``config``.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(2, f"ImageBind checkpoint not found (expected the official {CHECKPOINT_NAME})",
                                str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k.startswith(TOWER_PREFIXES)}
    model = ImageBindAV(config)
    mine = model.state_dict()
    missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
    wrong = sorted(k for k in set(mine) & set(state) if mine[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"{path} does not fit ImageBind {config}: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}, wrong shapes {wrong[:5]}")
    model.load_state_dict(state)
    return model.eval()


# --------------------------------------------------------------------------- inputs


def audio_clip_bounds(num_samples: int, sample_rate: int = AUDIO_RATE, clip_seconds: int = 2,
                      clips: int = 3) -> list[tuple[int, int]]:
    """Sample ranges of pytorchvideo's ``ConstantClipsPerVideoSampler`` (exact fractions, as there)."""
    duration = Fraction(num_samples, sample_rate)
    max_start = max(duration - clip_seconds, Fraction(0))
    step = max_start / clips
    bounds = []
    for k in range(clips):
        start = step * k
        bounds.append((int(start * sample_rate), int((start + clip_seconds) * sample_rate)))
        if step * (k + 1) > max_start:  # the sampler stops once the next start passes the last one
            break
    return bounds


def audio_clips(wav: torch.Tensor, config: ImageBindConfig = IMAGEBIND_HUGE) -> torch.Tensor:
    """A 16 kHz waveform ``[S]`` → normalised fbank clips ``[N, 1, mel_bins, target_length]`` (N = 3)."""
    wav = wav.detach().float().cpu().reshape(-1)
    out = []
    for a, b in audio_clip_bounds(wav.numel()):
        clip = wav[a:b]
        clip = clip - clip.mean()
        fbank = kaldi.fbank(clip[None], htk_compat=True, sample_frequency=AUDIO_RATE, use_energy=False,
                            window_type="hanning", num_mel_bins=config.mel_bins, dither=0.0, frame_length=25,
                            frame_shift=10).T  # [mel, frames]
        pad = config.target_length - fbank.shape[1]
        fbank = F.pad(fbank, (0, pad)) if pad > 0 else fbank[:, :config.target_length]
        out.append(((fbank - AUDIO_MEAN) / AUDIO_STD)[None])
    return torch.stack(out)


def _resize_short_side(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[T, 3, H, W]`` → uint8 with the short side ``size`` and the long side ``int(size · long / short)``
    (torchvision's ``Resize(size)`` rule), bicubic with antialiasing."""
    h, w = frames.shape[-2:]
    short, long = min(h, w), max(h, w)
    new_long = int(size * long / short)
    new_h, new_w = (size, new_long) if h <= w else (new_long, size)
    if (new_h, new_w) == (h, w):
        return frames
    x = F.interpolate(frames.float(), size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def spatial_crops(frames: torch.Tensor, size: int) -> list[torch.Tensor]:
    """ImageBind's ``SpatialCrop(size, 3)``: start, centre and end crops along the long side of ``[..., H, W]``."""
    h, w = frames.shape[-2:]
    crops = []
    for index in range(3):
        top, left = math.ceil((h - size) / 2), math.ceil((w - size) / 2)
        if h > w:
            top = {0: 0, 1: top, 2: h - size}[index]
        else:
            left = {0: 0, 1: left, 2: w - size}[index]
        crops.append(frames[..., top:top + size, left:left + size])
    return crops


def video_clips(frames: torch.Tensor, config: ImageBindConfig = IMAGEBIND_HUGE) -> torch.Tensor:
    """Frames at 0.5 fps, uint8 ``[T, H, W, 3]`` → normalised clips ``[3 · max(T − 1, 1), 3, 2, S, S]``."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T >= 1, got shape {tuple(frames.shape)}")
    x = _resize_short_side(frames.permute(0, 3, 1, 2), config.image_size).float() / 255.0  # [T, 3, H, W]
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    x = (x - mean) / std
    t = x.shape[0]
    pairs = [slice(i, i + 2) for i in range(t - 1)] or [slice(0, 1)]  # one frame: PadIm2Video repeats it
    clips = [crop[p] for p in pairs for crop in spatial_crops(x, config.image_size)]  # [T', 3, S, S] each
    return torch.stack([c.transpose(0, 1).expand(3, config.video_frames, *c.shape[-2:]) for c in clips])


def load_video_frames(path: str | Path, video_length: float) -> torch.Tensor:
    """Frames at 0.5 fps from the start of a video, ``int(0.5 · video_length)`` at most. # [T, H, W, 3] uint8"""
    clip = load_video(path, VIDEO_FPS)
    frames = clip.frames[clip.mask]
    return frames[: max(1, int(VIDEO_FPS * video_length))]


# --------------------------------------------------------------------------- metric


class IBScore(MeanCosine):
    """Mean cosine between ImageBind embeddings of ground-truth videos and generated audio.

    Args:
        checkpoint: the official ``imagebind_huge.pth`` (or a state dict of the same layout).
        size: tower sizes, ``"huge"`` for the released weights (``"tiny"`` for tests).
        audio_length: seconds of audio used (av-benchmark's ``--audio_length``; longer audio is cut).
        video_length: seconds of video sampled at 0.5 fps.
        batch_size: pairs per forward pass.
    """

    def __init__(self, checkpoint: str, size: Literal["huge", "tiny"] = "huge", audio_length: float = 8.0,
                 video_length: float = 8.0, batch_size: int = 8, **kwargs: Any):
        super().__init__(**kwargs)
        if size not in CONFIGS:
            raise ValueError(f"size must be one of {sorted(CONFIGS)}, got {size!r}")
        if audio_length <= 0 or video_length <= 0 or batch_size < 1:
            raise ValueError(f"audio_length and video_length must be positive and batch_size >= 1, got "
                             f"{audio_length}, {video_length}, {batch_size}")
        self.audio_length, self.video_length, self.batch_size = audio_length, video_length, batch_size
        self.imagebind = load_imagebind(checkpoint, CONFIGS[size])
        self.imagebind.requires_grad_(False)

    def audio_input(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """One generated waveform → its fbank clips ``[3, 1, 128, 204]``."""
        x = wav.detach().float().cpu().reshape(-1)
        if sample_rate != AUDIO_RATE:
            x = AF.resample(x, sample_rate, AUDIO_RATE)
        return audio_clips(x[: round(self.audio_length * AUDIO_RATE)], self.imagebind.config)

    def video_input(self, video: str | Path | torch.Tensor) -> torch.Tensor:
        """A video path, or its frames at 0.5 fps (uint8 ``[T, H, W, 3]``) → clips ``[N, 3, 2, 224, 224]``."""
        frames = video if isinstance(video, torch.Tensor) else load_video_frames(video, self.video_length)
        return video_clips(frames, self.imagebind.config)

    @torch.no_grad()
    def similarities(self, audio: torch.Tensor | Sequence[torch.Tensor], sample_rate: int,
                     videos: Sequence[str | Path | torch.Tensor]) -> torch.Tensor:
        """Per-pair cosine similarities. # [B]"""
        if len(audio) != len(videos):
            raise ValueError(f"{len(audio)} waveforms but {len(videos)} videos")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        device = self.imagebind.modality_trunks["audio"].blocks[0].norm_1.weight.device
        out = []
        for i in range(0, len(videos), self.batch_size):
            a = torch.stack([self.audio_input(w, sample_rate) for w in audio[i:i + self.batch_size]])
            v = [self.video_input(x) for x in videos[i:i + self.batch_size]]
            if len({c.shape for c in v}) > 1:  # videos of different lengths: embed one by one
                ev = torch.cat([self.imagebind.embed_video(c[None].to(device)) for c in v])
            else:
                ev = self.imagebind.embed_video(torch.stack(v).to(device))
            ea = self.imagebind.embed_audio(a.to(device))
            out.append(F.cosine_similarity(ev, ea, dim=-1).double().cpu())
        return torch.cat(out)
