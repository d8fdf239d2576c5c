"""Stored prefix KV caches: a query conditioner's frozen prompt pass, computed once per clip and kept on disk.

The MLLM is frozen and its learnable queries come after the video and the caption under causal
attention, so the keys and values of the prompt ("prefix") never change during training. The
``prefix_kv`` stage (``make prefix-kv``) runs every clip's full prompt (its video and its caption)
once and stores, per clip, a :class:`StoredPrefix`; training then runs only the queries against it
(:meth:`QueryConditioner.query_states_stored`). A dropped caption or video changes only the tail of
the prompt: the stored keys and values are reused up to where the prompts part, and the few tokens
after that run live (exact, see the conditioner).

On disk: one safetensors file per clip (``<row>.safetensors``: ``ids`` [L], ``positions`` [A, L],
``kv`` [layers, 2, kv_heads, L, head_dim], ``grid`` [3] or [0]; for a clip with video also
``alt.ids`` / ``alt.positions`` / ``alt.kv``, its caption-only prompt; metadata: the clip's id,
caption and frame shape) plus a ``meta.json`` with the backbone's fingerprint
(:func:`weights_digest`, dtype, prompt settings), so a store is never read by another model.
Per token a store costs ``layers · 2 · kv_heads · head_dim`` values: 57 KB in bf16 for
Qwen2.5-VL-7B (28 layers, 4 KV heads of 128), about 57 MB for an 8 s clip's ~1,000-token prompt, plus
~10 % for its caption-only prompt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

META = "meta.json"
"""The store's description: fingerprint of the backbone, dtype, KV shape."""
STORE_FORMAT = 2
"""Version of the file layout (2: every clip with video also stores its caption-only prompt)."""


@dataclass
class StoredPrefix:
    """One clip's prompt and the frozen decoder's keys / values on it.

    Attributes:
        ids: prompt token ids ``[L]`` (no queries).
        positions: their position ids ``[A, L]`` (A = 3 for mRoPE, 1 for 1-D RoPE).
        kv: keys and values after RoPE, ``[layers, 2, kv_heads, L, head_dim]``.
        grid: the video's patch grid ``(t, h, w)``, None without a video.
        clip: what the prompt was made from (``id``, ``caption``, ``frames`` shape), checked against the cache.
        source: the file it was read from ("" when computed in memory), for error messages.
        alt: for a clip with video, its caption-only prompt (the one a dropped video leaves), stored too so
            that such items reuse it whole instead of running the caption live (~10 % more disk).
    """

    ids: torch.Tensor
    positions: torch.Tensor
    kv: torch.Tensor
    grid: tuple[int, int, int] | None
    clip: dict[str, str] = field(default_factory=dict)
    source: str = ""
    alt: StoredPrefix | None = None

    def __post_init__(self):
        length = self.ids.shape[0]
        if self.ids.ndim != 1 or self.positions.shape[-1] != length or self.kv.ndim != 5 or self.kv.shape[3] != length:
            raise ValueError(f"inconsistent stored prefix{' ' + self.source if self.source else ''}: ids "
                             f"{tuple(self.ids.shape)}, positions {tuple(self.positions.shape)}, kv {tuple(self.kv.shape)}")

    def describe(self, i: int) -> str:
        """How to name this prefix in an error: its file, else its batch position."""
        return self.source or f"stored prefix {i}"

    @property
    def nbytes(self) -> int:
        own = sum(t.numel() * t.element_size() for t in (self.ids, self.positions, self.kv))
        return own + (self.alt.nbytes if self.alt is not None else 0)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> StoredPrefix:
        """A copy whose keys/values (its own and its alternative's) are on ``device``; ids and positions stay."""
        alt = self.alt.to(device, non_blocking) if self.alt is not None else None
        return dataclasses.replace(self, kv=self.kv.to(device, non_blocking=non_blocking), alt=alt)


def clip_stamp(clip_id: str, caption: str, frames_shape: Sequence[int] | torch.Tensor | None) -> dict[str, str]:
    """What a stored prompt was made from: the clip's id, caption and MLLM frames' shape (or a frames tensor)."""
    shape = tuple(frames_shape.shape) if isinstance(frames_shape, torch.Tensor) else frames_shape
    return {"id": clip_id, "caption": caption, "frames": "x".join(map(str, shape)) if shape is not None else ""}


def save_prefix(path: str | Path, prefix: StoredPrefix) -> None:
    """Write ``prefix`` to ``path`` atomically and durably (a crash leaves either the old file or none)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    grid = torch.tensor(prefix.grid if prefix.grid is not None else [], dtype=torch.long)
    tensors = {"ids": prefix.ids.long().contiguous(), "positions": prefix.positions.long().contiguous(),
               "kv": prefix.kv.contiguous(), "grid": grid}
    if prefix.alt is not None:
        tensors.update({"alt.ids": prefix.alt.ids.long().contiguous(),
                        "alt.positions": prefix.alt.positions.long().contiguous(), "alt.kv": prefix.alt.kv.contiguous()})
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in prefix.clip.items()})
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_prefix(path: str | Path) -> StoredPrefix:
    """Read a :func:`save_prefix` file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            t = {k: f.get_tensor(k) for k in f.keys()}
            clip = dict(f.metadata() or {})
    except FileNotFoundError:
        raise FileNotFoundError(f"stored prefix not found: {path}") from None
    except Exception as err:  # truncated or foreign files
        raise ValueError(f"{path}: not a stored prefix file ({err})") from None
    missing = {"ids", "positions", "kv", "grid"} - set(t)
    if any(k.startswith("alt.") for k in t):
        missing |= {"alt.ids", "alt.positions", "alt.kv"} - set(t)
    if missing:
        raise ValueError(f"{path}: not a stored prefix file (missing {sorted(missing)})")
    grid = tuple(int(g) for g in t["grid"]) if t["grid"].numel() else None
    alt = StoredPrefix(t["alt.ids"], t["alt.positions"], t["alt.kv"], None, source=f"{path} (caption-only prompt)") \
        if "alt.kv" in t else None
    return StoredPrefix(t["ids"], t["positions"], t["kv"], grid, clip, str(path), alt)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over every parameter's and buffer's name, shape, dtype and bytes (a 7B model: ~10 s, once)."""
    h = hashlib.sha256()
    for name, t in sorted([*module.named_parameters(), *module.named_buffers()], key=lambda kv: kv[0]):
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(memoryview(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def read_meta(store: str | Path) -> dict[str, Any]:
    """A store's ``meta.json``, with a clear error when it is missing or unreadable."""
    path = Path(store) / META
    if not path.is_file():
        raise FileNotFoundError(f"not a prefix KV store (no {META}): {Path(store)}; build it with `make prefix-kv`")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable prefix KV store description ({err})") from None
