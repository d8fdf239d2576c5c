"""Per-corpus sampling weights: the mixing rule shared by ``MixedDataModule`` and ``CachedFeatureDataModule``.

Corpus ``c`` of ``n_c`` items supplies a fraction ``w_c / Σw`` of each epoch, whatever its size: every
item gets weight ``w_c / n_c`` and items are drawn with replacement. Without weights, corpora mix in
proportion to their sizes (plain uniform sampling).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import WeightedRandomSampler


def check_weights(weights: Sequence[float] | None, num_corpora: int) -> None:
    """Raise ValueError unless ``weights`` is None or ``num_corpora`` non-negative numbers with a positive sum."""
    if weights is not None and (len(weights) != num_corpora or min(weights) < 0 or sum(weights) <= 0):
        raise ValueError(f"weights must be {num_corpora} non-negative numbers with a positive sum, got {weights}")


def item_weights(sizes: Sequence[int], weights: Sequence[float] | None) -> torch.Tensor:
    """Weight ``w_c / n_c`` of every item of the concatenated corpora (empty corpora contribute nothing)."""
    weights = weights or [float(n) for n in sizes]
    return torch.cat([torch.full((n,), w / n, dtype=torch.float64) for w, n in zip(weights, sizes) if n])


def corpus_sampler(sizes: Sequence[int], weights: Sequence[float] | None, num_samples: int | None,
                   seed: int) -> WeightedRandomSampler:
    """Seeded sampler over the concatenated corpora; ``num_samples`` defaults to their total size."""
    per_item = item_weights(sizes, weights)
    return WeightedRandomSampler(per_item, num_samples or len(per_item), replacement=True,
                                 generator=torch.Generator().manual_seed(seed))
