"""The MLLM query conditioner (the paper's §4.2): Qwen2.5-VL reads the video and the caption.

Legend: B batch, Nq queries, H backbone hidden width, D condition width (the DiT's).

``Nq`` learnable queries (their own ``nn.Parameter [Nq, H]``, not new vocabulary rows, so weight
decay never touches the frozen embedding table) are appended after the video and the caption under
the model's causal attention, and the final hidden states (after the decoder's last RMSNorm) at the
query positions go through a connector to ``D``::

    [video tokens][caption tokens][q_1 … q_Nq] → frozen decoder → h[q_1 … q_Nq] → connector → [B, Nq, D]

Position ids (mRoPE) are computed here, never by the model: Qwen2.5-VL's three axes (temporal,
height, width) follow Qwen's original design, see :func:`mrope_position_ids`. Passing
``inputs_embeds`` without explicit position ids silently falls back to 1-D positions (transformers
4.x and 5.24), and transformers 5.24's ``get_rope_index`` places text after a video at
``start + max(h, w) / merge``, colliding with the video's temporal ids (the original design, and
transformers 4.x, continue from the largest id + 1), so neither is relied on.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from transformers import AutoModelForImageTextToText, PretrainedConfig
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from reasonaudio.models.conditioners.base import _embedding_std, _load_tokenizer, _sharded_collectives, load_backbone
from reasonaudio.models.conditioners.query import PromptLayout, QueryConditioner

VIDEO = 2
"""Token type of a video token (Qwen's ``mm_token_type_ids`` convention: 0 text, 1 image, 2 video)."""
TEXT = 0
"""Token type of a text token; appended queries are text tokens for the position ids."""


# --------------------------------------------------------------------------- Qwen2.5-VL inputs


def mrope_position_ids(token_types: Sequence[int], video_grid_thw: Sequence[Sequence[int]],
                       second_per_grid_ts: Sequence[float], tokens_per_second: float,
                       spatial_merge_size: int) -> torch.Tensor:
    """Qwen2.5-VL's 3-axis rotary position ids for one unpadded sequence, as Qwen designed them.

    Text tokens (type 0, appended queries included) get the same id on all three axes, one more
    than the largest id so far. A video (a run of type-2 tokens, ``t · (h/m) · (w/m)`` of them for
    its ``grid_thw = (t, h, w)`` in patches and merge size ``m``) starting at id ``s`` gets, for
    temporal grid ``k``, row ``i`` and column ``j`` of the merged grid: temporal
    ``s + ⌊k · second_per_grid_t · tokens_per_second⌋`` (computed in float32, as in Qwen's code),
    height ``s + i``, width ``s + j``; the next text continues at the video's largest id + 1.

    Args:
        token_types: per token, 0 (text) or 2 (video), in sequence order.
        video_grid_thw: ``(t, h, w)`` in patches per video, in order.
        second_per_grid_ts: seconds per temporal grid per video (``temporal_patch_size / fps``).
        tokens_per_second: the vision config's temporal id step per second (2 for Qwen2.5-VL).
        spatial_merge_size: the vision tower's spatial merge ``m``.

    Returns:
        LongTensor ``[3, len(token_types)]`` (temporal, height, width).
    """
    if len(video_grid_thw) != len(second_per_grid_ts):
        raise ValueError(f"{len(video_grid_thw)} video grids but {len(second_per_grid_ts)} second_per_grid_ts")
    columns: list[torch.Tensor] = []
    grids = iter(zip(video_grid_thw, second_per_grid_ts))
    nxt, i, n = 0, 0, len(token_types)
    while i < n:
        if token_types[i] == TEXT:
            run = i
            while run < n and token_types[run] == TEXT:
                run += 1
            columns.append(torch.arange(nxt, nxt + run - i).expand(3, -1))
            nxt += run - i
            i = run
            continue
        if token_types[i] != VIDEO:
            raise ValueError(f"token type {token_types[i]} at {i}: only text (0) and video (2) are supported")
        grid = next(grids, None)
        if grid is None:
            raise ValueError(f"more video tokens than the {len(video_grid_thw)} video grids account for")
        (t, h, w), second_per_grid_t = grid
        gh, gw = int(h) // spatial_merge_size, int(w) // spatial_merge_size
        count = int(t) * gh * gw
        if i + count > n or any(tt != VIDEO for tt in token_types[i:i + count]):
            raise ValueError(f"video grid {(int(t), int(h), int(w))} needs {count} consecutive video tokens at {i}")
        temporal = (torch.arange(int(t)) * second_per_grid_t * tokens_per_second).long()  # float32 then floor
        ids = torch.stack(torch.meshgrid(temporal, torch.arange(gh), torch.arange(gw), indexing="ij"))
        ids = ids.reshape(3, count) + nxt  # [3, t·gh·gw]
        columns.append(ids)
        nxt = int(ids.max()) + 1
        i += count
    if next(grids, None) is not None:
        raise ValueError(f"{len(video_grid_thw)} video grids but fewer videos in the token types")
    return torch.cat(columns, dim=1) if columns else torch.zeros(3, 0, dtype=torch.long)


def video_patches(frames: torch.Tensor, patch_size: int = 14, temporal_patch_size: int = 2, merge_size: int = 2,
                  mean: Sequence[float] = OPENAI_CLIP_MEAN,
                  std: Sequence[float] = OPENAI_CLIP_STD) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Qwen2-VL's video preprocessing without resizing: rescale, normalise, patchify.

    The frame count is padded to a multiple of ``temporal_patch_size`` by repeating the last frame,
    and patches come in Qwen's order (temporal grid, merged rows, merged columns, then the
    ``merge × merge`` patches of each merged token), each flattened as (channel, time, y, x).

    Args:
        frames: uint8 ``[T, 3, h, w]`` with ``h`` and ``w`` multiples of ``patch_size · merge_size``.

    Returns:
        float32 patches ``[t · h/p · w/p, 3 · temporal_patch_size · p²]`` and ``grid_thw = (t, h/p, w/p)``.
    """
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"video frames must be [T, 3, h, w] with T ≥ 1, got {tuple(frames.shape)}")
    num, _, h, w = frames.shape
    side = patch_size * merge_size
    if h % side or w % side:
        raise ValueError(f"video frame size {h}x{w} is not a multiple of {side} (patch {patch_size} × merge "
                         f"{merge_size}); decode MLLM frames with sides that are multiples of {side}")
    x = frames.float() / 255.0  # [T, 3, h, w]
    x = (x - x.new_tensor(mean)[:, None, None]) / x.new_tensor(std)[:, None, None]
    if pad := -num % temporal_patch_size:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
    gt, gh, gw = x.shape[0] // temporal_patch_size, h // patch_size, w // patch_size
    x = x.view(gt, temporal_patch_size, 3, gh // merge_size, merge_size, patch_size, gw // merge_size, merge_size,
               patch_size)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, rows, cols, merge-row, merge-col, c, time, y, x
    return x.reshape(gt * gh * gw, 3 * temporal_patch_size * patch_size ** 2), (gt, gh, gw)


# --------------------------------------------------------------------------- Qwen2.5-VL


class MLLMQueryConditioner(QueryConditioner):
    """Frozen Qwen2.5-VL read out by learnable queries appended after the video and the caption.

    Prompt: with a chat template (the processor's if given, else the tokenizer's; Qwen2.5-VL-Instruct
    folders ship one) the user turn holds the video, then the caption, and the queries follow the
    generation prompt, i.e. they sit in the assistant turn, as MetaQuery's do::

        <|im_start|>system …<|im_end|> <|im_start|>user <|vision_start|><|video_pad|>×n<|vision_end|>caption
        <|im_end|> <|im_start|>assistant\\n  q_1 … q_Nq

    Without one (or with ``use_chat_template=False``) the minimal template is
    ``<|vision_start|> <|video_pad|>×n <|vision_end|> caption-tokens q_1 … q_Nq``; a dropped video
    removes its three-part block, a dropped caption its tokens. Video frames must already be at the
    MLLM's rate ``fps`` and size (sides multiples of 28): they are normalised and patchified as
    Qwen's processor does, without resizing.

    Args:
        model: a local Qwen2.5-VL folder (``config.json`` model_type ``qwen2_5_vl``) or a
            ``Qwen2_5_VLConfig`` (random weights; tests).
        out_dim: condition width ``D`` (the DiT width).
        num_queries: learnable queries ``Nq``.
        tokenizer: defaults to the folder's tokenizer; required with a config.
        processor: optional processor whose chat template formats the prompt.
        fps: the frame rate the videos were sampled at (sets the temporal position step).
        max_video_tokens: largest number of visual tokens a video may produce.
        use_chat_template: use the processor's / tokenizer's chat template when there is one.
        connector_layers: bidirectional encoder layers in the connector.
        connector_heads: their attention heads.
        prefix_cache: in training, run the prefix without autograd and reuse its KV cache; without autograd
            one pass over prompt and queries runs instead (:class:`QueryConditioner`).
        dtype: backbone dtype (default bf16 with CUDA available, else fp32).
        attn_implementation: transformers attention backend of the backbone.
        save_frozen: keep the backbone in :meth:`state_dict`.
    """

    SUPPORTED = ("qwen2_5_vl",)
    reads_video = True

    def __init__(self, model: str | Path | PretrainedConfig, out_dim: int, num_queries: int = 77,
                 tokenizer: Any | None = None, processor: Any | None = None, fps: float = 2.0,
                 max_video_tokens: int = 16384, use_chat_template: bool = True, connector_layers: int = 0,
                 connector_heads: int = 8, prefix_cache: bool = True, dtype: str | torch.dtype | None = None,
                 attn_implementation: str = "sdpa", save_frozen: bool = False):
        if fps <= 0 or max_video_tokens < 1:
            raise ValueError(f"need fps > 0 and max_video_tokens ≥ 1, got fps={fps}, "
                             f"max_video_tokens={max_video_tokens}")
        backbone = self.load(model, dtype, attn_implementation)  # vision tower + decoder
        super().__init__(backbone.config.text_config.hidden_size, out_dim, num_queries,
                         _embedding_std(backbone.get_input_embeddings()), _load_tokenizer(model, tokenizer),
                         use_chat_template, connector_layers, connector_heads, prefix_cache, save_frozen)
        self.backbone = backbone
        self.freeze("backbone")
        self.processor = processor
        self.fps = fps
        self.max_video_tokens = max_video_tokens

    @classmethod
    def load(cls, model: str | Path | PretrainedConfig, dtype: str | torch.dtype | None,
             attn_implementation: str) -> nn.Module:
        """The backbone without its LM head (never used): ``.visual`` and ``.language_model``."""
        return load_backbone(model, AutoModelForImageTextToText, cls.SUPPORTED, dtype, attn_implementation).model

    @property
    def decoder(self) -> nn.Module:
        return self.backbone.language_model

    @property
    def tokens_per_second(self) -> float:
        """Temporal mRoPE id step per second of video."""
        return self.backbone.config.vision_config.tokens_per_second

    def prompt_settings(self) -> dict[str, Any]:
        return {**super().prompt_settings(), "fps": self.fps, "tokens_per_second": self.tokens_per_second}

    def vision_token_ids(self) -> tuple[int, int, int]:
        """Ids of the video placeholder and of the vision start / end markers."""
        cfg = self.backbone.config
        return cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id

    def _chat_source(self) -> Any | None:
        if self.use_chat_template and self.processor is not None:
            return self.processor
        return super()._chat_source()

    def prompt_ids(self, caption: str, video_tokens: int) -> list[int]:
        """Token ids of one prompt, the video placeholder repeated ``video_tokens`` times (0: no video)."""
        video_id, start_id, end_id = self.vision_token_ids()
        source = self._chat_source()
        if source is not None:
            content = ([{"type": "video"}] if video_tokens else []) + ([{"type": "text", "text": caption}]
                                                                       if caption else [])
            ids = self._tokens(source.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                          add_generation_prompt=True))
            if video_tokens and video_id in ids:
                at = ids.index(video_id)
                ids = ids[:at] + [video_id] * video_tokens + ids[at + 1:]
        else:
            video = [start_id, *[video_id] * video_tokens, end_id]
            ids = (video if video_tokens else []) + self._tokens(caption)
        if ids.count(video_id) != video_tokens:
            raise ValueError(f"the prompt has {ids.count(video_id)} video tokens (id {video_id}) "
                             f"instead of {video_tokens}: the chat template must render one placeholder per video "
                             f"and captions must not contain it (caption {caption[:80]!r})")
        return ids

    def video_features(self, videos: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[tuple[int, int, int]]]:
        """Merged visual tokens ``[n_i, H]`` and patch grids ``(t, h, w)`` of each video (no autograd)."""
        vision = self.backbone.config.vision_config
        patches, grids = [], []
        for i, frames in enumerate(videos):
            x, grid = video_patches(frames.to(self.queries.device), vision.patch_size, vision.temporal_patch_size,
                                    vision.spatial_merge_size)
            tokens = math.prod(grid) // vision.spatial_merge_size ** 2
            if tokens > self.max_video_tokens:
                raise ValueError(f"video {i} ({frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[3]}) gives "
                                 f"{tokens} visual tokens, more than max_video_tokens={self.max_video_tokens}")
            patches.append(x)
            grids.append(grid)
        visual = self.backbone.visual
        if not grids:
            if _sharded_collectives():  # FSDP2 ranks must all run the (sharded) vision tower: a one-token dummy
                m = vision.spatial_merge_size
                dummy = video_patches(torch.zeros(vision.temporal_patch_size, 3, vision.patch_size * m,
                                                  vision.patch_size * m, dtype=torch.uint8, device=self.queries.device),
                                      vision.patch_size, vision.temporal_patch_size, m)[0]
                with torch.no_grad():
                    visual(dummy.to(visual.dtype), grid_thw=torch.tensor([(1, m, m)], device=self.queries.device))
            return [], []
        with torch.no_grad():
            merged = visual(torch.cat(patches).to(visual.dtype),
                            grid_thw=torch.tensor(grids, device=self.queries.device))
        sizes = [math.prod(g) // vision.spatial_merge_size ** 2 for g in grids]
        return list(merged.pooler_output.split(sizes)), grids  # [n_i, H] each

    def encode_videos(self, videos: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[tuple[int, int, int]]]:
        return self.video_features(videos)

    def layout(self, caption: str, grid: tuple[int, int, int] | None) -> PromptLayout:
        vision = self.backbone.config.vision_config
        n = math.prod(grid) // vision.spatial_merge_size ** 2 if grid else 0
        ids = self.prompt_ids(caption, n)
        video_id = self.vision_token_ids()[0]
        kinds = [VIDEO if t == video_id else TEXT for t in ids]
        positions = mrope_position_ids(kinds + [TEXT] * self.num_tokens, [grid] if grid else [],
                                       [vision.temporal_patch_size / self.fps] if grid else [], self.tokens_per_second,
                                       vision.spatial_merge_size)  # [3, L + Nq]
        return PromptLayout(ids, [k == VIDEO for k in kinds], positions)
