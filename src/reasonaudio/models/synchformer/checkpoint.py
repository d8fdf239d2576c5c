"""Synchformer weight files: the ``make sync`` safetensors export (:func:`save_synchformer`, which records
the config, and :func:`read_export_config`) and reading a state dict from it or from the official
``synchformer_state_dict.pth``.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from reasonaudio.models.synchformer.config import SynchformerConfig

if TYPE_CHECKING:  # the model module imports this one
    from reasonaudio.models.synchformer.model import Synchformer


EXPORT_FORMAT = "reasonaudio.synchformer/1"
"""``format`` entry of the safetensors metadata that :func:`save_synchformer` writes."""


def save_synchformer(model: Synchformer, path: str | os.PathLike) -> Path:
    """Write ``model``'s state dict (checkpoint key layout) and its config into one safetensors file.

    The config travels in the metadata (``config``: JSON), so :meth:`Synchformer.from_export` and
    :meth:`SynchformerVisualEncoder.from_export` rebuild the model from the file alone, and
    ``load_checkpoint`` refuses it for a model of another config. Written atomically (``.tmp`` then rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": EXPORT_FORMAT, "config": json.dumps(model.config.to_dict())})
    tmp.replace(path)
    return path


def read_export_config(path: str | os.PathLike) -> SynchformerConfig | None:
    """The config a :func:`save_synchformer` file records, or None for any other file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Synchformer checkpoint not found: {path}")
    if path.suffix != ".safetensors":
        return None

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != EXPORT_FORMAT:
        return None
    return SynchformerConfig(**json.loads(meta["config"]))


def _read_state_dict(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """The flat state dict in ``path`` (or its ``"model"`` entry), read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Synchformer checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} does not load with weights_only=True; save its state dict alone "
                         f"(torch.save(ckpt['model'], ...)) as MMAudio did") from err
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state
