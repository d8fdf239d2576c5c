"""Means over items, the shape of several metrics: :class:`ItemMean` (a float64 sum and a count,
``dist_reduce_fx="sum"``, so merging batches or DDP ranks gives exactly the single-pass mean) and
:class:`MeanCosine`, the CLAP and ImageBind scores' mean of per-pair cosine similarities.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, Sequence

import torch
from torchmetrics import Metric


class ItemMean(Metric):
    """Mean of per-item values over every item seen; subclasses' ``update`` calls :meth:`add`."""

    full_state_update = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def add(self, values: torch.Tensor) -> None:
        """Add per-item values ``[N]``."""
        self.total += values.double().sum().to(self.total.device)
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        """Mean per item (NaN before any item)."""
        if self.count == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.total / self.count


class MeanCosine(ItemMean):
    """Mean cosine similarity between generated audio and a paired reference (caption, video, …)."""

    higher_is_better = True

    @abstractmethod
    def similarities(self, audio: torch.Tensor | Sequence[torch.Tensor], sample_rate: int,
                     references: Sequence[Any]) -> torch.Tensor:
        """Per-pair cosine similarities, float64 on the CPU. # [B]"""

    def update(self, audio: torch.Tensor | Sequence[torch.Tensor], sample_rate: int, references: Sequence[Any]) -> None:
        """Add a batch.

        Args:
            audio: generated waveforms ``[B, S]`` (or a list of ``[S]``) in [-1, 1].
            sample_rate: their sample rate in Hz.
            references: one per waveform — its caption (CLAP) or its ground-truth video (ImageBind).
        """
        self.add(self.similarities(audio, sample_rate, references))
