"""Text-only query conditioners (Table 5's "LLM" row): the MLLM without its visual stream, or any causal LM.

:class:`MLLMTextOnlyQueryConditioner` is the paper's row (the same Qwen2.5-VL with its vision tower
removed); :class:`TextLLMQueryConditioner` reads a separate causal-LM folder, with the same prefix caching.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from reasonaudio.models.conditioners.base import _embedding_std, _load_tokenizer, load_backbone
from reasonaudio.models.conditioners.mllm import MLLMQueryConditioner
from reasonaudio.models.conditioners.query import PromptLayout, QueryConditioner


class MLLMTextOnlyQueryConditioner(MLLMQueryConditioner):
    """The same frozen Qwen2.5-VL with its visual stream removed (Table 5, "LLM": "same MLLM with the visual
    stream removed").

    The vision tower is deleted at load time and videos are never read: every prompt is built exactly as
    :class:`MLLMQueryConditioner` builds a prompt whose video was dropped (chat template, caption, then the
    queries), with the same decoder weights, tokenizer and position ids. So the row differs from the full
    model in one thing only, the video tokens. :class:`TextLLMQueryConditioner` (a separate causal-LM
    folder) stays available for other LLMs.

    Args: as :class:`MLLMQueryConditioner` (``fps`` and ``max_video_tokens`` are unused).
    """

    reads_video = False

    @classmethod
    def load(cls, model: str | Path | PretrainedConfig, dtype: str | torch.dtype | None,
             attn_implementation: str) -> nn.Module:
        backbone = super().load(model, dtype, attn_implementation)
        del backbone.visual  # the visual stream is removed: no video can reach the condition
        return backbone

    def encode_videos(self, videos: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[Any]]:
        return [], [None] * len(videos)  # videos are ignored


# --------------------------------------------------------------------------- a separate causal LM


class TextLLMQueryConditioner(QueryConditioner):
    """Frozen causal LM read out by learnable queries appended after the caption (Table 5, "LLM").

    The prompt is the caption in the tokenizer's chat template (user turn, then the generation
    prompt) when it has one, else the bare caption tokens; videos are ignored. Position ids are
    1-D and per item (left padding does not shift them). A Qwen2.5-VL folder is not a causal-LM
    folder for transformers; "the same MLLM without its visual stream" is the matching Qwen2.5
    language model folder.

    Args:
        model: a local causal-LM folder (any model_type transformers' ``AutoModelForCausalLM``
            maps) or such a config (random weights; tests).
        out_dim: condition width ``D``.
        num_queries: learnable queries ``Nq``.
        tokenizer: defaults to the folder's tokenizer; required with a config.
        use_chat_template: use the tokenizer's chat template when it has one.
        connector_layers: bidirectional encoder layers in the connector.
        connector_heads: their attention heads.
        prefix_cache: run the prefix without autograd and reuse its KV cache.
        dtype: backbone dtype (default bf16 with CUDA available, else fp32).
        attn_implementation: transformers attention backend of the backbone.
        save_frozen: keep the backbone in :meth:`state_dict`.
    """

    SUPPORTED = tuple(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)

    def __init__(self, model: str | Path | PretrainedConfig, out_dim: int, num_queries: int = 77,
                 tokenizer: Any | None = None, use_chat_template: bool = True, connector_layers: int = 0,
                 connector_heads: int = 8, prefix_cache: bool = True, dtype: str | torch.dtype | None = None,
                 attn_implementation: str = "sdpa", save_frozen: bool = False):
        full = load_backbone(model, AutoModelForCausalLM, self.SUPPORTED, dtype, attn_implementation)
        backbone = full.get_decoder()  # the LM head is never used
        super().__init__(backbone.config.hidden_size, out_dim, num_queries,
                         _embedding_std(backbone.get_input_embeddings()), _load_tokenizer(model, tokenizer),
                         use_chat_template, connector_layers, connector_heads, prefix_cache, save_frozen)
        self.backbone = backbone
        self.freeze("backbone")

    @property
    def decoder(self) -> nn.Module:
        return self.backbone

    def prompt_ids(self, caption: str) -> list[int]:
        """Token ids of one prompt ("" for a dropped caption)."""
        source = self._chat_source()
        if source is None:
            return self._tokens(caption)
        content = [{"role": "user", "content": caption}]
        return self._tokens(source.apply_chat_template(content, tokenize=False, add_generation_prompt=True))

    def layout(self, caption: str, grid: tuple[int, int, int] | None) -> PromptLayout:
        ids = self.prompt_ids(caption)  # videos are ignored
        return PromptLayout(ids, [False] * len(ids), torch.arange(len(ids) + self.num_tokens)[None])  # [1, L + Nq]
