"""`reasonaudio-data check`: the installed console script on real and broken files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "reasonaudio-data"), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def _reports(out: str) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}


def test_check_edge_fixtures_jsonl(fixtures_dir):
    edge = sorted((fixtures_dir / "media" / "edge").iterdir())
    res = _run("check", "--jsonl", *map(str, edge))
    assert res.returncode == 1, res.stderr  # the silent files are not ok
    r = _reports(res.stdout)
    assert set(r) == {"silent_audio.mp4", "opus_audio.mkv", "no_duration.webm", "multi_stream.mp4"}
    for rep in r.values():
        assert set(rep) >= {"path", "ok", "reason", "duration", "video_fps", "audio_rate", "audio_channels"}
    assert not r["silent_audio.mp4"]["ok"] and "silent" in r["silent_audio.mp4"]["reason"]
    assert r["silent_audio.mp4"]["duration"] == pytest.approx(7.036, abs=0.01)
    assert r["opus_audio.mkv"]["ok"] and r["opus_audio.mkv"]["reason"] is None
    assert r["opus_audio.mkv"]["duration"] == pytest.approx(10.381, abs=0.01)
    assert (r["opus_audio.mkv"]["audio_rate"], r["opus_audio.mkv"]["audio_channels"]) == (48000, 1)
    ms = r["multi_stream.mp4"]
    assert ms["ok"] and ms["duration"] == pytest.approx(13.056, abs=0.01)
    assert (ms["video_fps"], ms["audio_rate"], ms["audio_channels"]) == (25.0, 8000, 2)
    nd = r["no_duration.webm"]  # no duration in the container: measured from packets
    assert nd["duration"] == pytest.approx(4.94, abs=0.1) and "silent" in nd["reason"]
    assert nd["video_fps"] == pytest.approx(14.985, abs=1e-3)


def test_check_manifest_and_dash_ids(fixtures_dir):
    vgg = fixtures_dir / "media" / "vggsound"
    res = _run("check", "-Qowmc0P9ic_000034.mp4", "--jsonl", "vggsound.csv", "--require", "video,audio",
               "--duration", "8", cwd=vgg)
    assert res.returncode == 0, res.stdout + res.stderr
    reports = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(reports) == 7 and all(r["ok"] for r in reports)
    assert reports[0]["path"] == "-Qowmc0P9ic_000034.mp4"  # reported as typed, not as ./-Q...
    assert {r["duration"] for r in reports} == {10.0}
    assert "checked 7 files: 7 ok, 0 not ok" in res.stderr


def test_check_broken_inputs_report_reasons(tmp_path, fixtures_dir):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    src = (fixtures_dir / "media" / "vggsound" / "0nib7bMm8BA_000015.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(src[: len(src) // 3])
    res = _run("check", "--jsonl", *(str(tmp_path / n) for n in ("empty.mp4", "notes.mp4", "truncated.mp4")),
               str(tmp_path / "absent.mp4"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    r = _reports(res.stdout)
    assert r["empty.mp4"]["reason"] == "cannot open: empty file (0 bytes)"
    assert r["notes.mp4"]["reason"].startswith("cannot open")
    assert r["absent.mp4"]["reason"] == "cannot open: file does not exist"
    assert not r["truncated.mp4"]["ok"] and r["truncated.mp4"]["reason"]


def test_check_requires_audio(tmp_path, fixtures_dir, make_video):
    video_only = make_video("video_only.mp4", n_frames=10, fps=25)
    res = _run("check", "--jsonl", "--require", "audio", str(video_only))
    assert res.returncode == 1
    assert json.loads(res.stdout)["reason"] == "no audio stream"


def test_usage_errors_exit_2(tmp_path):
    assert _run("check").returncode == 2
    assert _run("check", "--require", "subtitles", str(tmp_path)).returncode == 2
    assert _run("frobnicate").returncode == 2


def test_python_dash_m_entry_points():
    for module in ("reasonaudio", "reasonaudio.data_tools"):
        res = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and "usage" in res.stdout.lower()


def test_tiny_mllm_folder_covers_captions(tmp_path):
    from reasonaudio.models.conditioners import MLLMQueryConditioner

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "caption": "<HINT>soft rain</HINT> rain on a roof "
                                    "<TRACK name='rain' screen=off_screen> <KEYWORDS> steady, hiss </KEYWORDS> </TRACK>"}) + "\n")
    res = _run("tiny-mllm", "--out", str(tmp_path / "mllm"), str(manifest))
    assert res.returncode == 0, res.stderr
    cond = MLLMQueryConditioner(str(tmp_path / "mllm"), out_dim=8, num_queries=2)
    ids = cond.tokenizer("rain on a roof , steady hiss")["input_ids"]
    assert cond.tokenizer.unk_token_id not in ids  # every caption word is in the vocabulary
