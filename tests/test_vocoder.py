"""VocoderTrain: a tiny BigVGAN learns a real clip, and the stage runs end to end through the CLI."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.experiments.stages import codec_args
from reasonaudio.losses import mel_l1_loss
from reasonaudio.media import load_audio
from reasonaudio.models.bigvgan import bigvgan_tiny
from reasonaudio.models.mel import MelSpectrogram
from reasonaudio.systems.vocoder import VocoderTrain, trained_generator

REPO = Path(__file__).resolve().parents[1]


def test_tiny_generator_learns_a_real_clip(fixtures_dir):
    """100 mel-regression steps on 0.5 s of a real recording must cut the log-mel L1 five-fold.

    At initialisation the generator is nearly silent, so its loss is the distance of the clip's mel
    to the log floor (≈ 6.9); measured after 100 steps: ≈ 0.6 (a 12× drop).
    """
    torch.manual_seed(0)
    mel_fn = MelSpectrogram("tiny")
    wav = load_audio(fixtures_dir / "media" / "audio" / "dog.wav", 16000, start=1.0, duration=0.512).wav[None]
    mel = mel_fn(wav)  # [1, 32, 32]
    gen = bigvgan_tiny()
    opt = torch.optim.AdamW(gen.parameters(), lr=1e-3, betas=(0.8, 0.99))
    losses = []
    for _ in range(100):
        loss = mel_l1_loss(mel_fn(gen(mel).flatten(1)), mel)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])


def _tags(run: Path) -> dict:
    acc = EventAccumulator(str(next(run.glob("events.out.tfevents.*"))), size_guidance={"audio": 0})
    acc.Reload()
    return {"scalars": {t: [e.value for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]},
            "audio": acc.Tags()["audio"]}


def test_vocoder_stage_fits_logs_and_reloads(tmp_path, monkeypatch):
    """The stage with the demo codec's own overrides (``codec_args``: 128 channels, multi-scale mel ×15, onset ×135,
    rain, lr 1e-3) for 3 steps, the GAN from step 3 · 3/5 = 1."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["reasonaudio"])
    data = [f"--data.init_args.root={tmp_path / 'synth'}", "--data.init_args.num_clips=2",
            "--data.init_args.val_clips=1", "--audio.duration=1.0"]
    demo, _ = codec_args(3, 4, "--audio.duration=1.0", tmp_path / "unused.ckpt")
    build_cli(["fit", "--config", str(CONFIG_DIR / "vocoder.yaml"), "--config", str(CONFIG_DIR / "debug" / "cpu.yaml"),
               *data, f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", "--trainer.max_steps=3",
               "--trainer.val_check_interval=3", "--trainer.log_every_n_steps=1", *demo,
               "--model.init_args.segment_size=4096"])
    run = tmp_path / "runs" / "vocoder" / "version_0"
    tags = _tags(run)
    scalars = tags["scalars"]
    assert {"train/mel", "train/loss", "train/gen_adv", "train/feature_matching", "val/mel_l1", "val/mrstft"} <= set(scalars)
    assert len(scalars["train/disc"]) == 2 and len(scalars["train/mel"]) == 3  # discriminators from step 1 of 3
    # step 0 is mel-only: the generator's loss is 15 · multi-scale mel + 135 · transient, and nothing else
    loss, mel_term, transient = (scalars[k][0] for k in ("train/loss", "train/mel", "train/transient"))
    assert transient > 0 and loss == pytest.approx(15 * mel_term + 135 * transient, rel=1e-5)
    assert any(t.startswith("val/audio_rec/synth_") for t in tags["audio"])
    # Per-step exponential decay, logged before each step: the generator's third value has seen two
    # decays, the discriminator's (which starts at step 1) one.
    lr_g, lr_d = (scalars[k] for k in sorted(k for k in scalars if k.startswith("lr-")))
    assert abs(lr_g[-1] - 1e-3 * 0.9999996 ** 2) < 1e-10 and abs(lr_d[-1] - 1e-3 * 0.9999996) < 1e-10

    system = VocoderTrain.load_from_checkpoint(run / "checkpoints" / "last.ckpt").eval()
    mel = system.mel(torch.randn(1, 4096) * 0.1)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    fresh = build_cli(["--config", str(CONFIG_DIR / "vocoder.yaml"), *data, *demo], run=False).model
    fresh.load_state_dict(state)
    assert torch.equal(system(mel), fresh.eval()(mel))

    generator = trained_generator(str(run / "checkpoints" / "last.ckpt"))  # weight norm folded, frozen
    assert not any(p.requires_grad for p in generator.parameters())
    assert generator.conv_pre.weight.shape[0] == 128  # the demo's width travels with the checkpoint
    assert torch.allclose(generator(mel).flatten(1), system(mel), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="vocoder not found"):
        trained_generator(str(tmp_path / "missing.ckpt"))
