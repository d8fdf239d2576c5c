"""PreferenceDataBuilder: the ``preference_data`` stage — K scored candidates per condition, stored as groups.

    reasonaudio predict --config lightning_configs/preference_data.yaml

For every condition (a row of a feature cache, served by ``PreferenceDataModule``) the pretrained model
(its EMA export, or a post-trained export / adapter) samples K candidates with CFG from distinct
seeds, a reward (``models/reward.py``) scores them, and the group — condition id, row, seeds,
rewards and latents — is written to the store (``data_modules/preference_groups.py``). Groups whose reward
spread max − min is ≤ ``min_spread`` carry no preference: they are written to ``dropped/`` (without
latents) and counted, never trained on. A rerun resumes: rows with a group are not sampled again.

On the synthetic corpus the truth is known: with ``ground_truth`` (the corpus folder) every candidate
is decoded and its onset error and F1 are stored with the group, and the run prints (and the store's
``summary.json`` keeps) the reward's winners vs losers on the ground truth and how often the reward
orders candidates like it (``reasonaudio.preference_objectives.reward_ranking``): the check of the preference
signal that post-training can only be as good as.

Pairing is the trainer's job (``reasonaudio.preference_objectives.preference_pairs``): winner = arg-max reward,
loser = arg-min (the pair of extremes, as flow_grpo), or every ordered pair; all K candidates are kept
so that SFT and RWR can use them too.

The same functions (:func:`sample_candidates`, :func:`score_candidates`, :func:`write_groups`) run the
online mode of ``PreferencePostTrain``, with the current policy instead of the pretrained model.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reasonaudio import flow
from reasonaudio.metrics import synthetic
from reasonaudio.preference_objectives import percent_interval
from reasonaudio.synthetic_world import GT_FOLDER, ground_truth_file, read_ground_truth
from reasonaudio.systems.codec import AudioDecoder
from reasonaudio.systems.flow_matching import FlowMatchingPretrain
from reasonaudio.systems.hparams import save_system_hparams
from reasonaudio.systems.policy_weights import load_policy_weights


def candidate_seeds(rows: torch.Tensor, num_candidates: int, seed: int) -> torch.Tensor:
    """Noise seed of candidate k of cache row i: ``seed + i·K + k``, ``[B, K]`` (distinct for distinct (i, k))."""
    return seed + rows.long().cpu()[:, None] * num_candidates + torch.arange(num_candidates)


@torch.no_grad()
def sample_candidates(system: FlowMatchingPretrain, batch: dict[str, Any], seeds: torch.Tensor, steps: int = 25,
                      cfg: float = 4.5, method: str = "euler") -> torch.Tensor:
    """K candidates per condition with CFG, one noise seed each.

    The conditions (MLLM queries) are computed once per item and repeated K times; candidate (i, k)
    starts from ``randn([T, C])`` drawn on the CPU from ``seeds[i, k]``, so it does not depend on the
    batch it is sampled in.

    Args:
        system: the model (``FlowMatchingPretrain`` or a subclass) with its weights loaded.
        batch: a feature-cache batch (``latent [B, T, C]`` gives the shapes).
        seeds: ``[B, K]`` noise seeds.
        steps: sampler steps.
        cfg: guidance scale.
        method: ODE method (``flow.sample``).

    Returns:
        ``[B, K, T, C]`` normalised latents.
    """
    b, t_len, channels = batch["latent"].shape
    k = seeds.shape[1]
    cond = system.conditions(batch, batch["has_text"], batch["has_video"])
    off = torch.zeros(b, dtype=torch.bool, device=system.device)
    uncond = system.conditions(batch, off, off)
    cond, uncond = ({n: v.repeat_interleave(k, dim=0) for n, v in c.items()} for c in (cond, uncond))
    x0 = torch.stack([torch.randn(t_len, channels, generator=torch.Generator().manual_seed(int(s)))
                      for s in seeds.flatten()]).to(system.device)
    x1 = flow.sample(lambda x, t: flow.cfg_velocity(system.net, x, t, cond, uncond, cfg), x0, steps, method)
    return x1.view(b, k, t_len, channels)


@torch.no_grad()
def score_candidates(reward: nn.Module, latents: torch.Tensor, batch: dict[str, Any],
                     decode: AudioDecoder | None = None) -> torch.Tensor:
    """Rewards ``[B, K]`` of candidates ``[B, K, T, C]`` against their conditions' clips.

    Raises:
        ValueError: the reward reads waveforms and no decoder is given.
    """
    b, k = latents.shape[:2]
    audio = latents.flatten(0, 1)
    if reward.audio_input == "wav":
        if decode is None:
            raise ValueError(f"{type(reward).__name__} scores waveforms: configure vae, vae_checkpoint and vocoder")
        audio = decode(audio)
    video = reward.video_inputs(batch)
    if isinstance(video, torch.Tensor):
        video = video.to(audio.device).repeat_interleave(k, dim=0)
    else:
        video = [v for v in video for _ in range(k)]
    return reward(audio, video).float().view(b, k).cpu()


def write_groups(store, batch: dict[str, Any], seeds: torch.Tensor, rewards: torch.Tensor, latents: torch.Tensor,
                 min_spread: float, ground_truth: list[dict[str, torch.Tensor]] | None = None) -> tuple[int, int]:
    """Write a batch of groups: kept if their reward spread exceeds ``min_spread``, else dropped; with each,
    its candidates' ground-truth scores when given (one dict per group).

    Returns:
        (kept, dropped) counts of this batch.
    """
    kept = 0
    for i, (row, clip_id) in enumerate(zip(batch["row"].tolist(), batch["id"])):
        keep = float(rewards[i].max() - rewards[i].min()) > min_spread
        store.write(row, clip_id, seeds[i], rewards[i], latents[i] if keep else None,
                    ground_truth[i] if ground_truth is not None else None)
        kept += keep
    return kept, len(batch["id"]) - kept


def candidate_onset_scores(wavs: torch.Tensor, sample_rate: int, corpus: str | Path,
                           clip_id: str) -> dict[str, torch.Tensor]:
    """Onset error (s) and F1 ``[K]`` of one clip's decoded candidates ``wavs [K, S]`` against the synthetic
    corpus's ``gt/<clip_id>.json`` (the corpus must be the one the cache was made from)."""
    try:
        gt = read_ground_truth(ground_truth_file(corpus, clip_id))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} (the corpus must be the one the cache was made from)") from None
    wavs = wavs.cpu().numpy()
    return {"onset_error": torch.tensor([synthetic.onset_sync_error(w, sample_rate, gt) for w in wavs]),
            "onset_f1": torch.tensor([synthetic.onset_f1(w, sample_rate, gt) for w in wavs])}


def make_decoder(vae: nn.Module | None, vae_checkpoint: str | None, vocoder: str | None,
                 audio_preset: str = "tiny") -> AudioDecoder | None:
    """The configured codec pair, read now (a missing file fails the stage at setup), or None when none of
    ``vae``, ``vae_checkpoint`` and ``vocoder`` is set."""
    if vae is None and vae_checkpoint is None and vocoder is None:
        return None
    if vae is None or not vae_checkpoint or not vocoder:
        raise ValueError("decoding needs all of vae, vae_checkpoint and vocoder")
    return AudioDecoder(vae, vae_checkpoint, vocoder, audio_preset).load()


class PreferenceDataBuilder(FlowMatchingPretrain):
    """Predict-only system writing scored candidate groups (module docstring).

    Args:
        net: the DiT architecture of the pretrained model.
        conditioner: its conditioner.
        reward: a ``reasonaudio.models.reward.Reward``.
        pretrained: weights to sample with: an EMA / merged export (``model.safetensors`` or its folder)
            or a LoRA adapter folder (``adapter_config.json``), loaded when the stage starts.
        num_candidates: K, candidates per condition.
        steps: sampler steps.
        cfg: guidance scale.
        method: ODE method.
        seed: base of the candidate seeds (:func:`candidate_seeds`).
        min_spread: groups with reward max − min ≤ this are dropped.
        vae: the VAE architecture (for rewards that read waveforms, and for ``ground_truth``).
        vae_checkpoint: its ``VAETrain`` checkpoint.
        vocoder: a ``VocoderTrain`` checkpoint or BigVGAN folder.
        ground_truth: a synthetic corpus folder with ``gt/<id>.json`` for the cache's clips: every candidate is
            decoded and scored against it (onset error and F1, ``metrics/synthetic.py``), the scores are stored
            with the group, and the run reports how the reward's winners and losers compare on them.
        audio_preset: ``AudioConfig`` preset of the decoded audio (its sample rate), for ``ground_truth``.
    """

    def __init__(self, net: nn.Module, conditioner: nn.Module, reward: nn.Module, pretrained: str,
                 num_candidates: int = 8, steps: int = 25, cfg: float = 4.5, method: str = "euler", seed: int = 0,
                 min_spread: float = 0.0, vae: nn.Module | None = None, vae_checkpoint: str | None = None,
                 vocoder: str | None = None, ground_truth: str | None = None, audio_preset: str = "tiny"):
        with warnings.catch_warnings():  # the parent records its own argument subset; replaced just below
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            super().__init__(net, conditioner)
        self.hparams.clear()  # record this system's arguments, not the parent's subset
        save_system_hparams(self, ["net", "conditioner", "reward", "vae"])
        if num_candidates < 2:
            raise ValueError(f"num_candidates must be at least 2 to form a preference, got {num_candidates}")
        if min_spread < 0:
            raise ValueError(f"min_spread must be >= 0, got {min_spread}")
        self.reward = reward.requires_grad_(False)  # frozen, and outside the sampling model's weights
        self.vae = vae.requires_grad_(False) if vae is not None else None
        self.decode: AudioDecoder | None = None
        self.counts = [0, 0]

    def setup(self, stage: str) -> None:
        load_policy_weights(self, self.hparams.pretrained)
        super().setup(stage)  # after loading: stored prefix KV stores, if used, must be this backbone's
        self.reward.prepare()
        self.decode = make_decoder(self.vae, self.hparams.vae_checkpoint, self.hparams.vocoder,
                                   self.hparams.audio_preset)
        if self.reward.audio_input == "wav" and self.decode is None:
            raise ValueError(f"{type(self.reward).__name__} scores waveforms: set vae, vae_checkpoint and vocoder")
        if self.hparams.ground_truth is not None:
            if self.decode is None:
                raise ValueError("ground_truth scores decoded candidates: set vae, vae_checkpoint and vocoder")
            if not (Path(self.hparams.ground_truth) / GT_FOLDER).is_dir():
                raise FileNotFoundError(f"ground_truth {self.hparams.ground_truth}: no {GT_FOLDER}/ folder (a "
                                        f"synthetic corpus folder has {GT_FOLDER}/<id>.json per clip)")
        store = getattr(self.trainer.datamodule, "store", None) if self._trainer is not None else None
        if store is None:
            raise ValueError("PreferenceDataBuilder needs a data module with a preference store "
                             "(reasonaudio.data_modules.preference_groups.PreferenceDataModule)")
        store.check_settings(self.settings())  # before any batch: a finished store is checked too
        self.store = store

    def settings(self) -> dict[str, Any]:
        """What determines the groups; stored in the store's ``meta.json`` and checked on resume."""
        h = self.hparams
        reward = {"class": type(self.reward).__name__, "checkpoint": getattr(self.reward, "checkpoint", None)}
        return {"pretrained": str(Path(h.pretrained)), "reward": reward, "num_candidates": h.num_candidates,
                "steps": h.steps, "cfg": h.cfg, "method": h.method, "seed": h.seed, "min_spread": h.min_spread}

    def on_predict_start(self) -> None:
        self.counts = [0, 0]

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, int]:
        h = self.hparams
        seeds = candidate_seeds(batch["row"], h.num_candidates, h.seed)
        latents = sample_candidates(self, batch, seeds, h.steps, h.cfg, h.method)
        rewards = score_candidates(self.reward, latents, batch, self.decode)
        truth = self.ground_truth_scores(latents, batch["id"]) if h.ground_truth is not None else None
        kept, dropped = write_groups(self.store, batch, seeds, rewards, latents, h.min_spread, truth)
        self.counts = [self.counts[0] + kept, self.counts[1] + dropped]
        return {"kept": kept, "dropped": dropped}

    @torch.no_grad()
    def ground_truth_scores(self, latents: torch.Tensor, ids: list[str]) -> list[dict[str, torch.Tensor]]:
        """:func:`candidate_onset_scores` of each clip's candidates ``[B, K, T, C]``."""
        sr = self.decode.sample_rate
        wavs = self.decode(latents.flatten(0, 1)).view(*latents.shape[:2], -1)
        return [candidate_onset_scores(w, sr, self.hparams.ground_truth, clip_id) for clip_id, w in zip(ids, wavs)]

    def on_predict_end(self) -> None:
        summary = self.store.summary()
        spread = summary["spread_quantiles"]
        print(f"[preference_data] this run: {self.counts[0]} groups kept, {self.counts[1]} dropped (spread <= "
              f"{self.hparams.min_spread}); store {self.store.root}: {summary['kept']} kept, "
              f"{summary['dropped']} dropped, mean reward {summary['reward_mean']:.3f}, "
              f"mean spread {summary['spread_mean']:.3f}"
              + (f" (quantiles 10/50/90 %: {spread['0.1']:.3f} / {spread['0.5']:.3f} / {spread['0.9']:.3f})"
                 if spread else ""), flush=True)
        truth = summary.get("ground_truth")
        if truth:
            sem, rank = truth["winner_minus_loser_error_sem_s"], truth["ranking"]
            print(f"[preference_data] against the ground truth ({truth['pairs']} winner/loser pairs): onset error "
                  f"{1000 * truth['winner_onset_error_s']:.1f} ms (winners) vs {1000 * truth['loser_onset_error_s']:.1f}"
                  f" ms (losers), difference {1000 * truth['winner_minus_loser_error_s']:+.1f}"
                  + (f" ± {1000 * sem:.1f}" if sem is not None else "") + f" ms; F1 {truth['winner_onset_f1']:.3f} vs "
                  f"{truth['loser_onset_f1']:.3f}; the reward orders {100 * rank['pair_agreement']:.0f} % "
                  f"({percent_interval(rank['pair_agreement_ci95'])}) of {rank['pairs']} candidate pairs ≥ 50 ms "
                  f"apart like the ground truth (Spearman ρ reward vs error "
                  f"{rank['spearman_within']:.2f} within groups); {100 * rank['saturated_low']:.0f} / "
                  f"{100 * rank['saturated_high']:.0f} % of rewards in the lowest / highest 1 % of "
                  f"{rank['reward_range_used'][0]:.3g} … {rank['reward_range_used'][1]:.3g}", flush=True)
