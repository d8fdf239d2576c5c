"""Semantic conditioners: a frozen (M)LLM read out by learnable queries, and the ablations of Table 5.

Legend: B batch, T frames, L prefix tokens, Nq queries, H backbone hidden width, D condition width
(the DiT's), N condition tokens.

Every conditioner maps ``(videos, captions, has_video, has_text)`` to condition tokens
``[B, N, D]`` (:class:`Conditioner`). ``videos`` is a list of uint8 ``[T, 3, h, w]`` (or None),
as the clip data modules give ``batch["mllm_video"]``; the presence flags drop a condition for CFG
or mark T2A items: a dropped caption is the empty caption, a dropped video contributes no video
tokens (MLLM) or learned null tokens (CLIP).

:class:`MLLMQueryConditioner` (the paper's §4.2): Qwen2.5-VL reads the video and the caption,
``Nq`` learnable queries (their own ``nn.Parameter [Nq, H]``, not new vocabulary rows, so weight
decay never touches the frozen embedding table) are appended after them under the model's causal
attention, and the final hidden states (after the decoder's last RMSNorm) at the query positions
go through a connector to ``D``::

    [video tokens][caption tokens][q_1 … q_Nq] → frozen decoder → h[q_1 … q_Nq] → connector → [B, Nq, D]

Prefix caching: because attention is causal, the video+text prefix never depends on the queries.
The prefix runs once under ``torch.no_grad()`` and leaves its keys/values in a transformers
``DynamicCache``; only the ``Nq`` query tokens then run with autograd, attending to the cache.
This is exact (tests: outputs and gradients equal the single full pass). Prefixes of different
lengths are LEFT-padded, so every item's queries sit at the same cache slots; the 2-D attention
mask (0 on padding, for prefix and queries alike) hides the padding, and position ids are per item,
so padding never shifts a position.

Position ids (mRoPE) are computed here, never by the model: Qwen2.5-VL's three axes (temporal,
height, width) follow Qwen's original design, see :func:`mrope_position_ids`. Passing
``inputs_embeds`` without explicit position ids silently falls back to 1-D positions (transformers
4.x and 5.24), and transformers 5.24's ``get_rope_index`` places text after a video at
``start + max(h, w) / merge``, colliding with the video's temporal ids (the original design, and
transformers 4.x, continue from the largest id + 1), so neither is relied on.

Checkpoints: the frozen backbone is left out of :meth:`Conditioner.state_dict` (unless
``save_frozen=True``) and may be absent when loading, also when the conditioner is nested in a
LightningModule; it is loaded from its own folder. Optimisers should take
``[p for p in module.parameters() if p.requires_grad]`` (the queries, connectors, null tokens).

Ablations (Table 5), same interface: :class:`MLLMTextOnlyQueryConditioner` (the paper's "LLM" row: the
same Qwen2.5-VL with its visual stream removed), :class:`TextLLMQueryConditioner` (any separate causal
LM, queries after the text; the same prefix caching), :class:`CLIPConditioner` (per-frame CLIP image
embeddings and CLIP text token states, 77 tokens in all, projected to ``D``) and
:class:`CLIPLLMConditioner` (CLIP and a text-only query conditioner, concatenated).
Table 9's query-count sweep is ``num_queries``. :class:`OmniThinkerQueryConditioner` is Table 5's
omni backbone: Qwen2.5-Omni's thinker fed video and text only (its audio tower is removed, so the
target audio can never reach it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer,
                          DynamicCache, PretrainedConfig, PreTrainedModel)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from reasonaudio.models.prefix_kv import STORE_FORMAT, StoredPrefix, weights_digest

VIDEO = 2
"""Token type of a video token (Qwen's ``mm_token_type_ids`` convention: 0 text, 1 image, 2 video)."""
TEXT = 0
"""Token type of a text token; appended queries are text tokens for the position ids."""


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


@dataclass
class PromptLayout:
    """One item's prompt: token ids, which of them are video tokens, and the position ids of the
    prompt followed by the queries (``[A, L + Nq]``, A = 3 for mRoPE, 1 for 1-D RoPE)."""

    ids: list[int]
    is_video: list[bool]
    positions: torch.Tensor


@dataclass
class _Prefix:
    """A left-padded prefix batch and where its queries go."""

    embeds: torch.Tensor  # [B, L, H]
    mask: torch.Tensor  # [B, L] long, 0 on padding
    positions: torch.Tensor  # [B, L] (1-D RoPE) or [3, B, L] (mRoPE)
    query_positions: torch.Tensor  # [B, Nq] or [3, B, Nq]
    layouts: list[PromptLayout]
    grids: list[tuple[int, int, int] | None]  # per item, the video's patch grid (None: no video used)


def _shared_length(layout: PromptLayout, stored: StoredPrefix) -> int:
    """How many leading tokens a prompt shares with a stored one: same ids at the same positions."""
    n = min(len(layout.ids), stored.ids.numel())
    if n == 0 or layout.positions.shape[0] != stored.positions.shape[0]:
        return 0
    same = (torch.tensor(layout.ids[:n]) == stored.ids[:n].cpu()) & \
        (layout.positions[:, :n] == stored.positions[:, :n].cpu()).all(0)
    return n if bool(same.all()) else int((~same).nonzero()[0])


class QueryConditioner(Conditioner):
    """A frozen causal decoder read out by ``Nq`` learnable queries appended after a prefix.

    Subclasses lay out one item's prompt (:meth:`layout`) and encode videos (:meth:`encode_videos`);
    this class embeds and pads the prefix batch, runs the decoder, with prefix caching
    (:attr:`prefix_cache`, default) or in one full pass, and applies the connector. Given stored
    prefixes (:mod:`reasonaudio.models.prefix_kv`, from :meth:`store_prefix`), it skips the prefix's
    forward pass altogether (:meth:`query_states_stored`).

    Args:
        hidden: decoder width ``H``.
        out_dim: condition width ``D``.
        num_queries: ``Nq`` (77 in the paper; Table 9 sweeps 32–128).
        query_std: init std of the queries (the subclasses use the token embeddings' std, so the
            queries enter the decoder at the scale it was trained on).
        tokenizer: the backbone's tokenizer.
        use_chat_template: format prompts with the chat template when one is available.
        connector_layers: bidirectional encoder layers in the connector (0: MLP only).
        connector_heads: their attention heads.
        prefix_cache: run the prefix without autograd and reuse its KV cache (exact).
        save_frozen: keep the frozen backbone in :meth:`state_dict`.
    """

    def __init__(self, hidden: int, out_dim: int, num_queries: int, query_std: float, tokenizer: Any,
                 use_chat_template: bool = True, connector_layers: int = 0, connector_heads: int = 8,
                 prefix_cache: bool = True, save_frozen: bool = False):
        if num_queries < 1:
            raise ValueError(f"num_queries must be ≥ 1, got {num_queries}")
        super().__init__(out_dim, num_queries, save_frozen)
        self.tokenizer = tokenizer
        self.use_chat_template = use_chat_template
        self.prefix_cache = prefix_cache
        self.queries = nn.Parameter(torch.randn(num_queries, hidden) * query_std)  # [Nq, H]
        self.connector = QueryConnector(hidden, out_dim, connector_layers, connector_heads)
        self._digest: str | None = None

    reads_video = False
    """Whether the backbone reads the videos (the MLLMs) or ignores them (the text LLM)."""

    @property
    @abstractmethod
    def decoder(self) -> nn.Module:
        """The frozen decoder (transformers base model: ``inputs_embeds`` in, ``last_hidden_state`` out)."""

    @abstractmethod
    def layout(self, caption: str, grid: tuple[int, int, int] | None) -> PromptLayout:
        """One item's prompt for a caption ("" when dropped) and a video's patch grid (None: no video)."""

    def encode_videos(self, videos: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[Any]]:
        """Visual tokens ``[n_i, H]`` and patch grids of the videos in use (default: videos are ignored)."""
        return [], [None] * len(videos)

    def prefix(self, videos: Sequence[torch.Tensor | None] | None, captions: Sequence[str],
               use_video: list[bool], use_text: list[bool]) -> _Prefix:
        """The embedded, left-padded prefix batch with its position ids and the queries' position ids."""
        chosen = [v for v, u in zip(videos or [], use_video) if u]
        features, grids = self.encode_videos(chosen)
        found = iter(grids)
        item_grids = [next(found) if v else None for v in use_video]
        layouts = [self.layout(c if t else "", g) for c, t, g in zip(captions, use_text, item_grids)]
        return self._embed(layouts, item_grids, features)

    def _embed(self, layouts: list[PromptLayout], grids: list[Any], features: Sequence[torch.Tensor] = (),
               starts: Sequence[int] | None = None) -> _Prefix:
        """Embed and left-pad the prompts ``layouts[i].ids[starts[i]:]`` (video tokens from ``features``)."""
        device = self.queries.device
        starts = list(starts) if starts is not None else [0] * len(layouts)
        ids = [torch.tensor(lay.ids[s:], dtype=torch.long) for lay, s in zip(layouts, starts)]
        length = max((len(t) for t in ids), default=0)
        token_ids = _left_pad(ids, length).to(device)  # [B, L]
        is_video = _left_pad([torch.tensor(lay.is_video[s:], dtype=torch.long) for lay, s in zip(layouts, starts)],
                             length).to(device) == 1  # [B, L]
        mask = _left_pad([torch.ones_like(t) for t in ids], length).to(device)  # [B, L]
        pos = _left_pad([lay.positions[:, s:len(lay.ids)] for lay, s in zip(layouts, starts)], length)  # [B, A, L]
        query_pos = torch.stack([lay.positions[:, len(lay.ids):] for lay in layouts], dim=1)  # [A, B, Nq]
        pos, query_pos = pos.transpose(0, 1).to(device), query_pos.to(device)
        if pos.shape[0] == 1:  # 1-D RoPE: [B, L]
            pos, query_pos = pos[0], query_pos[0]
        with torch.no_grad():
            embeds = self.decoder.get_input_embeddings()(token_ids)  # [B, L, H]
            if features:
                embeds[is_video] = torch.cat(list(features)).to(embeds.dtype)
        return _Prefix(embeds, mask, pos, query_pos, layouts, grids)

    def forward(self, videos: Sequence[torch.Tensor | None] | None, captions: Sequence[str],
                has_video: torch.Tensor | None = None, has_text: torch.Tensor | None = None,
                prefix_kv: Sequence[StoredPrefix] | None = None) -> torch.Tensor:
        """As :meth:`Conditioner.forward`; with ``prefix_kv`` (each item's :class:`StoredPrefix`, from the
        ``prefix_kv`` stage) the prompt's forward pass is skipped and ``videos`` is not needed."""
        if prefix_kv is None:
            use_video, use_text = _presence(videos, captions, has_video, has_text)
            hidden = self.query_states(self.prefix(videos, captions, use_video, use_text))  # [B, Nq, H]
        else:
            if len(prefix_kv) != len(captions):
                raise ValueError(f"{len(prefix_kv)} stored prefixes for {len(captions)} captions")
            # "has a video" per stored prefix; a text-only backbone never reads videos, so any flag goes
            stand_in = [s if s.grid is not None or not self.reads_video else None for s in prefix_kv]
            use_video, use_text = _presence(stand_in, captions, has_video, has_text)
            hidden = self.query_states_stored(prefix_kv, captions, use_video, use_text)
        return self.connector(hidden.to(self.queries.dtype))  # [B, Nq, D]

    def query_states(self, prefix: _Prefix) -> torch.Tensor:
        """Final decoder hidden states at the query positions, ``[B, Nq, H]``."""
        batch, length = prefix.mask.shape
        if length == 0:  # nothing given and no template: one masked slot keeps every batch's calls alike (FSDP2)
            prefix = dataclasses.replace(prefix, embeds=prefix.embeds.new_zeros(batch, 1, prefix.embeds.shape[-1]),
                                         mask=prefix.mask.new_zeros(batch, 1),
                                         positions=prefix.positions.new_zeros(*prefix.positions.shape[:-1], 1))
            length = 1
        queries = self.queries.to(prefix.embeds.dtype).expand(batch, -1, -1)  # [B, Nq, H]
        mask = torch.cat([prefix.mask, prefix.mask.new_ones(batch, self.num_tokens)], dim=1)  # [B, L + Nq]
        if not self.prefix_cache:
            out = self.decoder(inputs_embeds=torch.cat([prefix.embeds, queries], dim=1), attention_mask=mask,
                               position_ids=torch.cat([prefix.positions, prefix.query_positions], dim=-1),
                               use_cache=False)
            return out.last_hidden_state[:, length:]
        cache = DynamicCache(config=self.decoder.config)
        with torch.no_grad():
            self.decoder(inputs_embeds=prefix.embeds, attention_mask=prefix.mask, position_ids=prefix.positions,
                         cache=cache, use_cache=True)
        out = self.decoder(inputs_embeds=queries, attention_mask=mask, position_ids=prefix.query_positions,
                           cache=cache, use_cache=True)
        return out.last_hidden_state

    # ----------------------------------------------------------------------- stored prefixes

    def kv_shape(self) -> tuple[int, int, int]:
        """``(layers, kv_heads, head_dim)`` of the decoder's KV cache."""
        cfg = self.decoder.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cfg.num_hidden_layers, cfg.num_key_value_heads or cfg.num_attention_heads, head_dim

    def prompt_settings(self) -> dict[str, Any]:
        """What shapes a prompt besides the captions and videos (the chat template in use)."""
        source = self._chat_source()
        template = getattr(source, "chat_template", None) if source is not None else None
        return {"chat_template": hashlib.sha256(str(template).encode()).hexdigest()[:16] if template else None}

    def prefix_fingerprint(self) -> dict[str, Any]:
        """What a stored prefix depends on: conditioner type, KV shape, dtype, prompt settings and the backbone's
        weights (a full hash, computed once)."""
        if self._digest is None:
            self._digest = weights_digest(getattr(self, "backbone"))
        return {"format": STORE_FORMAT, "conditioner": type(self).__name__, "kv_shape": list(self.kv_shape()),
                "dtype": str(self.decoder.get_input_embeddings().weight.dtype).removeprefix("torch."),
                "prompt": self.prompt_settings(), "backbone": self._digest}

    def check_store(self, meta: dict[str, Any], where: str | Path) -> None:
        """Raise unless the prefix KV store described by ``meta`` was made by this conditioner's backbone, in
        its dtype, with its prompt settings."""
        mine, theirs = self.prefix_fingerprint(), meta.get("fingerprint", {})
        wrong = [k for k in mine if mine[k] != theirs.get(k)]
        if wrong:
            raise ValueError(f"{where}: prefix KV store made by another backbone or setting ({', '.join(wrong)} "
                             f"differ: store { {k: theirs.get(k) for k in wrong} }, this conditioner "
                             f"{ {k: mine[k] for k in wrong} }); rebuild it with `make prefix-kv` for this model")

    @torch.no_grad()
    def store_prefix(self, videos: Sequence[torch.Tensor | None] | None, captions: Sequence[str],
                     has_video: torch.Tensor | None = None, has_text: torch.Tensor | None = None) -> list[StoredPrefix]:
        """Run each item's prompt once through the frozen decoder; its ids, positions and keys/values (CPU)."""
        use_video, use_text = _presence(videos, captions, has_video, has_text)
        prefix = self.prefix(videos, captions, use_video, use_text)
        batch, length = prefix.mask.shape
        layers, heads, head_dim = self.kv_shape()
        kv = prefix.embeds.new_zeros(layers, 2, batch, heads, length, head_dim)
        if length:
            cache = DynamicCache(config=self.decoder.config)
            self.decoder(inputs_embeds=prefix.embeds, attention_mask=prefix.mask, position_ids=prefix.positions,
                         cache=cache, use_cache=True)
            kv = torch.stack([torch.stack([layer.keys, layer.values]) for layer in cache.layers])  # [layers, 2, B, …]
        out = []
        for i, (lay, grid) in enumerate(zip(prefix.layouts, prefix.grids)):
            n = len(lay.ids)
            out.append(StoredPrefix(torch.tensor(lay.ids, dtype=torch.long), lay.positions[:, :n].clone(),
                                    kv[:, :, i, :, length - n:].cpu().clone(), tuple(map(int, grid)) if grid else None))
        with_video = [i for i, s in enumerate(out) if s.grid is not None]
        if with_video:  # the caption-only prompts a dropped video leaves: stored too (short), reused whole
            alts = self.store_prefix(None, [captions[i] for i in with_video],
                                     has_text=torch.tensor([use_text[i] for i in with_video]))
            for i, alt in zip(with_video, alts):
                out[i].alt = alt
        return out

    def query_states_stored(self, stored: Sequence[StoredPrefix], captions: Sequence[str], use_video: list[bool],
                            use_text: list[bool]) -> torch.Tensor:
        """:meth:`query_states` from stored prefixes: equal to it, without the prompt's forward pass.

        Each item's prompt (its caption and video as the flags say) shares a head with its stored full
        prompt or, for a dropped video, with its stored caption-only prompt (:attr:`StoredPrefix.alt`):
        all of it when nothing or only the video is dropped; up to the end of the video when the
        caption is dropped; the template's opening when both are. The stored keys/values serve that head;
        the rest of the prompt (text only: the template's closing tokens, or a caption other than the
        stored one) runs in the same decoder call as the queries, before them under causal attention. Exact, because a causal decoder's keys/values at a
        token depend only on the tokens up to it and their positions.
        """
        device, batch = self.queries.device, len(stored)
        dtype = self.decoder.get_input_embeddings().weight.dtype
        layouts, shared = [], []
        sources = []
        for i, (s, caption, video, text) in enumerate(zip(stored, captions, use_video, use_text)):
            lay = self.layout(caption if text else "", s.grid if video else None)
            n, s = max(((_shared_length(lay, c), c) for c in (s, s.alt) if c is not None), key=lambda nc: nc[0])
            if any(lay.is_video[n:]):
                raise ValueError(f"{s.describe(i)}: the prompt's video tokens differ from the stored ones (another "
                                 "frame rate, template or model made the store); rebuild it with `make prefix-kv`")
            layouts.append(lay)
            shared.append(n)
            sources.append(s)  # the stored prompt (full, or caption-only) that serves this item's head
        rest = self._embed(layouts, [None] * batch, starts=shared)  # the prompts after the shared heads
        head = max(shared)
        cache = DynamicCache(config=self.decoder.config)
        if head:
            kv = torch.stack([F.pad(s.kv[..., :n, :].to(device, dtype, non_blocking=True), (0, 0, head - n, 0))
                              for s, n in zip(sources, shared)], dim=2)  # [layers, 2, B, kv_heads, head, head_dim]
            for layer in range(kv.shape[0]):
                cache.update(kv[layer, 0], kv[layer, 1], layer)
        # One decoder call per step whatever was dropped (FSDP2 ranks must all-gather the same units): the
        # unshared rest of the prompts and the queries together; the rest never sees the queries (causal).
        queries = self.queries.to(dtype).expand(batch, -1, -1)  # [B, Nq, H]
        mask = torch.cat([_left_pad([torch.ones(n, dtype=torch.long) for n in shared], head).to(device), rest.mask,
                          rest.mask.new_ones(batch, self.num_tokens)], dim=1)  # [B, head + R + Nq]
        out = self.decoder(inputs_embeds=torch.cat([rest.embeds, queries], dim=1), attention_mask=mask,
                           position_ids=torch.cat([rest.positions, rest.query_positions], dim=-1), cache=cache,
                           use_cache=True)
        return out.last_hidden_state[:, -self.num_tokens:]

    def _chat_source(self) -> Any | None:
        """Who renders the chat template: None for the minimal template."""
        return self.tokenizer if self.use_chat_template and getattr(self.tokenizer, "chat_template", None) else None

    def _tokens(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _embedding_std(embed: nn.Embedding) -> float:
    """Std of the token embedding table, from at most ~4k rows (the full table is 0.5 G values for 7B)."""
    weight = embed.weight
    if weight.is_meta:  # a meta-device build (shapes and parameter counts only) has no values to measure
        return 0.02
    return float(weight.detach()[:: max(1, weight.shape[0] // 4096)].float().std())


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
        prefix_cache: run the prefix without autograd and reuse its KV cache.
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


# --------------------------------------------------------------------------- Qwen2.5-Omni thinker


OMNI_THINKER_KEYS = (("thinker.audio_tower.", "model.audio_tower."), ("thinker.visual.", "model.visual."),
                     ("thinker.model.", "model.language_model."), ("thinker.lm_head.", "lm_head."))
"""Checkpoint key prefixes of a whole Qwen2.5-Omni model (as released and as transformers saves it) →
the thinker module's own names."""


def _load_prefixed_safetensors(module: nn.Module, folder: Path, prefix: str) -> None:
    """Load the tensors under ``prefix`` from a folder's safetensors shards into ``module`` (strict, in place),
    renamed by :data:`OMNI_THINKER_KEYS`."""
    from safetensors import safe_open

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
        from transformers import Qwen2_5OmniConfig, Qwen2_5OmniThinkerForConditionalGeneration

        dtype = _default_dtype(dtype)
        kind = model.model_type if isinstance(model, PretrainedConfig) else None
        if kind is None:
            folder = check_model_folder(model, cls.SUPPORTED)
            kind = json.loads((folder / "config.json").read_text())["model_type"]
        if kind not in cls.SUPPORTED:
            raise ValueError(f"config model_type {kind!r} is not supported here (supported: {_supported(cls.SUPPORTED)})")
        kwargs = dict(dtype=dtype, attn_implementation=attn_implementation)
        if isinstance(model, PretrainedConfig):
            thinker = Qwen2_5OmniThinkerForConditionalGeneration._from_config(model, **kwargs)
        elif kind == "qwen2_5_omni_thinker":
            thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(folder, local_files_only=True, **kwargs)
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


# --------------------------------------------------------------------------- text-only LLM


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


# --------------------------------------------------------------------------- CLIP


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
            raise ValueError(f"need 1 ≤ num_frames < num_tokens, got num_frames={num_frames}, num_tokens={num_tokens}")
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
