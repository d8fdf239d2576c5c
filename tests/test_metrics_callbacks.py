"""GenerationMetrics and AudioSampleLogger in a tiny pretraining run, and the `eval` stage's results table."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from lightning.pytorch.trainer.states import TrainerFn

from reasonaudio.callbacks.generation_metrics import (ClipMedia, GeneratedClips, GenerationMetrics, plain_caption,
                                                      update_metric)
from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.data_modules.features import CachedFeatureDataModule
from reasonaudio.metrics.clap import CLAPScore, write_tiny_clap
from reasonaudio.metrics.imagebind import IMAGEBIND_TINY, IBScore, ImageBindAV
from reasonaudio.metrics.synthetic import OnsetError, score_synthetic
from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl
from reasonaudio.models.vae import mel_vae_tiny
from reasonaudio.systems.codec import AudioDecoder
from reasonaudio.systems.flow_matching import FlowMatchingPretrain

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = ("onset_error", "onset_f1", "offscreen_presence", "timbre_agreement")


def _metric_specs(d: dict[str, Path]) -> dict:
    specs = {name: {"class_path": f"reasonaudio.metrics.synthetic.{cls}"} for name, cls in
             zip(SYNTHETIC, ("OnsetError", "OnsetF1", "OffscreenPresence", "TimbreAgreement"))}
    specs["clap"] = {"class_path": "reasonaudio.metrics.clap.CLAPScore", "init_args": {"model": str(d["clap"])}}
    specs["ib"] = {"class_path": "reasonaudio.metrics.imagebind.IBScore",
                   "init_args": {"checkpoint": str(d["ib"]), "size": "tiny"}}
    return specs


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """Caches of 3 + 2 synthetic 2 s clips, a tiny MLLM, codec, CLAP and ImageBind, and a 4-step pretraining
    run validating twice with GenerationMetrics (every validation) and AudioSampleLogger."""
    root = tmp_path_factory.mktemp("gm")
    mp = pytest.MonkeyPatch()
    mp.chdir(REPO)
    mp.setattr(sys, "argv", ["reasonaudio"])
    torch.manual_seed(0)
    vae = root / "vae.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in mel_vae_tiny().state_dict().items()}}, vae)
    for corpus, clips in (("train", 3), ("heldout", 2)):
        build_cli(["predict", "--config", str(CONFIG_DIR / "features.yaml"), f"--model.init_args.vae_checkpoint={vae}",
                   "--audio.duration=2.0", f"--data.init_args.root={root / corpus}",
                   f"--data.init_args.num_clips={clips}", f"--data.init_args.seed={len(corpus)}",
                   f"--data.init_args.skip_done_in={root / ('cache_' + corpus)}",
                   f"--trainer.logger.init_args.save_dir={root / 'runs'}",
                   f"--trainer.callbacks.output={root / ('cache_' + corpus)}", "--trainer.accelerator=cpu"])
    captions = [json.loads(line)["caption"] for c in ("train", "heldout")
                for line in (root / c / "manifest.jsonl").read_text().splitlines()]
    from reasonaudio.models.bigvgan import bigvgan_tiny

    d = {"root": root, "vae": vae, "mllm": write_tiny_qwen_vl(root / "mllm", captions),
         "clap": write_tiny_clap(root / "clap", [plain_caption(c) for c in captions]),
         "ib": root / "imagebind_huge.pth", "vocoder": root / "bigvgan", "export": root / "export"}
    torch.save(ImageBindAV(IMAGEBIND_TINY).state_dict(), d["ib"])
    bigvgan_tiny().save_pretrained(d["vocoder"])
    build_cli(["fit", "--config", str(CONFIG_DIR / "pretrain.yaml"), "--config", str(CONFIG_DIR / "debug" / "cpu.yaml"),
               *_data_args(d), f"--trainer.logger.init_args.save_dir={root / 'runs'}", "--trainer.max_steps=4",
               "--trainer.val_check_interval=2", f"--trainer.callbacks.init_args.export={d['export']}",
               "--trainer.callbacks+=reasonaudio.callbacks.generation_samples.AudioSampleLogger",
               "--trainer.callbacks.vae=reasonaudio.models.vae.mel_vae_tiny",
               f"--trainer.callbacks.vae_checkpoint={vae}",
               f"--trainer.callbacks.vocoder={d['vocoder']}", "--trainer.callbacks.steps=2",
               "--trainer.callbacks+=reasonaudio.callbacks.generation_metrics.GenerationMetrics",
               "--trainer.callbacks.vae=reasonaudio.models.vae.mel_vae_tiny",
               f"--trainer.callbacks.vae_checkpoint={vae}",
               f"--trainer.callbacks.vocoder={d['vocoder']}", "--trainer.callbacks.steps=2",
               f"--trainer.callbacks.corpora=[{root / 'heldout'}]",
               f"--trainer.callbacks.metrics={json.dumps(_metric_specs(d))}"])
    mp.undo()
    d["run"] = root / "runs" / "pretrain" / "version_0"
    return d


def _data_args(d: dict[str, Path]) -> list[str]:
    return [f"--model.init_args.conditioner.init_args.model={d['mllm']}",
            "--audio.duration=2.0",
            f"--data.init_args.train=[{d['root'] / 'cache_train'}]",
            f"--data.init_args.val=[{d['root'] / 'cache_heldout'}]",
            "--data.init_args.batch_size=2"]


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next(folder.glob("events.out.tfevents.*"))),
                           size_guidance={"audio": 0, "images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def _direct(d: dict[str, Path]) -> tuple[dict[str, float], torch.Tensor, list[str]]:
    """The final EMA weights, the held-out clips' fixed noise, decoded and scored without the callback."""
    system = FlowMatchingPretrain.load_from_checkpoint(d["run"] / "checkpoints" / "last.ckpt").eval()
    system.load_ema(str(d["export"] / "model.safetensors"))
    dm = CachedFeatureDataModule(train=[str(d["root"] / "cache_train")], val=[str(d["root"] / "cache_heldout")],
                                 batch_size=2)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    wavs = AudioDecoder(mel_vae_tiny(), str(d["vae"]), str(d["vocoder"])).audio(
        system.generate(batch, steps=2, cfg=4.5, seed=0))
    values = score_synthetic(wavs, 16000, [d["root"] / "heldout" / "gt" / f"{i}.json" for i in batch["id"]])
    values["clap"] = float(CLAPScore(str(d["clap"])).similarities(
        wavs, 16000, [plain_caption(c) for c in batch["caption"]]).mean())
    values["ib"] = float(IBScore(str(d["ib"]), size="tiny").similarities(
        wavs, 16000, [d["root"] / "heldout" / "videos" / f"{i}.mp4" for i in batch["id"]]).mean())
    return values, wavs, list(batch["id"])


@pytest.mark.slow
def test_validation_logs_metrics_equal_to_a_direct_computation(run):
    acc = _events(run["run"])
    expected, wavs, ids = _direct(run)
    for name in (*SYNTHETIC, "clap", "ib"):
        events = acc.Scalars(f"val/{name}")
        assert len(events) == 2  # every validation run (steps 2 and 4)
        assert events[-1].value == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
    assert 0 < expected["onset_error"] and -1 <= expected["clap"] <= 1 and -1 <= expected["ib"] <= 1

    tags = acc.Tags()
    assert {f"val/generated/{i}" for i in ids} <= set(tags["audio"])
    assert {f"val/generated_mel/{i}" for i in ids} <= set(tags["images"])
    assert any(t.startswith("val/caption/") for t in tags["tensors"])
    audio = acc.Audio(f"val/generated/{ids[0]}")[-1]
    assert audio.sample_rate == 16000 and audio.length_frames == wavs.shape[1]


@pytest.mark.slow
def test_eval_stage_writes_the_results_table(run, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["reasonaudio"])
    config = yaml.safe_load((CONFIG_DIR / "eval.yaml").read_text())
    specs = config["trainer"]["callbacks"][-1]["init_args"]["metrics"]  # the committed metrics, weights moved away
    weights = {}
    for name, spec in specs.items():
        for arg, value in spec.get("init_args", {}).items():
            if isinstance(value, str) and value.startswith("weights/"):
                spec["init_args"][arg] = weights[name] = str(run["root"] / value)
    assert set(weights) == {"fd", "kl", "is", "clap", "ib", "desync"}
    ckpt = run["run"] / "checkpoints" / "last.ckpt"
    build_cli(["validate", "--config", str(CONFIG_DIR / "eval.yaml"), "--ckpt_path", str(ckpt),
               *_data_args(run)[1:], f"--trainer.logger.init_args.save_dir={run['root'] / 'runs'}",
               "--trainer.accelerator=cpu", f"--trainer.callbacks.init_args.vae_checkpoint={run['vae']}",
               f"--trainer.callbacks.init_args.vocoder={run['vocoder']}", "--trainer.callbacks.init_args.steps=2",
               f"--trainer.callbacks.init_args.corpora=[{run['root'] / 'heldout'}]",
               f"--trainer.callbacks.init_args.metrics={json.dumps(specs)}"])
    out = run["root"] / "runs" / "eval" / "version_0"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 1 and list(rows[0])[:7] == ["model", "fd", "kl", "is", "clap", "ib", "desync"]
    row = rows[0]
    assert row["model"] == f"{ckpt} (2 clips)"
    for name, path in weights.items():  # every weight-dependent column says which file is missing
        assert row[name] == f"weights not found: {path}", name
    logged = _events(run["run"])  # validate restores the checkpoint's EMA weights: the fit run's last values
    for name in SYNTHETIC:
        assert float(row[name]) == pytest.approx(logged.Scalars(f"val/{name}")[-1].value, rel=1e-5, abs=1e-6)
    md = (out / "results.md").read_text().splitlines()
    assert md[0].startswith("| model | FD (↓) | KL (↓) | IS (↑) | CLAP (↑) | IB (↑) | DeSync (↓) | Onset error")
    assert f"{float(row['onset_f1']):.3f}" in md[2] and "weights not found" in md[2]
    assert (out / "config.yaml").is_file()  # the resolved config of the evaluation


def _stub_clips(n: int, gt: list[Path | None]) -> GeneratedClips:
    return GeneratedClips(ids=[f"c{i}" for i in range(n)], audio=torch.zeros(n, 16000), sample_rate=16000,
                          captions=[""] * n, media=[ClipMedia(ground_truth=g) for g in gt], has_video=[False] * n)


def test_frequency_subset_and_missing_inputs(tmp_path):
    cb = GenerationMetrics(mel_vae_tiny(), "vae.ckpt", "vocoder", {"onset_error": OnsetError}, max_items=3,
                           every_n_validations=2)
    trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn=TrainerFn.FITTING))
    module = SimpleNamespace(device=torch.device("cpu"))
    cb.setup(trainer, module, "fit")
    active = []
    for _ in range(5):
        cb.on_validation_epoch_start(trainer, module)
        active.append(cb._active)
    assert active == [True, False, True, False, True]
    assert cb.state_dict() == {"validations": 5}
    cb.load_state_dict({"validations": 3})  # a resumed run keeps the phase
    cb.on_validation_epoch_start(trainer, module)
    assert not cb._active
    trainer.state.fn = TrainerFn.VALIDATING
    cb.on_validation_epoch_start(trainer, module)
    assert cb._active  # `reasonaudio validate` always scores
    with pytest.raises(ValueError, match=r"no ground truth .* \['c1'\]"):
        update_metric(OnsetError(), _stub_clips(2, [tmp_path / "a.json", None]))
    with pytest.raises(TypeError, match="cannot feed MeanMetric"):
        from torchmetrics import MeanMetric
        update_metric(MeanMetric(), _stub_clips(1, [None]))
    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        empty = GenerationMetrics(mel_vae_tiny(), "v", "w", {"e": OnsetError}, corpora=[str(tmp_path)])
        empty.setup(trainer, module, "fit")
    assert plain_caption("<HINT>low tones</HINT> a ball <TRACK name='b' screen=on_screen> <KEYWORDS> ping "
                         "</KEYWORDS> </TRACK>") == "low tones a ball ping"


def test_objective_metrics_get_generated_and_ground_truth_sides(tmp_path):
    """FD, KL and IS through update_metric equal direct calls with the right sides and pairs."""
    from torch import nn

    from reasonaudio.media import load_audio, write_audio
    from reasonaudio.metrics.backbones import AudioBackbone, AudioFeatures
    from reasonaudio.metrics.frechet import FrechetDistance
    from reasonaudio.metrics.scores import InceptionScore, KLDivergence

    class Stats(AudioBackbone):
        title, checkpoint_name, checkpoint_source = "stats", "none", "test"

        def __init__(self):
            super().__init__()
            self.sample_rate, self.embedding_dim, self.num_classes = 8000, 3, 4
            self.proj = nn.Linear(3, 4)

        def forward(self, wav: torch.Tensor) -> AudioFeatures:
            feats = torch.stack([wav.std(-1), wav.abs().amax(-1), wav[:, ::2].std(-1)], -1)
            return AudioFeatures(feats, self.proj(feats))

    torch.manual_seed(0)
    backbone = Stats()
    gen = 0.3 * torch.randn(4, 16000)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"c{i}.wav")
        write_audio(paths[-1], 0.2 * torch.randn(12000 + 1000 * i).clamp(-1, 1) * (i + 1) / 4, 16000)
    clips = GeneratedClips(ids=[f"c{i}" for i in range(4)], audio=gen, sample_rate=16000, captions=[""] * 4,
                           media=[ClipMedia(audio=p) for p in paths], has_video=[False] * 4)
    refs = [load_audio(p, 16000).wav for p in paths]

    fd, fd_direct = FrechetDistance(backbone, reset_real_features=False), FrechetDistance(backbone)
    update_metric(fd, clips)
    fd_direct.update(gen, real=False, sample_rate=16000)
    for r in refs:
        fd_direct.update(r[None], real=True, sample_rate=16000)
    assert float(fd.compute()) == pytest.approx(float(fd_direct.compute()), rel=1e-9)
    real_count = float(fd.real_count)
    update_metric(fd, clips, real=False)  # the real side is complete: only generated audio is added
    assert float(fd.real_count) == real_count and float(fd.fake_count) == 8

    kl, kl_direct = KLDivergence(backbone), KLDivergence(backbone)
    update_metric(kl, clips)
    for i, r in enumerate(refs):
        kl_direct.update(gen[i:i + 1], r[None], 16000)
    assert float(kl.compute()) == pytest.approx(float(kl_direct.compute()), rel=1e-12)
    assert float(kl.compute()) > 0

    inception, inception_direct = InceptionScore(backbone, splits=2), InceptionScore(backbone, splits=2)
    update_metric(inception, clips)
    inception_direct.update(gen, 16000)
    from reasonaudio.callbacks.generation_metrics import metric_value

    assert metric_value(inception) == pytest.approx(float(inception_direct.compute()[0]), rel=1e-12)
    assert metric_value(InceptionScore(backbone)) == "no scorable clips"
