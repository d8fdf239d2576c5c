"""From sampled latents to audio files and synthetic-benchmark scores.

``latents_to_audio`` undoes the DiT's latent normalisation, decodes with the VAE and vocodes;
``score_synthetic`` measures generated audio against a synthetic clip's ground truth (onset
synchrony error and F1, off-screen presence, timbre agreement).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from reasonaudio.metrics import synthetic


@torch.no_grad()
def latents_to_audio(latents: torch.Tensor, vae: nn.Module, vocoder: nn.Module) -> torch.Tensor:
    """Normalised latents ``[B, T, C]`` → waveforms ``[B, T · downsample · hop]`` in [-1, 1]."""
    z = vae.unnormalize_latent(latents.transpose(1, 2))  # [B, C, T]
    mel = vae.decode(z)  # [B, M, F]
    return vocoder(mel).flatten(1).clamp(-1.0, 1.0)


def clip_scores(wavs: torch.Tensor, sample_rate: int, ground_truth: Sequence[str | Path]) -> list[dict[str, float]]:
    """Per-clip synthetic metrics of ``wavs [B, S]`` against ground-truth JSON files (one per item).

    Returns:
        One dict per clip: ``onset_error`` (s), ``onset_f1``, ``offscreen_presence`` (fraction of the
        clip's off-screen sources detected; NaN when it has none) and ``timbre_agreement``.
    """
    scores = []
    for wav, path in zip(wavs.cpu().numpy(), ground_truth):
        gt = json.loads(Path(path).read_text())
        found = synthetic.offscreen_presence(wav, sample_rate, gt)
        scores.append({"onset_error": synthetic.onset_sync_error(wav, sample_rate, gt),
                       "onset_f1": synthetic.onset_f1(wav, sample_rate, gt),
                       "offscreen_presence": float(np.mean(list(found.values()))) if found else float("nan"),
                       "timbre_agreement": synthetic.timbre_agreement(wav, sample_rate, gt)})
    return scores


def score_synthetic(wavs: torch.Tensor, sample_rate: int, ground_truth: Sequence[str | Path]) -> dict[str, float]:
    """Mean synthetic metrics of ``wavs [B, S]`` against ground-truth JSON files (one per item).

    Returns:
        ``onset_error`` (s), ``onset_f1``, ``offscreen_presence`` (fraction of off-screen sources
        detected, over clips that have any) and ``timbre_agreement``.
    """
    scores = clip_scores(wavs, sample_rate, ground_truth)
    presence = [c["offscreen_presence"] for c in scores if not np.isnan(c["offscreen_presence"])]
    return {"onset_error": float(np.mean([c["onset_error"] for c in scores])),
            "onset_f1": float(np.mean([c["onset_f1"] for c in scores])),
            "offscreen_presence": float(np.mean(presence)) if presence else float("nan"),
            "timbre_agreement": float(np.mean([c["timbre_agreement"] for c in scores]))}
