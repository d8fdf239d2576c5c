"""Whole synthetic clips held in memory, for training the synchrony encoder (stage ``sync``).

``SyncTrain`` cuts dozens of shifted (video, audio) pairs out of every clip per epoch, so decoding
the mp4 files on every step would dominate a CPU run. This data module decodes each clip once in
``setup`` (Synchformer frames at ``sync_size`` and the mono audio, resampled to 16 kHz when the
preset's rate differs) and then serves them from memory:

=========  ==========================  =====================================
key        shape                       meaning
=========  ==========================  =====================================
id         list[str]                   clip ids
frames     ``[B, T, 3, H, H]`` uint8   25-fps frames (T = 25 · duration)
wav        ``[B, N]`` float32          16 kHz mono audio (N = 16000 · duration)
=========  ==========================  =====================================

Training samples clips with replacement (``samples_per_epoch`` per epoch, so a small corpus still
makes long epochs); validation goes through the held-out clips once, in order. Clips that fail to
decode are skipped and logged with their reason, as everywhere else (DESIGN §8).
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from reasonaudio.config import SYNC_FPS
from reasonaudio.data_modules.clips import SkippedSample
from reasonaudio.data_modules.resumable import ResumableLoader
from reasonaudio.data_modules.synthetic import SyntheticDataModule
from reasonaudio.metrics.backbones import resample
from reasonaudio.models.synchformer import SYNC_SAMPLE_RATE

log = logging.getLogger(__name__)


class MemoryClips(Dataset):
    """Decoded clips: ``{"id", "frames" [T, 3, H, H] uint8, "wav" [N] 16 kHz}`` per item."""

    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def collate_memory_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``frames`` and ``wav``; list the ids."""
    return {"id": [x["id"] for x in items], "frames": torch.stack([x["frames"] for x in items]),
            "wav": torch.stack([x["wav"] for x in items])}


class SyntheticSyncDataModule(SyntheticDataModule):
    """The synthetic corpus decoded once into memory (see the module docstring).

    Args:
        samples_per_epoch: clips drawn (with replacement) per training epoch.
        **kwargs: :class:`~reasonaudio.data_modules.synthetic.SyntheticDataModule` arguments (``root``, ``val_root``,
            ``duration``, ``audio_preset``, ``sync_size``, ``batch_size``, ...). Synchformer frames are
            always decoded; MLLM frames never.
    """

    def __init__(self, samples_per_epoch: int = 4096, **kwargs):
        kwargs["load_sync_video"] = True
        kwargs["load_mllm_video"] = False
        super().__init__(**kwargs)
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.samples_per_epoch = samples_per_epoch
        self.memory: dict[str, MemoryClips] = {}

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        for split in sorted(self._needed() - {"predict"}):
            if split not in self.memory:
                self.memory[split] = self._decode(split)

    def _decode(self, split: str) -> MemoryClips:
        dataset = self.dataset(split)
        rate = dataset.seq.audio.sample_rate
        frames = round(dataset.seq.duration * SYNC_FPS)
        samples = round(dataset.seq.duration * SYNC_SAMPLE_RATE)
        items = []
        for i in range(len(dataset)):
            item = dataset[i]
            if isinstance(item, SkippedSample):
                log.warning("sync: skipping %s (%s): %s", item.id, item.path, item.reason)
                continue
            wav = resample(item["wav"][None].float(), rate, SYNC_SAMPLE_RATE)[0, :samples]
            items.append({"id": item["id"], "frames": item["sync_video"][:frames], "wav": wav})
        if not items:
            raise ValueError(f"no clip of split {split!r} could be decoded")
        return MemoryClips(items)

    def train_dataloader(self) -> DataLoader:
        data = self.memory["train"]
        # ResumableLoader re-seeds the sampler's generator per epoch and checkpoints the position (exact resume).
        sampler = RandomSampler(data, replacement=True, num_samples=self.samples_per_epoch, generator=torch.Generator())
        return ResumableLoader(data, seed=self.seed, batch_size=self.batch_size, sampler=sampler,
                               collate_fn=collate_memory_clips)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.memory["val"], batch_size=self.batch_size, shuffle=False,
                          collate_fn=collate_memory_clips)
