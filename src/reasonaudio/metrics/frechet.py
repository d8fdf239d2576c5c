"""Fréchet distance between Gaussians fitted to embeddings (FD_PANNs, FD_VGG, FD_PaSST).

    FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

:func:`frechet_distance` is av-benchmark's ``calculate_frechet_distance`` (itself pytorch-fid's):
the matrix square root of the product is ``scipy.linalg.sqrtm`` (Schur method) in float64. When
the product is so close to singular that the square root is not finite, it is retried once with
``eps`` (1e-6) added to both diagonals, as the references do; an imaginary part of the result's
diagonal above 1e-3 (the product had clearly negative eigenvalues: not covariance matrices) is an
error, a smaller one is numerical noise and dropped.

:class:`FrechetDistance` accumulates, per side (real = ground truth, fake = generated), the sum of
the embeddings, the sum of their outer products and their count, all in float64. These are sums,
so ranks merge exactly with ``dist_reduce_fx="sum"`` and the result does not depend on how clips
were split over devices or batches. The covariance is the unbiased one (``np.cov``): (Σxxᵀ − n μμᵀ) /
(n − 1). Embeddings come from a pluggable :class:`~reasonaudio.metrics.backbones.AudioBackbone`
(waveforms in) or are passed directly (features in); per-window embeddings (VGGish) are pooled,
every window of every clip counting as one sample, as av-benchmark does.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import scipy.linalg
import torch
from torchmetrics import Metric

from reasonaudio.metrics.backbones import AudioBackbone, resolve_backbone

log = logging.getLogger(__name__)

SQRTM_EPS = 1e-6
"""Added to both covariance diagonals when the square root of their product is not finite."""
IMAGINARY_TOLERANCE = 1e-3
"""Largest |imaginary part| on the diagonal of (Σ₁Σ₂)^½ that is treated as rounding noise."""


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of ``[N, D]`` features, N ≥ 2."""
    x = _as_float64(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features [N, D] with N >= 2 to estimate a covariance, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = SQRTM_EPS) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1: ``[D]`` mean (numpy array or tensor).
        sigma1: ``[D, D]`` covariance.
        mu2: ``[D]`` mean.
        sigma2: ``[D, D]`` covariance.
        eps: diagonal offset of the retry when ``sqrtm(sigma1 @ sigma2)`` is not finite.

    Returns:
        The squared Fréchet distance (what FID / FAD / av-benchmark report) as a Python float.

    Raises:
        ValueError: mismatched shapes, non-finite inputs, or a square root with a significant
            imaginary part.
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"expected means [D] and covariances [D, D] of one D, got {mu1.shape}, {sigma1.shape}, "
                         f"{mu2.shape}, {sigma2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise ValueError("means and covariances must be finite")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("Fréchet distance: sqrtm of a singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError(f"the square root of the covariance product is not finite even with eps={eps}")
    if np.iscomplexobj(covmean):
        imaginary = np.abs(np.diagonal(covmean).imag).max()
        if imaginary > IMAGINARY_TOLERANCE:
            raise ValueError(f"(Σ₁Σ₂)^½ has an imaginary component of {imaginary:.3g} on its diagonal: "
                             "the inputs are not both covariance matrices")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


class FrechetDistance(Metric):
    """Fréchet distance between the embeddings of real (ground-truth) and generated audio.

    ``update(x, real)`` adds a batch to one side: ``x`` is a waveform ``[B, S]`` at
    ``sample_rate`` when a backbone is set (it is run through :meth:`AudioBackbone.embed`), or
    embeddings ``[N, D]`` / ``[B, W, D]`` otherwise. ``compute()`` needs at least two samples on
    each side.

    Args:
        backbone: the embedding network; or its name (``"panns"``, ``"vggish"``, ``"passt"``) with
            ``checkpoint``, which is how a YAML config names it; or None to pass embeddings directly.
        checkpoint: the official weights file when ``backbone`` is a name (a missing file raises
            ``FileNotFoundError`` whose ``filename`` is the path).
        num_features: embedding width when ``backbone`` is None.
        reset_real_features: False keeps the real-side statistics across :meth:`reset`, so the
            ground truth is embedded once for many validation epochs.
        max_seconds: waveforms are cut to this duration before embedding (av-benchmark's
            ``--audio_length``); None keeps them whole.
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, backbone: AudioBackbone | str | None = None, checkpoint: str | os.PathLike | None = None,
                 num_features: int | None = None, reset_real_features: bool = True, max_seconds: float | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        backbone = resolve_backbone(backbone, checkpoint)
        if backbone is None and num_features is None:
            raise ValueError("FrechetDistance needs a backbone or num_features")
        self.backbone = backbone.eval().requires_grad_(False) if backbone is not None else None
        self.num_features = backbone.embedding_dim if backbone is not None else int(num_features)
        self.reset_real_features = reset_real_features
        self.max_seconds = max_seconds
        d = self.num_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _embeddings(self, x: torch.Tensor, sample_rate: int | None) -> torch.Tensor:
        if self.backbone is not None:
            if sample_rate is None:
                raise ValueError("FrechetDistance.update(waveform, real, sample_rate) needs the waveform's sample_rate")
            x = self.backbone.embed(x, sample_rate, self.max_seconds).embedding
        x = x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else x
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected embeddings [N, {self.num_features}], got shape {tuple(x.shape)}")
        return x.detach().to(device=self.real_sum.device, dtype=torch.float64)

    def update(self, x: torch.Tensor, real: bool, sample_rate: int | None = None) -> None:
        """Add waveforms (with a backbone) or embeddings to the real or the generated side."""
        feats = self._embeddings(x, sample_rate)  # [N, D] float64
        side = "real" if real else "fake"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + feats.sum(dim=0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + feats.T @ feats)
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + feats.shape[0])

    def statistics(self, real: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[D]`` and unbiased covariance ``[D, D]`` of one side (float64)."""
        side = "real" if real else "fake"
        n = float(getattr(self, f"{side}_count"))
        if n < 2:
            raise ValueError(f"FrechetDistance needs at least 2 {'real' if real else 'generated'} embeddings, "
                             f"got {n:g}")
        mu = getattr(self, f"{side}_sum") / n
        cov = (getattr(self, f"{side}_outer") - n * torch.outer(mu, mu)) / (n - 1)
        return mu, cov

    def compute(self) -> torch.Tensor:
        """The Fréchet distance (float64 scalar tensor)."""
        mu_r, cov_r = self.statistics(real=True)
        mu_f, cov_f = self.statistics(real=False)
        return torch.tensor(frechet_distance(mu_f, cov_f, mu_r, cov_r), dtype=torch.float64)

    def reset(self) -> None:
        """Clear both sides, or only the generated one when ``reset_real_features`` is False."""
        if self.reset_real_features:
            super().reset()
            return
        kept = {name: getattr(self, name).clone() for name in ("real_sum", "real_outer", "real_count")}
        super().reset()
        for name, value in kept.items():
            setattr(self, name, value)
