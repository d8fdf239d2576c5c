"""Scores of held-out generations that the demo, the study and the post-training comparison share.

:func:`frechet_distance` of Gaussian fits of two sets of vectors and :func:`latent_fd` of latent frames (a
quality proxy of the generator alone, without the codec); :func:`summary_row` turns per-clip synthetic scores
(:func:`reasonaudio.metrics.synthetic.clip_scores`, DeSync) into a row of means, and :func:`chance_row` is the
row of random onsets at each clip's true rate.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from reasonaudio.metrics.frechet import frechet_distance as gaussian_frechet_distance
from reasonaudio.metrics.frechet import gaussian_statistics
from reasonaudio.metrics.synthetic import chance_onset_scores
from reasonaudio.synthetic_world import GroundTruth, read_ground_truth


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two sets of vectors ``[N, D]`` and ``[M, D]``."""
    return gaussian_frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))


def latent_fd(generated: torch.Tensor, real: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of latent frames ``[B, T, C]`` (every frame one vector)."""
    return frechet_distance(generated.reshape(-1, generated.shape[-1]).double().numpy(),
                            real.reshape(-1, real.shape[-1]).double().numpy())


def summary_row(clips: list[dict], **extra: float) -> dict:
    """Mean of per-clip scores as a summary row (onset error in ms), with the per-clip scores kept.

    A score no clip has (e.g. off-screen presence without off-screen sources, or of the chance row) is
    ``None`` (JSON ``null``): strict JSON readers reject NaN.
    """
    def mean(key: str) -> float | None:
        values = [c[key] for c in clips if c.get(key) is not None and not math.isnan(c[key])]
        return sum(values) / len(values) if values else None

    clips = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in c.items()} for c in clips]
    desync = {"desync_s": mean("desync")} if any("desync" in c for c in clips) else {}
    return {"onset_f1": mean("onset_f1"), "onset_error_ms": 1000 * mean("onset_error"), **desync,
            "offscreen_presence": mean("offscreen_presence"), "timbre_agreement": mean("timbre_agreement"),
            **extra, "clips": clips}


def chance_row(ids: Sequence[str], ground_truths: Sequence[GroundTruth]) -> dict:
    """The summary row of random onsets at each clip's true rate (1,000 draws per clip, seed 0)."""
    clips = []
    for clip_id, gt in zip(ids, ground_truths):
        error, f1 = chance_onset_scores(read_ground_truth(gt), draws=1000, seed=0)
        clips.append({"id": clip_id, "onset_error": error, "onset_f1": f1})
    return summary_row(clips)
