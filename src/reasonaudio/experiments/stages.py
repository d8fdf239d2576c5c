"""The stages of the experiments as ``reasonaudio`` command lines, and the same runs as functions.

Command lines (``*_args``): the demo codec's ``fit`` overrides (:func:`codec_args`), feature caches of new
synthetic clips, the alignment classifier and the synchrony reward's own Synchformer, preference data,
post-training and its online mode. Functions (:func:`train_reward`, :func:`train_sync_reward`,
:func:`build_preference_data`, :func:`post_train`) run them in this process
(:func:`~reasonaudio.experiments.pipeline.run_cli`) unless their output exists. ``make demo`` runs the same
command lines in subprocesses, the post-training comparison calls the functions.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from reasonaudio.cli import CONFIG_DIR
from reasonaudio.data_modules.preference_groups import PreferenceStore
from reasonaudio.experiments.layout import REWARD_EXPORT
from reasonaudio.experiments.pipeline import run_cli
from reasonaudio.systems.policy_weights import MERGED
from reasonaudio.systems.sync import EXPORT_FILE as SYNC_EXPORT


def codec_args(vocoder_steps: int, vae_steps: int, same_clips: str,
               vocoder_ckpt: Path) -> tuple[list[str], list[str]]:
    """The demo codec's ``fit`` overrides (docs/decisions.md "Demo codec and impacts under rain"): the vocoder
    (128 channels; 3/5 of the steps mel-only, then GAN; lr 1e-3, an onset term, rain mixed into half the clips), then
    the VAE (the GAN term in the last quarter; lr 1e-3, the same rain, an onset term) validated through that vocoder
    (``vocoder_ckpt``)."""
    against_rain = "--model.init_args.rain_augment=0.5"
    vocoder = ["--data.init_args.batch_size=4", same_clips, "--model.init_args.generator.init_args.channels=128",
               f"--model.init_args.disc_start={vocoder_steps * 3 // 5}",
               "--model.init_args.mel_loss=multiscale", "--model.init_args.mel_weight=15",
               "--model.init_args.optimizer.init_args.lr=1e-3", "--model.init_args.disc_optimizer.init_args.lr=1e-3",
               "--model.init_args.transient_weight=135", against_rain]
    vae = [same_clips, f"--model.init_args.disc_start={vae_steps * 3 // 4}",
           "--model.init_args.optimizer.init_args.lr=1e-3", "--model.init_args.transient_weight=16", against_rain,
           "--model.init_args.vocoder=reasonaudio.systems.vocoder.trained_generator",
           f"--model.init_args.vocoder.init_args.path={vocoder_ckpt}"]
    return vocoder, vae


def model_args(mllm: Path, duration: float) -> list[str]:
    """The MM-DiT's conditioner folder and clip duration, as ``fit`` / ``predict`` overrides."""
    return [f"--model.init_args.conditioner.init_args.model={mllm}",
            f"--audio.duration={duration}"]


def features_args(corpus: Path, cache: Path, vae_checkpoint: Path, sync_weights: Path, logs: Path,
                  num_clips: int, seed: int, duration: float = 4.0) -> list[str]:
    """``predict`` of ``features.yaml``: synthesise ``num_clips`` clips (``seed``) into ``corpus`` and cache them
    with the given VAE and Synchformer visual weights."""
    return ["predict", "--config", str(CONFIG_DIR / "features.yaml"),
            f"--model.init_args.vae_checkpoint={vae_checkpoint}", f"--model.init_args.sync_checkpoint={sync_weights}",
            f"--audio.duration={duration}", f"--data.init_args.root={corpus}",
            f"--data.init_args.num_clips={num_clips}", f"--data.init_args.seed={seed}",
            f"--data.init_args.skip_done_in={cache}",
            f"--trainer.callbacks.init_args.output={cache}", f"--trainer.logger.init_args.save_dir={logs}",
            "--trainer.accelerator=cpu"]


def reward_args(out: Path, train_cache: Path, val_cache: Path, steps: int, seed: int = 0) -> list[str]:
    """``fit`` of ``reward.yaml``; the classifier is exported to ``<out>/export/reward.safetensors``."""
    return ["fit", "--config", str(CONFIG_DIR / "reward.yaml"), f"--seed_everything={seed}",
            f"--data.init_args.train=[{train_cache}]", f"--data.init_args.val=[{val_cache}]",
            f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}", "--trainer.accelerator=cpu",
            "--trainer.log_every_n_steps=10", f"--trainer.logger.init_args.save_dir={out}",
            f"--model.init_args.export={out / 'export'}"]


def sync_reward_args(out: Path, corpus: Path, heldout: Path, steps: int, seed: int = 1,
                     duration: float = 4.0) -> list[str]:
    """``fit`` of ``sync.yaml`` + ``sync/reward.yaml``: the synchrony reward's own Synchformer, trained like DeSync's
    from another seed; exported to ``<out>/export/synchformer.safetensors``."""
    return ["fit", "--config", str(CONFIG_DIR / "sync.yaml"), "--config", str(CONFIG_DIR / "sync" / "reward.yaml"),
            f"--seed_everything={seed}", f"--data.init_args.root={corpus}", f"--data.init_args.val_root={heldout}",
            f"--audio.duration={duration}", f"--trainer.max_steps={steps}",
            f"--trainer.val_check_interval={steps}", "--trainer.accelerator=cpu", "--trainer.log_every_n_steps=5",
            f"--trainer.logger.init_args.save_dir={out}", f"--model.init_args.export={out / 'export'}"]


def sync_reward_overrides(checkpoint: Path, video_roots: Sequence[Path], vae_checkpoint: Path,
                          vocoder: Path) -> list[str]:
    """Overrides that make a stage's reward the synchrony reward (``preference_data/synchrony_reward.yaml``) of
    ``checkpoint``, reading the clips' videos under ``video_roots`` and decoding with the given codec."""
    return ["--config", str(CONFIG_DIR / "preference_data" / "synchrony_reward.yaml"),
            f"--model.init_args.reward.init_args.checkpoint={checkpoint}",
            f"--model.init_args.reward.init_args.video_root=[{', '.join(map(str, video_roots))}]",
            f"--model.init_args.vae_checkpoint={vae_checkpoint}", f"--model.init_args.vocoder={vocoder}"]


def preference_data_args(groups: Path, cache: Path, pretrained: Path, mllm: Path, reward: Path | Sequence[str],
                         logs: Path, candidates: int = 8, sample_steps: int = 25, min_spread: float = 0.0,
                         seed: int = 0, duration: float = 4.0,
                         ground_truth: tuple[Path, Path, Path] | None = None) -> list[str]:
    """``predict`` of ``preference_data.yaml``: K candidates per condition of ``cache`` into the store ``groups``.

    ``reward``: the alignment classifier's weights (the config's reward), or overrides that replace the reward
    (:func:`sync_reward_overrides`). ``ground_truth``: (corpus folder, VAE checkpoint, vocoder checkpoint) to
    score every candidate against the synthetic ground truth (``PreferenceDataBuilder(ground_truth=...)``)."""
    truth = [] if ground_truth is None else [
        f"--model.init_args.ground_truth={ground_truth[0]}",
        "--model.init_args.vae=reasonaudio.models.vae.mel_vae_tiny",
        f"--model.init_args.vae_checkpoint={ground_truth[1]}", f"--model.init_args.vocoder={ground_truth[2]}"]
    scorer = ([f"--model.init_args.reward.init_args.checkpoint={reward}"] if isinstance(reward, (str, Path))
              else list(reward))
    return ["predict", "--config", str(CONFIG_DIR / "preference_data.yaml"), *scorer, *model_args(mllm, duration),
            *truth, f"--model.init_args.pretrained={pretrained}",
            f"--model.init_args.num_candidates={candidates}", f"--model.init_args.steps={sample_steps}",
            f"--model.init_args.min_spread={min_spread}", f"--model.init_args.seed={seed}",
            f"--data.init_args.cache={cache}", f"--data.init_args.groups={groups}",
            f"--trainer.logger.init_args.save_dir={logs}", "--trainer.accelerator=cpu"]


def post_train_args(objective: str, out: Path, groups: Path, cache: Path, pretrained: Path, mllm: Path,
                    steps: int, seed: int, lr: float = 1e-4, extra: Sequence[str] = (),
                    duration: float = 4.0) -> list[str]:
    """``fit`` of ``post_train_<objective>.yaml`` without validation; adapter and merged export in ``<out>/export``."""
    return ["fit", "--config", str(CONFIG_DIR / f"post_train_{objective}.yaml"), f"--seed_everything={seed}",
            *model_args(mllm, duration), f"--model.init_args.pretrained={pretrained}",
            f"--model.init_args.export={out / 'export'}", "--model.init_args.val_ground_truth=null",
            f"--model.init_args.optimizer.init_args.lr={lr}", f"--data.init_args.cache={cache}",
            f"--data.init_args.groups={groups}", f"--data.init_args.seed={seed}", f"--trainer.max_steps={steps}",
            "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--trainer.accelerator=cpu",
            "--trainer.log_every_n_steps=10", f"--trainer.logger.init_args.save_dir={out}", *extra]


def online_args(reward: Path | Sequence[str], every: int, candidates: int, sample_steps: int,
                batch_size: int = 8) -> list[str]:
    """Overrides of the online mode: the policy samples new groups every ``every`` steps, scored by ``reward`` (the
    alignment classifier's weights, or :func:`sync_reward_overrides`)."""
    if isinstance(reward, (str, Path)):
        classifier = yaml.safe_load((CONFIG_DIR / "reward.yaml").read_text())["model"]["init_args"]["classifier"]
        spec = {"class_path": "reasonaudio.models.reward.ClassifierReward",
                "init_args": {"checkpoint": str(reward), "classifier": classifier}}
        scorer = [f"--model.init_args.reward={json.dumps(spec)}"]
    else:
        scorer = list(reward)
    return [*scorer, f"--model.init_args.online_every={every}", f"--model.init_args.online_candidates={candidates}",
            f"--model.init_args.sample_steps={sample_steps}", f"--data.init_args.groups_per_epoch={every * batch_size}",
            "--trainer.reload_dataloaders_every_n_epochs=1"]


# --------------------------------------------------------------------------- stages as functions


def train_reward(out: Path, train_cache: Path, val_cache: Path, steps: int = 300, seed: int = 0) -> Path:
    """Train the alignment classifier (``reward.yaml``); returns ``<out>/export/reward.safetensors``."""
    export = out / "export" / REWARD_EXPORT
    if not export.is_file():
        run_cli(reward_args(out, train_cache, val_cache, steps, seed))
    return export


def train_sync_reward(out: Path, corpus: Path, heldout: Path, steps: int = 100, seed: int = 1,
                      duration: float = 4.0) -> Path:
    """Train the synchrony reward's Synchformer; returns ``<out>/export/synchformer.safetensors``."""
    export = out / "export" / SYNC_EXPORT
    if not export.is_file():
        run_cli(sync_reward_args(out, corpus, heldout, steps, seed, duration))
    return export


def build_preference_data(groups: Path, cache: Path, pretrained: Path, mllm: Path, reward: Path | Sequence[str],
                          candidates: int = 8, sample_steps: int = 25, min_spread: float = 0.0, seed: int = 0,
                          duration: float = 4.0, ground_truth: tuple[Path, Path, Path] | None = None
                          ) -> dict[str, Any]:
    """Sample and score the groups (resumes an interrupted store); returns the store's summary."""
    run_cli(preference_data_args(groups, cache, pretrained, mllm, reward, groups.parent / "logs", candidates,
                                 sample_steps, min_spread, seed, duration, ground_truth))
    return PreferenceStore(groups).summary()


def post_train(objective: str, out: Path, groups: Path, cache: Path, pretrained: Path, mllm: Path, steps: int,
               seed: int, lr: float = 1e-4, extra: Sequence[str] = (), duration: float = 4.0) -> Path:
    """Post-train with ``post_train_<objective>.yaml``; returns the export folder (adapter + merged weights)."""
    export = out / "export"
    if not (export / MERGED).is_file():
        run_cli(post_train_args(objective, out, groups, cache, pretrained, mllm, steps, seed, lr, extra, duration))
    return export
