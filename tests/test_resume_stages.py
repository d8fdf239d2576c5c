"""Exact resume of the vae, vocoder (GAN, manual optimisation, two optimisers), reward and sync stages (issue 23).

Per stage, in-process `reasonaudio fit` runs on tiny data: 6 steps in one go (checkpoint every 3 steps,
validation at step 4), and the same command stopped after the step-3 checkpoint (mid-epoch: 2 batches
per epoch) and continued with `--ckpt_path last` to step 6. Every logged `train/loss` and every tensor of
the final checkpoints must be equal bit for bit (fp32, CPU). Pretraining and LoRA post-training, and real
SIGKILL / SIGTERM interruptions, are in tests/test_resume.py; `make resume-check STAGES=...` runs the kill
version of these checks.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.experiments.resume_check import compare

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, EVERY = 6, 3


def stage_args(stage: str, root: Path) -> list[str]:
    """The stage's YAML with the CPU debug overlay and tiny data under ``root`` (rendered / written on first use)."""
    from reasonaudio.data_modules.synthetic import synthesize_corpus

    def corpus(name: str, clips: int, duration: float, seed: int) -> Path:
        path = root / name
        if not (path / "manifest.jsonl").exists():
            synthesize_corpus(path, num_clips=clips, seed=seed, duration=duration, preset="tiny")
        return path

    def clips(duration: float) -> list[str]:  # 3 training clips in batches of 2: 2 batches per epoch
        train, val = corpus(f"synth_{duration}", 3, duration, 0), corpus(f"synth_{duration}_heldout", 1, duration, 10_000)
        return [f"--data.init_args.root={train}", f"--data.init_args.val_root={val}",
                f"--audio.duration={duration}", "--data.init_args.batch_size=2"]

    common = ["--config", str(CONFIG_DIR / "debug" / "cpu.yaml"), "--trainer.limit_train_batches=null",
              f"--trainer.max_steps={STEPS}", "--trainer.val_check_interval=4", "--trainer.log_every_n_steps=1",
              f"--checkpoint.every_n_train_steps={EVERY}"]
    if stage == "vae":  # discriminator and R1 from step 2: the resume lands in the GAN phase
        return ["--config", str(CONFIG_DIR / "vae.yaml"), *common, *clips(2.0), "--model.init_args.disc_start=2",
                "--model.init_args.r1_weight=1.0"]
    if stage == "vocoder":
        return ["--config", str(CONFIG_DIR / "vocoder.yaml"), *common, *clips(1.0), "--model.init_args.disc_start=1",
                "--model.init_args.segment_size=4096"]
    if stage == "sync":  # 4 s clips hold the ±1.2 s grid; 4 clips drawn per epoch (with replacement)
        return ["--config", str(CONFIG_DIR / "sync.yaml"), *common, *clips(4.0), "--data.init_args.samples_per_epoch=4",
                "--model.init_args.pairs_per_clip=4", "--model.init_args.val_positions=1", "--model.init_args.export=null"]
    if stage == "reward":
        from test_reward import _write_cache

        train, val = root / "reward_train", root / "reward_val"
        if not train.exists():
            _write_cache(train, 6, 0)
            _write_cache(val, 2, 1)
        return ["--config", str(CONFIG_DIR / "reward.yaml"), *common, f"--data.init_args.train=[{train}]",
                f"--data.init_args.val=[{val}]", "--data.init_args.batch_size=3", "--model.init_args.export=null"]
    raise ValueError(stage)


def _fit(args: list[str]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setattr(sys, "argv", ["reasonaudio"])
        build_cli(["fit", *args])


@pytest.mark.parametrize("stage", ["vae", "vocoder", "reward", "sync"])
def test_stage_stopped_after_a_checkpoint_and_resumed_equals_the_uninterrupted_run(stage, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "resume_stages"
    args = stage_args(stage, root)
    runs = {k: [f"--trainer.logger.init_args.save_dir={root / stage / k}"] for k in ("uninterrupted", "stopped")}
    _fit([*args, *runs["uninterrupted"]])
    _fit([*args, *runs["stopped"], f"--trainer.max_steps={EVERY}"])
    _fit([*args, *runs["stopped"], "--ckpt_path=last"])
    versions = sorted((root / stage / "stopped" / stage).iterdir())
    assert len(versions) == 1, versions  # `--ckpt_path last` continued the stopped run's folder
    assert len(list(versions[0].glob("events.out.tfevents.*"))) == 2
    res = compare(root / stage / "uninterrupted" / stage / "version_0", versions[0])
    assert res["steps"] == STEPS and res["missing_steps"] == [], res
    assert res["max_loss_diff"] == 0.0 and res["max_weight_diff"] == 0.0 and res["equal"], res
