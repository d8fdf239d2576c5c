"""FeatureCacheWriter: stores ``FeatureExtraction.predict_step`` outputs into a feature cache folder.

Rows follow the source data module's full record order (``records(predict_split)``), so a rerun with
the same source reopens the cache and fills the rows still missing; pair it with the data module's
``skip_done_in: <cache folder>`` so finished clips are not even decoded again. A cache built from a
different source is never overwritten. Format: ``reasonaudio.data_modules.features``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from reasonaudio.data_modules.features import DONE, INDEX, META, SYNC_HASH, SYNC_WEIGHTS


class FeatureCacheWriter(BasePredictionWriter):
    """Writes features batch by batch into memory-mapped arrays.

    Args:
        output: the cache folder.
    """

    def __init__(self, output: str):
        super().__init__(write_interval="batch")
        self.output = Path(output)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # In setup, not on_predict_start: Lightning skips the predict loop's hooks when every clip
        # is already done, and the source check must still run.
        if stage != "predict":
            raise ValueError(f"FeatureCacheWriter belongs to `reasonaudio predict`, not {stage!r}")
        trainer.predict_loop.return_predictions = False  # outputs go to disk; Lightning must not also keep them all
        dm = trainer.datamodule
        records = dm.records(dm.predict_split)
        if not records:
            raise ValueError(f"{type(dm).__name__} has no records in split {dm.predict_split!r}")
        shapes = {k: list(v) for k, v in pl_module.feature_shapes().items()}
        meta = {"num_clips": len(records), "arrays": shapes, "source": type(dm).__name__,
                "split": dm.predict_split, "duration": pl_module.seq.duration, "preset": pl_module.seq.audio.name,
                "vae_checkpoint": pl_module.hparams.get("vae_checkpoint"),
                "sync_checkpoint": pl_module.hparams.get("sync_checkpoint")}
        rows = [{"id": r.id, "caption": r.caption, "label": r.label, "has_video": r.has_video, "corpus": r.corpus}
                for r in records]
        if trainer.is_global_zero:
            self._open_or_create(meta, rows)
        trainer.strategy.barrier()
        n = len(records)
        self.row_of = {r["id"]: i for i, r in enumerate(rows)}
        self.arrays = {k: np.memmap(self.output / f"{k}.f32", dtype=np.float32, mode="r+", shape=(n, *s))
                       for k, s in shapes.items()}
        self.done = np.memmap(self.output / DONE, dtype=np.uint8, mode="r+", shape=(n,))

    def _open_or_create(self, meta: dict, rows: list[dict]) -> None:
        meta_path = self.output / META
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            old_ids = [json.loads(line)["id"] for line in (self.output / INDEX).read_text().splitlines() if line]
            keys = ("num_clips", "arrays", "duration", "preset", "vae_checkpoint", "sync_checkpoint")
            same = {k: old.get(k) for k in keys} == {k: meta[k] for k in keys}
            if not same or old_ids != [r["id"] for r in rows]:
                raise ValueError(f"{self.output} holds a feature cache of another source or shape; "
                                 "choose a new output folder")
            return  # resume: keep the rows already written
        self.output.mkdir(parents=True, exist_ok=True)
        n = meta["num_clips"]
        for k, s in meta["arrays"].items():
            np.memmap(self.output / f"{k}.f32", dtype=np.float32, mode="w+", shape=(n, *s)).flush()
        np.memmap(self.output / DONE, dtype=np.uint8, mode="w+", shape=(n,)).flush()
        (self.output / INDEX).write_text("".join(json.dumps(r) + "\n" for r in rows))
        meta_path.write_text(json.dumps(meta, indent=2))  # written last: its presence means "allocated"

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The VAE's weights (and its latent statistics) are loaded in the system's setup, after ours.
        vae = pl_module.vae
        sync = pl_module.sync_encoder
        if trainer.is_global_zero and sync is not None:
            # Generation must see the tokens training saw: keep the encoder's exact weights with the
            # cache (a random-weight demo encoder could not be rebuilt otherwise).
            path = self.output / SYNC_WEIGHTS
            state = {k: v.cpu() for k, v in sync.state_dict().items()}
            if path.exists():
                old = torch.load(path, weights_only=True)
                if old.keys() != state.keys() or any(not torch.equal(old[k], state[k]) for k in state):
                    raise ValueError(f"{self.output} was built with other Synchformer weights; choose a new folder")
            else:
                torch.save(state, path)
        if trainer.is_global_zero and sync is not None:
            # Caches whose sync tokens came from other weights must not be mixed (CachedFeatureDataModule).
            meta = json.loads((self.output / META).read_text())
            meta[SYNC_HASH] = sync.weights_hash()
            (self.output / META).write_text(json.dumps(meta, indent=2))
        if trainer.is_global_zero and hasattr(vae, "latent_mean"):
            meta = json.loads((self.output / META).read_text())
            meta["latent_stats"] = {"mean": vae.latent_mean.flatten().tolist(), "std": vae.latent_std.flatten().tolist()}
            (self.output / META).write_text(json.dumps(meta, indent=2))

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        if prediction is None:
            return
        for skipped in prediction.get("skipped", []):
            with open(self.output / "skipped.tsv", "a") as f:
                f.write(f"{skipped.id}\t{skipped.path}\t{skipped.reason}\n")
        for i, clip_id in enumerate(prediction["id"]):
            row = self.row_of[clip_id]
            for name, array in self.arrays.items():
                array[row] = prediction[name][i].numpy()
            frames = prediction.get("mllm_video")
            if frames is not None and frames[i] is not None:
                (self.output / "mllm").mkdir(exist_ok=True)
                np.save(self.output / "mllm" / f"{row}.npy", frames[i].numpy())
        for array in self.arrays.values():
            array.flush()
        # Flags last: a row counts as done only after its data reached the file.
        for clip_id in prediction["id"]:
            self.done[self.row_of[clip_id]] = 1
        self.done.flush()
