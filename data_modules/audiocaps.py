"""AudioCaps: text-to-audio clips (``audiocap_id,youtube_id,start_time,caption``).

Train rows carry one caption per clip. Val/test carry five per clip: each clip is decoded once,
with its first caption, and keeps all five in ``ClipRecord.extra["captions"]`` for metrics.
The clips are YouTube videos, but AudioCaps is used as a T2A corpus, so ``has_video`` is False.
"""
from __future__ import annotations

from dataclasses import replace

from reasonaudio.data_modules.clips import ClipDataModule, ClipRecord, rows_to_records
from reasonaudio.data_modules.manifests import read_audiocaps_csv


class AudioCapsDataModule(ClipDataModule):
    """AudioCaps clips.

    Args:
        media_root: folder with ``<ytid>_<start:06d>.{wav,flac,mp4}``.
        train_csv: AudioCaps ``train.csv``.
        val_csv: AudioCaps ``val.csv``.
        test_csv: AudioCaps ``test.csv``.
        **kwargs: :class:`~reasonaudio.data_modules.clips.ClipDataModule` arguments.
    """

    corpus = "audiocaps"

    def __init__(self, media_root: str, train_csv: str | None = None, val_csv: str | None = None,
                 test_csv: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.media_root = media_root
        self.csv = {"train": train_csv, "val": val_csv, "test": test_csv, "predict": test_csv}

    def records(self, split: str) -> list[ClipRecord] | None:
        if not self.csv.get(split):
            return None
        by_clip: dict[str, list] = {}
        for row in read_audiocaps_csv(self.csv[split]):
            by_clip.setdefault(row.id, []).append(row)
        firsts = [rows[0] for rows in by_clip.values()]
        records = rows_to_records(firsts, self.media_root, has_video=False, corpus=self.corpus)
        return [replace(rec, extra={"captions": [r.caption for r in by_clip[rec.id]]}) for rec in records]
