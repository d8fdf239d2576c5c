"""VGGSound and VGGSound-Think: video + caption + audio (the VT2A corpus).

Sources per split: a VGGSound-Think JSONL (``id``, Think ``caption``, optional ``video`` / ``label``)
when given, else the rows of VGGSound's own headerless ``vggsound.csv`` whose ``split`` column
matches (``train`` for train, ``test`` for val and test, as MMAudio evaluates on the test split),
captioned by their class label. When both are given, labels from the csv are joined onto the
JSONL rows by clip id. Media files are ``<media_root>/<ytid>_<start:06d>.mp4``.
"""
from __future__ import annotations

from dataclasses import replace

from reasonaudio.data_modules.clips import ClipDataModule, ClipRecord, rows_to_records
from reasonaudio.data_modules.manifests import read_think_jsonl, read_vggsound_csv

CSV_SPLIT = {"train": "train", "val": "test", "test": "test", "predict": "test"}


class VGGSoundThinkDataModule(ClipDataModule):
    """VGGSound(-Think) clips.

    Args:
        media_root: folder with ``<id>.mp4`` clips.
        vggsound_csv: VGGSound's ``vggsound.csv`` (headerless ``youtube_id,start_seconds,label,split``).
        train_jsonl: VGGSound-Think train captions.
        val_jsonl: VGGSound-Think validation captions.
        test_jsonl: VGGSound-Think test captions.
        predict_jsonl: captions to generate for.
        **kwargs: :class:`~reasonaudio.data_modules.clips.ClipDataModule` arguments.
    """

    corpus = "vggsound"

    def __init__(self, media_root: str, vggsound_csv: str | None = None, train_jsonl: str | None = None,
                 val_jsonl: str | None = None, test_jsonl: str | None = None, predict_jsonl: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if vggsound_csv is None and not any((train_jsonl, val_jsonl, test_jsonl, predict_jsonl)):
            raise ValueError("VGGSoundThinkDataModule needs vggsound_csv or at least one VGGSound-Think JSONL")
        self.media_root = media_root
        self.vggsound_csv = vggsound_csv
        self.jsonl = {"train": train_jsonl, "val": val_jsonl, "test": test_jsonl, "predict": predict_jsonl}

    def records(self, split: str) -> list[ClipRecord] | None:
        csv_rows = read_vggsound_csv(self.vggsound_csv) if self.vggsound_csv else []
        if self.jsonl.get(split):
            labels = {r.id: r.label for r in csv_rows}
            rows = [r if r.label or r.id not in labels else replace(r, label=labels[r.id])
                    for r in read_think_jsonl(self.jsonl[split])]
        elif csv_rows:
            rows = [replace(r, caption=r.label) for r in csv_rows if r.split == CSV_SPLIT[split]]
            if not rows:
                return None
        else:
            return None
        return rows_to_records(rows, self.media_root, has_video=True, corpus=self.corpus)
