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

With ``edits_per_clip`` E > 0 every clip also carries E counterfactual soundtracks, each with one impact
removed or added (:func:`~reasonaudio.data_modules.synthetic.edit_impact`, alternating), for the synchrony
reward's edit ranking (``SyncTrain(edit_weight=...)``):

===========  ========================  ==============================================
edited_wav   ``[B, E, N]`` float32     the edited soundtracks, 16 kHz
edit_time    ``[B, E]`` float32        time (s) of the removed or added impact
===========  ========================  ==============================================

An edited soundtrack is rendered from the clip's ground truth (``gt/<id>.json``) and put through the same
path as the clip's own audio: muxed as AAC into a copy of the clip's mp4, then decoded like it (the
rendering of an unedited scene comes back bit-identical to the clip's audio), so the codec leaves no cue
that tells an edited soundtrack from a real one. Edit e of clip ``synth_<i>`` of a corpus made with seed s is
drawn from ``numpy.random.default_rng([s, i, e])`` (the scene's own ``seed``): the same in every run. A clip
that cannot be edited (no impact to remove, no free frame for one more) is skipped with its reason logged.

Training samples clips with replacement (``samples_per_epoch`` per epoch, so a small corpus still
makes long epochs); validation goes through the held-out clips once, in order. Clips that fail to
decode are skipped and logged with their reason, as everywhere else (DESIGN §8).
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from reasonaudio.config import SYNC_FPS, SequenceConfig
from reasonaudio.data_modules.clips import SkippedSample
from reasonaudio.data_modules.resumable import ResumableLoader
from reasonaudio.data_modules.synthetic import EDITS, SyntheticDataModule, edit_impact, mix_gain, render_audio
from reasonaudio.media import load_audio
from reasonaudio.media.write import mux_audio
from reasonaudio.metrics.backbones import resample
from reasonaudio.models.synchformer import SYNC_SAMPLE_RATE
from reasonaudio.synthetic_world import ground_truth_file, read_ground_truth

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
    """Stack ``frames``, ``wav`` (and ``edited_wav``, ``edit_time`` when the clips have them); list the ids."""
    batch = {"id": [x["id"] for x in items]}
    for key in ("frames", "wav", "edited_wav", "edit_time"):
        if key in items[0]:
            batch[key] = torch.stack([x[key] for x in items])
    return batch


class SyntheticSyncDataModule(SyntheticDataModule):
    """The synthetic corpus decoded once into memory (see the module docstring).

    Args:
        samples_per_epoch: clips drawn (with replacement) per training epoch.
        edits_per_clip: counterfactual soundtracks per clip, one impact removed or added (module docstring);
            0 for none.
        **kwargs: :class:`~reasonaudio.data_modules.synthetic.SyntheticDataModule` arguments (``root``, ``val_root``,
            ``duration``, ``audio_preset``, ``sync_size``, ``batch_size``, ...). Synchformer frames are
            always decoded; MLLM frames never.
    """

    def __init__(self, samples_per_epoch: int = 4096, edits_per_clip: int = 0, **kwargs):
        kwargs["load_sync_video"] = True
        kwargs["load_mllm_video"] = False
        super().__init__(**kwargs)
        if samples_per_epoch < 1 or edits_per_clip < 0:
            raise ValueError(f"need samples_per_epoch >= 1 and edits_per_clip >= 0, got {samples_per_epoch}, "
                             f"{edits_per_clip}")
        self.samples_per_epoch = samples_per_epoch
        self.edits_per_clip = edits_per_clip
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
            if self.edits_per_clip:
                try:
                    items[-1].update(self._edits(split, item, dataset.seq, samples))
                except ValueError as e:
                    log.warning("sync: skipping %s (%s): no edited soundtrack: %s", item["id"], item["path"], e)
                    items.pop()
        if not items:
            raise ValueError(f"no clip of split {split!r} could be decoded")
        return MemoryClips(items)

    def _edits(self, split: str, item: dict[str, Any], seq: SequenceConfig, samples: int) -> dict[str, torch.Tensor]:
        """``edited_wav`` ``[E, N]`` and ``edit_time`` ``[E]`` of one decoded clip (module docstring)."""
        root = self.roots["train" if split == "train" else "val"]
        scene = read_ground_truth(ground_truth_file(root, item["id"]))
        corpus_seed, index = (int(x) for x in scene["seed"])
        scene["mix_scale"] = mix_gain(scene)  # the original's gain, rendered once for all its edits
        wavs, times = [], []
        for e in range(self.edits_per_clip):
            edited, at = edit_impact(scene, EDITS[e % len(EDITS)], np.random.default_rng([corpus_seed, index, e]))
            wav = as_clip_audio(item["path"], render_audio(edited), scene["sample_rate"], seq.duration,
                                seq.audio.sample_rate)
            wavs.append(wav[:samples])
            times.append(at)
        return {"edited_wav": torch.stack(wavs), "edit_time": torch.tensor(times, dtype=torch.float32)}

    def train_dataloader(self) -> DataLoader:
        data = self.memory["train"]
        # ResumableLoader re-seeds the sampler's generator per epoch and checkpoints the position (exact resume).
        sampler = RandomSampler(data, replacement=True, num_samples=self.samples_per_epoch, generator=torch.Generator())
        return ResumableLoader(data, seed=self.seed, batch_size=self.batch_size, sampler=sampler,
                               collate_fn=collate_memory_clips)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.memory["val"], batch_size=self.batch_size, shuffle=False,
                          collate_fn=collate_memory_clips)


def as_clip_audio(video: str | Path, wav: np.ndarray, sample_rate: int, duration: float,
                  load_rate: int) -> torch.Tensor:
    """``wav`` as the sync stage hears a clip's own audio: muxed as AAC into a copy of ``video``, decoded at
    ``load_rate`` for ``duration`` s (zero-padded), resampled to 16 kHz. ``[N]`` float32."""
    with tempfile.TemporaryDirectory() as tmp:
        muxed = Path(tmp) / "audio.mp4"
        mux_audio(video, wav, sample_rate, muxed)
        out = load_audio(muxed, load_rate, duration=duration).wav
    out = torch.nn.functional.pad(out, (0, max(0, round(duration * load_rate) - out.shape[0])))
    return resample(out[None].float(), load_rate, SYNC_SAMPLE_RATE)[0]
