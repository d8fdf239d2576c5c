"""The query readout shared by the (M)LLM conditioners: a frozen causal decoder read out by learnable queries.

Legend: B batch, L prefix tokens, Nq queries, H backbone hidden width, D condition width (the DiT's).

Prefix caching: because attention is causal, the video+text prefix never depends on the queries.
The prefix runs once under ``torch.no_grad()`` and leaves its keys/values in a transformers
``DynamicCache``; only the ``Nq`` query tokens then run with autograd, attending to the cache.
This is exact (tests: outputs and gradients equal the single full pass). Prefixes of different
lengths are LEFT-padded, so every item's queries sit at the same cache slots; the 2-D attention
mask (0 on padding, for prefix and queries alike) hides the padding, and position ids are per item,
so padding never shifts a position. Stored prefixes (:mod:`reasonaudio.models.prefix_kv`) skip the
prefix's forward pass altogether.
"""
from __future__ import annotations

import dataclasses
import hashlib
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from reasonaudio.models.conditioners.base import Conditioner, QueryConnector, _left_pad, _presence
from reasonaudio.models.prefix_kv import STORE_FORMAT, StoredPrefix, weights_digest


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
        prefix_cache: in training, run the prefix without autograd and reuse its KV cache (exact). Without
            autograd (generation, validation) there is nothing to save, and one pass over prompt and queries,
            equal to it, dispatches about half the operators, so that pass runs instead.
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
        if not self.prefix_cache or not torch.is_grad_enabled():  # no autograd: one pass is the cheaper equal
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
        stored one) runs in the same decoder call as the queries, before them under causal attention.
        Exact, because a causal decoder's keys/values at a token depend only on the tokens up to it and
        their positions.
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
