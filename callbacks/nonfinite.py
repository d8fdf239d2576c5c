"""Non-finite losses and gradients: detected on the step they happen, logged with the batch's ids, skipped.

Policy: when a training step's loss or any gradient about to be applied is NaN/Inf, that optimizer step
is skipped (every gradient set to None, so the optimizer changes neither weights nor moments; a
learning-rate schedule still advances), a warning names the step, the batch's ``id`` values and what
was non-finite, and ``train/nonfinite_skipped`` counts the skipped batches of the run. After
``max_consecutive`` skipped batches in a row the run stops with a ``FloatingPointError`` naming the
step. The counts are checkpointed. ``reasonaudio fit`` adds this callback to every stage (argument group
``nonfinite``: ``--nonfinite.max_consecutive=N``).

Under DDP/FSDP2 the decision is all-reduced, so every rank skips the same steps.
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch.distributed.tensor import DTensor


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    ok = torch.stack([torch.isfinite(t).all() for t in local]).all() if local else torch.tensor(True)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        bad = (~ok).to(torch.int32).reshape(1)
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)  # one rank's NaN shard skips the step everywhere
        return not bool(bad.item())
    return bool(ok)


class NonFiniteGuard(Callback):
    """Skip optimizer steps with a non-finite loss or gradient; stop after ``max_consecutive`` bad batches in a row.

    Args:
        max_consecutive: skipped batches in a row that end the run (>= 1).
    """

    def __init__(self, max_consecutive: int = 5):
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.in_a_row = 0
        self._ids: Any = None
        self._step = 0
        self._why: list[str] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._ids = batch.get("id") if isinstance(batch, dict) else None
        self._why = []

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        if not _all_finite([loss.detach()]):
            self._why.append(f"loss {loss.detach().float().cpu().tolist()}")

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not self._why and _all_finite([p.grad for p in params]):
            return
        bad = [n for n, p in pl_module.named_parameters() if p.grad is not None
               and not torch.isfinite(p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad).all()]
        if bad:
            self._why.append(f"gradients of {len(bad)} parameters (first: {bad[0]})")
        for p in params:
            p.grad = None  # the optimizer skips parameters without a gradient
        rank_zero_warn(f"[nonfinite] step {trainer.global_step}: {'; '.join(self._why) or 'gradients on another rank'}"
                       f" — optimizer step skipped; batch ids {self._ids}")
        self._why.append("skipped")
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if "skipped" in self._why:
            self.skipped += 1
            self.in_a_row += 1
        else:
            self.in_a_row = 0
        pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False)
        if self.in_a_row >= self.max_consecutive:
            raise FloatingPointError(
                f"{self.in_a_row} training batches in a row had a non-finite loss or gradient (the last at step "
                f"{self._step}, batch ids {self._ids}); stopping (nonfinite.max_consecutive="
                f"{self.max_consecutive}). Resume from the last checkpoint with a lower learning rate or fix the data.")

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped, self.in_a_row = int(state_dict["skipped"]), int(state_dict["in_a_row"])
