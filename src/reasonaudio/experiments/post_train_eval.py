"""Evaluation of the post-training comparison: held-out clips loaded once (:class:`HeldOut`), the policies and
rewards loaded from their exports, and :func:`evaluate`, which samples every held-out clip from fixed noises and
scores the audio against the synthetic ground truth, with the quality proxies, the mean reward and DeSync beside.
Also the rewards' own checks: the alignment classifier's held-out accuracy (:func:`reward_accuracy`) and how the
reward orders the preference candidates against the ground truth (:func:`reward_vs_ground_truth`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import yaml

from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.data_modules.features import CachedFeatureDataModule
from reasonaudio.data_modules.preference_groups import (PreferenceStore, _RowDataset, collate_groups,
                                                        ground_truth_of_pairs)
from reasonaudio.experiments.layout import corpus_video
from reasonaudio.experiments.scoring import frechet_distance
from reasonaudio.metrics import synthetic
from reasonaudio.metrics.desync import _frames, desync_seconds, video_tokens
from reasonaudio.models.mel import MelSpectrogram
from reasonaudio.models.reward import AlignmentClassifier, ClassifierReward, SynchformerOffsetReward
from reasonaudio.models.synchformer import Synchformer, SynchformerConfig, read_export_config
from reasonaudio.preference_objectives import reward_ranking
from reasonaudio.synthetic_world import ground_truth_files, read_ground_truth
from reasonaudio.systems.policy_weights import load_policy_weights
from reasonaudio.systems.preference_builder import candidate_seeds, sample_candidates
from reasonaudio.systems.reward import RewardTrain

EVAL_SEED = 1_000_000_000
"""Base of the evaluation noise seeds (apart from every preference-data seed)."""


class HeldOut:
    """Held-out clips: feature caches with their synthetic corpus folders (ground truth, videos), loaded once.

    Args:
        sets: ``(feature cache, corpus folder)`` pairs.
        limit: keep only the first ``limit`` clips (``--curve-clips``).
    """

    def __init__(self, sets: Sequence[tuple[Path, Path]], limit: int | None = None):
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
                self.gts += [read_ground_truth(path) for path in ground_truth_files(corpus, batch["id"])]
                self.videos += [corpus_video(corpus, i) for i in batch["id"]]
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
            seconds = float(self.gts[0]["duration"])
            with torch.no_grad():
                self._visual = torch.cat([video_tokens(sync_model, _frames(sync_model, self.videos[i:i + 8], seconds))
                                          for i in range(0, len(self), 8)])
        return self._visual


def load_model(pretrain_config: Sequence[str], weights: Path, system=None):
    """A ``FlowMatchingPretrain`` of ``pretrain.yaml`` (with overrides) holding ``weights`` (an export or adapter);
    ``system``: one built earlier, whose weights are replaced (building one costs seconds, loading weights
    milliseconds)."""
    if system is None:
        system = build_cli(["--config", str(CONFIG_DIR / "pretrain.yaml"), *pretrain_config,
                            "--trainer.logger=false"], run=False).model
    load_policy_weights(system, weights)
    return system.eval()


def load_reward(export: Path):
    """The ``ClassifierReward`` of ``preference_data.yaml``'s architecture with the weights ``export``."""
    config = yaml.safe_load((CONFIG_DIR / "reward.yaml").read_text())["model"]["init_args"]["classifier"]["init_args"]
    return ClassifierReward(AlignmentClassifier(**config), str(export)).prepare()


def load_sync_reward(checkpoint: Path, score: str | None = None, video_root: Sequence[Path] | None = None):
    """The synchrony reward of ``preference_data/synchrony_reward.yaml`` with the Synchformer export ``checkpoint``
    (built from the config a ``make sync`` export carries, else the overlay's; video by file:
    :meth:`~reasonaudio.models.reward.SynchformerOffsetReward.encode_videos`, from ``video_root`` when given);
    ``score`` replaces the config's reading."""
    overlay = CONFIG_DIR / "preference_data" / "synchrony_reward.yaml"
    spec = yaml.safe_load(overlay.read_text())["model"]["init_args"]["reward"]
    listed = SynchformerConfig(**spec["init_args"]["synchformer"]["init_args"]["config"])
    config = read_export_config(checkpoint) or listed
    return SynchformerOffsetReward(Synchformer(config), str(checkpoint), score=score or spec["init_args"]["score"],
                                   video_root=None if video_root is None else [str(r) for r in video_root]).prepare()


def sync_reading_scores(checkpoint: Path, video_root: Sequence[Path], decode: Callable[[dict], torch.Tensor],
                        score: str) -> Callable[[dict], np.ndarray]:
    """The synchrony reward ``checkpoint`` read as ``score`` for a stored group's candidates: ``decode(group)`` gives
    their waveforms ``[K, N]``, each clip's video comes from ``video_root`` (for :func:`reward_vs_ground_truth`'s
    alternatives)."""
    reward = load_sync_reward(checkpoint, score, video_root)

    @torch.no_grad()
    def scores(group: dict) -> np.ndarray:
        wav = decode(group)
        return reward(wav, reward.video_inputs({"id": [group["id"]] * len(wav)})).numpy()
    return scores


@torch.no_grad()
def _sample(system, heldout: HeldOut, noise_set: int, samples: int, steps: int, cfg: float) -> torch.Tensor:
    """``[N, M, T, C]`` generations of every held-out clip from noise set ``noise_set`` (the same for every model)."""
    base = EVAL_SEED + 10_000_000 * noise_set
    return torch.cat([sample_candidates(system, b, candidate_seeds(b["row"], samples, base), steps, cfg)
                      for b in heldout.batches])


@torch.no_grad()
def _reward_and_desync(latents: torch.Tensor, wavs: torch.Tensor, heldout: HeldOut, reward, sync_model,
                       sample_rate: int) -> dict[str, float]:
    """Mean reward of ``latents [N, M, T, C]`` (or of their audio) and mean DeSync (s) of their audio
    ``wavs [N, M, S]``."""
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


# --------------------------------------------------------------------------- the rewards' checks


def reward_accuracy(export: Path, caches: Sequence[Path], draws: int = 10) -> dict[str, float]:
    """Held-out accuracy of the classifier per example type (aligned, shifted, swapped), over ``draws`` draws."""
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
    onset error / F1 of each group's winner and loser
    (:func:`reasonaudio.data_modules.preference_groups.ground_truth_of_pairs`) and the ranking over every candidate
    (:func:`reasonaudio.preference_objectives.reward_ranking`); ``alternatives`` (name → a group's candidate
    scores) are ranked over the same candidates, for comparison.

    Raises:
        ValueError: a group was stored without its ground-truth scores.
    """
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
    reward, rows = load_reward(export), _RowDataset(cache)
    position = {int(r): i for i, r in enumerate(rows.valid)}

    @torch.no_grad()
    def score(group: dict) -> np.ndarray:
        sync = rows[position[group["row"]]]["sync"][None].expand(len(group["latents"]), -1, -1)
        return reward(group["latents"], sync).numpy()
    return score
