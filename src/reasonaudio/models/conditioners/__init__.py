"""Semantic conditioners: a frozen (M)LLM read out by learnable queries, and the ablations of Table 5.

Every conditioner maps ``(videos, captions, has_video, has_text)`` to condition tokens ``[B, N, D]``
(:class:`Conditioner`); configs name them as ``reasonaudio.models.conditioners.<Class>``. Submodules:

- :mod:`~reasonaudio.models.conditioners.base`: the :class:`Conditioner` contract, frozen-backbone checkpoint
  hooks, :class:`QueryConnector` and loading of local transformers folders with clear errors.
- :mod:`~reasonaudio.models.conditioners.query`: :class:`QueryConditioner`, the learnable-query readout of a
  frozen causal decoder (prefix caching, stored prefix KV).
- :mod:`~reasonaudio.models.conditioners.mllm`: :class:`MLLMQueryConditioner` (Qwen2.5-VL, the paper's §4.2)
  with Qwen's mRoPE position ids and video patchifying.
- :mod:`~reasonaudio.models.conditioners.text`: the text-only rows, :class:`MLLMTextOnlyQueryConditioner` and
  :class:`TextLLMQueryConditioner`.
- :mod:`~reasonaudio.models.conditioners.omni`: :class:`OmniThinkerQueryConditioner` (Qwen2.5-Omni's thinker,
  video and text only).
- :mod:`~reasonaudio.models.conditioners.clip`: :class:`CLIPConditioner` and :class:`CLIPLLMConditioner`.

Table 9's query-count sweep is ``num_queries``.
"""
from __future__ import annotations

from reasonaudio.models.conditioners.base import Conditioner, QueryConnector, check_model_folder, load_backbone
from reasonaudio.models.conditioners.clip import CLIPConditioner, CLIPLLMConditioner
from reasonaudio.models.conditioners.mllm import TEXT, VIDEO, MLLMQueryConditioner, mrope_position_ids, video_patches
from reasonaudio.models.conditioners.omni import OMNI_THINKER_KEYS, OmniThinkerQueryConditioner
from reasonaudio.models.conditioners.query import PromptLayout, QueryConditioner
from reasonaudio.models.conditioners.text import MLLMTextOnlyQueryConditioner, TextLLMQueryConditioner

__all__ = ["CLIPConditioner", "CLIPLLMConditioner", "Conditioner", "MLLMQueryConditioner",
           "MLLMTextOnlyQueryConditioner", "OMNI_THINKER_KEYS", "OmniThinkerQueryConditioner", "PromptLayout",
           "QueryConditioner", "QueryConnector", "TEXT", "TextLLMQueryConditioner", "VIDEO", "check_model_folder",
           "load_backbone", "mrope_position_ids", "video_patches"]
