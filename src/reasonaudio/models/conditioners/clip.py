"""CLIP conditioners (Table 5's "CLIP" and "CLIP+LLM" rows): frozen CLIP frame and caption tokens.

Legend: B batch, T frames, F frame tokens, Lt text tokens, Nq queries, D condition width (the DiT's).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PretrainedConfig
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from reasonaudio.models.conditioners.base import Conditioner, QueryConnector, _load_tokenizer, _presence, load_backbone
from reasonaudio.models.conditioners.query import QueryConditioner


class CLIPConditioner(Conditioner):
    """Frozen CLIP: per-frame image embeddings and caption token states, projected to ``D`` (Table 5, "CLIP").

    Output ``[B, num_tokens, D]``, 77 tokens by default, as many as the MLLM's learnable queries (the paper
    sets N = 77 "to enable a fair comparison between LLM and CLIP-based conditioning by matching the
    representation shape"): ``F = num_frames`` frame tokens (each video resampled to ``F`` frames by
    uniform index selection; short side resized to CLIP's image size, centre crop, CLIP normalisation;
    embeddings = projected pooled vision states, plus a learned per-frame position since the DiT adds
    none to condition tokens), then ``Lt = num_tokens - F`` text token states (the caption tokenised to
    ``Lt`` tokens, padded to it as Stable Diffusion pads to CLIP's context, longer captions truncated;
    ``Lt`` may not exceed CLIP's context). Both go through a :class:`QueryConnector`. A dropped video
    gives learned null frame tokens; a dropped caption is encoded as "".

    Args:
        model: a local CLIP folder (model_type ``clip``) or a ``CLIPConfig`` (random weights; tests).
        out_dim: condition width ``D``.
        num_frames: frame tokens ``F`` (16 = 8 s at 2 fps).
        num_tokens: condition tokens in all (77: 16 frames + 61 text tokens).
        tokenizer: defaults to the folder's tokenizer; required with a config.
        dtype: backbone dtype (default bf16 with CUDA available, else fp32).
        attn_implementation: transformers attention backend of the backbone.
        save_frozen: keep the backbone in :meth:`state_dict`.
    """

    SUPPORTED = ("clip",)

    def __init__(self, model: str | Path | PretrainedConfig, out_dim: int, num_frames: int = 16,
                 num_tokens: int = 77, tokenizer: Any | None = None, dtype: str | torch.dtype | None = None,
                 attn_implementation: str = "sdpa", save_frozen: bool = False):
        if not 1 <= num_frames < num_tokens:
            raise ValueError(f"need 1 ≤ num_frames < num_tokens, got num_frames={num_frames}, "
                             f"num_tokens={num_tokens}")
        backbone = load_backbone(model, AutoModel, self.SUPPORTED, dtype, attn_implementation)
        text_len = num_tokens - num_frames
        context = backbone.config.text_config.max_position_embeddings
        if text_len > context:
            raise ValueError(f"num_tokens - num_frames = {text_len} text tokens exceed CLIP's context of {context}")
        super().__init__(out_dim, num_tokens, save_frozen)
        self.text_len = text_len
        self.backbone = backbone
        self.freeze("backbone")
        self.tokenizer = _load_tokenizer(model, tokenizer)
        self.num_frames = num_frames
        self.image_size = backbone.config.vision_config.image_size
        self.video_proj = QueryConnector(backbone.config.projection_dim, out_dim)
        self.text_proj = QueryConnector(backbone.config.text_config.hidden_size, out_dim)
        self.frame_pos = nn.Parameter(torch.randn(num_frames, out_dim) * 0.02)  # [F, D]
        self.null_video = nn.Parameter(torch.randn(num_frames, out_dim) * 0.02)  # [F, D]

    def frames_to_pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, 3, h, w]`` → CLIP pixels ``[F, 3, S, S]``."""
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"video frames must be [T, 3, h, w] with T ≥ 1, got {tuple(frames.shape)}")
        index = torch.linspace(0, frames.shape[0] - 1, self.num_frames).round().long()
        x = frames[index.to(frames.device)].float()  # [F, 3, h, w]
        h, w = x.shape[-2:]
        scale = self.image_size / min(h, w)
        size = (max(self.image_size, round(h * scale)), max(self.image_size, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 255)
        top, left = (size[0] - self.image_size) // 2, (size[1] - self.image_size) // 2
        x = x[..., top:top + self.image_size, left:left + self.image_size] / 255.0
        return (x - x.new_tensor(OPENAI_CLIP_MEAN)[:, None, None]) / x.new_tensor(OPENAI_CLIP_STD)[:, None, None]

    def forward(self, videos: Sequence[torch.Tensor | None] | None, captions: Sequence[str],
                has_video: torch.Tensor | None = None, has_text: torch.Tensor | None = None) -> torch.Tensor:
        use_video, use_text = _presence(videos, captions, has_video, has_text)
        device, batch = self.frame_pos.device, len(captions)
        text = self.tokenizer([c if t else "" for c, t in zip(captions, use_text)], padding="max_length",
                              max_length=self.text_len, truncation=True, return_tensors="pt")
        with torch.no_grad():
            text_states = self.backbone.text_model(input_ids=text["input_ids"].to(device)).last_hidden_state
        tokens_text = self.text_proj(text_states.to(self.frame_pos.dtype))  # [B, Lt, D]
        tokens_video = self.null_video.expand(batch, -1, -1)  # [B, F, D]
        chosen = [i for i, u in enumerate(use_video) if u]
        if chosen:
            pixels = torch.cat([self.frames_to_pixels(videos[i].to(device)) for i in chosen])  # [n·F, 3, S, S]
            with torch.no_grad():
                pooled = self.backbone.vision_model(pixel_values=pixels.to(self.backbone.dtype)).pooler_output
                frame_embeds = self.backbone.visual_projection(pooled).view(len(chosen), self.num_frames, -1)
            encoded = self.video_proj(frame_embeds.to(self.frame_pos.dtype)) + self.frame_pos  # [n, F, D]
            keep = torch.tensor(use_video, device=device)[:, None, None]
            slots = torch.zeros(batch, dtype=torch.long, device=device)
            slots[chosen] = torch.arange(len(chosen), device=device)
            tokens_video = torch.where(keep, encoded[slots], tokens_video)
        return torch.cat([tokens_video, tokens_text], dim=1)  # [B, F + Lt = num_tokens, D]


class CLIPLLMConditioner(Conditioner):
    """CLIP tokens followed by text-LLM query tokens (Table 5, "CLIP+LLM").

    Args:
        clip: the CLIP conditioner (video and caption).
        llm: a text-only query conditioner (caption): :class:`MLLMTextOnlyQueryConditioner` for the
            paper's row, or :class:`TextLLMQueryConditioner`; same ``out_dim`` as ``clip``.
    """

    def __init__(self, clip: CLIPConditioner, llm: QueryConditioner):
        if clip.out_dim != llm.out_dim:
            raise ValueError(f"clip and llm need the same out_dim, got {clip.out_dim} and {llm.out_dim}")
        super().__init__(clip.out_dim, clip.num_tokens + llm.num_tokens)
        self.clip = clip
        self.llm = llm

    def forward(self, videos: Sequence[torch.Tensor | None] | None, captions: Sequence[str],
                has_video: torch.Tensor | None = None, has_text: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([self.clip(videos, captions, has_video, has_text),
                          self.llm(videos, captions, has_video, has_text)], dim=1)  # [B, N_clip + Nq, D]
