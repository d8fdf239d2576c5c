"""The feature cache: its on-disk format, a reader, and ``CachedFeatureDataModule`` for training from it.

Layout of a cache folder (written by ``callbacks.feature_writer.FeatureCacheWriter``)::

    meta.json            {"num_clips", "arrays": {name: [per-clip shape]}, "source": ..., "latent_stats": ...}
    index.jsonl          one row per clip, in row order: id, caption, label, has_video, corpus
    <name>.f32           float32 memmap [num_clips, *shape] per fixed-size array (latent_mean, latent_std, sync)
    done.u8              uint8 memmap [num_clips]: 1 once a clip's row is written
    mllm/<row>.npy       uint8 [Tm, 3, h, w] MLLM frames (video clips only; sizes vary with aspect ratio)
    skipped.tsv          clips that could not be decoded: id, path, reason
    sync_encoder.pt      the Synchformer visual encoder's weights that made ``sync`` (for generation)

Rows are fixed by the source's record order, so an interrupted extraction resumes by filling the
rows whose ``done`` flag is still 0 (data modules skip the others with ``skip_done_in``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from data_modules.sampling import check_weights, corpus_sampler

META = "meta.json"
INDEX = "index.jsonl"
DONE = "done.u8"
SYNC_WEIGHTS = "sync_encoder.pt"


class FeatureCache:
    """Read access to a cache folder (memory-mapped; cheap to open in every worker).

    Args:
        root: the cache folder.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / META).is_file():
            raise FileNotFoundError(f"not a feature cache (no {META}): {self.root}")
        self.meta = json.loads((self.root / META).read_text())
        self.rows = [json.loads(line) for line in (self.root / INDEX).read_text().splitlines() if line.strip()]
        n = self.meta["num_clips"]
        if len(self.rows) != n:
            raise ValueError(f"{self.root / INDEX}: {len(self.rows)} rows, meta.json says {n}")
        self.arrays = {name: np.memmap(self.root / f"{name}.f32", dtype=np.float32, mode="r", shape=(n, *shape))
                       for name, shape in self.meta["arrays"].items()}
        self.done = np.memmap(self.root / DONE, dtype=np.uint8, mode="r", shape=(n,))

    def __len__(self) -> int:
        return len(self.rows)

    def done_ids(self) -> set[str]:
        """Ids of the clips whose features are written."""
        return {r["id"] for r, d in zip(self.rows, self.done) if d}


class CachedFeatureDataset(Dataset):
    """Training items from one cache: only rows that were written.

    Each item re-samples its latent from the stored posterior (``mean + std · ε``), so every epoch sees
    a fresh draw, as MMAudio does, and normalises it per channel with the VAE's latent statistics
    stored in ``meta.json`` (the DiT's input space).

    Returns dicts with ``id``, ``latent`` ``[T, C]``, ``sync`` ``[Ts, 768]`` (when cached), ``caption``,
    ``has_video``, ``has_text``, ``corpus`` and, when cached, ``mllm_video`` ``[Tm, 3, h, w]`` uint8.
    """

    def __init__(self, root: str | Path, sample_latent: bool = True):
        self.cache = FeatureCache(root)
        self.sample_latent = sample_latent
        if "latent_stats" not in self.cache.meta:
            raise ValueError(f"{self.cache.root / META} has no latent_stats: the cache was not finished by "
                             "FeatureCacheWriter, so its latents cannot be normalised")
        stats = self.cache.meta["latent_stats"]
        self.latent_mean, self.latent_std = torch.tensor(stats["mean"]), torch.tensor(stats["std"])
        self.valid = np.flatnonzero(np.asarray(self.cache.done))

    def __len__(self) -> int:
        return len(self.valid)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.valid[i])
        meta = self.cache.rows[row]
        mean = torch.from_numpy(np.array(self.cache.arrays["latent_mean"][row]))
        latent = mean
        if self.sample_latent:
            std = torch.from_numpy(np.array(self.cache.arrays["latent_std"][row]))
            latent = mean + std * torch.randn_like(std)
        latent = (latent - self.latent_mean) / self.latent_std  # [T, C]
        item = {"id": meta["id"], "latent": latent, "caption": meta["caption"], "has_video": meta["has_video"],
                "has_text": bool(meta["caption"].strip()), "corpus": meta.get("corpus", "")}
        if "sync" in self.cache.arrays:
            item["sync"] = torch.from_numpy(np.array(self.cache.arrays["sync"][row]))
        frames = self.cache.root / "mllm" / f"{row}.npy"
        if meta["has_video"] and frames.exists():
            item["mllm_video"] = torch.from_numpy(np.load(frames))
        return item


def collate_features(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors (``latent`` ``[B, T, C]``, ``sync`` ``[B, Ts, 768]``), keep strings and frames as lists."""
    batch: dict[str, Any] = {k: [x[k] for x in items] for k in ("id", "caption", "corpus")}
    batch["latent"] = torch.stack([x["latent"] for x in items])
    batch["has_video"] = torch.tensor([x["has_video"] for x in items], dtype=torch.bool)
    batch["has_text"] = torch.tensor([x["has_text"] for x in items], dtype=torch.bool)
    if all("sync" in x for x in items):
        batch["sync"] = torch.stack([x["sync"] for x in items])
    batch["mllm_video"] = [x.get("mllm_video") for x in items]
    return batch


class CachedFeatureDataModule(LightningDataModule):
    """Trains from one or more caches, mixing them with per-cache weights (e.g. VT2A + T2A).

    Args:
        train: training cache folders.
        val: validation cache folders (latents from the posterior mean, not sampled).
        weights: relative share of each training cache per epoch (default: proportional to size).
        samples_per_epoch: items per training epoch (default: the total size).
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        seed: sampling seed.
    """

    def __init__(self, train: list[str], val: list[str] | None = None, weights: list[float] | None = None,
                 samples_per_epoch: int | None = None, batch_size: int = 16, num_workers: int = 0, seed: int = 0):
        super().__init__()
        check_weights(weights, len(train))
        self.train_roots, self.val_roots = list(train), list(val or [])
        self.weights = weights
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        self.train_sets = [CachedFeatureDataset(r) for r in self.train_roots]
        self.val_sets = [CachedFeatureDataset(r, sample_latent=False) for r in self.val_roots]
        empty = [r for r, ds in zip(self.train_roots, self.train_sets) if len(ds) == 0]
        if empty:
            raise ValueError(f"feature caches with no written clips: {empty}")

    def train_dataloader(self) -> DataLoader:
        sampler = corpus_sampler([len(ds) for ds in self.train_sets], self.weights, self.samples_per_epoch, self.seed)
        return DataLoader(ConcatDataset(self.train_sets), batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=collate_features)

    def val_dataloader(self) -> DataLoader:
        if not self.val_sets:
            raise ValueError("CachedFeatureDataModule: no validation caches configured")
        return DataLoader(ConcatDataset(self.val_sets), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate_features)
