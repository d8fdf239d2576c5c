"""The `pretrain` stage end to end on a tiny feature cache: fixed-grid validation, EMA, export, reload, sampling."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reasonaudio.callbacks.ema import EMA
from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.data_modules.features import CachedFeatureDataModule
from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl
from reasonaudio.models.vae import mel_vae_tiny
from reasonaudio.systems.flow_matching import FlowMatchingPretrain

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup_dirs(tmp_path, monkeypatch) -> dict[str, Path]:
    """A 3-clip synthetic cache (2 s), its held-out twin, and a tiny Qwen2.5-VL folder for the captions."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["reasonaudio"])
    torch.manual_seed(0)
    vae = tmp_path / "vae.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in mel_vae_tiny().state_dict().items()}}, vae)
    for corpus, clips in (("train", 3), ("heldout", 2)):
        build_cli(["predict", "--config", str(CONFIG_DIR / "features.yaml"), f"--model.init_args.vae_checkpoint={vae}",
                   "--audio.duration=2.0", f"--data.init_args.root={tmp_path / corpus}",
                   f"--data.init_args.num_clips={clips}", f"--data.init_args.seed={len(corpus)}",
                   f"--data.init_args.skip_done_in={tmp_path / ('cache_' + corpus)}",
                   f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
                   f"--trainer.callbacks.output={tmp_path / ('cache_' + corpus)}", "--trainer.accelerator=cpu"])
    captions = [json.loads(line)["caption"] for line in (tmp_path / "train" / "manifest.jsonl").read_text().splitlines()]
    captions += [json.loads(line)["caption"] for line in (tmp_path / "heldout" / "manifest.jsonl").read_text().splitlines()]
    return {"root": tmp_path, "mllm": write_tiny_qwen_vl(tmp_path / "mllm", captions),
            "train": tmp_path / "cache_train", "val": tmp_path / "cache_heldout"}


def _args(d: dict[str, Path]) -> list[str]:
    return [f"--model.init_args.conditioner.init_args.model={d['mllm']}", "--audio.duration=2.0",
            f"--data.init_args.train=[{d['train']}]", f"--data.init_args.val=[{d['val']}]",
            "--data.init_args.batch_size=2"]


def test_pretrain_stage_fits_validates_exports_and_reloads(setup_dirs):
    d = setup_dirs
    export = d["root"] / "export"
    build_cli(["fit", "--config", str(CONFIG_DIR / "pretrain.yaml"), "--config", str(CONFIG_DIR / "debug" / "cpu.yaml"),
               *_args(d), f"--trainer.logger.init_args.save_dir={d['root'] / 'runs'}", "--trainer.max_steps=3",
               "--trainer.val_check_interval=3", "--trainer.log_every_n_steps=1",
               f"--trainer.callbacks.init_args.export={export}"])
    run = d["root"] / "runs" / "pretrain" / "version_0"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(next(run.glob("events.out.tfevents.*"))))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/loss_t=0.1", "val/loss_t=0.9"} <= tags

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any(k.startswith("conditioner.model.") for k in ckpt["state_dict"])  # frozen MLLM stays out
    ema = next(v for k, v in ckpt["callbacks"].items() if k.startswith("EMA"))["shadow"]
    exported = load_file(str(export / "model.safetensors"))
    assert set(ema) <= set(exported) and all(torch.equal(exported[k], ema[k]) for k in ema)
    assert any(not torch.equal(ema[k], ckpt["state_dict"][k]) for k in ema)  # EMA lags the raw weights
    assert "net" in (export / "config.yaml").read_text()

    system = FlowMatchingPretrain.load_from_checkpoint(run / "checkpoints" / "last.ckpt").eval()
    dm = CachedFeatureDataModule(train=[str(d["train"])], val=[str(d["val"])], batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    a = system.generate(batch, steps=4, cfg=4.5, seed=3)
    b = system.generate(batch, steps=4, cfg=4.5, seed=3)
    assert a.shape == batch["latent"].shape == (2, 63, 8) and torch.equal(a, b)
    assert torch.isfinite(a).all()


def test_condition_dropping_and_flags(setup_dirs):
    d = setup_dirs
    system = build_cli(["--config", str(CONFIG_DIR / "pretrain.yaml"), *_args(d)], run=False).model
    dm = CachedFeatureDataModule(train=[str(d["train"])], batch_size=3, samples_per_epoch=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    system.hparams.text_drop, system.hparams.video_drop = 1.0, 0.0
    has_text, has_video = system._dropped_flags(batch)
    assert not has_text.any() and has_video.all()
    cond = system.conditions(batch, has_text, has_video)
    assert cond["has_text"].all()  # queries still carry the video
    cond = system.conditions(batch, has_text, torch.zeros_like(has_video))
    assert not cond["has_text"].any() and not cond["has_video"].any()
    assert cond["queries"].shape == (3, 16, 64) and cond["sync"].shape == (3, 40, 768)


def test_ema_update_rule():
    torch.manual_seed(0)
    module = torch.nn.Linear(2, 2)
    ema = EMA(decay=0.9, warmup=False)
    ema.shadow = {n: p.detach().clone() for n, p in module.named_parameters()}
    start = module.weight.detach().clone()
    with torch.no_grad():
        module.weight.add_(1.0)

    class _Trainer:
        global_step = 5
        accumulate_grad_batches = 1

    ema.on_train_batch_end(_Trainer(), module, None, None, 0)
    assert torch.allclose(ema.shadow["weight"], start + 0.1)


def test_ema_warmup_tracks_a_short_run():
    """A 300-step SGD run from random weights: with the decay warm-up the EMA ends within 2 % of the trained
    weights' distance from their start; a constant 0.999 keeps 0.999^300 = 74 % of the start (exact)."""
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1)

    class _Trainer:
        global_step = 0
        accumulate_grad_batches = 1

    module = torch.nn.Linear(8, 1, bias=False)
    start = module.weight.detach().clone()
    averages = {warm: EMA(decay=0.999, warmup=warm) for warm in (True, False)}
    for ema in averages.values():
        ema.shadow = {"weight": start.clone()}
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    trainer = _Trainer()
    for step in range(1, 301):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(module(x), y).backward()
        optimizer.step()
        trainer.global_step = step
        for ema in averages.values():
            ema.on_train_batch_end(trainer, module, None, None, 0)
    trained = module.weight.detach()
    travel = (trained - start).norm()
    assert (averages[True].shadow["weight"] - trained).norm() < 0.02 * travel
    kept = (averages[False].shadow["weight"] - trained).norm() / travel
    assert kept > 0.7  # the constant decay leaves most of the random start in the average
    ema = averages[True]
    assert ema.decay_at(0) == 0.0 and ema.decay_at(1) == pytest.approx(2 / 11) and ema.decay_at(20_000) == 0.999
    assert EMA(decay=0.999, start_step=10).decay_at(10) == 0.0 and EMA(decay=0.999, start_step=10).decay_at(11) == 2 / 11


def test_run_schedule_spans_any_run_length():
    """RunWarmupStepDecay lays warm-up and decay over the run's length, which the system passes."""
    from functools import partial

    from reasonaudio.schedules import RunWarmupStepDecay, build_lr_scheduler

    for total in (100, 1500):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        factory = partial(RunWarmupStepDecay, total_steps=None, warmup=0.1, milestones=[0.5], gamma=0.1)
        sched = build_lr_scheduler(factory, opt, total)
        lrs = []
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        warm = round(0.1 * total)
        assert lrs[0] == pytest.approx(1 / warm) and lrs[warm - 1] == pytest.approx(1.0)
        assert lrs[total // 2 - 1] == pytest.approx(1.0) and lrs[total // 2] == pytest.approx(0.1)
        assert lrs[-1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="total_steps"):
        RunWarmupStepDecay(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))


def test_generate_cli_on_a_real_clip(setup_dirs, fixtures_dir):
    d = setup_dirs
    build_cli(["fit", "--config", str(CONFIG_DIR / "pretrain.yaml"), "--config", str(CONFIG_DIR / "debug" / "cpu.yaml"),
               *_args(d), f"--trainer.logger.init_args.save_dir={d['root'] / 'runs'}", "--trainer.max_steps=1",
               "--trainer.limit_val_batches=0", f"--trainer.callbacks.init_args.export={d['root'] / 'export'}"])
    from reasonaudio.generate import main as generate_main
    from reasonaudio.media import load_audio, probe
    from reasonaudio.models.bigvgan import bigvgan_tiny

    vocoder = d["root"] / "bigvgan"
    bigvgan_tiny().save_pretrained(vocoder)
    video = fixtures_dir / "media" / "vggsound" / "-Qowmc0P9ic_000034.mp4"
    out = d["root"] / "generated"
    common = ["--ckpt", str(d["root"] / "runs" / "pretrain" / "version_0" / "checkpoints" / "last.ckpt"),
              "--features-config", str(d["root"] / "runs" / "features" / "version_0" / "config.yaml"),
              "--vocoder", str(vocoder), "--ema", str(d["root"] / "export" / "model.safetensors"),
              "--steps", "3", "--out", str(out)]
    assert generate_main([*common, "--video", str(video), "--text", "a dog barks", "--negative-text", "rain"]) == 0
    info = probe(out / "-Qowmc0P9ic_000034.mp4")
    assert (info.video.codec, info.audio.codec) == ("h264", "aac")
    assert abs(info.audio.duration - info.video.duration) <= 1024 / 16000  # ±1 AAC frame
    flac = probe(out / "-Qowmc0P9ic_000034.flac")
    assert flac.audio.sample_rate == 16000 and abs(flac.duration - 10.0) < 1e-3
    assert float(load_audio(out / "-Qowmc0P9ic_000034.flac", 16000).wav.abs().max()) > 0

    assert generate_main([*common, "--text", "rain falls", "--duration", "2"]) == 0  # text only
    assert abs(probe(out / "text_only.flac").duration - 2.0) < 1e-3
    manifest = d["root"] / "batch.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "caption": "<HINT>low plucked tones</HINT> "
                                            "<TRACK name='bass' screen=on_screen> <KEYWORDS> plucked </KEYWORDS> </TRACK>"})
                                + "\n" for i in ("6zlMP_kQ_-w_000030", "54bz5yqN2IA_000004")))
    assert generate_main([*common, "--manifest", str(manifest), "--media-root", str(video.parent)]) == 0
    for clip_id in ("6zlMP_kQ_-w_000030", "54bz5yqN2IA_000004"):  # av-benchmark pairs outputs by these stems
        assert probe(out / f"{clip_id}.mp4").duration == pytest.approx(10.0, abs=0.07)
    broken = d["root"] / "broken.mp4"
    broken.write_text("not a video")
    with pytest.raises(SystemExit, match="cannot use .*broken.mp4: cannot open"):
        generate_main([*common, "--video", str(broken)])
    with pytest.raises(SystemExit, match="not found"):
        generate_main([*common[:-2], "--out", str(out), "--video", str(video), "--ckpt", str(d["root"] / "x.ckpt")])
    with pytest.raises(SystemExit, match="Synchformer weights of the training cache not found"):
        generate_main([*common, "--video", str(video), "--sync-weights", str(d["root"] / "none.pt")])
