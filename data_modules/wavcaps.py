"""WavCaps-format audio-text corpora: FreeSound and AudioSet-SL (text-to-audio, no video).

Both ship as WavCaps JSON (``{"num_captions_per_audio": 1, "data": [{"id", "caption", "audio",
"duration", ...}]}``); media files are ``<media_root>/<id>.{flac,wav}`` or the item's ``audio`` path.
"""
from __future__ import annotations

from reasonaudio.data_modules.clips import ClipDataModule, ClipRecord, rows_to_records
from reasonaudio.data_modules.manifests import read_wavcaps_json


class _WavCapsDataModule(ClipDataModule):
    def __init__(self, media_root: str, train_json: str | None = None, val_json: str | None = None,
                 test_json: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.media_root = media_root
        self.json = {"train": train_json, "val": val_json, "test": test_json, "predict": test_json}

    def records(self, split: str) -> list[ClipRecord] | None:
        if not self.json.get(split):
            return None
        return rows_to_records(read_wavcaps_json(self.json[split], corpus=self.corpus), self.media_root,
                               has_video=False, corpus=self.corpus)


class FreesoundDataModule(_WavCapsDataModule):
    """FreeSound (WavCaps ``fsd_final.json``) clips.

    Args:
        media_root: folder with the audio files.
        train_json: WavCaps JSON for training.
        val_json: WavCaps JSON for validation.
        test_json: WavCaps JSON for testing.
        **kwargs: :class:`~reasonaudio.data_modules.clips.ClipDataModule` arguments.
    """

    corpus = "freesound"


class AudioSetSLDataModule(_WavCapsDataModule):
    """AudioSet strongly-labelled subset (WavCaps ``as_final.json``) clips.

    Args:
        media_root: folder with the audio files.
        train_json: WavCaps JSON for training.
        val_json: WavCaps JSON for validation.
        test_json: WavCaps JSON for testing.
        **kwargs: :class:`~reasonaudio.data_modules.clips.ClipDataModule` arguments.
    """

    corpus = "audioset_sl"
