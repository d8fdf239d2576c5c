"""SkippedSampleLogger: counts and records the samples a data module could not load.

Datasets never replace a bad sample with a neighbour; the collate function lists it under
``batch["skipped"]``. This callback logs the running count as ``data/skipped`` and appends one
``split<TAB>id<TAB>path<TAB>reason`` line per sample to ``skipped.tsv`` in the run directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class SkippedSampleLogger(Callback):
    """Counts skipped samples and writes them to ``<log_dir>/skipped.tsv``."""

    def __init__(self) -> None:
        self.count = 0

    def _record(self, trainer: Trainer, pl_module: LightningModule, batch: Any, split: str) -> None:
        skipped = batch.get("skipped", []) if isinstance(batch, dict) else []
        if not skipped:
            return
        self.count += len(skipped)
        if trainer.is_global_zero:
            log_dir = Path(trainer.log_dir or trainer.default_root_dir)
            log_dir.mkdir(parents=True, exist_ok=True)
            with open(log_dir / "skipped.tsv", "a") as f:
                for s in skipped:
                    f.write(f"{split}\t{s.id}\t{s.path}\t{s.reason}\n")
        pl_module.log("data/skipped", float(self.count), reduce_fx="max", batch_size=1)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._record(trainer, pl_module, batch, "train")

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self._record(trainer, pl_module, batch, "val")
