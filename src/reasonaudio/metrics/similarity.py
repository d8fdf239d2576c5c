"""MeanCosine: the shared shape of the CLAP and ImageBind scores — a mean of per-pair cosine similarities.

States are a float64 sum and a count (``dist_reduce_fx="sum"``), so merging batches or DDP ranks gives
exactly the single-pass mean. Subclasses say how a batch of pairs becomes similarities.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, Sequence

import torch
from torchmetrics import Metric


class MeanCosine(Metric):
    """Mean cosine similarity between generated audio and a paired reference (caption, video, …)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

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
        sims = self.similarities(audio, sample_rate, references)
        self.total += sims.sum().to(self.total.device)
        self.count += sims.numel()

    def compute(self) -> torch.Tensor:
        """Mean cosine over pairs (NaN before any pair)."""
        if self.count == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.total / self.count
