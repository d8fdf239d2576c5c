"""`reasonaudio-generate` on the videos users bring: no audio track, silent track, any codec, length and frame
rate, folders with broken files, resume after a kill; the short-clip verdict of the features stage."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import set_mp4_rotation, sine, write_video_file

from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.media import load_audio, load_video, probe, video_duration

REPO = Path(__file__).resolve().parents[1]
SR = 16000
AAC_FRAME = 1024 / SR
"""One audio frame of the output mp4 (AAC, 1024 samples at the tiny preset's 16 kHz)."""
MAX_VIDEO_TOKENS = 200
"""The tiny model's MLLM frame budget: a 4:3 video gives 12 visual tokens per 2 frames at 112 px (16 s at 2 fps)."""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """A 2-s features cache (its config and Synchformer weights), a 1-step pretrained tiny model and a BigVGAN."""
    from reasonaudio.models.bigvgan import bigvgan_tiny
    from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl
    from reasonaudio.models.vae import mel_vae_tiny

    root = tmp_path_factory.mktemp("generate_models")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setattr(sys, "argv", ["reasonaudio"])
        torch.manual_seed(0)
        vae = root / "vae.ckpt"
        torch.save({"state_dict": {f"net.{k}": v for k, v in mel_vae_tiny().state_dict().items()}}, vae)
        build_cli(["predict", "--config", str(CONFIG_DIR / "features.yaml"), f"--model.init_args.vae_checkpoint={vae}",
                   "--audio.duration=2.0", f"--data.init_args.root={root / 'synth'}",
                   "--data.init_args.num_clips=2", f"--data.init_args.skip_done_in={root / 'cache'}",
                   f"--trainer.logger.init_args.save_dir={root / 'runs'}",
                   f"--trainer.callbacks.output={root / 'cache'}", "--trainer.accelerator=cpu"])
        captions = [json.loads(line)["caption"] for line in (root / "synth" / "manifest.jsonl").read_text().splitlines()]
        mllm = write_tiny_qwen_vl(root / "mllm", captions + ["a dog barks", "rain falls"])
        build_cli(["fit", "--config", str(CONFIG_DIR / "pretrain.yaml"), "--config", str(CONFIG_DIR / "debug" / "cpu.yaml"),
                   f"--model.init_args.conditioner.init_args.model={mllm}",
                   f"--model.init_args.conditioner.init_args.max_video_tokens={MAX_VIDEO_TOKENS}",
                   "--audio.duration=2.0", f"--data.init_args.train=[{root / 'cache'}]",
                   f"--data.init_args.val=[{root / 'cache'}]", "--data.init_args.batch_size=2",
                   f"--trainer.logger.init_args.save_dir={root / 'runs'}", "--trainer.max_steps=1",
                   "--trainer.limit_val_batches=0", f"--trainer.callbacks.init_args.export={root / 'export'}"])
    bigvgan_tiny().save_pretrained(root / "bigvgan")
    args = ["--ckpt", str(root / "runs" / "pretrain" / "version_0" / "checkpoints" / "last.ckpt"),
            "--features-config", str(root / "runs" / "features" / "version_0" / "config.yaml"),
            "--vocoder", str(root / "bigvgan"), "--ema", str(root / "export" / "model.safetensors"),
            "--sync-weights", str(root / "cache" / "sync_encoder.pt"), "--steps", "2"]
    return {"root": root, "args": args}


@pytest.fixture(scope="module")
def source_frames(fixtures_dir) -> np.ndarray:
    """3 s of a real VGGSound clip at 25 fps, 160x120 (the frames the made videos are encoded from)."""
    clip = fixtures_dir / "media" / "vggsound" / "0nib7bMm8BA_000015.mp4"
    return load_video(clip, 25, duration=3.0, max_side=160, multiple=2).frames.numpy()


def _encoders() -> dict[str, str]:
    """File name → encoder, for the encoders this FFmpeg build has (AV1 only when one exists)."""
    wanted = {"h264.mp4": "libx264", "hevc.mp4": "libx265", "vp9.webm": "libvpx-vp9"}
    for av1 in ("libsvtav1", "libaom-av1", "librav1e"):
        try:
            av.codec.Codec(av1, "w")
        except av.codec.codec.UnknownCodecError:
            continue
        wanted["av1.mkv"] = av1
        break
    for name, codec in wanted.items():
        av.codec.Codec(codec, "w")  # the three required ones must exist: fail loudly otherwise
    return wanted


def _assert_outputs(out: Path, stem: str, src: Path) -> None:
    """``<stem>.flac`` at 16 kHz and ``<stem>.mp4`` whose video and audio last as long as the source video (±1 AAC
    frame), its video stream copied from the source."""
    expected = video_duration(src)
    flac = probe(out / f"{stem}.flac")
    assert flac.audio.sample_rate == SR and abs(flac.duration - expected) <= 1 / SR + 1e-9, (stem, flac.duration)
    info = probe(out / f"{stem}.mp4")
    assert info.video.codec == probe(src).video.codec, stem  # copied, not re-encoded
    assert abs(video_duration(out / f"{stem}.mp4") - expected) <= AAC_FRAME, stem
    assert info.audio.codec == "aac" and abs(info.audio.duration - expected) <= AAC_FRAME, (stem, info.audio.duration)
    assert [s.kind for s in info.streams].count("audio") == 1


def test_folder_of_videos_without_audio_any_codec_rate_and_length(models, source_frames, fixtures_dir, tmp_path):
    from reasonaudio.generate import FAILURES, main

    videos = tmp_path / "videos"
    videos.mkdir()
    for name, codec in _encoders().items():  # video-only files, ≥3 codecs
        write_video_file(videos / name, frames=source_frames, fps=25, codec=codec)
    write_video_file(videos / "fps12_5.mp4", frames=source_frames[::2], fps=12.5)
    write_video_file(videos / "fps60.mp4", frames=np.repeat(source_frames[:50], 3, axis=0)[:120], fps=60)  # 2 s
    write_video_file(videos / "vfr.mkv", frames=source_frames[:6], pts_seconds=[0, 0.1, 0.15, 0.9, 1.0, 1.3])
    set_mp4_rotation(write_video_file(videos / "rotated.mp4", frames=source_frames[:30], fps=25))
    write_video_file(videos / "short_odd.mp4", frames=source_frames[:25, :50, :], fps=25)  # 1 s of 160x50
    silent = videos / "silent_audio.mp4"
    silent.write_bytes((fixtures_dir / "media" / "edge" / "silent_audio.mp4").read_bytes())
    (videos / "notes.txt").write_text("not a video: not listed")
    made = [p for p in videos.iterdir() if p.suffix != ".txt" and p != silent]
    assert all(probe(p).audio is None for p in made) and len(made) >= 8

    out = tmp_path / "out"
    assert main([*models["args"], "--videos", str(videos), "--batch-size", "4", "--out", str(out)]) == 0
    assert (out / FAILURES).read_text() == ""
    for src in [*made, silent]:
        _assert_outputs(out, src.stem, src)
    assert video_duration(videos / "fps12_5.mp4") == pytest.approx(38 / 12.5)  # 38 frames at 12.5 fps
    assert 1.3 < video_duration(videos / "vfr.mkv") < 1.4  # last frame at 1.3 s, shown for its stored duration
    assert video_duration(videos / "short_odd.mp4") == pytest.approx(1.0)  # shorter than the 2-s training clips
    assert probe(out / "rotated.mp4").video.rotation == 90
    assert not list((out / ".partial").iterdir())
    assert float(load_audio(out / "h264.flac", SR).wav.abs().max()) > 0


def test_single_video_with_audio_v2a_prompt_text_only_and_limits(models, fixtures_dir, tmp_path):
    from reasonaudio.generate import main
    from reasonaudio.systems.flow_matching import FlowMatchingPretrain

    clip = fixtures_dir / "media" / "vggsound" / "1aDnyPubxdY_000118.mp4"  # 10 s with audio: its sound is ignored
    common = [*models["args"], "--video", str(clip)]
    assert main([*common, "--out", str(tmp_path / "v2a")]) == 0
    assert main([*common, "--text", "a dog barks", "--out", str(tmp_path / "vt2a")]) == 0
    assert main([*common, "--keep-original-audio", "--out", str(tmp_path / "kept")]) == 0
    for folder in ("v2a", "vt2a"):
        _assert_outputs(tmp_path / folder, clip.stem, clip)
    v2a = load_audio(tmp_path / "v2a" / f"{clip.stem}.flac", SR).wav
    vt2a = load_audio(tmp_path / "vt2a" / f"{clip.stem}.flac", SR).wav
    assert v2a.shape == vt2a.shape == (10 * SR,)
    kept = [s for s in probe(tmp_path / "kept" / f"{clip.stem}.mp4").streams if s.kind == "audio"]
    assert [s.codec for s in kept] == ["aac", "aac"] and all(abs(s.duration - 10.0) <= AAC_FRAME for s in kept)
    original = load_audio(tmp_path / "kept" / f"{clip.stem}.mp4", SR, stream=kept[1].index).wav
    reference = load_audio(clip, SR).wav
    assert float((original - reference).abs().max()) < 1e-6  # the source's AAC packets, copied

    # The V2A prompt is the text-dropped one: the video alone in the user turn.
    system = FlowMatchingPretrain.load_from_checkpoint(models["args"][1], map_location="cpu")
    cond = system.conditioner
    grid = (1, 6, 8)
    video_only, captioned = cond.layout("", grid).ids, cond.layout("a dog barks", grid).ids
    assert video_only != captioned and len(captioned) > len(video_only)
    assert video_only == cond.prompt_ids("", 12) and video_only.count(cond.vision_token_ids()[0]) == 12
    frames = [load_video(clip, 2, duration=2.0, max_side=112, multiple=28).frames.permute(0, 3, 1, 2)]
    with torch.no_grad():  # and the queries it reads out differ from the captioned prompt's
        queries = [cond(frames, [caption], has_video=torch.tensor([True]), has_text=torch.tensor([bool(caption)]))
                   for caption in ("", "a dog barks")]
    assert float((queries[0] - queries[1]).abs().max()) > 1e-3

    assert main([*models["args"], "--text", "rain falls", "--duration", "1.5", "--out", str(tmp_path / "t2a")]) == 0
    assert probe(tmp_path / "t2a" / "text_only.flac").duration == pytest.approx(1.5, abs=1 / SR)
    assert not (tmp_path / "t2a" / "text_only.mp4").exists()

    long_video = write_video_file(tmp_path / "long.mp4", n_frames=60, fps=2, size=(240, 320))  # 30 s > 16 s budget
    with pytest.raises(SystemExit, match=r"cannot use .*long.mp4: too long: 30.0 s .* max_video_tokens=200 "
                                         r"\(at most 16.0 s"):
        main([*models["args"], "--video", str(long_video), "--out", str(tmp_path / "long")])
    tiny = write_video_file(tmp_path / "blink.mp4", n_frames=10, fps=25)  # 0.4 s < one Synchformer window
    with pytest.raises(SystemExit, match=r"blink.mp4: too short: 0.40 s < 0.64 s"):
        main([*models["args"], "--video", str(tiny), "--out", str(tmp_path / "blink")])
    with pytest.raises(SystemExit, match="each video gets its own duration"):
        main([*common, "--duration", "2", "--out", str(tmp_path / "x")])


@pytest.mark.slow
def test_folder_with_a_broken_file_resumes_after_a_kill(models, source_frames, tmp_path):
    from reasonaudio.generate import FAILURES, PARTIAL, main

    videos = tmp_path / "videos"
    videos.mkdir()
    stems = [f"clip{i}" for i in range(6)]
    for i, stem in enumerate(stems):
        write_video_file(videos / f"{stem}.mp4", frames=source_frames[:50 + 5 * i], fps=25)
    (videos / "broken.mp4").write_text("not a video")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "reasonaudio.generate", *models["args"], "--steps", "25", "--batch-size", "1",
           "--videos", str(videos), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("*.mp4")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.stem: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    assert 1 <= len(finished) < len(stems), finished  # killed mid-folder
    half = out / PARTIAL / f"{next(s for s in stems if s not in finished)}.mp4"
    half.write_bytes(b"half-written")  # what a kill during a write leaves

    assert main([*models["args"], "--batch-size", "2", "--videos", str(videos), "--out", str(out)]) == 1
    verdicts = [json.loads(line) for line in (out / FAILURES).read_text().splitlines()]
    assert verdicts == [{"id": "broken", "path": str(videos / "broken.mp4"),
                         "verdict": verdicts[0]["verdict"]}] and verdicts[0]["verdict"].startswith("cannot open")
    for stem in stems:
        _assert_outputs(out, stem, videos / f"{stem}.mp4")
    assert all((out / f"{s}.mp4").stat().st_mtime_ns == t for s, t in finished.items())  # skipped, not redone
    assert not half.exists()


def test_features_and_generation_decode_the_same_frames(fixtures_dir):
    from reasonaudio.data_modules.clips import ClipDataset, ClipRecord
    from reasonaudio.data_modules.inference import InferenceDataset, InferenceRecord

    clip = fixtures_dir / "media" / "vggsound" / "6zlMP_kQ_-w_000030.mp4"
    kw = dict(audio_preset="tiny", sync_size=32, load_mllm_video=True, mllm_max_side=112)
    train = ClipDataset([ClipRecord("c", str(clip))], duration=10.0, strict=True, **kw)[0]
    infer = InferenceDataset([InferenceRecord("c", str(clip), video_duration(clip))], **kw)[0]
    assert infer["sync_video"].shape == (250, 3, 32, 32) and infer["mllm_video"].shape == (20, 3, 84, 112)
    assert torch.equal(train["sync_video"], infer["sync_video"]) and torch.equal(train["sync_mask"], infer["sync_mask"])
    assert torch.equal(train["mllm_video"], infer["mllm_video"])
    assert "wav" not in infer  # generation never decodes audio


def test_features_stage_refuses_short_clips(tmp_path):
    from reasonaudio.data_modules.clips import ClipDataset, ClipRecord, collate_clips
    from reasonaudio.models.vae import mel_vae_tiny
    from reasonaudio.systems.features import FeatureExtraction

    full = write_video_file(tmp_path / "full.mp4", n_frames=50, fps=25, audio=sine(440, 2.0, SR), audio_rate=SR)
    short_audio = write_video_file(tmp_path / "short_audio.mp4", n_frames=50, fps=25, audio=sine(440, 1.5, SR),
                                   audio_rate=SR)
    short_video = write_video_file(tmp_path / "short_video.mp4", n_frames=30, fps=25, audio=sine(440, 2.0, SR),
                                   audio_rate=SR)
    records = [ClipRecord(p.stem, str(p)) for p in (full, short_audio, short_video)]
    ds = ClipDataset(records, duration=2.0, audio_preset="tiny", sync_size=32, load_mllm_video=True, mllm_max_side=56)
    batch = collate_clips([ds[i] for i in range(3)])
    assert not batch["wav_mask"][1, :round(1.6 * SR)].all()  # the data module padded: masks say so
    system = FeatureExtraction(mel_vae_tiny(), audio_preset="tiny", duration=2.0).eval()
    out = system.predict_step(batch, 0)
    assert out["id"] == ["full"] and out["latent_mean"].shape[0] == 1
    reasons = {s.id: (s.path, s.reason) for s in out["skipped"]}
    assert reasons["short_audio"][0] == str(short_audio)
    assert reasons["short_audio"][1].startswith("too_short: audio 1.5") and reasons["short_audio"][1].endswith("< 2.00 s")
    assert reasons["short_video"][1] == "too_short: video 1.20 s < 2.00 s"
