"""EMA: exponential moving average of the trainable weights, for validation and export.

Only parameters with ``requires_grad`` are averaged (a frozen 7B MLLM is not copied). The averages
swap in for validation (so validation losses and samples come from the EMA weights), are saved in
checkpoints (callback state, so resume is exact) and, with ``export``, written at the end of
training as ``<export>/model.safetensors`` (the EMA of every trainable parameter, plus the
network's buffers) next to ``<export>/config.yaml`` (the system's hyperparameters, to rebuild the
model). With gradient accumulation the average moves once per optimisation step.

Sharded (FSDP2) parameters are DTensors: the averages are kept as DTensors with the same sharding
(each rank averages its own shard), gathered to full tensors for checkpoints and the export (on every
rank: gathering is collective), and sharded again when a checkpoint is restored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor, distribute_tensor


class EMA(Callback):
    """Keeps ``ema = d_n · ema + (1 − d_n) · θ`` after the n-th optimisation step.

    With ``warmup`` the decay grows as ``d_n = min(decay, (1 + n) / (10 + n))`` (n counted from
    ``start_step``), the usual warm-up: a constant 0.999 from step 0 would leave 0.999^1500 ≈ 22 % of
    the random initial weights in the average of a 1,500-step run; with the warm-up that share is
    below 1e-6 after 100 steps, and the average still smooths over the last ~1/(1 − decay) steps.

    Args:
        decay: EMA decay per step (the warm-up's ceiling).
        start_step: steps before which the EMA just copies the weights.
        warmup: grow the decay from 0.1 to ``decay`` as above (``False``: ``decay`` from ``start_step`` on).
        export: folder for the exported EMA weights at the end of training (``None``: no export).
    """

    def __init__(self, decay: float = 0.999, start_step: int = 0, warmup: bool = True, export: str | None = None):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.start_step = start_step
        self.warmup = warmup
        self.export = export
        self.shadow: dict[str, torch.Tensor] = {}
        self._backup: dict[str, torch.Tensor] = {}

    def _params(self, pl_module: LightningModule) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in pl_module.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        params = self._params(pl_module)
        if not self.shadow:  # not restored from a checkpoint
            self.shadow = {n: p.detach().clone() for n, p in params.items()}
        self.shadow = {n: _like(v, params[n]) for n, v in self.shadow.items()}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Strategies with ``restore_checkpoint_after_setup`` (ModelParallelStrategy, so FSDP2) restore callback
        # state after ``on_fit_start``: the restored full CPU tensors are placed (and sharded) again here.
        params = self._params(pl_module)
        self.shadow = {n: _like(v, params[n]) for n, v in self.shadow.items()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # weights change only when the accumulated gradient is applied
        decay = self.decay_at(trainer.global_step)
        for n, p in self._params(pl_module).items():
            self.shadow[n].lerp_(p.detach(), 1.0 - decay)

    def decay_at(self, step: int) -> float:
        """The decay applied after optimisation step ``step`` (1-based: ``trainer.global_step`` after it)."""
        n = step - self.start_step
        if n <= 0:
            return 0.0
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    def _swap(self, pl_module: LightningModule) -> None:
        with torch.no_grad():
            for n, p in self._params(pl_module).items():
                tmp = p.detach().clone()
                p.copy_(self.shadow[n])
                self.shadow[n] = tmp

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.shadow and not trainer.sanity_checking:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.shadow and not trainer.sanity_checking:
            self._swap(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": {n: _full(v).cpu() for n, v in self.shadow.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shadow = dict(state_dict["shadow"])

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.export is None:
            return
        trainable = set(self.shadow)
        state = {n: _full(self.shadow[n] if n in trainable else v).detach().cpu().contiguous()
                 for n, v in pl_module.state_dict().items() if n in trainable or n.startswith("net.")}
        if not trainer.is_global_zero:
            return

        out = Path(self.export)
        out.mkdir(parents=True, exist_ok=True)
        save_file(state, str(out / "model.safetensors.tmp"))
        (out / "model.safetensors.tmp").replace(out / "model.safetensors")  # never a half-written export
        (out / "config.yaml").write_text(yaml.safe_dump(_plain(dict(pl_module.hparams)), sort_keys=False))


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a shard (collective: every rank must call it in the same order)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``value`` on ``param``'s device, sharded like ``param`` when that is a DTensor."""
    if isinstance(param, DTensor) and not isinstance(value, DTensor):
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value.to(param.device)


def _plain(value: Any) -> Any:
    """Hyperparameters as YAML-safe data (config dicts stay; anything else becomes its repr)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)
