"""Manifest readers: the corpora's real formats parse, bad inputs name file, line and column."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasonaudio.data_modules.manifests import (ManifestRow, clip_id, read_audiocaps_csv, read_manifest,
                                                read_mmaudio_tsv, read_think_jsonl, read_vggsound_csv,
                                                read_wavcaps_json, resolve_media)

THINK_CAPTION = (
    "<HINT>A dog barks twice.</HINT> A dog in a yard. "
    "<TRACK name='dog' screen=on_screen> <KEYWORDS> sharp bark, yard </KEYWORDS> </TRACK>"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(reader, path: Path, *args) -> str:
    with pytest.raises(ValueError) as info:
        reader(path, *args)
    return str(info.value)


# --- VGGSound -------------------------------------------------------------------------------


def test_real_vggsound_csv_names_the_fixture_clips(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "media" / "vggsound"
    rows = read_vggsound_csv(folder / "vggsound.csv")
    assert len(rows) == 6
    assert {row.id for row in rows} == {path.stem for path in folder.glob("*.mp4")}
    bass = next(row for row in rows if row.label == "playing bass drum")
    assert (bass.id, bass.start, bass.split, bass.line, bass.corpus) == (
        "-Qowmc0P9ic_000034", 34.0, "test", 3, "vggsound",
    )
    for row in rows:
        assert resolve_media(row, folder) == folder / f"{row.id}.mp4"


def test_vggsound_quoted_labels_and_leading_dash(tmp_path: Path) -> None:
    text = '-abc_DEF12,7,"subway, metro, underground",train\n\nxyz,130.0,dog barking,test\n'
    path = _write(tmp_path, "vggsound.csv", text)
    rows = read_vggsound_csv(path)
    assert [(r.id, r.label, r.split, r.line) for r in rows] == [
        ("-abc_DEF12_000007", "subway, metro, underground", "train", 1),
        ("xyz_000130", "dog barking", "test", 3),
    ]


@pytest.mark.parametrize(
    ("bad_line", "column", "problem"),
    [
        ("abc,30,dog barking", "split", "missing"),
        ("abc,thirty,dog barking,test", "start_seconds", "expected a number, got 'thirty'"),
        ("abc,-1,dog barking,test", "start_seconds", "non-negative"),
        (",30,dog barking,test", "youtube_id", "empty"),
        ("abc,30,,test", "label", "empty"),
    ],
)
def test_vggsound_bad_rows(tmp_path: Path, bad_line: str, column: str, problem: str) -> None:
    path = _write(tmp_path, "vggsound.csv", f"ok,1,cat purring,test\n{bad_line}\n")
    message = _error(read_vggsound_csv, path)
    assert f"{path}, line 2, column '{column}'" in message
    assert problem in message


def test_vggsound_unquoted_comma_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, "vggsound.csv", "abc,1,subway, metro,test\n")
    assert f"{path}, line 1: 5 values for 4 columns" in _error(read_vggsound_csv, path)


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_empty_manifest(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, "vggsound.csv", text)
    assert _error(read_vggsound_csv, path) == f"{path}: manifest is empty"


# --- MMAudio tsv ----------------------------------------------------------------------------


def test_mmaudio_tsv_label_and_caption_sets(tmp_path: Path) -> None:
    video = _write(
        tmp_path, "vgg-test.tsv", "id\tlabel\n---g-f_I2yQ_000001\tchild speech, kid speaking\n"
    )
    audio = _write(tmp_path, "example_audio.tsv", "id\tcaption\n00008004\tA dummy caption.\n")
    [video_row] = read_mmaudio_tsv(video, corpus="vggsound")
    [audio_row] = read_mmaudio_tsv(audio)
    assert (video_row.id, video_row.label, video_row.caption, video_row.line) == (
        "---g-f_I2yQ_000001", "child speech, kid speaking", None, 2,
    )
    assert (video_row.corpus, audio_row.corpus) == ("vggsound", "mmaudio")
    assert (audio_row.id, audio_row.caption, audio_row.label) == ("00008004", "A dummy caption.", None)


@pytest.mark.parametrize(
    ("text", "location", "column"),
    [
        ("name\tlabel\nx\ty\n", "line 1", "id"),
        ("id\ttext\nx\ty\n", "line 1", "label"),
        ("id\tlabel\nx\ty\nz\n", "line 3", "label"),
        ("id\tcaption\nx\t \n", "line 2", "caption"),
    ],
)
def test_mmaudio_tsv_bad_input(tmp_path: Path, text: str, location: str, column: str) -> None:
    path = _write(tmp_path, "set.tsv", text)
    assert f"{path}, {location}, column '{column}'" in _error(read_mmaudio_tsv, path)


def test_header_only_tsv_is_empty(tmp_path: Path) -> None:
    path = _write(tmp_path, "set.tsv", "id\tlabel\n")
    assert _error(read_mmaudio_tsv, path) == f"{path}: manifest is empty"


# --- VGGSound-Think JSONL -------------------------------------------------------------------


def test_think_jsonl(tmp_path: Path) -> None:
    items = [
        {"id": "abc_000010", "caption": THINK_CAPTION},
        {"id": "xyz_000000", "caption": THINK_CAPTION, "video": "v/xyz.mp4", "audio": "a/xyz.flac",
         "label": "dog barking", "duration": 8},
    ]
    path = _write(tmp_path, "think.jsonl", "\n".join(json.dumps(item) for item in items) + "\n\n")
    first, second = read_think_jsonl(path)
    assert (first.id, first.caption, first.video, first.duration, first.corpus) == (
        "abc_000010", THINK_CAPTION, None, None, "vggsound_think",
    )
    assert (second.line, second.video, second.audio, second.label, second.duration) == (
        2, "v/xyz.mp4", "a/xyz.flac", "dog barking", 8.0,
    )


@pytest.mark.parametrize(
    ("item", "column", "problem"),
    [
        ({"caption": THINK_CAPTION}, "id", "missing"),
        ({"id": "", "caption": THINK_CAPTION}, "id", "empty"),
        ({"id": "a"}, "caption", "missing"),
        ({"id": "a", "caption": THINK_CAPTION.replace("on_screen", "onscreen")}, "caption",
         "TRACK 1: screen must be on_screen or off_screen, got 'onscreen'"),
        ({"id": "a", "caption": THINK_CAPTION, "duration": "long"}, "duration",
         "expected a number, got 'long'"),
        ({"id": "a", "caption": THINK_CAPTION, "duration": True}, "duration", "expected a number"),
        ({"id": "a", "caption": THINK_CAPTION, "video": 3}, "video", "expected text"),
    ],
)
def test_think_jsonl_bad_items(tmp_path: Path, item: dict, column: str, problem: str) -> None:
    good = json.dumps({"id": "ok", "caption": THINK_CAPTION})
    path = _write(tmp_path, "think.jsonl", f"{good}\n{json.dumps(item)}\n")
    message = _error(read_think_jsonl, path)
    assert f"{path}, line 2, column '{column}'" in message
    assert problem in message


def test_think_jsonl_invalid_json_and_empty(tmp_path: Path) -> None:
    broken = _write(tmp_path, "broken.jsonl", '{"id": "a", "caption": \n')
    assert f"{broken}, line 1: invalid JSON" in _error(read_think_jsonl, broken)
    not_object = _write(tmp_path, "list.jsonl", "[1, 2]\n")
    message = _error(read_think_jsonl, not_object)
    assert f"{not_object}, line 1: expected a JSON object, got list" in message
    empty = _write(tmp_path, "empty.jsonl", "\n")
    assert _error(read_think_jsonl, empty) == f"{empty}: manifest is empty"


# --- AudioCaps ------------------------------------------------------------------------------


def test_audiocaps_keeps_every_caption(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "val.csv",
        "audiocap_id,youtube_id,start_time,caption\n"
        "91139,r1nicOVtvkQ,130,A woman talks nearby as water pours\n"
        '91140,r1nicOVtvkQ,130,"Water pours, a woman talks"\n'
        "91141,-xYz,0,Wind blows\n",
    )
    rows = read_audiocaps_csv(path)
    assert [(r.id, r.caption, r.start, r.line) for r in rows] == [
        ("r1nicOVtvkQ_000130", "A woman talks nearby as water pours", 130.0, 2),
        ("r1nicOVtvkQ_000130", "Water pours, a woman talks", 130.0, 3),
        ("-xYz_000000", "Wind blows", 0.0, 4),
    ]
    assert rows[0].corpus == "audiocaps"


@pytest.mark.parametrize(
    ("text", "location", "column"),
    [
        ("audiocap_id,youtube_id,start_time\n1,a,0\n", "line 1", "caption"),
        ("audiocap_id,youtube_id,start_time,caption\n1,a,0,ok\n2,b,1m30,rain\n", "line 3", "start_time"),
        ("audiocap_id,youtube_id,start_time,caption\n1,a,0\n", "line 2", "caption"),
    ],
)
def test_audiocaps_bad_input(tmp_path: Path, text: str, location: str, column: str) -> None:
    path = _write(tmp_path, "test.csv", text)
    assert f"{path}, {location}, column '{column}'" in _error(read_audiocaps_csv, path)


# --- WavCaps JSON (FreeSound, SoundBible, AudioSet-SL) --------------------------------------


def _wavcaps(tmp_path: Path, name: str, items: list, per_audio: int = 1) -> Path:
    return _write(tmp_path, name, json.dumps({"num_captions_per_audio": per_audio, "data": items}))


def test_wavcaps_soundbible(tmp_path: Path) -> None:
    path = _wavcaps(tmp_path, "sb_final.json", [
        {"title": "Airplane Landing Airport", "caption": "An airplane is landing.", "id": "2219",
         "duration": 14.1424375, "audio": "wav_path", "download_link": "http://soundbible.com/x"},
        {"caption": "A dog is barking.", "id": "2215", "duration": 21.5, "audio": "/data/sb/2215.flac"},
    ])
    landing, dog = read_wavcaps_json(path, corpus="soundbible")
    assert (landing.id, landing.caption, landing.duration, landing.audio, landing.line) == (
        "2219", "An airplane is landing.", 14.1424375, None, 1,
    )
    assert (dog.audio, dog.line, dog.corpus) == ("/data/sb/2215.flac", 2, "soundbible")
    assert dog.location == f"{path}, item 2"


def test_audioset_sl_uses_the_same_reader(tmp_path: Path) -> None:
    path = _wavcaps(tmp_path, "as_final.json", [
        {"id": "Yb0RFKhbpFJA.wav", "caption": "Wind and a man speaking are heard.", "audio": "wav_path",
         "duration": 10.0},
    ])
    [row] = read_manifest(path, "wavcaps_json", corpus="audioset_sl")
    assert (row.id, row.corpus, row.audio) == ("Yb0RFKhbpFJA", "audioset_sl", None)


@pytest.mark.parametrize(
    ("item", "column", "problem"),
    [
        ({"id": "1", "caption": "c", "audio": "wav_path"}, "duration", "missing"),
        ({"id": "1", "caption": "c", "audio": "wav_path", "duration": "ten"}, "duration",
         "expected a number"),
        ({"id": "1", "audio": "wav_path", "duration": 1.0}, "caption", "missing"),
        ({"id": "1", "caption": "c", "duration": 1.0}, "audio", "missing"),
        ({"id": 1, "caption": "c", "audio": "wav_path", "duration": 1.0}, "id", "expected text"),
    ],
)
def test_wavcaps_bad_items(tmp_path: Path, item: dict, column: str, problem: str) -> None:
    good = {"id": "0", "caption": "c", "audio": "wav_path", "duration": 1.0}
    path = _wavcaps(tmp_path, "fsd_final.json", [good, item])
    message = _error(read_wavcaps_json, path)
    assert f"{path}, item 2, column '{column}'" in message
    assert problem in message


def test_wavcaps_bad_documents(tmp_path: Path) -> None:
    multi = _wavcaps(tmp_path, "clotho.json", [{"id": "1"}], per_audio=5)
    message = _error(read_wavcaps_json, multi)
    assert f"{multi}, column 'num_captions_per_audio': expected 1, got 5" in message
    bare_list = _write(tmp_path, "old.json", "[]")
    assert f"{bare_list}: expected" in _error(read_wavcaps_json, bare_list)
    broken = _write(tmp_path, "broken.json", '{\n"data": [\n}')
    assert f"{broken}, line 3: invalid JSON" in _error(read_wavcaps_json, broken)
    no_items = '{"num_captions_per_audio": 1, "data": []}'
    for name, text in [("empty.json", ""), ("no_items.json", no_items)]:
        path = _write(tmp_path, name, text)
        assert _error(read_wavcaps_json, path) == f"{path}: manifest is empty"


# --- dispatch and media ---------------------------------------------------------------------


def test_read_manifest_dispatches_and_rejects_unknown_formats(tmp_path: Path) -> None:
    path = _write(tmp_path, "vggsound.csv", "abc,1,dog,test\n")
    assert read_manifest(path, "vggsound_csv") == read_vggsound_csv(path)
    with pytest.raises(ValueError, match="unknown manifest format 'parquet'"):
        read_manifest(path, "parquet")  # type: ignore[arg-type]


def test_clip_id_truncates_fractional_starts() -> None:
    assert clip_id("-Qowmc0P9ic", 34.9) == "-Qowmc0P9ic_000034"


def _row(**fields) -> ManifestRow:
    defaults = {"id": "clip_000001", "corpus": "test", "manifest": "think.jsonl", "line": 7}
    return ManifestRow(**{**defaults, **fields})


def test_resolve_media_by_id_and_by_explicit_path(tmp_path: Path) -> None:
    (tmp_path / "clip_000001.flac").touch()
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "clip.mp4").touch()
    (tmp_path / "a.wav").touch()
    assert resolve_media(_row(), tmp_path) == tmp_path / "clip_000001.flac"
    both = _row(video="v/clip.mp4", audio="a.wav")
    assert resolve_media(both, tmp_path) == tmp_path / "v" / "clip.mp4"
    # Audio-only extensions select the row's audio over its video.
    assert resolve_media(both, tmp_path, extensions=(".wav", ".flac")) == tmp_path / "a.wav"
    absolute = tmp_path / "v" / "clip.mp4"
    assert resolve_media(_row(video=str(absolute)), "/nonexistent") == absolute


def test_resolve_media_names_manifest_line_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        resolve_media(_row(video="v/missing.mp4"), tmp_path)
    missing = tmp_path / "v" / "missing.mp4"
    assert str(info.value) == f"think.jsonl, line 7, column 'video': media file {missing} does not exist"
    with pytest.raises(ValueError) as info:
        resolve_media(_row(), tmp_path, extensions=(".mp4", ".wav"))
    assert str(info.value) == (
        f"think.jsonl, line 7: no media file for id 'clip_000001' "
        f"(tried {tmp_path / 'clip_000001.mp4'}, {tmp_path / 'clip_000001.wav'})"
    )


def test_resolve_media_error_for_a_wavcaps_row_names_the_item(tmp_path: Path) -> None:
    item = {"id": "2219", "caption": "c", "audio": "wav_path", "duration": 1.0}
    path = _wavcaps(tmp_path, "sb_final.json", [item])
    [row] = read_wavcaps_json(path)
    with pytest.raises(ValueError, match=rf"sb_final\.json, item 1: no media file for id '2219'"):
        resolve_media(row, tmp_path)
