"""PrefixKVWriter: stores ``PrefixKVExtraction`` outputs as a prefix KV store inside a feature cache.

Writes into the data module's ``store_dir`` (``<cache>/prefix_kv/<name>``, see
``reasonaudio.data_modules.features.CachePromptDataModule``): ``meta.json`` with the backbone's fingerprint,
then one ``<row>.safetensors`` per clip, each written atomically, so an interrupted run resumes
with the rows still missing. A store made by another backbone is never mixed into.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from reasonaudio.data_modules.features import stored_rows
from reasonaudio.models.prefix_kv import META, read_meta, save_prefix


class PrefixKVWriter(BasePredictionWriter):
    """Writes one stored prefix per clip, batch by batch; prints the store's size at the end (rank 0; the
    count written is this rank's)."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.bytes = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict":
            raise ValueError(f"PrefixKVWriter belongs to `reasonaudio predict`, not {stage!r}")
        trainer.predict_loop.return_predictions = False  # outputs go to disk; Lightning must not also keep them all
        dm = trainer.datamodule
        if not hasattr(dm, "store_dir"):
            raise TypeError(f"PrefixKVWriter needs a CachePromptDataModule, got {type(dm).__name__}")
        self.store = dm.store_dir
        cond = pl_module.conditioner
        meta = {"fingerprint": cond.prefix_fingerprint(), "cache": str(dm.cache)}
        path = self.store / META
        if path.exists():  # every rank checks before anyone writes, so a refusal stops all ranks alike
            old = read_meta(self.store)
            if old.get("fingerprint") != meta["fingerprint"]:
                raise ValueError(f"{self.store} holds prefixes of another backbone or setting "
                                 f"({old.get('fingerprint')}); choose another store name")
        elif trainer.is_global_zero:
            self.store.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")  # atomic: another rank may be reading it at this moment
            tmp.write_text(json.dumps(meta, indent=2))
            tmp.replace(path)
        trainer.strategy.barrier()

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        for row, stored in zip(prediction["row"], prediction["prefix"]):
            save_prefix(self.store / f"{row}.safetensors", stored)
            self.bytes += stored.nbytes

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            return
        done = len(stored_rows(self.store))
        print(f"prefix KV store {self.store}: {done} clips; this process wrote {self.bytes / 2 ** 20:.1f} MiB")
