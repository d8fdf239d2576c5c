"""``reasonaudio-metrics`` through ``main([...])``: pairing, problem reporting, values, cache, missing weights.

The networks are tiny random-weight versions of the real ones, saved under their official file
names in a temporary ``--weights`` folder and loaded by the evaluator through ``MODELS`` (patched to
build the tiny sizes and to count forward calls). Expected values are recomputed directly from the
same checkpoints with the metric classes, following av-benchmark's clip selection, so the test
checks what the evaluator feeds each metric.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_audio_file, write_video_file

from reasonaudio.metrics import evaluate
from reasonaudio.metrics.backbones.panns import CNN14_TINY, Cnn14
from reasonaudio.metrics.backbones.passt import PASST_TINY, PaSST
from reasonaudio.metrics.backbones.vggish import VGGISH_TINY, VGGish
from reasonaudio.metrics.desync import desync_seconds
from reasonaudio.metrics.frechet import FrechetDistance
from reasonaudio.metrics.scores import InceptionScore, KLDivergence
from reasonaudio.models.synchformer import SYNCHFORMER_TINY, Synchformer

pytestmark = pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 5 clips, 32-d: singular covariances

AUDIO = {"panns": (Cnn14, CNN14_TINY), "vggish": (VGGish, VGGISH_TINY), "passt": (PaSST, PASST_TINY)}
DURATION = 2.0


@pytest.fixture
def tiny_weights(tmp_path, monkeypatch) -> tuple[Path, Counter]:
    """A --weights folder of tiny random checkpoints and a counter of network calls."""
    weights = tmp_path / "weights"
    weights.mkdir()
    calls: Counter = Counter()
    torch.manual_seed(0)

    def counted(model: torch.nn.Module, name: str) -> torch.nn.Module:
        model.register_forward_hook(lambda *_: calls.update([name]))
        return model

    for name, (cls, config) in AUDIO.items():
        torch.save(cls(config).state_dict(), weights / cls.checkpoint_name)
        monkeypatch.setitem(evaluate.MODELS, name, evaluate.ModelSpec(
            cls.checkpoint_name, lambda path, cls=cls, config=config, name=name: counted(
                cls(config).load_checkpoint(path), name)))
    torch.save(Synchformer(SYNCHFORMER_TINY).state_dict(), weights / evaluate.SYNCHFORMER_CHECKPOINT)

    def build_sync(path):
        model = Synchformer.from_checkpoint(path, SYNCHFORMER_TINY)
        counted(model.vfeat_extractor, "sync_video")
        counted(model.afeat_extractor, "sync_audio")
        return model

    monkeypatch.setitem(evaluate.MODELS, "synchformer", evaluate.ModelSpec(evaluate.SYNCHFORMER_CHECKPOINT, build_sync))
    return weights, calls


def _tone(seed: int, seconds: float, rate: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    f = rng.uniform(200, 3000)
    return (0.4 * np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
            + 0.05 * rng.normal(size=t.size)).astype(np.float32)


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """gt: clip_00..clip_04 (16 kHz wav); pred: clip_00..clip_03 (mixed rates and formats), an extra
    stem, an undecodable file, an ambiguous stem and a text file."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for i in range(5):
        write_audio_file(gt / f"clip_{i:02d}.wav", _tone(i, DURATION + 0.5, 16000), 16000)
    for i in range(4):
        rate, ext = ((22050, "flac"), (16000, "wav"), (44100, "wav"))[i % 3]
        write_audio_file(pred / f"clip_{i:02d}.{ext}", _tone(100 + i, DURATION, rate), rate)
    write_audio_file(pred / "extra.wav", _tone(200, DURATION, 16000), 16000)
    (pred / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    write_audio_file(pred / "dup.wav", _tone(300, DURATION, 16000), 16000)
    write_audio_file(pred / "dup.flac", _tone(301, DURATION, 16000), 16000)
    (pred / "notes.txt").write_text("not a clip")
    return gt, pred


def _run(args: list, capsys) -> tuple[int, dict, str]:
    code = evaluate.main([str(a) for a in args])
    out = capsys.readouterr().out
    report = json.loads(Path(args[args.index("--out") + 1]).read_text())
    return code, report, out


def _features(weights: Path, folder: Path, stems: list[str]) -> dict[str, dict]:
    """Direct extraction with the same checkpoints: {network: {stem: AudioFeatures}}."""
    feats: dict[str, dict] = {}
    for name, (cls, config) in AUDIO.items():
        model = cls(config).load_checkpoint(weights / cls.checkpoint_name)
        feats[name] = {}
        for stem in stems:
            path = next(p for p in folder.iterdir() if p.stem == stem)
            wav, rate = evaluate.read_audio(path)
            feats[name][stem] = model.embed(wav, rate, DURATION)
    return feats


def test_values_pairing_and_reported_problems(tiny_weights, folders, tmp_path, capsys):
    weights, calls = tiny_weights
    gt, pred = folders
    out = tmp_path / "results.json"
    code, report, stdout = _run(["--pred", pred, "--gt", gt, "--weights", weights, "--out", out,
                                 "--duration", DURATION, "--cache-dir", tmp_path / "cache", "--is-splits", 3,
                                 "--batch-size", 4], capsys)
    assert code == evaluate.EXIT_INCOMPLETE  # an undecodable file and an ambiguous stem
    assert report["skipped"] == {"clap": "needs --captions", "ib": "needs --videos", "desync": "needs --videos"}
    assert report["pairing"]["pred_only"] == ["broken", "extra"] and report["pairing"]["gt_only"] == ["clip_04"]
    assert report["pairing"]["paired"] == 4
    assert report["inputs"]["pred"]["duplicate_stems"] == {"dup": ["dup.flac", "dup.wav"]}
    assert report["inputs"]["pred"]["ignored"] == ["notes.txt"]
    assert list(report["problems"]) == [str(pred / "broken.wav")]
    assert report["problems"][str(pred / "broken.wav")][0].startswith("unreadable audio")
    assert report["shorter_than_duration"] == {}
    assert "broken.wav" in stdout and "| FD_PANNs ↓ |" in stdout and "gt_only: 1 (clip_04)" in stdout

    paired = [f"clip_{i:02d}" for i in range(4)]
    pred_all, gt_all = paired + ["extra"], paired + ["clip_04"]
    p, g = _features(weights, pred, pred_all), _features(weights, gt, gt_all)
    m = report["metrics"]
    assert all(r["status"] == "ok" for r in m.values()), m

    def fd(name: str, pred_stems, gt_stems) -> float:
        metric = FrechetDistance(num_features=p[name][pred_stems[0]].embedding.shape[-1])
        metric.update(torch.cat([g[name][s].flat_embedding() for s in gt_stems]), real=True)
        metric.update(torch.cat([p[name][s].flat_embedding() for s in pred_stems]), real=False)
        return float(metric.compute())

    def kl(name: str) -> float:
        metric = KLDivergence()
        metric.update(torch.cat([p[name][s].logits for s in paired]), torch.cat([g[name][s].logits for s in paired]))
        return float(metric.compute())

    def inception(name: str) -> float:
        metric = InceptionScore(splits=3)
        metric.update(torch.cat([p[name][s].logits for s in pred_all]))
        return float(metric.compute()[0])

    assert m["fd_panns"]["value"] == pytest.approx(fd("panns", pred_all, gt_all), rel=1e-5)  # all vs all
    assert m["fd_panns"]["clips"] == 5 and m["fd_panns"]["details"]["gt_clips"] == 5
    assert m["fd_vggish"]["value"] == pytest.approx(fd("vggish", pred_all, gt_all), rel=1e-5)
    assert m["fd_vggish"]["details"]["pred_embeddings"] == 5 * 2  # 2 s → two 0.96 s windows per clip
    assert m["fd_passt"]["value"] == pytest.approx(fd("passt", paired, paired), rel=1e-5)  # paired only
    assert m["fd_passt"]["clips"] == 4
    assert m["kl_panns"]["value"] == pytest.approx(kl("panns"), rel=1e-5)
    assert m["kl_passt"]["value"] == pytest.approx(kl("passt"), rel=1e-5)
    assert m["is_panns"]["value"] == pytest.approx(inception("panns"), rel=1e-5)
    assert m["is_passt"]["value"] == pytest.approx(inception("passt"), rel=1e-5)
    assert report["config"]["metrics"] == [n for n in evaluate.METRICS if n not in ("clap", "ib", "desync")]
    # one decoding pass per side for the three networks, in batches of at most 4 clips of one length
    assert calls["panns"] == calls["vggish"] == calls["passt"] > 0


def test_second_run_reuses_the_cache(tiny_weights, folders, tmp_path, capsys):
    weights, calls = tiny_weights
    gt, pred = folders
    args = ["--pred", pred, "--gt", gt, "--weights", weights, "--duration", DURATION, "--cache-dir", tmp_path / "c",
            "--is-splits", 3]
    _, first, _ = _run(args + ["--out", tmp_path / "1.json"], capsys)
    assert calls["panns"] > 0
    calls.clear()
    _, second, _ = _run(args + ["--out", tmp_path / "2.json"], capsys)
    assert sum(calls.values()) == 0  # every clip came from the cache
    assert second["metrics"] == first["metrics"]
    # a changed file (new content, size and mtime) is the only one recomputed
    write_audio_file(gt / "clip_03.wav", _tone(999, DURATION + 0.25, 16000), 16000)
    _, third, _ = _run(args + ["--out", tmp_path / "3.json", "--batch-size", 1], capsys)
    assert calls == Counter({"panns": 1, "vggish": 1, "passt": 1})
    assert third["metrics"]["fd_panns"]["value"] != first["metrics"]["fd_panns"]["value"]
    calls.clear()
    _run(args + ["--out", tmp_path / "4.json", "--no-cache", "--metrics", "is_panns"], capsys)
    assert calls == Counter({"panns": 1})  # the 5 readable generated clips again, in one batch


def test_missing_weights_are_reported_and_the_rest_is_computed(tiny_weights, folders, tmp_path, capsys):
    weights, calls = tiny_weights
    gt, pred = folders
    for name in ("vggish", "passt"):
        (weights / AUDIO[name][0].checkpoint_name).unlink()
    code, report, stdout = _run(["--pred", pred, "--gt", gt, "--weights", weights, "--out", tmp_path / "r.json",
                                 "--duration", DURATION, "--no-cache", "--is-splits", 3,
                                 "--metrics", "fd_panns,fd_vggish,kl_passt,is_panns"], capsys)
    assert code == evaluate.EXIT_INCOMPLETE
    m = report["metrics"]
    assert m["fd_panns"]["status"] == "ok" and m["is_panns"]["status"] == "ok"
    assert m["fd_vggish"] == {"title": "FD_VGG", "value": None, "clips": 0, "details": {},
                              "status": f"weights not found: {weights / 'vggish-10086976.pth'}"}
    assert m["kl_passt"]["status"] == f"weights not found: {weights / 'passt-s-f128-p16-s10-ap.476-swa.pt'}"
    assert f"weights not found: {weights / 'vggish-10086976.pth'}" in stdout
    assert calls["vggish"] == calls["passt"] == 0
    # nothing at all: every metric says which file it wanted, the run still writes its report
    empty = tmp_path / "empty"
    empty.mkdir()
    code, report, _ = _run(["--pred", pred, "--gt", gt, "--weights", empty, "--out", tmp_path / "e.json",
                            "--no-cache"], capsys)
    assert code == evaluate.EXIT_INCOMPLETE
    assert report["metrics"]["fd_panns"]["status"] == f"weights not found: {empty / 'Cnn14_16k_mAP=0.438.pth'}"
    assert all(r["status"].startswith("weights not found: ") for r in report["metrics"].values())


def test_clean_run_exits_zero_and_usage_errors(tiny_weights, tmp_path, capsys):
    weights, _ = tiny_weights
    pred = tmp_path / "p"
    pred.mkdir()
    for i in range(4):
        write_audio_file(pred / f"c{i}.wav", _tone(i, DURATION, 16000), 16000)
    code, report, _ = _run(["--pred", pred, "--weights", weights, "--out", tmp_path / "r.json", "--duration", 3.0,
                            "--no-cache", "--is-splits", 2], capsys)
    assert code == evaluate.EXIT_OK
    assert list(report["metrics"]) == ["is_panns", "is_passt"]  # no --gt, no --videos
    assert report["shorter_than_duration"] == {str(pred / f"c{i}.wav"): 2.0 for i in range(4)}
    for bad, message in ((["--metrics", "fd_panns"], "needs --gt"), (["--metrics", "nope"], "unknown metric"),
                         (["--duration", "0"], "--duration")):
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(["--pred", str(pred), "--weights", str(weights), *bad])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--pred", str(tmp_path / "missing")])
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # the subjective-evaluation subcommands share the entry point
        evaluate.main(["listening-test", "--help"])
    assert exit_info.value.code == 0 and "--clips" in capsys.readouterr().out


def test_captions_csv(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text("name,caption\nclip_00.mp4,a dog barks\nclip_01,rain on a roof\n")
    assert evaluate.read_captions(path) == {"clip_00": "a dog barks", "clip_01": "rain on a roof"}
    path.write_text("name,caption\na,x\na,y\n")
    with pytest.raises(ValueError, match="'a' is listed twice"):
        evaluate.read_captions(path)
    path.write_text("file,text\na,x\n")
    with pytest.raises(ValueError, match="needs a 'caption' column"):
        evaluate.read_captions(path)


def test_desync_on_real_vggsound_clips(tiny_weights, fixtures_dir, tmp_path, capsys):
    """Real 10 s VGGSound mp4s as ground truth and videos; generated audio = their own first 5 s (3 clips)."""
    weights, calls = tiny_weights
    videos = fixtures_dir / "media" / "vggsound"
    stems = sorted(p.stem for p in videos.glob("*.mp4"))[:3]
    pred = tmp_path / "pred"
    pred.mkdir()
    for stem in stems:
        wav, rate = evaluate.read_audio(videos / f"{stem}.mp4")
        write_audio_file(pred / f"{stem}.flac", wav[:round(5.0 * rate)].numpy(), rate)
    (videos_dir := tmp_path / "videos").mkdir()
    for stem in stems:
        (videos_dir / f"{stem}.mp4").symlink_to(videos / f"{stem}.mp4")
    write_video_file(videos_dir / "shortclip.mp4", n_frames=50, fps=25.0)  # 2 s: too short for DeSync
    write_audio_file(pred / "shortclip.wav", _tone(0, 5.0, 16000), 16000)
    code, report, stdout = _run(["--pred", pred, "--gt", videos, "--videos", videos_dir, "--weights", weights,
                                 "--out", tmp_path / "r.json", "--duration", 5.0, "--cache-dir", tmp_path / "c",
                                 "--metrics", "desync,kl_panns"], capsys)
    m = report["metrics"]
    assert m["desync"]["status"] == "ok" and m["desync"]["clips"] == 3
    assert report["inputs"]["gt"]["ignored"] == ["vggsound.csv"]
    assert report["pairing"]["pred_only"] == ["shortclip"] and len(report["pairing"]["gt_only"]) == 3
    assert report["problems"][str(pred / "shortclip.wav")] == [
        "not scored by DeSync (video shortclip.mp4): DeSync needs at least 14 windows (4.8 s) of both video and audio, "
        "got video tokens (1, 40, 64) and audio tokens (1, 84, 64)"]
    assert report["shorter_than_duration"] == {str(videos_dir / "shortclip.mp4"): 2.0}
    assert code == evaluate.EXIT_INCOMPLETE
    assert m["kl_panns"]["status"] == "ok" and m["kl_panns"]["clips"] == 3  # AAC in mp4 ↔ FLAC, by stem
    # the DeSync value equals the model applied directly to the same inputs
    model = Synchformer.from_checkpoint(weights / evaluate.SYNCHFORMER_CHECKPOINT, SYNCHFORMER_TINY)
    from reasonaudio.media import load_video
    direct = []
    for stem in stems:
        frames = load_video(videos / f"{stem}.mp4", 25, duration=5.0, size=SYNCHFORMER_TINY.image_size).frames
        wav, rate = evaluate.read_audio(pred / f"{stem}.flac")
        direct.append(float(desync_seconds(model, frames[None], wav[None], rate)[0]))
    assert m["desync"]["value"] == pytest.approx(np.mean(direct), abs=1e-6)
    calls.clear()
    _run(["--pred", pred, "--gt", videos, "--videos", videos_dir, "--weights", weights, "--out", tmp_path / "2.json",
          "--duration", 5.0, "--cache-dir", tmp_path / "c", "--metrics", "desync"], capsys)
    assert sum(calls.values()) == 0  # tokens from the cache; the short video fails again before the network


def test_clap_and_ib_through_the_evaluator(tmp_path, make_video, monkeypatch, capsys):
    """CLAP (captions; here ``--clap laion``) and IB (videos) are registered metrics whose values equal the metrics
    run directly (MS-CLAP 2023, the default: tests/test_metrics_msclap.py)."""
    from reasonaudio.metrics.clap import CLAPScore, write_tiny_clap
    from reasonaudio.metrics.imagebind import IMAGEBIND_TINY, IBScore, ImageBindAV

    weights, pred, videos = tmp_path / "weights", tmp_path / "pred", tmp_path / "videos"
    for d in (weights, pred, videos):
        d.mkdir()
    captions = {"clip_00": "a dog barks", "clip_01": "rain on a roof"}
    write_tiny_clap(weights / evaluate.CLAP_FOLDER, list(captions.values()))
    torch.manual_seed(0)
    torch.save(ImageBindAV(IMAGEBIND_TINY).state_dict(), weights / evaluate.IMAGEBIND_FILE)
    monkeypatch.setattr("reasonaudio.metrics.evaluate_registry.IMAGEBIND_SIZE", "tiny")  # read there by _ib
    for i, stem in enumerate(captions):
        write_audio_file(pred / f"{stem}.wav", _tone(i, DURATION, 16000), 16000)
        (videos / f"{stem}.mp4").write_bytes(make_video(f"v{i}.mp4", n_frames=int(DURATION * 8), fps=8,
                                                               size=(64, 64)).read_bytes())
    csv = tmp_path / "captions.csv"
    csv.write_text("name,caption\n" + "".join(f"{k},{v}\n" for k, v in captions.items()))
    code, report, _ = _run(["--pred", pred, "--videos", videos, "--captions", csv, "--metrics", "clap,ib",
                            "--clap", "laion", "--weights", weights, "--duration", DURATION, "--out", tmp_path / "r.json"], capsys)
    assert code == 0, report
    clap = CLAPScore(str(weights / evaluate.CLAP_FOLDER))
    ib = IBScore(str(weights / evaluate.IMAGEBIND_FILE), size="tiny", audio_length=DURATION)
    for stem in captions:
        wav, rate = evaluate.read_audio(pred / f"{stem}.wav")
        clap.update(wav[None, :round(DURATION * rate)], rate, [captions[stem]])
        ib.update(wav[None, :round(DURATION * rate)], rate, [videos / f"{stem}.mp4"])
    values = {name: report["metrics"][name]["value"] for name in ("clap", "ib")}
    assert values["clap"] == pytest.approx(float(clap.compute()), abs=1e-6)
    assert values["ib"] == pytest.approx(float(ib.compute()), abs=1e-6)
