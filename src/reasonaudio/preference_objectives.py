"""Preference post-training objectives (paper §4.4): SFT, RWR, Flow-DPO and β-DPO.

Legend: G groups (one condition each), K candidates per group, N samples in a batch, P pairs.

Flow matching here follows ``reasonaudio.flow``: x_t = (1 − t)·x0 + t·x1 with noise x0, data x1 and
target velocity v* = x1 − x0. Every objective sees per-sample squared errors

    e(v) = reduce_d (v_d − v*_d)²        (:func:`per_sample_error`, in float32)

where ``reduce`` is the mean or the sum over the latent dimensions (T·C) of one sample.

* **SFT** (:class:`SFT`) regresses the group winners (every candidate whose reward equals the group
  maximum): loss = mean over winners of e_mean(v_θ) — exactly the pretraining loss on the winners.
* **RWR** (:class:`RWR`) regresses every candidate with a reward weight: loss = mean over the
  group's candidates of w_i · e_mean(v_θ)_i. ``weights="softmax"`` takes w = K · softmax_K(r / τ)
  within the group (the paper's "softmax over rewards within each group"; the factor K makes the
  mean weight 1, so the loss is on the pretraining scale and τ alone sets the contrast);
  ``weights="exp"`` takes w = exp(r / τ) (the paper's formula E[exp(r) ‖v* − v_θ‖²] at τ = 1).
* **Flow-DPO** (:class:`DPO`) on pairs (winner w, loser l) sharing noise, t and condition:

      Δ = e(v_θ) − e(v_ref),      inside = −β/2 · (Δ_w − Δ_l),      loss = −log σ(inside)

  averaged over pairs. The default reduction is the SUM over dims, i.e. the paper's squared L2 norm
  ‖v* − v_θ‖²₂, with the paper's β = 5. In mean units that is β·D (D = T·C; 5 × 1000 = 5000 for
  the 4 s tiny latents, the scale of Diffusion-DPO's default): the sigmoid saturates once the summed
  margin reaches about 2/β, so β bounds how far the policy moves from the reference. With
  ``reduction="mean"`` and β ≤ 50 the margins stay ≪ 2/β, the loss is ≈ ln 2 + β/4 · (Δ_w − Δ_l)
  and β only scales the gradient (notes §1.10). Implicit accuracy counts inside > 0 as 1 and a tie
  (inside = 0) as 1/2, so at initialisation (policy = reference) the loss is ln 2 and the accuracy 0.5.
* **β-DPO** (:class:`BetaDPO`, Wu et al. 2024) calibrates β per batch from running statistics of
  the pair margins M (momentum 0.9, updated before the loss): β = β0 · (1 + a · (mean M − M0)),
  clamped at ≥ 1e-3 and detached, after keeping a fraction 1 − ρ of the pairs drawn with Gaussian
  weights exp(−(M − M0)² / (2σ²)). ``margin="reward"`` uses the external reward gap r_w − r_l (the
  paper's "closely-matched / easily-discriminated pairs"), ``margin="implicit"`` β-DPO's own implicit
  reward margin −(Δ_w − Δ_l)/2.

Pairs (:func:`preference_pairs`): per group the winner is the arg-max and the loser the arg-min
reward (first index on ties), or, with ``mode="all"``, every ordered pair with r_i > r_j; only pairs
whose reward gap exceeds ``min_gap`` are formed.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

Reduction = Literal["mean", "sum"]


def per_sample_error(velocity: torch.Tensor, target: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Squared error per sample, in float32: ``[N, ...]`` → ``[N]``, mean or sum over the non-batch dims."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    sq = (velocity.float() - target.float()).pow(2).flatten(1)
    return sq.mean(1) if reduction == "mean" else sq.sum(1)


def group_winner_weights(rewards: torch.Tensor) -> torch.Tensor:
    """SFT weights ``[G, K]``: 1 for every candidate whose reward equals its group's maximum, else 0."""
    return (rewards == rewards.max(dim=1, keepdim=True).values).float()


def rwr_weights(rewards: torch.Tensor, weights: Literal["softmax", "exp"] = "softmax",
                temperature: float = 1.0) -> torch.Tensor:
    """RWR weights ``[G, K]``: ``K · softmax_K(r / τ)`` (mean 1 per group) or ``exp(r / τ)``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if weights == "softmax":
        return rewards.shape[1] * torch.softmax(rewards.float() / temperature, dim=1)
    if weights == "exp":
        return torch.exp(rewards.float() / temperature)
    raise ValueError(f"weights must be 'softmax' or 'exp', got {weights!r}")


@dataclass
class Pairs:
    """Preference pairs as indices into a ``[G, K]`` group batch (each ``[P]`` long)."""

    group: torch.Tensor
    winner: torch.Tensor
    loser: torch.Tensor

    def __len__(self) -> int:
        return self.group.numel()


def preference_pairs(rewards: torch.Tensor, mode: Literal["extremes", "all"] = "extremes",
                     min_gap: float = 0.0) -> Pairs:
    """Pairs of a group batch ``rewards [G, K]`` (module docstring): arg-max vs arg-min, or all ordered pairs.

    Only pairs whose reward gap is larger than ``min_gap`` are kept.
    """
    g, k = rewards.shape
    if mode == "extremes":
        group = torch.arange(g, device=rewards.device)
        winner, loser = rewards.argmax(dim=1), rewards.argmin(dim=1)
    elif mode == "all":
        gi, wi, li = torch.meshgrid(torch.arange(g), torch.arange(k), torch.arange(k), indexing="ij")
        group, winner, loser = (x.reshape(-1).to(rewards.device) for x in (gi, wi, li))
    else:
        raise ValueError(f"mode must be 'extremes' or 'all', got {mode!r}")
    keep = rewards[group, winner] - rewards[group, loser] > min_gap
    return Pairs(group[keep], winner[keep], loser[keep])


@dataclass
class DPOOutput:
    """What a DPO loss computed: the loss and its per-pair terms (``[P]``) for logging."""

    loss: torch.Tensor
    inside: torch.Tensor
    implicit_acc: torch.Tensor
    beta: float
    kept: torch.Tensor | None = None


def implicit_accuracy(inside: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs with inside > 0, a tie (inside = 0) counting 1/2."""
    return (inside > 0).float().mean() + 0.5 * (inside == 0).float().mean()


def dpo_inside(err_w: torch.Tensor, err_l: torch.Tensor, ref_err_w: torch.Tensor, ref_err_l: torch.Tensor,
               beta: float | torch.Tensor) -> torch.Tensor:
    """``−β/2 · ((e_w − e_ref,w) − (e_l − e_ref,l))`` per pair ``[P]``."""
    return -0.5 * beta * ((err_w - ref_err_w) - (err_l - ref_err_l))


def dpo_loss(err_w: torch.Tensor, err_l: torch.Tensor, ref_err_w: torch.Tensor, ref_err_l: torch.Tensor,
             beta: float) -> DPOOutput:
    """Flow-DPO ``mean(−log σ(inside))`` over pairs; errors ``[P]`` from :func:`per_sample_error`."""
    inside = dpo_inside(err_w, err_l, ref_err_w, ref_err_l, beta)
    return DPOOutput(-F.logsigmoid(inside).mean(), inside.detach(), implicit_accuracy(inside.detach()), float(beta))


# --------------------------------------------------------------------------- objectives (chosen in YAML)


class Objective(nn.Module):
    """Base of the post-training objectives. ``pairwise`` objectives train on pairs, the others on weighted samples."""

    pairwise: bool = False
    reduction: Reduction = "mean"


class PointwiseObjective(Objective, ABC):
    """A weighted flow-matching regression: ``loss = mean_i w_i · e_mean(v_θ)_i`` over the selected samples."""

    samples_per_group: int | None = None

    @abstractmethod
    def weights(self, rewards: torch.Tensor) -> torch.Tensor:
        """Per-candidate weights ``[G, K]``; candidates with weight 0 are not computed."""

    def select(self, weights: torch.Tensor) -> torch.Tensor:
        """Candidates to regress this step, ``[G, K]`` bool: those with a non-zero weight, or, with
        ``samples_per_group = m``, m of them per group drawn uniformly (an unbiased estimate of the
        group mean of w · e at m/K of the cost)."""
        chosen = weights > 0
        m = self.samples_per_group
        if m is None or m >= weights.shape[1]:
            return chosen
        keys = torch.rand(weights.shape, device=weights.device).masked_fill(~chosen, 2.0)  # unchosen sort last
        picked = torch.zeros_like(chosen)
        picked.scatter_(1, keys.argsort(dim=1)[:, :m], True)
        return picked & chosen

    def forward(self, err: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``err, weights [N]`` of the selected samples → scalar loss."""
        return (weights * err).mean()


class SFT(PointwiseObjective):
    """Supervised fine-tuning on the group winners (ties: every maximum), equal weights."""

    def weights(self, rewards: torch.Tensor) -> torch.Tensor:
        return group_winner_weights(rewards)


class RWR(PointwiseObjective):
    """Reward-weighted regression over all candidates of a group.

    Args:
        weights: ``"softmax"`` (w = K · softmax(r / τ) within the group) or ``"exp"`` (w = exp(r / τ)).
        temperature: τ, in reward units.
        samples_per_group: regress this many uniformly drawn candidates per group and step instead of
            all K (same expected loss; e.g. 2 matches a DPO pair's compute).
    """

    def __init__(self, weights: Literal["softmax", "exp"] = "softmax", temperature: float = 1.0,
                 samples_per_group: int | None = None):
        super().__init__()
        rwr_weights(torch.zeros(1, 2), weights, temperature)  # validate the arguments now
        if samples_per_group is not None and samples_per_group < 1:
            raise ValueError(f"samples_per_group must be positive, got {samples_per_group}")
        self.mode, self.temperature, self.samples_per_group = weights, temperature, samples_per_group

    def weights(self, rewards: torch.Tensor) -> torch.Tensor:
        return rwr_weights(rewards, self.mode, self.temperature)


class DPO(Objective):
    """Flow-DPO (paper Eq. DPO; flow_grpo ``train_sd3_dpo.py``).

    Args:
        beta: β of ``inside = −β/2 · (Δ_w − Δ_l)``, in the units of ``reduction``.
        reduction: ``"sum"`` (the paper's ‖·‖², default) or ``"mean"`` over the latent dims.
        pairs: ``"extremes"`` (arg-max vs arg-min per group) or ``"all"`` ordered pairs.
        min_gap: pairs need a reward gap larger than this.
    """

    pairwise = True

    def __init__(self, beta: float = 5.0, reduction: Reduction = "sum",
                 pairs: Literal["extremes", "all"] = "extremes", min_gap: float = 0.0):
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        if reduction not in ("mean", "sum") or pairs not in ("extremes", "all"):
            raise ValueError(f"reduction must be 'mean'/'sum' and pairs 'extremes'/'all', got {reduction!r}, {pairs!r}")
        self.beta, self.reduction, self.pair_mode, self.min_gap = beta, reduction, pairs, min_gap

    def pairs(self, rewards: torch.Tensor) -> Pairs:
        """The pairs of a group batch ``rewards [G, K]``."""
        return preference_pairs(rewards, self.pair_mode, self.min_gap)

    def forward(self, err_w: torch.Tensor, err_l: torch.Tensor, ref_err_w: torch.Tensor, ref_err_l: torch.Tensor,
                reward_gap: torch.Tensor) -> DPOOutput:
        """Per-pair errors ``[P]`` (policy and reference) and reward gaps ``[P]`` → :class:`DPOOutput`."""
        return dpo_loss(err_w, err_l, ref_err_w, ref_err_l, self.beta)


class BetaDPO(DPO):
    """β-DPO: Flow-DPO with a per-batch β from running margin statistics (module docstring).

    Args:
        beta: β0.
        a: sensitivity of β to the batch's mean margin.
        rho: fraction of pairs left out per batch (Gaussian-weighted sampling around M0).
        momentum: of the running mean M0 and std σ.
        margin: ``"reward"`` (r_w − r_l) or ``"implicit"`` (−(Δ_w − Δ_l)/2).
        reduction, pairs, min_gap: as :class:`DPO`.
    """

    def __init__(self, beta: float = 5.0, a: float = 0.6, rho: float = 0.2, momentum: float = 0.9,
                 margin: Literal["reward", "implicit"] = "reward", reduction: Reduction = "sum",
                 pairs: Literal["extremes", "all"] = "extremes", min_gap: float = 0.0):
        super().__init__(beta, reduction, pairs, min_gap)
        if not 0.0 <= rho < 1.0 or not 0.0 <= momentum < 1.0:
            raise ValueError(f"need 0 <= rho < 1 and 0 <= momentum < 1, got rho={rho}, momentum={momentum}")
        if margin not in ("reward", "implicit"):
            raise ValueError(f"margin must be 'reward' or 'implicit', got {margin!r}")
        self.a, self.rho, self.momentum, self.margin = a, rho, momentum, margin
        # Running statistics are state: saved in checkpoints so that a resumed run continues them.
        self.register_buffer("margin_mean", torch.zeros(()))
        self.register_buffer("margin_std", torch.zeros(()))

    def forward(self, err_w: torch.Tensor, err_l: torch.Tensor, ref_err_w: torch.Tensor, ref_err_l: torch.Tensor,
                reward_gap: torch.Tensor) -> DPOOutput:
        with torch.no_grad():
            if self.margin == "reward":
                m = reward_gap.float()
            else:
                m = -0.5 * ((err_w - ref_err_w) - (err_l - ref_err_l))
            m = m.detach()
            if self.training:  # statistics move with training batches only, before the loss (β-DPO)
                std = m.std() if m.numel() > 1 else torch.zeros_like(m.mean())
                self.margin_mean.lerp_(m.mean(), 1 - self.momentum)
                self.margin_std.lerp_(std, 1 - self.momentum)
            keep = torch.ones_like(m, dtype=torch.bool)
            n_keep = math.floor(m.numel() * (1 - self.rho))
            if 0 < n_keep < m.numel():
                sigma = self.margin_std.clamp_min(1e-8)
                p = torch.exp(-((m - self.margin_mean) ** 2) / (2 * sigma**2)).clamp_min(1e-12)
                keep = torch.zeros_like(keep)
                keep[torch.multinomial(p, n_keep, replacement=False)] = True
            beta = float((self.beta * (1 + self.a * (m[keep].mean() - self.margin_mean))).clamp_min(1e-3))
        inside = dpo_inside(err_w[keep], err_l[keep], ref_err_w[keep], ref_err_l[keep], beta)
        return DPOOutput(-F.logsigmoid(inside).mean(), inside.detach(), implicit_accuracy(inside.detach()), beta,
                         kept=keep)


# --------------------------------------------------------------------------- judging a reward


def percent_interval(ci: Sequence[float] | None) -> str:
    """``pair_agreement_ci95`` of :func:`reward_ranking` as text, e.g. ``"95 % CI 54–81 %"``; ``"no CI"`` without
    counted pairs, or for None (a summary written before the interval existed)."""
    if ci is None or any(np.isnan(x) for x in ci):
        return "no CI"
    return f"95 % CI {100 * ci[0]:.0f}–{100 * ci[1]:.0f} %"


def _group_bootstrap_ci(per_group: np.ndarray, resamples: int, seed: int = 0) -> list[float]:
    """95 % percentile interval of ``Σ agreeing / Σ counted`` over groups resampled with replacement.
    ``per_group``: ``[G, 2]`` (agreeing, counted) pairs per group."""
    per_group = per_group[per_group[:, 1] > 0]
    if per_group.shape[0] == 0:
        return [float("nan"), float("nan")]
    pick = np.random.default_rng(seed).integers(0, per_group.shape[0], size=(resamples, per_group.shape[0]))
    sums = per_group[pick].sum(axis=1)  # [resamples, 2]
    ratios = sums[:, 0] / sums[:, 1]
    return [float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))]


def reward_ranking(rewards: Sequence[np.ndarray], errors: Sequence[np.ndarray], min_error_gap: float = 0.05,
                   reward_range: tuple[float, float] | None = None, bootstrap: int = 2000) -> dict[str, Any]:
    """How well a reward orders the candidates of each group like their ground-truth onset error.

    ``rewards[g]`` and ``errors[g]`` (seconds) hold group g's K candidates. ``pair_agreement``: over the
    candidate pairs of one group whose errors differ by at least ``min_error_gap``, the fraction in which the
    higher reward goes with the lower error (a reward tie counts 1/2). ``spearman``: Spearman ρ between reward
    and error over all candidates (negative when the reward is right), ``spearman_within``: the mean of the
    groups' own ρ (groups with a constant reward or error left out). ``saturated_low`` / ``saturated_high``:
    fraction of candidates in the lowest / highest 1 % of ``reward_range``; ``histogram``: counts in 10 equal
    bins of that range, given in ``reward_range_used``. The default range is [0, 1] when every reward lies in it
    (a probability, the expected-offset reward: saturation is judged against the bounds) and otherwise the
    rewards' own min … max (an unbounded score such as the zero-offset contrast). ``pair_agreement_ci95``: a 95 %
    percentile interval of ``pair_agreement`` from ``bootstrap`` resamples of the groups (pairs of one group share
    candidates, so groups are the independent units; a fixed seed makes it reproducible); ``[nan, nan]`` without
    counted pairs.
    """
    per_group, within = [], []  # (agreeing, counted) pairs of each group; each group's own ρ
    for r, e in zip(rewards, errors):
        r, e = np.asarray(r, dtype=float), np.asarray(e, dtype=float)
        i, j = np.triu_indices(len(r), k=1)
        counted = np.abs(e[i] - e[j]) >= min_error_gap
        right = np.sign(r[i] - r[j]) == np.sign(e[j] - e[i])
        tie = r[i] == r[j]
        per_group.append((float(np.sum(counted & right & ~tie) + 0.5 * np.sum(counted & tie)), int(counted.sum())))
        if np.ptp(r) > 0 and np.ptp(e) > 0:
            within.append(float(spearmanr(r, e).statistic))
    flat_r, flat_e = np.concatenate([np.asarray(r, float) for r in rewards]), np.concatenate(
        [np.asarray(e, float) for e in errors])
    counts = np.asarray(per_group, dtype=float).reshape(-1, 2)
    agree, pairs = float(counts[:, 0].sum()), int(counts[:, 1].sum())
    if reward_range is None:
        inside = flat_r.size and flat_r.min() >= 0.0 and flat_r.max() <= 1.0
        reward_range = (0.0, 1.0) if inside else (float(flat_r.min()), float(flat_r.max()))
    lo, hi = reward_range
    edge = 0.01 * (hi - lo)
    return {"pair_agreement": agree / pairs if pairs else float("nan"), "pairs": pairs,
            "pair_agreement_ci95": _group_bootstrap_ci(counts, bootstrap),
            "min_error_gap_s": min_error_gap, "spearman": float(spearmanr(flat_r, flat_e).statistic),
            "spearman_within": float(np.mean(within)) if within else float("nan"), "candidates": int(flat_r.size),
            "saturated_low": float(np.mean(flat_r <= lo + edge)), "saturated_high": float(np.mean(flat_r >= hi - edge)),
            "histogram": np.histogram(flat_r, bins=10, range=reward_range)[0].tolist(),
            "reward_range_used": [float(lo), float(hi)]}
