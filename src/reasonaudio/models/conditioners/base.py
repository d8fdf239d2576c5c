"""Shared parts of the conditioners: the call contract, frozen-backbone bookkeeping, backbone loading.

Legend: B batch, T frames, N condition tokens, H backbone hidden width, D condition width (the DiT's).

Every conditioner maps ``(videos, captions, has_video, has_text)`` to condition tokens
``[B, N, D]`` (:class:`Conditioner`). ``videos`` is a list of uint8 ``[T, 3, h, w]`` (or None),
as the clip data modules give ``batch["mllm_video"]``; the presence flags drop a condition for CFG
or mark T2A items: a dropped caption is the empty caption, a dropped video contributes no video
tokens (MLLM) or learned null tokens (CLIP).

Checkpoints: the frozen backbone is left out of :meth:`Conditioner.state_dict` (unless
``save_frozen=True``) and may be absent when loading, also when the conditioner is nested in a
LightningModule; it is loaded from its own folder. Optimisers should take
``[p for p in module.parameters() if p.requires_grad]`` (the queries, connectors, null tokens).

Backbones are loaded from local transformers folders only (never the hub), with clear errors for a
missing folder, a missing ``config.json`` or an unsupported ``model_type`` (:func:`check_model_folder`).
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel

# --------------------------------------------------------------------------- loading


def _supported(types: Collection[str]) -> str:
    names = sorted(types)
    return ", ".join(names) if len(names) <= 8 else f"{len(names)} types, e.g. {', '.join(names[:8])}, …"


def check_model_folder(folder: str | Path, supported: Collection[str]) -> Path:
    """Check that ``folder`` holds a ``config.json`` of a supported ``model_type``.

    Raises:
        FileNotFoundError: the folder or its ``config.json`` does not exist.
        ValueError: ``model_type`` is not in ``supported``.
    """
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: {path} is not a transformers model folder")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type not in supported:
        raise ValueError(f"{config}: model_type {model_type!r} is not supported here "
                         f"(supported: {_supported(supported)})")
    return path


def _default_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """bf16 where a GPU is present, fp32 on CPU (bf16 matmuls are slow and inexact there)."""
    if dtype is None:
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def load_backbone(model: str | Path | PretrainedConfig, auto_class: Any, supported: Collection[str],
                  dtype: str | torch.dtype | None, attn_implementation: str) -> PreTrainedModel:
    """A transformers model from a local folder (never the hub) or, randomly initialised, from a config."""
    dtype = _default_dtype(dtype)
    if isinstance(model, PretrainedConfig):
        if model.model_type not in supported:
            raise ValueError(f"config model_type {model.model_type!r} is not supported here "
                             f"(supported: {_supported(supported)})")
        return auto_class.from_config(model, dtype=dtype, attn_implementation=attn_implementation)
    folder = check_model_folder(model, supported)
    return auto_class.from_pretrained(folder, local_files_only=True, dtype=dtype,
                                      attn_implementation=attn_implementation)


def _load_tokenizer(model: str | Path | PretrainedConfig, tokenizer: Any | None) -> Any:
    if tokenizer is not None:
        return tokenizer
    if isinstance(model, PretrainedConfig):
        raise ValueError("a tokenizer is required when the model is built from a config")
    return AutoTokenizer.from_pretrained(Path(model), local_files_only=True)


# --------------------------------------------------------------------------- shared parts


class QueryConnector(nn.Module):
    """Query hidden states to condition tokens: Linear → [encoder] → GELU → Linear → RMSNorm.

    The optional bidirectional transformer encoder (pre-norm, no positional encoding: each query's
    state is already distinct, from its own learned query and position) runs at the output width
    ``D``, so it stays small even for a 3584-wide MLLM. With ``num_layers=0`` the connector is
    MetaQuery's Linear → GELU → Linear → RMSNorm projection.

    Args:
        in_dim: backbone hidden width ``H``.
        out_dim: condition width ``D``.
        num_layers: bidirectional encoder layers (0: none).
        num_heads: encoder attention heads (must divide ``out_dim``).
        mlp_ratio: encoder feed-forward width / ``out_dim``.
    """

    def __init__(self, in_dim: int, out_dim: int, num_layers: int = 0, num_heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        if num_layers < 0 or (num_layers and out_dim % num_heads):
            raise ValueError(f"need num_layers ≥ 0 and num_heads dividing out_dim, got num_layers={num_layers}, "
                             f"num_heads={num_heads}, out_dim={out_dim}")
        self.proj_in = nn.Linear(in_dim, out_dim)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(out_dim, num_heads, int(out_dim * mlp_ratio), dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True),
            num_layers, enable_nested_tensor=False) if num_layers else nn.Identity()
        self.act = nn.GELU()
        self.proj_out = nn.Linear(out_dim, out_dim)
        self.norm = nn.RMSNorm(out_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, H] → [B, N, D]
        return self.norm(self.proj_out(self.act(self.encoder(self.proj_in(x)))))


def _presence(videos: Sequence[torch.Tensor | None] | None, captions: Sequence[str],
              has_video: torch.Tensor | None, has_text: torch.Tensor | None) -> tuple[list[bool], list[bool]]:
    """Per item: use its video? use its caption? Missing flags default to "present if given"."""
    b = len(captions)
    videos = list(videos) if videos is not None else [None] * b
    if len(videos) != b:
        raise ValueError(f"{len(videos)} videos for {len(captions)} captions")
    use_video = [v is not None for v in videos] if has_video is None else [bool(f) for f in has_video.tolist()]
    use_text = [bool(c.strip()) for c in captions] if has_text is None else [bool(f) for f in has_text.tolist()]
    if len(use_video) != b or len(use_text) != b:
        raise ValueError(f"has_video / has_text need {b} flags, got {len(use_video)} / {len(use_text)}")
    missing = [i for i, (v, u) in enumerate(zip(videos, use_video)) if u and v is None]
    if missing:
        raise ValueError(f"items {missing} have has_video=True but no video")
    return use_video, use_text


def _sharded_collectives() -> bool:
    """Whether several processes run this conditioner in lockstep (every rank must make the same module calls)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1


def _left_pad(rows: Sequence[torch.Tensor], length: int, value: int = 0) -> torch.Tensor:
    """Stack ``[..., L_i]`` tensors into ``[B, ..., length]``, padding on the left."""
    return torch.stack([F.pad(r, (length - r.shape[-1], 0), value=value) for r in rows])


class Conditioner(nn.Module, ABC):
    """Base of every conditioner: the call contract and the frozen-backbone bookkeeping.

    Submodules registered with :meth:`freeze` never train (``requires_grad`` False, kept in eval
    mode by :meth:`train`) and stay out of :meth:`state_dict` unless ``save_frozen`` is True;
    :meth:`load_state_dict` accepts state dicts without them, also when this module is nested.

    Args:
        out_dim: condition width ``D``.
        num_tokens: condition tokens ``N`` per item.
        save_frozen: keep the frozen submodules in :meth:`state_dict`.
    """

    def __init__(self, out_dim: int, num_tokens: int, save_frozen: bool = False):
        super().__init__()
        self.out_dim = out_dim
        self.num_tokens = num_tokens
        self.save_frozen = save_frozen
        self._frozen: list[str] = []
        self._load_prefix = ""
        self.register_state_dict_post_hook(_drop_frozen_keys)
        self.register_load_state_dict_pre_hook(_remember_load_prefix)
        self.register_load_state_dict_post_hook(_allow_missing_frozen_keys)

    def freeze(self, name: str) -> None:
        """Freeze the submodule ``name``: no gradients, eval mode, out of checkpoints."""
        module = getattr(self, name)
        module.requires_grad_(False)
        module.eval()
        self._frozen.append(name)

    def train(self, mode: bool = True) -> Conditioner:
        super().train(mode)
        for name in self._frozen:  # frozen backbones run in eval mode even while the rest trains
            getattr(self, name).eval()
        return self

    @abstractmethod
    def forward(self, videos: Sequence[torch.Tensor | None] | None, captions: Sequence[str],
                has_video: torch.Tensor | None = None, has_text: torch.Tensor | None = None) -> torch.Tensor:
        """Condition tokens for a batch.

        Args:
            videos: per item uint8 ``[T, 3, h, w]`` (MLLM frames) or None; None for a text-only batch.
            captions: per item caption ("" for none).
            has_video: ``[B]`` bool; False drops the item's video. Default: video is not None.
            has_text: ``[B]`` bool; False drops the item's caption. Default: caption is not blank.

        Returns:
            ``[B, N, D]`` with ``N = num_tokens`` and ``D = out_dim``.
        """


def _drop_frozen_keys(module: Conditioner, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    if module.save_frozen:
        return
    for name in module._frozen:
        for key in [k for k in state_dict if k.startswith(f"{prefix}{name}.")]:
            del state_dict[key]


def _remember_load_prefix(module: Conditioner, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    module._load_prefix = prefix  # the post-hook below is not told where this module sits


def _allow_missing_frozen_keys(module: Conditioner, incompatible_keys: Any) -> None:
    frozen = tuple(f"{module._load_prefix}{name}." for name in module._frozen)
    if frozen:
        incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not k.startswith(frozen)]


def _embedding_std(embed: nn.Embedding) -> float:
    """Std of the token embedding table, from at most ~4k rows (the full table is 0.5 G values for 7B)."""
    weight = embed.weight
    if weight.is_meta:  # a meta-device build (shapes and parameter counts only) has no values to measure
        return 0.02
    return float(weight.detach()[:: max(1, weight.shape[0] // 4096)].float().std())
