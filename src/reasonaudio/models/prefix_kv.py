"""Stored prefix KV caches: a query conditioner's frozen prompt pass, computed once per clip and kept on disk.

The MLLM is frozen and its learnable queries come after the video and the caption under causal
attention, so the keys and values of the prompt ("prefix") never change during training. The
``prefix_kv`` stage (``make prefix-kv``) runs every clip's full prompt (its video and its caption)
once and stores, per clip, a :class:`StoredPrefix`; training then runs only the queries against it
(:meth:`QueryConditioner.query_states_stored`). A dropped caption or video changes only the tail of
the prompt: the stored keys and values are reused up to where the prompts part, and the few tokens
after that run live (exact, see the conditioner).

On disk: one safetensors file per clip (``<row>.safetensors``: ``ids`` [L], ``positions`` [A, L],
``kv`` [layers, 2, kv_heads, L, head_dim], ``grid`` [3] or [0]) plus a ``meta.json`` with the
backbone's fingerprint (:func:`weights_digest`), so a store is never read by another model.
Per token a store costs ``layers · 2 · kv_heads · head_dim`` values: 57 KB in bf16 for
Qwen2.5-VL-7B (28 layers, 4 KV heads of 128), about 57 MB for an 8 s clip's ~1,000-token prompt.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

META = "meta.json"
"""The store's description: fingerprint of the backbone, dtype, KV shape."""


@dataclass
class StoredPrefix:
    """One clip's prompt and the frozen decoder's keys / values on it.

    Attributes:
        ids: prompt token ids ``[L]`` (no queries).
        positions: their position ids ``[A, L]`` (A = 3 for mRoPE, 1 for 1-D RoPE).
        kv: keys and values after RoPE, ``[layers, 2, kv_heads, L, head_dim]``.
        grid: the video's patch grid ``(t, h, w)``, None without a video.
    """

    ids: torch.Tensor
    positions: torch.Tensor
    kv: torch.Tensor
    grid: tuple[int, int, int] | None

    def __post_init__(self):
        length = self.ids.shape[0]
        if self.ids.ndim != 1 or self.positions.shape[-1] != length or self.kv.ndim != 5 or self.kv.shape[3] != length:
            raise ValueError(f"inconsistent stored prefix: ids {tuple(self.ids.shape)}, positions "
                             f"{tuple(self.positions.shape)}, kv {tuple(self.kv.shape)}")

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.ids, self.positions, self.kv))


def save_prefix(path: str | Path, prefix: StoredPrefix) -> None:
    """Write ``prefix`` to ``path`` atomically (a crash leaves either the old file or none)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    grid = torch.tensor(prefix.grid if prefix.grid is not None else [], dtype=torch.long)
    save_file({"ids": prefix.ids.long().contiguous(), "positions": prefix.positions.long().contiguous(),
               "kv": prefix.kv.contiguous(), "grid": grid}, str(tmp))
    os.replace(tmp, path)


def load_prefix(path: str | Path) -> StoredPrefix:
    """Read a :func:`save_prefix` file."""
    from safetensors.torch import load_file

    try:
        t = load_file(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"stored prefix not found: {path}") from None
    except Exception as err:  # truncated or foreign files
        raise ValueError(f"{path}: not a stored prefix file ({err})") from None
    missing = {"ids", "positions", "kv", "grid"} - set(t)
    if missing:
        raise ValueError(f"{path}: not a stored prefix file (missing {sorted(missing)})")
    grid = tuple(int(g) for g in t["grid"]) if t["grid"].numel() else None
    return StoredPrefix(t["ids"], t["positions"], t["kv"], grid)


def weights_digest(module: nn.Module, samples: int = 1024) -> str:
    """A cheap fingerprint of a module's weights: names, shapes, dtypes and ``samples`` evenly strided
    values of every parameter and buffer (about 1 ms per 100 tensors), as a hex SHA-256."""
    h = hashlib.sha256()
    for name, t in sorted([*module.named_parameters(), *module.named_buffers()], key=lambda kv: kv[0]):
        flat = t.detach().reshape(-1)
        picked = flat[:: max(1, flat.numel() // samples)][:samples].float().cpu()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(picked.numpy().tobytes())
    return h.hexdigest()


def read_meta(store: str | Path) -> dict[str, Any]:
    """A store's ``meta.json``, with a clear error when it is missing."""
    path = Path(store) / META
    if not path.is_file():
        raise FileNotFoundError(f"not a prefix KV store (no {META}): {Path(store)}; build it with `make prefix-kv`")
    return json.loads(path.read_text())
