"""MixedDataModule: VT2A and T2A corpora in one training stream with per-corpus weights.

Training draws items with replacement so that corpus ``c`` supplies a fraction
``weights[c] / sum(weights)`` of each epoch regardless of its size (small corpora are
oversampled, large ones undersampled), like MMAudio's repeated audio-text sets. Validation and
test concatenate the corpora's own splits unweighted. Audio-only items keep ``has_video=False``.
"""
from __future__ import annotations

from collections import Counter

from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader

from reasonaudio.data_modules.clips import ClipDataModule, collate_clips
from reasonaudio.data_modules.resumable import ResumableLoader
from reasonaudio.data_modules.sampling import check_weights, corpus_sampler


class MixedDataModule(LightningDataModule):
    """Weighted mixture of corpus data modules.

    Args:
        corpora: the corpus data modules (each with its own manifests and media roots).
        weights: relative sampling weight per corpus (default: proportional to size, i.e. no reweighting).
        samples_per_epoch: items per training epoch (default: the total size of the corpora).
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        seed: sampling seed.
    """

    def __init__(self, corpora: list[ClipDataModule], weights: list[float] | None = None,
                 samples_per_epoch: int | None = None, batch_size: int = 8, num_workers: int = 0, seed: int = 0):
        super().__init__()
        if not corpora:
            raise ValueError("MixedDataModule needs at least one corpus")
        check_weights(weights, len(corpora))
        self.corpora = corpora
        self.weights = weights
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def _split(self, split: str) -> list:
        return [ds for ds in (c.dataset(split) for c in self.corpora) if ds is not None and len(ds)]

    def _train_sizes(self) -> list[int]:
        return [len(c.dataset("train") or []) for c in self.corpora]

    def expected_mix(self) -> dict[str, float]:
        """The fraction of training items each corpus supplies, by corpus name."""
        sizes = self._train_sizes()
        weights = self.weights or [float(n) for n in sizes]
        live = [(c.corpus or type(c).__name__, w) for c, w, n in zip(self.corpora, weights, sizes) if n]
        total = sum(w for _, w in live)
        mix: Counter = Counter()
        for name, w in live:
            mix[name] += w / total
        return dict(mix)

    def train_dataloader(self) -> DataLoader:
        sizes = self._train_sizes()
        if not any(sizes):
            raise ValueError("MixedDataModule: no corpus has a train split")
        sampler = corpus_sampler(sizes, self.weights, self.samples_per_epoch, self.seed)
        return ResumableLoader(ConcatDataset(self._split("train")), seed=self.seed, batch_size=self.batch_size,
                               sampler=sampler, num_workers=self.num_workers, collate_fn=collate_clips)

    def _eval_loader(self, split: str) -> DataLoader:
        datasets = self._split(split)
        if not datasets:
            raise ValueError(f"MixedDataModule: no corpus has a {split!r} split")
        return DataLoader(ConcatDataset(datasets), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate_clips)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
