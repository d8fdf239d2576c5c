"""How systems record their hyperparameters so that ``load_from_checkpoint`` can rebuild them.

Built by LightningCLI, a system's injected modules arrive with their parsed config (``class_path``
dicts), which Lightning stores instead of the objects; ``load_from_checkpoint`` later rebuilds the
modules from it. Built any other way (plain Python, or by ``load_from_checkpoint`` itself), the
arguments are live modules: storing those would pickle weights twice, and deep-copying modules with
classic weight norm (BigVGAN's key-compatible layers) fails, so they are left out.
"""
from __future__ import annotations

import inspect
from typing import Sequence

from lightning.pytorch import LightningModule
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters


def save_system_hparams(system: LightningModule, injected: Sequence[str]) -> None:
    """``save_hyperparameters`` from ``system.__init__``, keeping ``injected`` arguments only as CLI config."""
    from_cli = _given_hyperparameters.get() is not None
    init_frame = inspect.currentframe().f_back  # the system's __init__, whose arguments are recorded
    system.save_hyperparameters(ignore=[] if from_cli else list(injected), frame=init_frame)
