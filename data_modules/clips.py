"""The clip dataset every corpus module shares: decode, fit to the sequence contract, batch.

An item is a dict (see :func:`collate_clips` for the batch):

=============  ==============================  ==========================================
key            shape / type                    meaning
=============  ==============================  ==========================================
id             str                             ``<ytid>_<start:06d>`` or the corpus id
path           str                             the media file
wav            ``[S]`` float32                 mono audio, ``S = SequenceConfig.num_samples``
wav_mask       ``[S]`` bool                    False on padding
caption        str                             Think caption, plain caption, or ""
label          str                             class label / plain caption (may be "")
has_video      bool                            False for audio-only (T2A) corpora
has_text       bool                            False when the caption is empty
sync_video     ``[Ts, 3, H, H]`` uint8         25 fps, short side → H, centre crop (H=224)
sync_mask      ``[Ts]`` bool                   False on padding / audio-only items
mllm_video     ``[Tm, 3, h, w]`` uint8         ``mllm_fps`` frames, longest side ≤ max side
mllm_mask      ``[Tm]`` bool                   False on padding (None without video)
corpus         str                             which corpus the item came from
=============  ==============================  ==========================================

Bad samples never crash a run and are never replaced by a neighbour: in non-strict mode the
dataset returns a :class:`SkippedSample` (path + reason, also logged as a warning), the collate
function drops it and lists it under ``batch["skipped"]``; systems skip empty batches and the
``SkippedSampleLogger`` callback counts and records them. ``strict=True`` raises instead.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from reasonaudio.config import SequenceConfig
from reasonaudio.config import audio_preset as get_audio_preset
from reasonaudio.data_modules.features import META, FeatureCache
from reasonaudio.data_modules.manifests import MEDIA_EXTENSIONS, ManifestRow, resolve_media
from reasonaudio.data_modules.resumable import ResumableLoader
from reasonaudio.data_modules.video_streams import decode_video_streams
from reasonaudio.media import MediaError, load_audio

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".mp4", ".mkv", ".webm")
"""Audio-only corpora prefer audio files, and accept videos whose audio track they use."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipRecord:
    """One row of a corpus, resolved to a media file."""

    id: str
    path: str
    caption: str = ""
    label: str = ""
    has_video: bool = True
    start: float = 0.0
    corpus: str = ""
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SkippedSample:
    """A sample that could not be loaded, with the reason."""

    id: str
    path: str
    reason: str


class ClipDataset(Dataset):
    """Decodes clips into fixed-length items following ``SequenceConfig``.

    Args:
        records: the clips.
        duration: seconds per item.
        audio_preset: ``AudioConfig`` preset name (sets the sample rate).
        load_sync_video: decode 25-fps Synchformer frames.
        sync_size: Synchformer frame side (224 for the real model; smaller for CPU tests).
        load_mllm_video: decode MLLM frames.
        mllm_fps: MLLM frame rate.
        mllm_max_side: MLLM frame longest side.
        mllm_multiple: MLLM frame side multiple (28 for Qwen2.5-VL).
        pad: ``"pad"`` pads short clips with a mask; ``"reject"`` skips them.
        strict: raise on a bad sample instead of skipping it.
    """

    def __init__(self, records: Sequence[ClipRecord], duration: float = 8.0, audio_preset: str = "s16k",
                 load_sync_video: bool = True, sync_size: int = 224, load_mllm_video: bool = False,
                 mllm_fps: float = 2.0, mllm_max_side: int = 448, mllm_multiple: int = 28,
                 pad: str = "pad", strict: bool = False):
        if pad not in ("pad", "reject"):
            raise ValueError(f"pad must be 'pad' or 'reject', got {pad!r}")
        self.records = list(records)
        self.seq = SequenceConfig(duration=duration, audio=get_audio_preset(audio_preset), mllm_fps=mllm_fps)
        self.load_sync_video = load_sync_video
        self.sync_size = sync_size
        self.load_mllm_video = load_mllm_video
        self.mllm_max_side = mllm_max_side
        self.mllm_multiple = mllm_multiple
        self.pad = pad
        self.strict = strict

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        rec = self.records[index]
        try:
            return self._load(rec)
        except MediaError as e:
            if self.strict:
                raise
            log.warning("skipping sample %s (%s): %s", rec.id, e.path, e.reason)
            return SkippedSample(id=rec.id, path=e.path, reason=e.reason)

    def _load(self, rec: ClipRecord) -> dict[str, Any]:
        seq = self.seq
        # Audio rounds up to whole latents; only `duration` seconds must be real signal.
        clip = load_audio(rec.path, seq.audio.sample_rate, start=rec.start, duration=seq.duration,
                          pad=self.pad, reject_silent=True)
        wav = torch.nn.functional.pad(clip.wav, (0, seq.num_samples - clip.wav.shape[0]))
        wav_mask = torch.nn.functional.pad(clip.mask, (0, seq.num_samples - clip.mask.shape[0]))
        item: dict[str, Any] = dict(id=rec.id, path=rec.path, wav=wav, wav_mask=wav_mask, caption=rec.caption,
                                    label=rec.label, has_video=rec.has_video, has_text=bool(rec.caption.strip()),
                                    corpus=rec.corpus)
        # The one frame decoder generation uses too (training and inference see identical frames).
        item.update(decode_video_streams(rec.path, seq, has_video=rec.has_video, start=rec.start, pad=self.pad,
                                         load_sync_video=self.load_sync_video, sync_size=self.sync_size,
                                         load_mllm_video=self.load_mllm_video, mllm_max_side=self.mllm_max_side,
                                         mllm_multiple=self.mllm_multiple))
        return item


def collate_clips(items: Sequence[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
    """Stack good items, list the skipped ones.

    Returns:
        ``wav`` ``[B, S]``, ``wav_mask`` ``[B, S]``, ``has_video`` / ``has_text`` ``[B]`` bool,
        ``sync_video`` ``[B, Ts, 3, H, H]`` and ``sync_mask`` ``[B, Ts]`` when loaded,
        ``mllm_video`` a list of ``[Tm, 3, h, w]`` (or None), string lists ``id`` / ``caption`` /
        ``label`` / ``corpus``, and ``skipped``: the :class:`SkippedSample` s of this batch.
        ``B`` may be 0 when every item was skipped.
    """
    good = [x for x in items if not isinstance(x, SkippedSample)]
    batch: dict[str, Any] = {"skipped": [x for x in items if isinstance(x, SkippedSample)]}
    for key in ("id", "caption", "label", "corpus"):
        batch[key] = [x[key] for x in good]
    batch["path"] = [x.get("path", "") for x in good]
    batch["has_video"] = torch.tensor([x["has_video"] for x in good], dtype=torch.bool)
    batch["has_text"] = torch.tensor([x["has_text"] for x in good], dtype=torch.bool)
    if not good:
        batch["wav"] = torch.zeros(0, 0)
        batch["wav_mask"] = torch.zeros(0, 0, dtype=torch.bool)
        return batch
    for key in ("wav", "wav_mask", "sync_video", "sync_mask"):
        if key in good[0]:
            batch[key] = torch.stack([x[key] for x in good])
    if "mllm_video" in good[0]:
        batch["mllm_video"] = [x["mllm_video"] for x in good]
        batch["mllm_mask"] = [x.get("mllm_mask") for x in good]
    return batch


class ClipDataModule(LightningDataModule, ABC):
    """Base for every corpus: subclasses say which records each split has.

    Args:
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        duration: seconds per item.
        audio_preset: ``AudioConfig`` preset name.
        load_sync_video: decode Synchformer frames (ignored for audio-only corpora).
        sync_size: Synchformer frame side.
        load_mllm_video: decode MLLM frames.
        mllm_fps: MLLM frame rate.
        mllm_max_side: MLLM frame longest side.
        pad: ``"pad"`` or ``"reject"`` clips shorter than ``duration``.
        strict: raise on a bad sample instead of skipping it.
        seed: shuffling seed.
        predict_split: the split ``predict`` reads (``train`` to compute corpus statistics).
        skip_done_in: a feature cache folder; clips already written there are left out (resuming the
            ``features`` stage).
    """

    corpus = ""

    def __init__(self, batch_size: int = 8, num_workers: int = 0, duration: float = 8.0, audio_preset: str = "s16k",
                 load_sync_video: bool = True, sync_size: int = 224, load_mllm_video: bool = False,
                 mllm_fps: float = 2.0, mllm_max_side: int = 448, pad: str = "pad", strict: bool = False,
                 seed: int = 0, predict_split: str = "predict", skip_done_in: str | None = None):
        super().__init__()
        if predict_split not in ("train", "val", "test", "predict"):
            raise ValueError(f"predict_split must be train, val, test or predict, got {predict_split!r}")
        self.predict_split = predict_split
        self.skip_done_in = skip_done_in
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.dataset_kwargs = dict(duration=duration, audio_preset=audio_preset, load_sync_video=load_sync_video,
                                   sync_size=sync_size, load_mllm_video=load_mllm_video, mllm_fps=mllm_fps,
                                   mllm_max_side=mllm_max_side, pad=pad, strict=strict)
        self.datasets: dict[str, ClipDataset] = {}

    @abstractmethod
    def records(self, split: str) -> list[ClipRecord] | None:
        """Records of ``split`` (``train``, ``val``, ``test``, ``predict``), None when the corpus has none."""

    def dataset(self, split: str) -> ClipDataset | None:
        """The (cached) dataset of ``split``."""
        if split not in self.datasets:
            recs = self.records(split)
            if recs is None:
                return None
            if self.skip_done_in and (Path(self.skip_done_in) / META).exists():
                done = FeatureCache(self.skip_done_in).done_ids()
                recs = [r for r in recs if r.id not in done]
            self.datasets[split] = ClipDataset(recs, **self.dataset_kwargs)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": (self.predict_split,)}
        for split in wanted.get(stage, ("train", "val", "test")):
            self.dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        if ds is None:
            raise ValueError(f"{type(self).__name__} has no {split!r} split configured")
        if shuffle:  # training: order, position and item draws resumable (reasonaudio.data_modules.resumable)
            return ResumableLoader(ds, seed=self.seed, batch_size=self.batch_size, shuffle=True,
                                   num_workers=self.num_workers, collate_fn=collate_clips,
                                   persistent_workers=self.num_workers > 0)
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          collate_fn=collate_clips, generator=gen, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, shuffle=False)


def rows_to_records(rows: Sequence[ManifestRow], media_root: str | Path, has_video: bool, corpus: str,
                    extensions: tuple[str, ...] | None = None) -> list[ClipRecord]:
    """Resolve manifest rows to media files (a missing file is a ValueError naming manifest and line).

    The start offset of a row is *not* applied when decoding: the corpora ship clips already cut
    to ``<ytid>_<start:06d>`` files, as VGGSound, MMAudio and av-benchmark do.
    """
    exts = extensions or (MEDIA_EXTENSIONS if has_video else AUDIO_EXTENSIONS)
    return [ClipRecord(id=r.id, path=str(resolve_media(r, media_root, exts)), caption=r.caption or "",
                       label=r.label or "", has_video=has_video, corpus=corpus) for r in rows]
