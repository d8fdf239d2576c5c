"""Generation inputs: video frames (Synchformer + MLLM streams) and optional text, never audio.

``reasonaudio-generate`` turns each input into an :class:`InferenceRecord` whose length is the video's
own displayed duration (or the requested seconds for text-only items). Items are decoded by
:func:`reasonaudio.data_modules.video_streams.decode_video_streams` — the features stage's frame decoder — so a
clip's visual inputs at generation are the tensors training saw. Records are grouped by their sequence
lengths (:func:`length_buckets`) so a batch stacks without padding.

An item:

============  ==========================  ===============================================
key           shape / type                meaning
============  ==========================  ===============================================
id            str                         output stem
path          str                         the video ("" for text-only items)
duration      float                       seconds of audio to generate
caption       str                         the text condition ("" = none)
has_video     bool                        False for text-only items
has_text      bool                        False when the caption is empty
sync_video    ``[Ts, 3, H, H]`` uint8     25-fps Synchformer frames (when the model uses them)
sync_mask     ``[Ts]`` bool               False on padding and for text-only items
mllm_video    ``[Tm, 3, h, w]`` or None   MLLM frames (when the model uses them)
============  ==========================  ===============================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from reasonaudio.config import SYNC_FPS, SYNC_WINDOW, SequenceConfig
from reasonaudio.config import audio_preset as get_audio_preset
from reasonaudio.data_modules.video_streams import decode_video_streams


@dataclass(frozen=True)
class InferenceRecord:
    """One generation input.

    Attributes:
        id: output stem (``<stem>.flac`` / ``<stem>.mp4``).
        video: the video file, or "" for text-only generation.
        duration: seconds of audio: the video's displayed duration, or the requested length without video.
        caption: text condition ("" for video-only generation).
    """

    id: str
    video: str
    duration: float
    caption: str = ""

    @property
    def has_video(self) -> bool:
        return bool(self.video)


class InferenceDataset(Dataset):
    """Decodes :class:`InferenceRecord` s into generation items (see the module docstring).

    Args:
        records: the inputs.
        audio_preset: ``AudioConfig`` preset of the model (sets latent and sample lengths).
        load_sync_video: decode 25-fps Synchformer frames.
        sync_size: Synchformer frame side.
        load_mllm_video: decode MLLM frames.
        mllm_fps: MLLM frame rate.
        mllm_max_side: MLLM frame longest side.
        mllm_multiple: MLLM frame side multiple.
    """

    def __init__(self, records: Sequence[InferenceRecord], audio_preset: str = "s16k", load_sync_video: bool = True,
                 sync_size: int = 224, load_mllm_video: bool = False, mllm_fps: float = 2.0,
                 mllm_max_side: int = 448, mllm_multiple: int = 28):
        self.records = list(records)
        self.audio = get_audio_preset(audio_preset)
        self.load_sync_video = load_sync_video
        self.sync_size = sync_size
        self.load_mllm_video = load_mllm_video
        self.mllm_fps = mllm_fps
        self.mllm_max_side = mllm_max_side
        self.mllm_multiple = mllm_multiple

    def seq(self, record: InferenceRecord) -> SequenceConfig:
        """The lengths of one record (ValueError when it is shorter than one Synchformer window)."""
        seq = SequenceConfig(duration=record.duration, audio=self.audio, mllm_fps=self.mllm_fps)
        if record.has_video and self.load_sync_video and seq.sync_frames < SYNC_WINDOW:
            raise ValueError(f"too short: {record.duration:.2f} s < {SYNC_WINDOW / SYNC_FPS:.2f} s "
                             f"(one Synchformer window of {SYNC_WINDOW} frames at 25 fps)")
        return seq

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        seq = self.seq(rec)
        item: dict[str, Any] = dict(id=rec.id, path=rec.video, duration=rec.duration, caption=rec.caption,
                                    has_video=rec.has_video, has_text=bool(rec.caption.strip()))
        # A video shorter than its stored duration (a header that promises more) keeps zero frames with mask False.
        item.update(decode_video_streams(rec.video, seq, has_video=rec.has_video, pad="pad",
                                         load_sync_video=self.load_sync_video, sync_size=self.sync_size,
                                         load_mllm_video=self.load_mllm_video, mllm_max_side=self.mllm_max_side,
                                         mllm_multiple=self.mllm_multiple))
        item.pop("mllm_mask", None)
        return item


def bucket_key(seq: SequenceConfig) -> tuple[int, int]:
    """Items with equal keys stack into one batch: same latent tokens and Synchformer frames."""
    return seq.latent_len, seq.sync_frames


def length_buckets(keys: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices grouped by equal ``keys`` (in order of first appearance), cut into batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [idx[s:s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)]


def collate_inference(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items of one bucket: string lists, ``has_video`` / ``has_text`` ``[B]``, ``sync_video``
    ``[B, Ts, 3, H, H]``, ``sync_mask`` ``[B, Ts]``, ``mllm_video`` a list."""
    batch: dict[str, Any] = {key: [x[key] for x in items] for key in ("id", "path", "duration", "caption")}
    batch["has_video"] = torch.tensor([x["has_video"] for x in items], dtype=torch.bool)
    batch["has_text"] = torch.tensor([x["has_text"] for x in items], dtype=torch.bool)
    for key in ("sync_video", "sync_mask"):
        if key in items[0]:
            batch[key] = torch.stack([x[key] for x in items])
    if "mllm_video" in items[0]:
        batch["mllm_video"] = [x["mllm_video"] for x in items]
    return batch
