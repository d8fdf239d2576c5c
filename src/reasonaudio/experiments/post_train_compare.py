"""`make post-train-compare`: SFT vs RWR vs Flow-DPO from one tiny pretrained model, on the synthetic corpus
(the paper's Figure 4 and its β sweep at toy scale).

    python -m reasonaudio.experiments.post_train_compare [--demo runs/demo] [--out runs/post_train_compare]
        [--seeds 0 1 2] [--steps 100] [--betas 1 2 50] [--online-rounds 2] [--docs docs/results.md]
        [--results-json docs/results.json] [--figure docs/figure4.png]

Reads the artifacts of a finished ``make demo`` (training and held-out feature caches, VAE, vocoder, tiny
MLLM, trained Synchformer, the pretrained EMA export) and never writes there. Every step runs a committed
stage config through the ``reasonaudio`` CLI (in this process) and is skipped when its output exists, so an
interrupted comparison resumes where it stopped:

1. **held-out clips** — the demo's held-out set plus ``--extra-heldout`` new synthetic clips (their own
   seed), whose features come from the demo's VAE and Synchformer weights (``features.yaml``);
2. **rewards** — ``--reward sync`` (the default): the synchrony reward's own Synchformer (``sync.yaml`` +
   ``sync/reward.yaml``, another seed than DeSync's), scoring ``1 − E|offset| / 1.2 s``
   (``preference_data/synchrony_reward.yaml``);
   the paper's alignment classifier (``reward.yaml``) is trained too, its held-out accuracy per negative type
   measured (10 draws of windows and shifts) and its ranking of the same candidates reported beside;
3. **preference data** — ``preference_data.yaml``: K candidates per training condition from the
   pretrained EMA model, scored with the reward; every candidate is also decoded and scored against
   the ground truth, to measure how often the reward orders candidates like the ground truth
   (``reward_vs_ground_truth.json``). DPO pairs need a reward margin above the ``--margin-quantile`` of the
   groups' spreads;
4. **post-training** — ``post_train_{sft,rwr,dpo}.yaml`` (and DPO at the ``--betas``) for every seed,
   with the same steps, learning rate and batch of groups, plus DPO β 5 in ``--online-rounds`` rounds (the
   offline groups, then groups sampled from the current policy every ``steps / rounds`` steps; each run
   samples into its own copy of the store). Every run writes a snapshot every ``--snapshot-every`` steps;
5. **evaluation** — every model samples every held-out clip from the same noises; the audio is scored
   against the synthetic ground truth (``metrics/synthetic.py``: onset error, onset F1, timbre
   agreement), with DeSync (the demo's trained Synchformer) and the mean reward beside them.
   Quality proxies: the Fréchet distance between Gaussian fits of the generated and the real held-out
   latent frames (FD-latent, the generator alone) and of log-mel frames of the decoded audio against the
   vocoded ground truth (FD-mel). Seed s of every method is evaluated with noise set s, and the pretrained
   model with every noise set, so ``Δ`` columns are paired differences at equal noise. The snapshots are
   scored on the first ``--curve-clips`` held-out clips (reward, DeSync, onset error against the step);
6. **table** — mean ± 95 % Student-t interval over seeds into ``<out>/results.md`` and ``results.json``
   (every number); ``--results-json`` gets the summary scripts read (:func:`docs_results`), ``--figure`` the
   curves (:func:`figure4`); with ``--docs`` the block between ``<!-- post_train_compare:begin -->`` and
   ``<!-- post_train_compare:end -->`` of that file is replaced by the table.

Choosing between variants (``--variant NAME=KEY=VALUE[,…]``: extra DPO rows with objective overrides;
``--conditions M``: preference data on M new synthetic clips, seed :data:`CONDITIONS_SEED`, instead of the
demo's training clips) is done with ``--validation N`` into another ``--out``: every model is then scored on N new synthetic clips (seed
:data:`VALIDATION_SEED`) instead of the held-out sets, so a choice never looks at the held-out results.

The step functions (:func:`train_reward`, :func:`build_preference_data`, :func:`post_train`) are the
ones ``make demo`` can call; ``*_args`` give the same runs as ``reasonaudio`` command lines.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from reasonaudio.cli import CONFIG_DIR

EVAL_SEED = 1_000_000_000
VALIDATION_SEED = 30_000
"""Synthesis seed of ``--validation`` clips (the extra held-out clips use 20,000, the demo's sets their own)."""
CONDITIONS_SEED = 40_000
"""Synthesis seed of ``--conditions`` clips (preference conditions other than the demo's training clips)."""
"""Base of the evaluation noise seeds (apart from every preference-data seed)."""
MARKERS = ("<!-- post_train_compare:begin -->", "<!-- post_train_compare:end -->")


def run_cli(args: Sequence[str]) -> None:
    """``reasonaudio <args>`` in this process (with this script's own arguments out of ``sys.argv``)."""
    from reasonaudio.cli import build_cli

    argv = sys.argv
    sys.argv = argv[:1]
    try:
        build_cli(list(args))
    finally:
        sys.argv = argv


def _model_args(mllm: Path, duration: float) -> list[str]:
    return [f"--model.init_args.conditioner.init_args.model={mllm}",
            f"--model.init_args.net.init_args.duration={duration}"]


# --------------------------------------------------------------------------- stages as command lines


def features_args(corpus: Path, cache: Path, vae_checkpoint: Path, sync_weights: Path, logs: Path,
                  num_clips: int, seed: int, duration: float = 4.0) -> list[str]:
    """``predict`` of ``features.yaml``: synthesise ``num_clips`` clips (``seed``) into ``corpus`` and cache them
    with the given VAE and Synchformer visual weights."""
    return ["predict", "--config", str(CONFIG_DIR / "features.yaml"),
            f"--model.init_args.vae_checkpoint={vae_checkpoint}", f"--model.init_args.sync_checkpoint={sync_weights}",
            f"--model.init_args.duration={duration}", f"--data.init_args.root={corpus}",
            f"--data.init_args.num_clips={num_clips}", f"--data.init_args.seed={seed}",
            f"--data.init_args.duration={duration}", f"--data.init_args.skip_done_in={cache}",
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
            f"--data.init_args.duration={duration}", f"--trainer.max_steps={steps}",
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
        f"--model.init_args.ground_truth={ground_truth[0]}", "--model.init_args.vae=reasonaudio.models.vae.mel_vae_tiny",
        f"--model.init_args.vae_checkpoint={ground_truth[1]}", f"--model.init_args.vocoder={ground_truth[2]}"]
    scorer = ([f"--model.init_args.reward.init_args.checkpoint={reward}"] if isinstance(reward, (str, Path))
              else list(reward))
    return ["predict", "--config", str(CONFIG_DIR / "preference_data.yaml"), *scorer, *_model_args(mllm, duration),
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
            *_model_args(mllm, duration), f"--model.init_args.pretrained={pretrained}",
            f"--model.init_args.export={out / 'export'}", "--model.init_args.val_ground_truth=null",
            f"--model.init_args.optimizer.init_args.lr={lr}", f"--data.init_args.cache={cache}",
            f"--data.init_args.groups={groups}", f"--data.init_args.seed={seed}", f"--trainer.max_steps={steps}",
            "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--trainer.accelerator=cpu",
            "--trainer.log_every_n_steps=10", f"--trainer.logger.init_args.save_dir={out}", *extra]


# --------------------------------------------------------------------------- stages as functions (for the demo)


def train_reward(out: Path, train_cache: Path, val_cache: Path, steps: int = 300, seed: int = 0) -> Path:
    """Train the alignment classifier (``reward.yaml``); returns ``<out>/export/reward.safetensors``."""
    export = out / "export" / "reward.safetensors"
    if not export.is_file():
        run_cli(reward_args(out, train_cache, val_cache, steps, seed))
    return export


def train_sync_reward(out: Path, corpus: Path, heldout: Path, steps: int = 100, seed: int = 1,
                      duration: float = 4.0) -> Path:
    """Train the synchrony reward's Synchformer; returns ``<out>/export/synchformer.safetensors``."""
    export = out / "export" / "synchformer.safetensors"
    if not export.is_file():
        run_cli(sync_reward_args(out, corpus, heldout, steps, seed, duration))
    return export


def build_preference_data(groups: Path, cache: Path, pretrained: Path, mllm: Path, reward: Path | Sequence[str],
                          candidates: int = 8, sample_steps: int = 25, min_spread: float = 0.0, seed: int = 0,
                          duration: float = 4.0, ground_truth: tuple[Path, Path, Path] | None = None
                          ) -> dict[str, Any]:
    """Sample and score the groups (resumes an interrupted store); returns the store's summary."""
    from reasonaudio.data_modules.preference import PreferenceStore

    run_cli(preference_data_args(groups, cache, pretrained, mllm, reward, groups.parent / "logs", candidates,
                                 sample_steps, min_spread, seed, duration, ground_truth))
    return PreferenceStore(groups).summary()


def post_train(objective: str, out: Path, groups: Path, cache: Path, pretrained: Path, mllm: Path, steps: int,
               seed: int, lr: float = 1e-4, extra: Sequence[str] = (), duration: float = 4.0) -> Path:
    """Post-train with ``post_train_<objective>.yaml``; returns the export folder (adapter + merged weights)."""
    export = out / "export"
    if not (export / "model.safetensors").is_file():
        run_cli(post_train_args(objective, out, groups, cache, pretrained, mllm, steps, seed, lr, extra, duration))
    return export


# --------------------------------------------------------------------------- evaluation


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two sets of vectors ``[N, D]`` and ``[M, D]``."""
    from reasonaudio.metrics import frechet_distance as fd

    return fd(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


class HeldOut:
    """Held-out clips: feature caches with their synthetic corpus folders (ground truth, videos), loaded once.

    Args:
        sets: ``(feature cache, corpus folder)`` pairs.
        limit: keep only the first ``limit`` clips (``--curve-clips``).
    """

    def __init__(self, sets: Sequence[tuple[Path, Path]], limit: int | None = None):
        from reasonaudio.data_modules.preference import _RowDataset, collate_groups

        self.batches, self.gts, self.videos = [], [], []
        for cache, corpus in sets:
            ds = _RowDataset(cache)
            for start in range(0, len(ds), 8):
                if limit is not None and len(self.gts) >= limit:
                    break
                stop = min(start + 8, len(ds), start + (limit - len(self.gts) if limit is not None else 8))
                batch = collate_groups([ds[i] for i in range(start, stop)])
                batch["row"] = batch["row"] + 100_000 * len(self.batches)  # distinct noise seeds across sets
                self.batches.append(batch)
                self.gts += [json.loads((corpus / "gt" / f"{i}.json").read_text()) for i in batch["id"]]
                self.videos += [corpus / "videos" / f"{i}.mp4" for i in batch["id"]]
        self.latents = torch.cat([b["latent"] for b in self.batches])  # [N, T, C] posterior means, normalised
        self.sync = torch.cat([b["sync"] for b in self.batches])  # [N, Ts, S] the cache's sync tokens
        self._visual: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.gts)

    @property
    def ids(self) -> list[str]:
        """Clip ids, in order (the sets reuse ids: a clip is its video file)."""
        return [v.stem for v in self.videos]

    def visual_tokens(self, sync_model) -> torch.Tensor:
        """The DeSync model's visual tokens of every clip's video, ``[N, Sv·8, D]`` (decoded once)."""
        if self._visual is None:
            from reasonaudio.metrics.desync import _frames, video_tokens

            seconds = float(self.gts[0]["duration"])
            with torch.no_grad():
                self._visual = torch.cat([video_tokens(sync_model, _frames(sync_model, self.videos[i:i + 8], seconds))
                                          for i in range(0, len(self), 8)])
        return self._visual


def load_model(pretrain_config: Sequence[str], weights: Path, system=None):
    """A ``FlowMatchingPretrain`` of ``pretrain.yaml`` (with overrides) holding ``weights`` (an export or adapter);
    ``system``: one built earlier, whose weights are replaced (building one costs seconds, loading weights
    milliseconds)."""
    from reasonaudio.cli import build_cli
    from reasonaudio.systems.preference import load_policy_weights

    if system is None:
        system = build_cli(["--config", str(CONFIG_DIR / "pretrain.yaml"), *pretrain_config,
                            "--trainer.logger=false"], run=False).model
    load_policy_weights(system, weights)
    return system.eval()


def load_reward(export: Path):
    """The ``ClassifierReward`` of ``preference_data.yaml``'s architecture with the weights ``export``."""
    import yaml

    from reasonaudio.models.reward import AlignmentClassifier, ClassifierReward

    config = yaml.safe_load((CONFIG_DIR / "reward.yaml").read_text())["model"]["init_args"]["classifier"]["init_args"]
    return ClassifierReward(AlignmentClassifier(**config), str(export)).prepare()


def load_sync_reward(checkpoint: Path):
    """The synchrony reward of ``preference_data/synchrony_reward.yaml`` with the Synchformer ``checkpoint``
    (video by file: :meth:`~reasonaudio.models.reward.SynchformerOffsetReward.encode_videos`)."""
    import yaml

    from reasonaudio.models.reward import SynchformerOffsetReward
    from reasonaudio.models.synchformer import Synchformer, SynchformerConfig

    overlay = CONFIG_DIR / "preference_data" / "synchrony_reward.yaml"
    spec = yaml.safe_load(overlay.read_text())["model"]["init_args"]["reward"]
    config = SynchformerConfig(**spec["init_args"]["synchformer"]["init_args"]["config"])
    return SynchformerOffsetReward(Synchformer(config), str(checkpoint), score=spec["init_args"]["score"]).prepare()


@torch.no_grad()
def _sample(system, heldout: HeldOut, noise_set: int, samples: int, steps: int, cfg: float) -> torch.Tensor:
    """``[N, M, T, C]`` generations of every held-out clip from noise set ``noise_set`` (the same for every model)."""
    from reasonaudio.systems.preference_data import candidate_seeds, sample_candidates

    base = EVAL_SEED + 10_000_000 * noise_set
    return torch.cat([sample_candidates(system, b, candidate_seeds(b["row"], samples, base), steps, cfg)
                      for b in heldout.batches])


@torch.no_grad()
def _reward_and_desync(latents: torch.Tensor, wavs: torch.Tensor, heldout: HeldOut, reward, sync_model,
                       sample_rate: int) -> dict[str, float]:
    """Mean reward of ``latents [N, M, T, C]`` (or of their audio) and mean DeSync (s) of their audio
    ``wavs [N, M, S]``."""
    from reasonaudio.metrics.desync import desync_seconds

    n, m = latents.shape[:2]
    out = {}
    cut = wavs.flatten(0, 1)[:, :round(float(heldout.gts[0]["duration"]) * sample_rate)]  # not codec padding
    if reward is not None and reward.audio_input == "wav":  # by file: the held-out sets reuse clip ids
        video = reward.encode_videos(heldout.videos).repeat_interleave(m, 0)
        out["reward"] = float(torch.cat([reward(cut[i:i + 16], video[i:i + 16]) for i in range(0, n * m, 16)]).mean())
    elif reward is not None:
        out["reward"] = float(reward(latents.flatten(0, 1), heldout.sync.repeat_interleave(m, 0)).mean())
    if sync_model is not None:
        visual = heldout.visual_tokens(sync_model).repeat_interleave(m, 0)
        out["desync"] = float(torch.cat([desync_seconds(sync_model, visual[i:i + 16], cut[i:i + 16], sample_rate)
                                         for i in range(0, n * m, 16)]).float().mean())
    return out


@torch.no_grad()
def evaluate(system, heldout: HeldOut, decode, noise_set: int, samples: int = 2, steps: int = 25, cfg: float = 4.5,
             reference_wavs: torch.Tensor | None = None, sample_rate: int = 16000, reward=None,
             sync_model=None) -> dict[str, float]:
    """Synthetic metrics, quality proxies, and (given the models) the mean reward and DeSync of ``samples``
    generations per held-out clip (noise set ``noise_set``)."""
    from reasonaudio.metrics import synthetic
    from reasonaudio.models.mel import MelSpectrogram

    latents = _sample(system, heldout, noise_set, samples, steps, cfg)  # [N, M, T, C]
    wavs = decode(latents.flatten(0, 1)).view(len(heldout), samples, -1)
    err, f1, timbre = [], [], []
    for clip_wavs, gt in zip(wavs.numpy(), heldout.gts):
        for wav in clip_wavs:
            err.append(synthetic.onset_sync_error(wav, sample_rate, gt))
            f1.append(synthetic.onset_f1(wav, sample_rate, gt))
            timbre.append(synthetic.timbre_agreement(wav, sample_rate, gt))
    out = {"onset_error": float(np.mean(err)), "onset_f1": float(np.mean(f1)),
           "timbre_agreement": float(np.mean(timbre)),
           "fd_latent": frechet_distance(latents.flatten(0, 2).numpy(), heldout.latents.flatten(0, 1).numpy()),
           **_reward_and_desync(latents, wavs, heldout, reward, sync_model, sample_rate)}
    if reference_wavs is not None:
        mel = MelSpectrogram("tiny")
        frames = lambda w: mel(w).transpose(1, 2).flatten(0, 1).numpy()  # noqa: E731  [N·F, n_mels]
        out["fd_mel"] = frechet_distance(frames(wavs.flatten(0, 1)), frames(reference_wavs))
    return out


# --------------------------------------------------------------------------- the comparison


TIMINGS: dict[str, float] = {}
"""Seconds of every step run so far (``<out>/timings.json`` keeps them across invocations)."""


def _timed(label: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    print(f"[post_train_compare] {label} ...", flush=True)
    result = fn(*args, **kwargs)
    seconds = round(time.perf_counter() - t0, 1)
    TIMINGS[label] = max(TIMINGS.get(label, 0.0), seconds)  # a step found finished keeps the time it took to run
    print(f"[post_train_compare] {label}: {seconds:.0f} s", flush=True)
    return result


def reward_accuracy(export: Path, caches: Sequence[Path], draws: int = 10) -> dict[str, float]:
    """Held-out accuracy of the classifier per example type (aligned, shifted, swapped), over ``draws`` draws."""
    from reasonaudio.data_modules.features import CachedFeatureDataModule
    from reasonaudio.systems.reward import RewardTrain

    system = RewardTrain(load_reward(export).classifier)
    dm = CachedFeatureDataModule(train=[str(c) for c in caches], val=[str(c) for c in caches], batch_size=64)
    dm.setup("fit")
    correct: dict[str, float] = {}
    seen = 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            b = batch["latent"].shape[0]
            seen += b * draws
            for seed in range(draws):
                _, acc = system._losses(*system.examples(batch, torch.Generator().manual_seed(seed)))
                for k, v in acc.items():
                    correct[k] = correct.get(k, 0.0) + float(v) * b
    return {k: v / seen for k, v in correct.items()}


def reward_vs_ground_truth(groups: Path, alternatives: dict[str, Callable[[dict], np.ndarray]] | None = None
                           ) -> dict[str, Any]:
    """The reward's choices against the ground truth stored with every group (the stage's ``ground_truth``): the
    onset error / F1 of each group's winner and loser (``reasonaudio.data_modules.preference.ground_truth_of_pairs``) and the
    ranking over every candidate (:func:`reasonaudio.preference.reward_ranking`); ``alternatives`` (name → a
    group's candidate scores) are ranked over the same candidates, for comparison.

    Raises:
        ValueError: a group was stored without its ground-truth scores.
    """
    from reasonaudio.data_modules.preference import PreferenceStore, ground_truth_of_pairs
    from reasonaudio.preference import reward_ranking

    judged = [PreferenceStore.load(p) for p in PreferenceStore(groups).kept()]
    if any("gt_onset_error" not in g for g in judged):
        raise ValueError(f"{groups}: groups without ground-truth scores (build them with ground_truth=<corpus>)")
    truth = ground_truth_of_pairs(judged)
    errors = [g["gt_onset_error"].numpy() for g in judged]
    return {"winner_error": truth["winner_onset_error_s"], "loser_error": truth["loser_onset_error_s"],
            "winner_f1": truth["winner_onset_f1"], "loser_f1": truth["loser_onset_f1"], **truth["ranking"],
            "alternatives": {name: reward_ranking([score(g) for g in judged], errors)
                             for name, score in (alternatives or {}).items()}}


def classifier_scores(export: Path, cache: Path) -> Callable[[dict], np.ndarray]:
    """P(aligned) of the alignment classifier ``export`` for a stored group's candidates (the condition's sync
    tokens from ``cache``)."""
    from reasonaudio.data_modules.preference import _RowDataset

    reward, rows = load_reward(export), _RowDataset(cache)
    position = {int(r): i for i, r in enumerate(rows.valid)}

    @torch.no_grad()
    def score(group: dict) -> np.ndarray:
        sync = rows[position[group["row"]]]["sync"][None].expand(len(group["latents"]), -1, -1)
        return reward(group["latents"], sync).numpy()
    return score


ROWS = ("pretrained", "sft", "rwr", "dpo_beta1", "dpo_beta2", "dpo_beta5", "dpo_beta50", "dpo_beta5_online2")
"""The methods of ``docs/results.json`` (issue 20), in table order; a comparison may run a subset."""
METRICS = {"onset_error_ms": ("onset_error", 1000.0), "onset_f1": ("onset_f1", 1.0), "desync_s": ("desync", 1.0),
           "reward": ("reward", 1.0), "fd_latent": ("fd_latent", 1.0), "fd_mel": ("fd_mel", 1.0),
           "timbre_agreement": ("timbre_agreement", 1.0)}
"""Reported name → (key of an evaluation, scale)."""


def mean_ci95(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "ci95": [lo, hi], "n"}``: the mean and its two-sided 95 % Student-t interval over ``values``
    (one value per seed); ``ci95`` is None for a single value."""
    from reasonaudio.metrics.listening import summarize

    s = summarize([float(v) for v in values])
    ci = None if s.n < 2 else [s.mean - s.ci95, s.mean + s.ci95]
    return {"mean": s.mean, "ci95": ci, "n": s.n}


def row_statistics(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method and metric, mean and 95 % CI over seeds; ``delta_<metric>_vs_pretrained`` are the paired
    differences (seed s of the method minus the pretrained model at noise set s)."""
    base = results["models"]["pretrained"]
    rows: dict[str, dict[str, Any]] = {}
    for name, per_seed in results["models"].items():
        seeds = sorted(per_seed, key=int)
        row: dict[str, Any] = {"seeds": [int(s) for s in seeds]}
        for metric, (key, scale) in METRICS.items():
            if all(key in per_seed[s] for s in seeds):
                row[metric] = mean_ci95([scale * per_seed[s][key] for s in seeds])
                if name != "pretrained":
                    row[f"delta_{metric}_vs_pretrained"] = mean_ci95([scale * (per_seed[s][key] - base[s][key])
                                                                      for s in seeds])
        rows[name] = row
    return rows


def docs_results(results: dict[str, Any]) -> dict[str, Any]:
    """The summary read by scripts (``docs/results.json``): reward agreement with the ground truth and, per
    method of :data:`ROWS`, every metric's mean and 95 % CI and its paired difference to the pretrained model."""
    agreement = results["reward_vs_ground_truth"]
    stats = row_statistics(results)
    return {"reward": results.get("settings", {}).get("reward"),
            "reward_pair_agreement": agreement["pair_agreement"], "reward_spearman": agreement["spearman"],
            "reward_spearman_within_groups": agreement["spearman_within"],
            "reward_saturated_low": agreement["saturated_low"], "reward_saturated_high": agreement["saturated_high"],
            "reward_alternatives": {name: {k: alt[k] for k in ("pair_agreement", "spearman", "spearman_within",
                                                                "saturated_low", "saturated_high")}
                                    for name, alt in agreement.get("alternatives", {}).items()},
            "preference_pairs": results["preference_pairs"], "heldout_clips": results["heldout_clips"],
            "machine": results["machine"], "total_min": round(results["total_s"] / 60, 1),
            "rows": {name: stats[name] for name in ROWS if name in stats}}


def _cell(stat: dict[str, Any] | None, digits: int) -> str:
    if stat is None:
        return "—"
    if stat["ci95"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['mean'] - stat['ci95'][0]:.{digits}f}"


def _significant(stat: dict[str, Any] | None) -> str:
    """A star when the 95 % CI excludes 0."""
    return " *" if stat and stat["ci95"] and (stat["ci95"][0] > 0 or stat["ci95"][1] < 0) else ""


def results_table(results: dict[str, Any]) -> str:
    """The markdown table of a finished comparison (mean ± 95 % CI half-width over seeds)."""
    stats = row_statistics(results)
    rows = ["| model | onset error (ms) ↓ | Δ error (ms) | onset F1 ↑ | Δ F1 | DeSync (s) ↓ | Δ DeSync (s) | "
            "reward ↑ | FD-latent ↓ | FD-mel ↓ | timbre ↑ |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = [n for n in ROWS if n in stats] + [n for n in stats if n not in ROWS]
    for name in order:
        r = stats[name]
        delta = lambda m, d: (_cell(r.get(f"delta_{m}_vs_pretrained"), d)  # noqa: E731
                              + _significant(r.get(f"delta_{m}_vs_pretrained"))) if name != "pretrained" else "—"
        rows.append(f"| {results['labels'].get(name, name)} | {_cell(r['onset_error_ms'], 1)} | "
                    f"{delta('onset_error_ms', 1)} | {_cell(r['onset_f1'], 3)} | {delta('onset_f1', 3)} | "
                    f"{_cell(r.get('desync_s'), 3)} | {delta('desync_s', 3)} | {_cell(r.get('reward'), 3)} | "
                    f"{_cell(r['fd_latent'], 3)} | {_cell(r.get('fd_mel'), 3)} | {_cell(r['timbre_agreement'], 3)} |")
    return "\n".join(rows)


def figure4(curves: dict[str, dict[str, dict[str, dict[str, float]]]], labels: dict[str, str], path: Path) -> Path:
    """The paper's Figure 4 layout: reward and DeSync of held-out generations against the post-training step, one
    line per method (mean over seeds, bars: min and max). ``curves[method][seed][step]`` holds
    :func:`evaluate`'s values (one generation per clip)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for (key, title, scale), ax in zip((("reward", "reward ↑", 1.0), ("desync", "DeSync (s) ↓", 1.0),
                                        ("onset_error", "onset error (ms) ↓ (ground truth)", 1000.0)), axes):
        for name, per_seed in curves.items():
            steps = sorted({int(k) for points in per_seed.values() for k in points})
            values = np.array([[scale * per_seed[s][str(k)][key] for k in steps] for s in sorted(per_seed)])
            mean = values.mean(0)
            ax.errorbar(steps, mean, yerr=[mean - values.min(0), values.max(0) - mean], marker="o", capsize=3,
                        label=labels.get(name, name))
        ax.set_xlabel("post-training step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Post-training on the synthetic corpus: held-out generations against the training step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _online_args(reward: Path | Sequence[str], every: int, candidates: int, sample_steps: int,
                 batch_size: int = 8) -> list[str]:
    """Overrides of the online mode: the policy samples new groups every ``every`` steps, scored by ``reward`` (the
    alignment classifier's weights, or :func:`sync_reward_overrides`)."""
    if isinstance(reward, (str, Path)):
        import yaml

        classifier = yaml.safe_load((CONFIG_DIR / "reward.yaml").read_text())["model"]["init_args"]["classifier"]
        spec = {"class_path": "reasonaudio.models.reward.ClassifierReward",
                "init_args": {"checkpoint": str(reward), "classifier": classifier}}
        scorer = [f"--model.init_args.reward={json.dumps(spec)}"]
    else:
        scorer = list(reward)
    return [*scorer, f"--model.init_args.online_every={every}", f"--model.init_args.online_candidates={candidates}",
            f"--model.init_args.sample_steps={sample_steps}", f"--data.init_args.groups_per_epoch={every * batch_size}",
            "--trainer.reload_dataloaders_every_n_epochs=1"]


def margin_threshold(groups: Path, quantile: float) -> tuple[float, np.ndarray]:
    """The reward margin a DPO pair must exceed, and the groups' reward spreads (the margins of their arg-max /
    arg-min pairs): the ``quantile`` of the spreads, so about that fraction of the least informative pairs is
    left out (0: none)."""
    from reasonaudio.data_modules.preference import PreferenceStore

    spreads = np.array([float(g["rewards"].max() - g["rewards"].min())
                        for g in map(PreferenceStore.load, PreferenceStore(groups).kept())])
    return (float(np.quantile(spreads, quantile)) if quantile > 0 else 0.0), spreads


def parse_variant(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """``"dpo_all=pairs=all,beta=2"`` → ``("dpo_all", [("pairs", "all"), ("beta", "2")])`` (``--variant``)."""
    name, _, rest = spec.partition("=")
    overrides = [tuple(item.split("=", 1)) for item in rest.split(",") if item]
    if not re.fullmatch(r"[A-Za-z0-9_]+", name) or name in ROWS or not overrides or any(len(o) != 2 for o in overrides):
        raise SystemExit(f"post_train_compare: --variant {spec!r}: expected NAME=KEY=VALUE[,KEY=VALUE] with a new "
                         f"NAME of letters, digits and '_' (not one of {', '.join(ROWS)})")
    return name, overrides  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="post_train_compare", description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"),
                        help="a finished `make demo` folder (read only)")
    parser.add_argument("--out", type=Path, default=Path("runs/post_train_compare"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100, help="post-training steps of every run")
    parser.add_argument("--lr", type=float, default=1e-4, help="post-training learning rate (LoRA weights)")
    parser.add_argument("--objectives", nargs="+", default=["sft", "rwr", "dpo"])
    parser.add_argument("--betas", type=float, nargs="*", default=[], help="extra DPO β values (β = 5 is 'dpo')")
    parser.add_argument("--online-rounds", type=int, default=2,
                        help="also run DPO β 5 online in this many rounds of groups sampled from the current policy "
                             "(the first round is the offline groups; 0: no online row)")
    parser.add_argument("--reward", choices=("sync", "classifier"), default="sync",
                        help="the preference reward: the synchrony reward (a separately trained Synchformer's expected "
                             "offset) or the paper's alignment classifier (docs/post_training.md)")
    parser.add_argument("--reward-steps", type=int, default=300, help="alignment classifier steps")
    parser.add_argument("--reward-sync-steps", type=int, default=100, help="the synchrony reward's Synchformer steps")
    parser.add_argument("--candidates", type=int, default=8, help="K candidates per training condition")
    parser.add_argument("--min-spread", type=float, default=0.0, help="groups with reward spread <= this are dropped")
    parser.add_argument("--margin-quantile", type=float, default=0.25,
                        help="DPO pairs need a reward margin above this quantile of the groups' spreads (0: all)")
    parser.add_argument("--extra-heldout", type=int, default=24, help="new synthetic held-out clips besides the demo's")
    parser.add_argument("--validation", type=int, default=0,
                        help="evaluate on this many new synthetic validation clips (their own seed) INSTEAD of the "
                             "held-out clips: to choose between variants without looking at the held-out set")
    parser.add_argument("--conditions", type=int, default=0,
                        help="preference conditions: this many new synthetic clips (their own seed) instead of the "
                             "demo's training clips (0)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                        help="an extra DPO row NAME with objective overrides, e.g. dpo_all=pairs=all (repeatable)")
    parser.add_argument("--eval-samples", type=int, default=2, help="generations per held-out clip")
    parser.add_argument("--sample-steps", type=int, default=25, help="Euler steps of every sampler")
    parser.add_argument("--snapshot-every", type=int, default=25,
                        help="curves (Figure 4): evaluate the policy every this many steps (0: no curves)")
    parser.add_argument("--curve-clips", type=int, default=32,
                        help="held-out clips of the curves, the first of the evaluation's (one generation each)")
    parser.add_argument("--docs", type=Path, default=None, help="markdown file whose marked block gets the table")
    parser.add_argument("--results-json", type=Path, default=None,
                        help="also write the scripts' summary (docs/results.json shape) here")
    parser.add_argument("--figure", type=Path, default=None, help="Figure 4 PNG (default <out>/figure4.png)")
    parser.add_argument("--no-cfg1-diagnostic", dest="cfg1_diagnostic", action="store_false",
                        help="skip sampling the first seed of every objective without guidance")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared machine more threads busy-wait each other)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    demo, out = args.demo, args.out
    pretrained = demo / "pretrain" / "export" / "model.safetensors"
    mllm, train_cache = demo / "mllm", demo / "features_corpus"
    vae_ckpt = demo / "latent_stats" / "vae.ckpt"
    vocoder = demo / "vocoder" / "vocoder" / "version_0" / "checkpoints" / "last.ckpt"
    sync_weights = demo / "sync" / "export" / "synchformer.safetensors"
    for path in (pretrained, mllm, train_cache, demo / "features_heldout", vae_ckpt, vocoder, sync_weights):
        if not path.exists():
            raise SystemExit(f"post_train_compare: {path} not found: run `make demo` first (or pass --demo)")
    out.mkdir(parents=True, exist_ok=True)
    # Settings that change finished outputs must not change on a rerun; seeds, objectives and betas only add runs.
    fixed = ("demo", "steps", "lr", "reward", "reward_steps", "reward_sync_steps", "candidates", "min_spread",
             "margin_quantile", "extra_heldout", "eval_samples", "sample_steps", "snapshot_every")
    # (--curve-clips is not fixed: curves made on other clips are redone)
    settings = {k: str(getattr(args, k)) if isinstance(getattr(args, k), Path) else getattr(args, k) for k in fixed}
    for key in ("validation", "conditions"):  # selection runs: other clips, other outputs
        if getattr(args, key):
            settings[key] = getattr(args, key)
    settings_file = out / "settings.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        raise SystemExit(f"post_train_compare: {out} was made with {settings_file.read_text()}; use another --out")
    settings_file.write_text(json.dumps(settings, indent=2))
    timings_file = out / "timings.json"
    TIMINGS.update(json.loads(timings_file.read_text()) if timings_file.is_file() else {})

    # 1. held-out clips (or, for a selection run, validation clips that the held-out results never see)
    heldout_sets = [(demo / "features_heldout", demo / "heldout")]

    def new_clips(name: str, label: str, num_clips: int, seed: int) -> tuple[Path, Path]:
        """``(cache, corpus)`` of ``num_clips`` new synthetic clips under ``out``, synthesised and cached once (with
        the demo's VAE and Synchformer visual weights)."""
        cache, corpus = out / f"features_{name}", out / name
        meta = cache / "meta.json"
        if not meta.is_file() or "latent_stats" not in json.loads(meta.read_text()):
            _timed(label, run_cli, features_args(
                corpus, cache, vae_ckpt, train_cache / "sync_encoder.pt", out / "logs", num_clips, seed=seed))
        return cache, corpus

    if args.validation:
        heldout_sets = [new_clips("validation", "validation clips", args.validation, VALIDATION_SEED)]
    elif args.extra_heldout:
        heldout_sets.append(new_clips("heldout_extra", "extra held-out clips", args.extra_heldout, 20_000))

    # 2. rewards: the paper's alignment classifier (always trained: its ranking is reported beside the chosen one)
    # and the synchrony reward's own Synchformer
    classifier = _timed("reward classifier", train_reward, out / "reward", train_cache, demo / "features_heldout",
                        args.reward_steps)
    accuracy = reward_accuracy(classifier, [c for c, _ in heldout_sets])
    # the preference conditions: the demo's training clips, or --conditions new ones
    cond_cache, cond_corpus = train_cache, demo / "corpus"
    if args.conditions:
        cond_cache, cond_corpus = new_clips("conditions", "condition clips", args.conditions, CONDITIONS_SEED)
    if args.reward == "sync":
        reward_weights = _timed("synchrony reward", train_sync_reward, out / "reward_sync", demo / "corpus",
                                demo / "heldout", args.reward_sync_steps)
        # the conditions' videos only: every synthetic set names its clips synth_000000, ...
        scorer: Path | list[str] = sync_reward_overrides(reward_weights, [cond_corpus], vae_ckpt, vocoder)
    else:
        reward_weights = scorer = classifier

    # 3. preference data, every candidate judged against the ground truth
    groups = out / "preference_data" / "groups"
    summary = _timed("preference data", build_preference_data, groups, cond_cache, pretrained, mllm, scorer,
                     args.candidates, args.sample_steps, args.min_spread,
                     ground_truth=(cond_corpus, vae_ckpt, vocoder))
    agreement_file = out / "preference_data" / "reward_vs_ground_truth.json"
    if not agreement_file.is_file() or "alternatives" not in json.loads(agreement_file.read_text()):
        alternatives = ({"alignment_classifier": classifier_scores(classifier, cond_cache)} if args.reward == "sync"
                        else {})
        agreement = _timed("reward vs ground truth", reward_vs_ground_truth, groups, alternatives)
        agreement_file.write_text(json.dumps(agreement, indent=2))
    agreement = json.loads(agreement_file.read_text())

    from reasonaudio.models.vae import mel_vae_tiny
    from reasonaudio.systems.preference_data import make_decoder

    decode = make_decoder(mel_vae_tiny(), str(vae_ckpt), str(vocoder))
    min_gap, spreads = margin_threshold(groups, args.margin_quantile)
    pairs = {"groups": summary["kept"], "margin_quantile": args.margin_quantile, "min_margin": min_gap,
             "dpo_pairs": int((spreads > min_gap).sum()),
             "margin_quantiles": {str(q): float(np.quantile(spreads, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)}}

    # 4. post-training
    runs: dict[str, tuple[str, list[str], bool]] = {}
    labels = {"pretrained": "pretrained (no post-training)", "sft": "SFT", "rwr": "RWR (softmax, τ = 1)"}
    dpo_gap = [f"--model.init_args.objective.init_args.min_gap={min_gap}"]
    for objective in args.objectives:
        name = "dpo_beta5" if objective == "dpo" else objective
        runs[name] = (objective, dpo_gap if objective == "dpo" else [], False)
    for beta in args.betas:
        name = f"dpo_beta{beta:g}"
        runs.setdefault(name, ("dpo", [f"--model.init_args.objective.init_args.beta={beta}", *dpo_gap], False))
    for spec in args.variant:
        name, overrides = parse_variant(spec)
        runs[name] = ("dpo", [*(f"--model.init_args.objective.init_args.{k}={v}" for k, v in overrides), *dpo_gap],
                      False)
        labels[name] = "DPO (" + ", ".join(f"{k} = {v}" for k, v in overrides) + ")"
    if args.online_rounds > 1:
        name = f"dpo_beta5_online{args.online_rounds}"
        runs[name] = ("dpo", dpo_gap, True)
        labels[name] = f"DPO (β = 5), online, {args.online_rounds} rounds"
    for name in runs:
        if name.startswith("dpo_beta") and name not in labels:
            labels[name] = f"DPO (β = {name[8:]})"
    snapshots = [f"--model.init_args.snapshot_every={args.snapshot_every}"] if args.snapshot_every else []
    exports: dict[str, dict[int, Path]] = {}
    for name, (objective, extra, online) in runs.items():
        for seed in args.seeds:
            run_dir = out / "runs" / f"{name}_seed{seed}"
            run_groups, run_extra = groups, [*extra, *snapshots]
            if online:  # each run samples its own rounds: a copy of the offline groups to start from
                run_groups = run_dir / "groups"
                if not run_groups.is_dir():
                    shutil.copytree(groups, run_groups)
                every = -(-args.steps // args.online_rounds)
                run_extra += _online_args(scorer, every, args.candidates, args.sample_steps)
            exports.setdefault(name, {})[seed] = _timed(
                f"post-train {name} seed {seed}", post_train, objective, run_dir, run_groups, cond_cache,
                pretrained, mllm, args.steps, seed, args.lr, run_extra)

    # 5. evaluation
    from reasonaudio.metrics.desync import load_sync_model

    heldout = HeldOut(heldout_sets)
    reference_wavs = decode(heldout.latents)
    reward_model = load_sync_reward(reward_weights) if args.reward == "sync" else load_reward(classifier)
    sync_model = load_sync_model(sync_weights)
    model_args = _model_args(mllm, 4.0)
    system = load_model(model_args, pretrained)
    policy = lambda weights: load_model(model_args, weights, system)  # noqa: E731  one system, weights swapped
    evals_dir = out / "eval"
    evals_dir.mkdir(exist_ok=True)
    models: dict[str, dict[str, dict[str, float]]] = {"pretrained": {}}
    todo = [("pretrained", seed, pretrained) for seed in args.seeds]
    todo += [(name, seed, path) for name, per_seed in exports.items() for seed, path in per_seed.items()]
    for name, seed, weights in todo:
        file = evals_dir / f"{name}_seed{seed}.json"
        if not file.is_file():
            scores = _timed(f"evaluate {name} seed {seed}", evaluate, policy(weights), heldout, decode,
                            noise_set=seed, samples=args.eval_samples, steps=args.sample_steps,
                            reference_wavs=reference_wavs, reward=reward_model, sync_model=sync_model)
            file.write_text(json.dumps(scores, indent=2))
        models.setdefault(name, {})[str(seed)] = json.loads(file.read_text())

    # curves: every snapshot of every run on the first --curve-clips held-out clips (step 0: the pretrained model)
    curves: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    if args.snapshot_every:
        clips = heldout if args.curve_clips >= len(heldout) else HeldOut(heldout_sets, limit=args.curve_clips)
        point = lambda system, seed: evaluate(system, clips, decode, noise_set=seed, samples=1,  # noqa: E731
                                              steps=args.sample_steps, reward=reward_model, sync_model=sync_model)
        for name, per_seed in exports.items():
            for seed, export in per_seed.items():
                file = evals_dir / f"{name}_seed{seed}_curve.json"
                if not file.is_file() or json.loads(file.read_text()).get("clips") != clips.ids:
                    start = evals_dir / f"pretrained_seed{seed}_curve.json"  # step 0 of every run of this seed
                    if not start.is_file() or json.loads(start.read_text()).get("clips") != clips.ids:
                        scores = _timed(f"curve pretrained seed {seed}", point, policy(pretrained), seed)
                        start.write_text(json.dumps(scores | {"clips": clips.ids}, indent=2))
                    points = {int(p.name[5:]): p for p in sorted((export / "snapshots").glob("step_*"))}
                    first = {k: v for k, v in json.loads(start.read_text()).items() if k != "clips"}
                    curve = {"clips": clips.ids, "0": first,
                             **{str(step): _timed(f"curve {name} seed {seed} step {step}", point, policy(weights), seed)
                                for step, weights in {**points, args.steps: export}.items()}}
                    file.write_text(json.dumps(curve, indent=2))
                curve = json.loads(file.read_text())
                curves.setdefault(name, {})[str(seed)] = {k: v for k, v in curve.items() if k != "clips"}

    # diagnostic: the first seed of every objective sampled without guidance (cfg = 1)
    unguided: dict[str, dict[str, float]] = {}
    if args.cfg1_diagnostic:
        seed = args.seeds[0]
        plain = [("dpo_beta5" if o == "dpo" else o) for o in args.objectives]
        for name, weights in [("pretrained", pretrained)] + [(n, exports[n][seed]) for n in plain]:
            file = evals_dir / f"{name}_seed{seed}_cfg1.json"
            if not file.is_file():
                scores = _timed(f"evaluate {name} seed {seed} at cfg 1", evaluate, policy(weights),
                                heldout, decode, noise_set=seed, samples=1, steps=args.sample_steps, cfg=1.0)
                file.write_text(json.dumps(scores, indent=2))
            unguided[name] = json.loads(file.read_text())

    # 6. table, summary, figure
    from reasonaudio.experiments.study import machine_name

    results = {"settings": {**settings, "seeds": args.seeds, "objectives": args.objectives, "betas": args.betas,
                            "online_rounds": args.online_rounds},
               "machine": machine_name(), "unguided": unguided, "reward_accuracy": accuracy,
               "preference_data": summary, "preference_pairs": pairs, "reward_vs_ground_truth": agreement,
               "heldout_clips": len(heldout), "models": models, "curves": curves, "labels": labels,
               "timings_s": dict(TIMINGS), "total_s": round(sum(TIMINGS.values()), 1)}
    results["statistics"] = row_statistics(results)
    timings_file.write_text(json.dumps(TIMINGS, indent=2))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if args.results_json:
        args.results_json.parent.mkdir(parents=True, exist_ok=True)
        args.results_json.write_text(json.dumps(docs_results(results), indent=2) + "\n")
    figure = args.figure or out / "figure4.png"
    if curves:
        figure4(curves, labels, figure)
    table = results_table(results)
    reward_name = ("the synchrony reward (1 − E|offset| / 1.2 s, its own Synchformer)" if args.reward == "sync"
                   else "the alignment classifier's P(aligned)")
    eval_set = (f"Validation clips (new synthetic clips, seed {VALIDATION_SEED}, not the held-out set)"
                if args.validation else "Held-out clips")
    notes = (f"\n\nMean ± 95 % CI half-width (Student t) over seeds {args.seeds}; Δ: paired difference to the "
             f"pretrained model at the same noise, * where its CI excludes 0. {eval_set}: {len(heldout)} "
             f"({args.eval_samples} generations each); {args.steps} post-training steps, lr {args.lr:g}, LoRA rank 64; "
             f"reward: {reward_name}; {summary['kept']} preference groups (K = {args.candidates}); DPO pairs need a "
             f"reward margin above {min_gap:.3g} (the {args.margin_quantile:g} quantile of the groups' spreads): "
             f"{pairs['dpo_pairs']} of {summary['kept']}. Reward winners vs losers on the training conditions (ground "
             f"truth): onset error {1000 * agreement['winner_error']:.0f} vs {1000 * agreement['loser_error']:.0f} ms, "
             f"F1 {agreement['winner_f1']:.3f} vs {agreement['loser_f1']:.3f}; over every candidate, the reward orders "
             f"{100 * agreement['pair_agreement']:.0f} % of the {agreement['pairs']} pairs whose errors differ by "
             f"≥ 50 ms like the ground truth (Spearman ρ reward vs error {agreement['spearman']:.2f}, within groups "
             f"{agreement['spearman_within']:.2f}); {100 * agreement['saturated_low']:.0f} % of candidates in the "
             f"lowest 1 % of its range, {100 * agreement['saturated_high']:.0f} % in the highest.")
    for name, alt in agreement.get("alternatives", {}).items():
        notes += (f" The {name.replace('_', ' ')} (held-out accuracy: aligned {accuracy['aligned']:.2f}, shifted "
                  f"{accuracy['shifted']:.2f}, swapped {accuracy['swapped']:.2f}) orders "
                  f"{100 * alt['pair_agreement']:.0f} % of the same pairs like the ground truth (within-group ρ "
                  f"{alt['spearman_within']:.2f}; "
                  f"{100 * alt['saturated_high']:.0f} % of candidates at P(aligned) ≥ 0.99).")
    notes += f" Time of all steps: {results['total_s'] / 60:.1f} min ({results['machine']}, one thread)."
    if unguided:
        notes += ("\n\nWithout guidance (cfg = 1; seed " + str(args.seeds[0]) + ", one generation per clip):\n\n"
                  "| model | onset error (ms) | onset F1 | FD-latent |\n|---|---|---|---|\n"
                  + "\n".join(f"| {labels.get(n, n)} | {1000 * m['onset_error']:.1f} | {m['onset_f1']:.3f} | "
                               f"{m['fd_latent']:.3f} |" for n, m in unguided.items()))
    (out / "results.md").write_text(table + notes + "\n")
    print("\n" + table + notes, flush=True)
    if args.docs:
        _replace_block(args.docs, table + notes)
    return 0


def _replace_block(path: Path, text: str) -> None:
    """Put ``text`` between the comparison's markers in ``path`` (appended with markers if absent)."""
    doc = path.read_text() if path.is_file() else ""
    block = f"{MARKERS[0]}\n{text}\n{MARKERS[1]}"
    if MARKERS[0] in doc and MARKERS[1] in doc:
        doc = re.sub(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip() + ("\n\n" if doc else "") + block + "\n"
    path.write_text(doc)


if __name__ == "__main__":
    sys.exit(main())
