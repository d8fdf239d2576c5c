"""Classifier-based scores: KL divergence (KL_PANNs, KL_PaSST) and Inception Score (IS_PANNs).

Both read the 527 AudioSet logits of a classifier (PANNs Cnn14 or PaSST) and follow
av-benchmark's definitions (notes/anchors-mmaudio-avbench.md §7):

* **KL** per clip = KL(p_gt ‖ p_gen) with p = softmax(logits): ``Σ_c p_gt,c (log p_gt,c − log p_gen,c)``,
  i.e. ``F.kl_div(log_softmax(gen), log_softmax(gt), log_target=True, reduction="sum") / N``;
  generated and ground-truth clips are paired by clip id (the caller pairs them; the folder
  evaluator pairs by file stem). The metric is the mean over clips. Computed in float64.
  av-benchmark also computes a sigmoid variant; it reports (and we implement) only the softmax one.
* **IS** = exp(E_x KL(p(y|x) ‖ p(y))) with p = softmax(logits), on generated clips only: the clips
  are shuffled with ``numpy.random.RandomState(2020).permutation`` and cut into 10 splits
  (split i = rows ``i·N//10 … (i+1)·N//10``); each split uses its own marginal p(y); the result is
  the mean (and population std) over splits. Shuffling and splits make IS depend on the order of
  the clips: the folder evaluator feeds them sorted by file stem, as av-benchmark's loader does.

Metric states are sums (KL) or a concatenated list (IS logits), reduced across ranks by
torchmetrics (``dist_reduce_fx``), so DDP gives the single-process result (IS up to the order in
which ranks' clips are concatenated).
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from reasonaudio.metrics.backbones import AudioBackbone, resolve_backbone

IS_SPLITS = 10
IS_SEED = 2020


def kl_divergence(gt_logits: torch.Tensor, pred_logits: torch.Tensor) -> torch.Tensor:
    """Per-clip KL(softmax(gt) ‖ softmax(pred)).

    Args:
        gt_logits: ``[N, C]`` ground-truth clip logits.
        pred_logits: ``[N, C]`` logits of the generated clip paired with each ground-truth clip.

    Returns:
        ``[N]`` float64 divergences in nats.
    """
    if gt_logits.shape != pred_logits.shape or gt_logits.ndim != 2:
        raise ValueError(f"expected paired logits [N, C] of one shape, got {tuple(gt_logits.shape)} "
                         f"and {tuple(pred_logits.shape)}")
    log_p = F.log_softmax(gt_logits.double(), dim=-1)
    log_q = F.log_softmax(pred_logits.double(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def inception_score(logits: torch.Tensor, splits: int = IS_SPLITS, seed: int | None = IS_SEED) -> tuple[float, float]:
    """Inception Score of ``[N, C]`` logits: mean and population std over ``splits``.

    Args:
        logits: ``[N, C]`` generated-clip logits, N ≥ ``splits``.
        splits: number of splits (10).
        seed: seed of the numpy shuffle (2020); None keeps the given order.
    """
    if logits.ndim != 2:
        raise ValueError(f"expected logits [N, C], got shape {tuple(logits.shape)}")
    n = logits.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"the Inception Score with {splits} splits needs at least {splits} clips, got {n}")
    x = logits.detach().cpu().double()
    if seed is not None:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    log_p = F.log_softmax(x, dim=1)
    p = log_p.exp()
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_chunk, log_p_chunk = p[lo:hi], log_p[lo:hi]
        marginal = p_chunk.mean(dim=0, keepdim=True)
        kl = (p_chunk * (log_p_chunk - marginal.log())).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


def _logits(backbone: AudioBackbone | None, x: torch.Tensor, sample_rate: int | None,
            max_seconds: float | None) -> torch.Tensor:
    """Logits of waveforms through ``backbone``, or ``x`` itself when there is no backbone."""
    if backbone is None:
        return x
    if sample_rate is None:
        raise ValueError("waveform input needs its sample_rate")
    logits = backbone.embed(x, sample_rate, max_seconds).logits
    if logits is None:
        raise ValueError(f"{backbone.title} has no classifier logits")
    return logits


class KLDivergence(Metric):
    """Mean per-clip KL(softmax(ground truth) ‖ softmax(generated)) over paired clips.

    ``update(pred, gt)`` takes paired generated / ground-truth batches (row i of both is the
    same clip id): waveforms ``[B, S]`` at ``sample_rate`` through ``backbone``, or logits
    ``[B, C]`` when ``backbone`` is None.

    Args:
        backbone: a classifier (:class:`~reasonaudio.metrics.backbones.panns.Cnn14`, PaSST), its name
            (``"panns"``, ``"passt"``) with ``checkpoint``, or None to pass logits.
        checkpoint: the official weights file when ``backbone`` is a name.
        max_seconds: waveforms are cut to this duration first (None: whole).
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, backbone: AudioBackbone | str | None = None, checkpoint: str | os.PathLike | None = None,
                 max_seconds: float | None = None, **kwargs):
        super().__init__(**kwargs)
        backbone = resolve_backbone(backbone, checkpoint)
        self.backbone = backbone.eval().requires_grad_(False) if backbone is not None else None
        self.max_seconds = max_seconds
        self.add_state("kl_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, gt: torch.Tensor, sample_rate: int | None = None) -> None:
        """Add paired generated and ground-truth clips (waveforms or logits)."""
        kl = kl_divergence(_logits(self.backbone, gt, sample_rate, self.max_seconds),
                           _logits(self.backbone, pred, sample_rate, self.max_seconds))
        self.kl_sum += kl.sum().to(self.kl_sum.device)
        self.count += kl.shape[0]

    def compute(self) -> torch.Tensor:
        """Mean KL over the clips seen (float64 scalar tensor)."""
        if self.count == 0:
            raise ValueError("KLDivergence has no paired clips")
        return self.kl_sum / self.count


class InceptionScore(Metric):
    """Inception Score of generated clips from a classifier's logits (av-benchmark's IS).

    ``update(pred)`` takes waveforms ``[B, S]`` at ``sample_rate`` (through ``backbone``) or
    logits ``[B, C]``; ``compute()`` returns ``(mean, std)`` over the splits.

    Args:
        backbone: a classifier, its name (``"panns"``, ``"passt"``) with ``checkpoint``, or None.
        checkpoint: the official weights file when ``backbone`` is a name.
        splits: number of splits (10).
        seed: shuffle seed (2020); None keeps the update order.
        max_seconds: waveforms are cut to this duration first (None: whole).
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, backbone: AudioBackbone | str | None = None, checkpoint: str | os.PathLike | None = None,
                 splits: int = IS_SPLITS, seed: int | None = IS_SEED, max_seconds: float | None = None, **kwargs):
        super().__init__(**kwargs)
        backbone = resolve_backbone(backbone, checkpoint)
        self.backbone = backbone.eval().requires_grad_(False) if backbone is not None else None
        self.splits = splits
        self.seed = seed
        self.max_seconds = max_seconds
        self.add_state("logits", [], dist_reduce_fx="cat")

    def update(self, pred: torch.Tensor, sample_rate: int | None = None) -> None:
        """Add generated clips (waveforms or logits)."""
        logits = _logits(self.backbone, pred, sample_rate, self.max_seconds)
        if logits.ndim != 2:
            raise ValueError(f"expected logits [B, C], got shape {tuple(logits.shape)}")
        self.logits.append(logits.detach().double())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` float64 scalar tensors."""
        if isinstance(self.logits, list) and not self.logits:
            raise ValueError("InceptionScore has no clips")
        mean, std = inception_score(dim_zero_cat(self.logits), self.splits, self.seed)
        return torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
