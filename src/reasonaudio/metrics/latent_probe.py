"""Which off-screen sources a clip's latents hold: a linear probe, the semantic score of the generator alone.

Off-screen sources (hum, rain, beeps in the synthetic corpus) are never seen, so only the caption can name
them: whether a generated clip holds them is what the text pathway (the MLLM read out by learnable queries)
contributes. :func:`reasonaudio.metrics.synthetic.offscreen_presence` asks the audio, and so also asks the
codec. The toy codec (a VAE and a BigVGAN trained for minutes on a CPU) does not render these quiet sources
faithfully (docs/decisions.md, "Semantic scores and the toy codec"), so the audio score cannot tell a generator
that put them into its latents from one that did not. This probe reads the latents, before the codec.

Features: each channel's mean and standard deviation over time of the normalised latents ``[B, T, C]``
(``[B, 2C]``; rain and hum are stationary, so their trace is a shift of the clip's level per channel),
standardised with the fitting set's statistics. Classifier: for each off-screen type, ridge regression of
±1 (source present / absent) on the features, closed form, the intercept unpenalised. It is fitted on the
ground-truth latents of the training corpus (:meth:`LatentSourceProbe.fit`), so it answers "does this look
like the training clips that have the source".

Score (:meth:`LatentSourceProbe.balanced_accuracy`): for each type, the mean of the hit rate (clips whose
ground truth has the source and whose latents the probe reads as having it) and the correct-rejection rate
(clips without it, read as without); :meth:`LatentSourceProbe.score` averages the types that the scored set
has both with and without. 0.5 means the latents carry nothing about the sources — a generator that never
(or always) renders them scores exactly 0.5 —, 1 means every source is told right. The probe's own
ceiling is its score on ground-truth latents (:meth:`LatentSourceProbe.cross_validated` on the fitting set).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from reasonaudio.synthetic_world import GroundTruth, read_ground_truth


def source_labels(ground_truths: Sequence[GroundTruth]) -> dict[str, np.ndarray]:
    """For each off-screen type in ``ground_truths``, whether each clip has a source of it. # type → [B] bool"""
    scenes = [read_ground_truth(g) for g in ground_truths]
    kinds = sorted({s["type"] for scene in scenes for s in scene["sources"] if s["screen"] == "off_screen"})
    return {kind: np.array([any(s["type"] == kind and s["screen"] == "off_screen" for s in scene["sources"])
                            for scene in scenes]) for kind in kinds}


def mean_score(by_type: dict[str, float]) -> float | None:
    """The probe's score from its per-type balanced accuracies: their mean (``None`` if no type was scored)."""
    return float(np.mean(list(by_type.values()))) if by_type else None


def latent_features(latents: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-channel mean and std over time of latents ``[B, T, C]``. # [B, 2C]"""
    x = torch.as_tensor(latents).detach().cpu().double()
    if x.dim() != 3 or x.shape[1] < 2:
        raise ValueError(f"latents must be [B, T >= 2, C], got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("latents hold NaN or inf")
    return torch.cat([x.mean(1), x.std(1)], dim=1).numpy()


def _design(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardised features with a constant column for the intercept. # [B, F + 1]"""
    return np.concatenate([(features - mean) / std, np.ones((len(features), 1))], axis=1)


@dataclass(frozen=True)
class LatentSourceProbe:
    """One linear detector per off-screen type (module docstring).

    Attributes:
        mean, std: the fitting set's feature statistics ``[2C]``.
        weights: per type, ``[2C + 1]`` weights of the standardised features and the intercept.
    """

    mean: np.ndarray
    std: np.ndarray
    weights: dict[str, np.ndarray]

    @classmethod
    def fit(cls, latents: torch.Tensor | np.ndarray, ground_truths: Sequence[GroundTruth],
            ridge: float = 1.0) -> LatentSourceProbe:
        """Fit on ground-truth latents ``[B, T, C]`` and their clips' ground truths.

        Raises:
            ValueError: if the counts differ, ``ridge`` is negative, or no type has clips with and without it.
        """
        features = latent_features(latents)
        if len(features) != len(ground_truths):
            raise ValueError(f"{len(features)} latents for {len(ground_truths)} ground truths")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        labels = {k: y for k, y in source_labels(ground_truths).items() if 0 < y.sum() < y.size}
        if not labels:
            raise ValueError("the fitting clips need an off-screen type that some clips have and some do not")
        mean, std = features.mean(0), features.std(0) + 1e-6
        design = _design(features, mean, std)
        penalty = ridge * np.diag(np.r_[np.ones(design.shape[1] - 1), 0.0])
        weights = {kind: np.linalg.solve(design.T @ design + penalty, design.T @ (2.0 * y - 1.0))
                   for kind, y in labels.items()}
        return cls(mean, std, weights)

    def detect(self, latents: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Whether the probe reads each type's source in each clip. # type → [B] bool"""
        features = latent_features(latents)
        if features.shape[1] != self.mean.size:
            raise ValueError(f"latents have {features.shape[1] // 2} channels, the probe was fitted on "
                             f"{self.mean.size // 2}")
        design = _design(features, self.mean, self.std)
        return {kind: design @ w > 0 for kind, w in self.weights.items()}

    def balanced_accuracy(self, latents: torch.Tensor | np.ndarray,
                          ground_truths: Sequence[GroundTruth]) -> dict[str, float]:
        """Per type with clips both with and without it: (hit rate + correct-rejection rate) / 2."""
        found = self.detect(latents)
        truth = source_labels(ground_truths)
        if len(next(iter(found.values()))) != len(ground_truths):
            raise ValueError(f"{len(next(iter(found.values())))} latents for {len(ground_truths)} ground truths")
        scores = {}
        for kind, said in found.items():
            has = truth.get(kind, np.zeros(len(ground_truths), bool))
            if 0 < has.sum() < has.size:
                scores[kind] = 0.5 * (float(said[has].mean()) + float((~said[~has]).mean()))
        return scores

    def score(self, latents: torch.Tensor | np.ndarray, ground_truths: Sequence[GroundTruth]) -> float | None:
        """Mean balanced accuracy over the scored types (``None`` if no type can be scored)."""
        return mean_score(self.balanced_accuracy(latents, ground_truths))

    @classmethod
    def cross_validated(cls, latents: torch.Tensor | np.ndarray, ground_truths: Sequence[GroundTruth],
                        folds: int = 4, ridge: float = 1.0) -> dict[str, float]:
        """Balanced accuracy per type of probes fitted on all folds but one, pooled over the held-out folds:
        how well ground-truth latents can be read (the score's ceiling). Where the other folds hold only clips
        with (or only without) a type, that fold's clips are read as without it."""
        latents = torch.as_tensor(latents)
        n = latents.shape[0]
        if not 2 <= folds <= n:
            raise ValueError(f"folds must be in [2, {n}], got {folds}")
        fold = np.arange(n) % folds
        said: dict[str, np.ndarray] = {}
        for f in range(folds):
            train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            probe = cls.fit(latents[train], [ground_truths[i] for i in train], ridge)
            for kind, found in probe.detect(latents[test]).items():
                said.setdefault(kind, np.zeros(n, bool))[test] = found
        truth = source_labels(ground_truths)
        return {kind: 0.5 * (float(s[truth[kind]].mean()) + float((~s[~truth[kind]]).mean()))
                for kind, s in said.items() if 0 < truth[kind].sum() < n}
