"""The synthetic-benchmark scores of :mod:`reasonaudio.metrics.synthetic` as ``torchmetrics`` metrics.

Each metric keeps two states, the sum of its per-clip score and the number of scored clips, both
reduced by summation, so it is correct under DDP (``compute`` syncs the states of every process)
and two instances merge exactly (``merge_state``). ``compute`` returns the mean per-clip score, the
same number as :func:`reasonaudio.generation.score_synthetic` on the same clips; with no scored
clip it returns NaN.

``update(audio, sample_rate, ground_truth)`` takes generated waveforms ``[B, S]`` (or a list of
``[S]`` waveforms of different lengths), their sample rate and one ground-truth dict per clip (the
``gt/<id>.json`` of a synthetic corpus; a path to that file is read for you).

Per-clip scores:

- :class:`OnsetError`: :func:`~reasonaudio.metrics.synthetic.onset_sync_error`, seconds (lower is better).
- :class:`OnsetF1`: :func:`~reasonaudio.metrics.synthetic.onset_f1` at ``tolerance`` seconds.
- :class:`OffscreenPresence`: the fraction of the clip's off-screen sources that
  :func:`~reasonaudio.metrics.synthetic.offscreen_presence` hears; clips without off-screen sources
  are not counted (as in ``score_synthetic``).
- :class:`TimbreAgreement`: :func:`~reasonaudio.metrics.synthetic.timbre_agreement`.
"""
from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from reasonaudio.metrics import synthetic
from reasonaudio.metrics.means import ItemMean

GroundTruth = dict[str, Any] | str | Path


def _ground_truth(item: GroundTruth) -> dict[str, Any]:
    """A ground-truth dict, read from its JSON file when given a path."""
    if isinstance(item, dict):
        return item
    path = Path(item)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file not found: {path}")
    return json.loads(path.read_text())


class SyntheticScore(ItemMean):
    """Mean of a per-clip synthetic-benchmark score over every clip seen (sum and count states)."""

    @abstractmethod
    def clip_score(self, wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float | None:
        """The score of one clip, or ``None`` when the clip has nothing to score."""

    def update(self, audio: torch.Tensor | Sequence[torch.Tensor], sample_rate: int,
               ground_truth: Sequence[GroundTruth]) -> None:
        """Score a batch.

        Args:
            audio: waveforms ``[B, S]`` or a list of ``[S]`` waveforms.
            sample_rate: their sample rate in Hz.
            ground_truth: one ground-truth dict (or ``gt/<id>.json`` path) per waveform.
        """
        if len(audio) != len(ground_truth):
            raise ValueError(f"{len(audio)} waveforms but {len(ground_truth)} ground truths")
        scores = [self.clip_score(wav.detach().cpu().double().numpy(), sample_rate, _ground_truth(gt))
                  for wav, gt in zip(audio, ground_truth)]
        self.add(torch.tensor([s for s in scores if s is not None], dtype=torch.float64))


class OnsetError(SyntheticScore):
    """Mean distance in seconds from each true impact to the nearest detected onset, per clip."""

    higher_is_better = False

    def clip_score(self, wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float:
        return synthetic.onset_sync_error(wav, sample_rate, gt)


class OnsetF1(SyntheticScore):
    """Onset F1 against the true impacts, per clip.

    Args:
        tolerance: matching window in seconds (±).
    """

    higher_is_better = True

    def __init__(self, tolerance: float = 0.05, **kwargs: Any):
        if not tolerance > 0:
            raise ValueError(f"tolerance must be positive, got {tolerance}")
        super().__init__(**kwargs)
        self.tolerance = tolerance

    def clip_score(self, wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float:
        return synthetic.onset_f1(wav, sample_rate, gt, self.tolerance)


class OffscreenPresence(SyntheticScore):
    """Fraction of a clip's off-screen sources that are audible, over clips that have any."""

    higher_is_better = True

    def clip_score(self, wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float | None:
        found = synthetic.offscreen_presence(wav, sample_rate, gt)
        return float(np.mean(list(found.values()))) if found else None


class TimbreAgreement(SyntheticScore):
    """Mean over on-screen objects of the fraction of their impacts that sound like their type, per clip."""

    higher_is_better = True

    def clip_score(self, wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float:
        return synthetic.timbre_agreement(wav, sample_rate, gt)
