"""Corpus data modules on the real fixture clips: shapes, captions, skipping, mixing."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from reasonaudio.data_modules.audiocaps import AudioCapsDataModule
from reasonaudio.data_modules.clips import ClipDataset, ClipRecord, SkippedSample, collate_clips
from reasonaudio.data_modules.mixed import MixedDataModule
from reasonaudio.data_modules.vggsound import VGGSoundThinkDataModule
from reasonaudio.data_modules.wavcaps import AudioSetSLDataModule, FreesoundDataModule
from reasonaudio.media import MediaError

THINK = ("<HINT>Low plucked tones that swell and fade.</HINT> A person plays a large string instrument. "
         "<TRACK name='bass' screen=on_screen> <KEYWORDS> plucked, low, resonant </KEYWORDS> </TRACK>")


@pytest.fixture
def vgg(fixtures_dir) -> Path:
    return fixtures_dir / "media" / "vggsound"


def _link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)
    return dst


def test_vggsound_csv_items_follow_the_shape_contract(vgg):
    dm = VGGSoundThinkDataModule(media_root=str(vgg), vggsound_csv=str(vgg / "vggsound.csv"), duration=8.0,
                                 audio_preset="s16k", sync_size=32, batch_size=2)
    ds = dm.dataset("test")
    assert len(ds) == 6 and dm.dataset("train") is None  # the fixture csv lists test clips only
    assert {r.id for r in ds.records} >= {"-Qowmc0P9ic_000034", "0nib7bMm8BA_000015"}
    batch = next(iter(dm.test_dataloader()))
    assert batch["wav"].shape == (2, 128_000) and batch["wav_mask"].all()
    assert batch["sync_video"].shape == (2, 200, 3, 32, 32) and batch["sync_video"].dtype == torch.uint8
    assert batch["sync_mask"].all() and batch["has_video"].all() and batch["has_text"].all()
    labels = dict(zip(batch["id"], batch["caption"]))
    assert labels == {r.id: r.label for r in ds.records[:2]}  # label is the caption without Think text
    assert float(batch["wav"].abs().max()) <= 1.0 and float(batch["wav"].std()) > 1e-3


def test_think_jsonl_joins_labels_and_loads_mllm_frames(tmp_path, vgg):
    jsonl = tmp_path / "think.jsonl"
    jsonl.write_text(json.dumps({"id": "54bz5yqN2IA_000004", "caption": THINK}) + "\n")
    dm = VGGSoundThinkDataModule(media_root=str(vgg), vggsound_csv=str(vgg / "vggsound.csv"),
                                 train_jsonl=str(jsonl), duration=3.0, load_sync_video=False,
                                 load_mllm_video=True, mllm_fps=2.0, mllm_max_side=112)
    item = dm.dataset("train")[0]
    assert item["caption"] == THINK and item["label"] == "playing double bass"
    frames = item["mllm_video"]  # 480x360 source → longest side 112, sides multiples of 28
    assert frames.shape == (6, 3, 84, 112)


def test_bad_samples_are_skipped_with_reason_never_replaced(tmp_path, fixtures_dir, vgg):
    good = ClipRecord("good", str(vgg / "0nib7bMm8BA_000015.mp4"))
    silent = ClipRecord("silent", str(fixtures_dir / "media" / "edge" / "silent_audio.mp4"))
    missing = ClipRecord("missing", str(tmp_path / "nope.mp4"))
    ds = ClipDataset([good, silent, missing], duration=2.0, sync_size=16)
    items = [ds[i] for i in range(3)]
    assert isinstance(items[1], SkippedSample) and "silent" in items[1].reason
    assert isinstance(items[2], SkippedSample) and "does not exist" in items[2].reason
    batch = collate_clips(items)
    assert batch["id"] == ["good"] and batch["wav"].shape == (1, 32_256)  # 2 s rounded up to 63 latents × 512
    assert [(s.id, s.path) for s in batch["skipped"]] == [("silent", silent.path), ("missing", missing.path)]
    empty = collate_clips(items[1:])
    assert empty["wav"].shape[0] == 0 and len(empty["skipped"]) == 2
    with pytest.raises(MediaError, match="silent"):
        ClipDataset([silent], duration=2.0, strict=True)[0]


def test_short_clips_pad_with_mask_or_reject(fixtures_dir):
    dog = ClipRecord("dog", str(fixtures_dir / "media" / "audio" / "dog.wav"), has_video=False)  # 11.0 s
    ds = ClipDataset([dog], duration=12.0, load_sync_video=True, sync_size=16)
    item = ds[0]
    assert item["wav"].shape == (192_000,) and int(item["wav_mask"].sum()) == 176_000
    assert float(item["wav"][176_000:].abs().max()) == 0.0
    assert item["sync_video"].shape == (300, 3, 16, 16) and not item["sync_mask"].any()  # audio-only: null video
    rejected = ClipDataset([dog], duration=12.0, pad="reject", load_sync_video=False)[0]
    assert isinstance(rejected, SkippedSample) and rejected.reason == "too short: 11.0 s < 12.0 s"


def test_audio_corpora_are_text_to_audio(tmp_path, fixtures_dir):
    audio = fixtures_dir / "media" / "audio"
    root = tmp_path / "media"
    _link(audio / "dog.wav", root / "dogdogdog01_000030.wav")
    _link(audio / "rain.wav", root / "rainrain001_000000.wav")
    csv = tmp_path / "val.csv"
    csv.write_text("audiocap_id,youtube_id,start_time,caption\n"
                   "1,dogdogdog01,30,A dog barks\n2,dogdogdog01,30,Barking nearby\n"
                   "3,rainrain001,0,Rain falls on a roof\n")
    dm = AudioCapsDataModule(media_root=str(root), val_csv=str(csv), duration=4.0, load_sync_video=False)
    ds = dm.dataset("val")
    assert [r.id for r in ds.records] == ["dogdogdog01_000030", "rainrain001_000000"]
    assert ds.records[0].extra["captions"] == ["A dog barks", "Barking nearby"]
    batch = collate_clips([ds[0], ds[1]])
    assert not batch["has_video"].any() and batch["caption"] == ["A dog barks", "Rain falls on a roof"]

    _link(audio / "typing.wav", root / "typing.wav")
    js = tmp_path / "fsd.json"
    js.write_text(json.dumps({"num_captions_per_audio": 1, "data": [
        {"id": "typing.wav", "caption": "keys clatter", "audio": "wav_path", "duration": 11.9}]}))
    for cls, corpus in ((FreesoundDataModule, "freesound"), (AudioSetSLDataModule, "audioset_sl")):
        ds = cls(media_root=str(root), train_json=str(js), duration=2.0, load_sync_video=False).dataset("train")
        item = ds[0]
        assert (item["id"], item["corpus"], item["has_video"]) == ("typing", corpus, False)


def test_missing_media_names_manifest_and_line(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("audiocap_id,youtube_id,start_time,caption\n7,absent00001,10,silence\n")
    with pytest.raises(ValueError, match=r"train\.csv, line 2.*absent00001_000010"):
        AudioCapsDataModule(media_root=str(tmp_path), train_csv=str(csv)).dataset("train")


def test_mixed_module_oversamples_by_weight(tmp_path, fixtures_dir, vgg):
    vggsound = VGGSoundThinkDataModule(media_root=str(vgg), train_jsonl=str(_think_jsonl(tmp_path, vgg)),
                                       duration=1.0, sync_size=16, batch_size=4)
    audio_root = tmp_path / "audio"
    rows = []
    for i, name in enumerate(["dog", "rain", "typing"] * 4):  # 12 audio-only clips vs 2 video clips
        _link(fixtures_dir / "media" / "audio" / f"{name}.wav", audio_root / f"clip{i:02d}.wav")
        rows.append({"id": f"clip{i:02d}", "caption": name, "audio": "wav_path", "duration": 4.0})
    js = tmp_path / "sl.json"
    js.write_text(json.dumps({"num_captions_per_audio": 1, "data": rows}))
    audioset = AudioSetSLDataModule(media_root=str(audio_root), train_json=str(js), duration=1.0, sync_size=16)
    mixed = MixedDataModule([vggsound, audioset], weights=[1.0, 1.0], samples_per_epoch=4000, batch_size=4)
    assert mixed.expected_mix() == {"vggsound": 0.5, "audioset_sl": 0.5}
    assert MixedDataModule([vggsound, audioset]).expected_mix() == pytest.approx(
        {"vggsound": 2 / 14, "audioset_sl": 12 / 14})
    loader = mixed.train_dataloader()
    drawn = torch.tensor(list(iter(loader.sampler)))
    assert abs(float((drawn < 2).float().mean()) - 0.5) < 0.03  # the 2 video clips are oversampled 6×
    batch = next(iter(loader))
    assert batch["has_video"].tolist() == [c == "vggsound" for c in batch["corpus"]]
    assert batch["sync_video"].shape == (4, 25, 3, 16, 16)
    assert (batch["sync_mask"].any(1) == batch["has_video"]).all()


def _think_jsonl(tmp_path: Path, vgg: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"id": i, "caption": THINK}) + "\n"
                            for i in ("6zlMP_kQ_-w_000030", "7tMPoaU2oL4_000000")))
    return path


def test_synthetic_module_refuses_a_corpus_rendered_otherwise(tmp_path):
    from reasonaudio.data_modules.synthetic import SyntheticDataModule

    made = SyntheticDataModule(root=str(tmp_path / "s"), num_clips=1, val_clips=1, duration=1.0, load_sync_video=False)
    made.prepare_data()
    assert len(made.records("train")) == 1
    other = SyntheticDataModule(root=str(tmp_path / "s"), duration=2.0, load_sync_video=False)
    with pytest.raises(ValueError, match="other settings.*duration"):
        other.records("train")
