"""The Qwen2.5-Omni thinker query conditioner (Table 5's omni backbone), fed video and text only.

Its audio tower is removed at load time, so the target audio can never reach it. A whole Qwen2.5-Omni
folder is read for its ``thinker.*`` weights only (:func:`_load_prefixed_safetensors`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import PretrainedConfig, Qwen2_5OmniConfig, Qwen2_5OmniThinkerForConditionalGeneration

from reasonaudio.models.conditioners.base import _default_dtype, _supported, check_model_folder
from reasonaudio.models.conditioners.mllm import MLLMQueryConditioner

OMNI_THINKER_KEYS = (("thinker.audio_tower.", "model.audio_tower."), ("thinker.visual.", "model.visual."),
                     ("thinker.model.", "model.language_model."), ("thinker.lm_head.", "lm_head."))
"""Checkpoint key prefixes of a whole Qwen2.5-Omni model (as released and as transformers saves it) →
the thinker module's own names."""


def _load_prefixed_safetensors(module: nn.Module, folder: Path, prefix: str) -> None:
    """Load the tensors under ``prefix`` from a folder's safetensors shards into ``module`` (strict, in place),
    renamed by :data:`OMNI_THINKER_KEYS`."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weight files")
    state = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                for old, new in OMNI_THINKER_KEYS:
                    if key.startswith(old):
                        state[new + key[len(old):]] = f.get_tensor(key)
                        break
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state) - {k for k in expected if k.endswith("lm_head.weight")})
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{folder}: the {prefix}* weights do not match the config: {len(missing)} missing "
                         f"{[prefix + k for k in missing[:2]]}, {len(unexpected)} unexpected "
                         f"{[prefix + k for k in unexpected[:2]]}")
    try:
        module.load_state_dict(state, strict=False)  # only the untied LM head may be absent
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{folder}: the {prefix}* weights do not match the config: {err}") from None


class OmniThinkerQueryConditioner(MLLMQueryConditioner):
    """Frozen Qwen2.5-Omni thinker read out by learnable queries (Table 5's omni MLLM backbone).

    The thinker is fed the video and the caption exactly as :class:`MLLMQueryConditioner` feeds
    Qwen2.5-VL — never audio: its audio tower is deleted at load time, so the target audio cannot
    leak into the condition. Differences from Qwen2.5-VL, all read from the thinker's config: the
    temporal mRoPE step is ``position_id_per_seconds`` (25 per second of video instead of 2), and the
    video placeholder / vision markers are Omni's ``<|VIDEO|>`` / ``<|vision_bos|>`` /
    ``<|vision_eos|>``. Position ids follow Omni's ``get_rope_index`` for video without audio (text
    after a video continues at the video's largest id + 1, which transformers 5.24 also does here).

    Args:
        model: a local folder of a thinker (``config.json`` model_type ``qwen2_5_omni_thinker``) or of the
            whole Qwen2.5-Omni model (``qwen2_5_omni``: only ``thinker.*`` weights are loaded; the talker and
            token2wav are never built), or a ``Qwen2_5OmniThinkerConfig`` (random weights; tests).
        Other arguments: as :class:`MLLMQueryConditioner`.
    """

    SUPPORTED = ("qwen2_5_omni_thinker", "qwen2_5_omni")

    @classmethod
    def load(cls, model: str | Path | PretrainedConfig, dtype: str | torch.dtype | None,
             attn_implementation: str) -> nn.Module:
        dtype = _default_dtype(dtype)
        kind = model.model_type if isinstance(model, PretrainedConfig) else None
        if kind is None:
            folder = check_model_folder(model, cls.SUPPORTED)
            kind = json.loads((folder / "config.json").read_text())["model_type"]
        if kind not in cls.SUPPORTED:
            raise ValueError(f"config model_type {kind!r} is not supported here "
                             f"(supported: {_supported(cls.SUPPORTED)})")
        kwargs = dict(dtype=dtype, attn_implementation=attn_implementation)
        if isinstance(model, PretrainedConfig):
            thinker = Qwen2_5OmniThinkerForConditionalGeneration._from_config(model, **kwargs)
        elif kind == "qwen2_5_omni_thinker":
            thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(folder, local_files_only=True,
                                                                                 **kwargs)
        else:  # the whole model: build the thinker from its sub-config, load only the thinker.* tensors
            thinker = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
                Qwen2_5OmniConfig.from_pretrained(folder, local_files_only=True).thinker_config, **kwargs)
            _load_prefixed_safetensors(thinker, folder, "thinker.")
        backbone = thinker.model
        del backbone.audio_tower  # video and text only: the thinker never hears audio here
        return backbone

    @property
    def tokens_per_second(self) -> float:
        return self.backbone.config.position_id_per_seconds

    def vision_token_ids(self) -> tuple[int, int, int]:
        cfg = self.backbone.config
        start = getattr(cfg, "vision_start_token_id", None)
        end = getattr(cfg, "vision_end_token_id", None)
        if start is None or end is None:  # released thinker configs carry them; otherwise ask the tokenizer
            start, end = (self.tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_bos|>", "<|vision_eos|>"))
        return cfg.video_token_id, start, end
