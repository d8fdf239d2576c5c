"""The synthetic world: what its impacts sound like and where each clip's ground truth is written.

The generator (:mod:`reasonaudio.data_modules.synthetic`) renders from these definitions and the benchmark
(:mod:`reasonaudio.metrics.synthetic`) scores against them, so both import this module and neither imports the
other. A corpus folder holds one ground-truth file per clip, ``gt/<id>.json`` (the scene dict documented in the
generator); :func:`ground_truth_file` finds it among several corpus folders and :func:`impact_times` reads the
on-screen impact times from it. The off-screen rain's spectrum is defined here too, so codec training can mix the
same noise into its crops (:func:`mix_rain`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

GT_FOLDER = "gt"
"""Folder of a corpus that holds ``<id>.json``, the ground truth of each clip."""

GroundTruth = dict[str, Any] | str | Path
"""A ground-truth dict, or the path of its JSON file."""


@dataclass(frozen=True)
class Timbre:
    """Spectral model of one impact type, shared by the synthesiser and the metrics.

    Args:
        partials: ``(frequency ratio, amplitude, decay factor)`` of each tonal partial, relative to
            the object's pitch, unit amplitude and decay time; empty for a noise timbre.
        noise_width: standard deviation, in natural-log frequency, of a Gaussian noise band centred
            on the pitch; 0 for a tonal timbre.
    """

    partials: tuple[tuple[float, float, float], ...]
    noise_width: float


TIMBRES: dict[str, Timbre] = {
    "ball": Timbre(partials=((1.0, 1.0, 1.0), (2.0, 0.3, 0.6), (3.0, 0.1, 0.4)), noise_width=0.0),
    "block": Timbre(partials=(), noise_width=0.3),
    # Inharmonic ratios (no partial at 2 or 3) keep a bell apart from a ball of the same pitch.
    "bell": Timbre(
        partials=((1.0, 1.0, 1.0), (1.59, 0.7, 0.8), (2.76, 0.55, 0.6), (4.07, 0.4, 0.45), (5.40, 0.3, 0.35)),
        noise_width=0.0,
    ),
}
"""The timbre of each visible object type."""


def spectral_tilt(ratio: np.ndarray | float, brightness: float) -> np.ndarray | float:
    """Amplitude factor of a component at ``ratio`` × pitch: ``ratio ** (-1.5 · (1 - brightness))``.

    Brightness 1 leaves the spectrum flat; brightness 0 attenuates an octave up by 9 dB.
    """
    return np.power(ratio, -1.5 * (1.0 - brightness))


RAIN_CUTOFFS = (300.0, 5000.0)
"""Corners (Hz) of the off-screen rain's noise: a first-order high-pass and a first-order low-pass."""

RAIN_AUGMENT_RMS = (0.008, 0.02)
"""RMS range of the rain in the rendered (peak-normalised) corpus, which :func:`mix_rain` draws from."""


def rain_spectrum(freqs: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Amplitude response of the rain's noise at ``freqs`` Hz (all > 0): high-pass × low-pass, both squared."""
    low, high = RAIN_CUTOFFS
    return 1 / (1 + (low / freqs) ** 2) / (1 + (freqs / high) ** 2)


def mix_rain(wav: torch.Tensor, sample_rate: int, fraction: float, mask: torch.Tensor | None = None,
             levels: tuple[float, float] = RAIN_AUGMENT_RMS) -> torch.Tensor:
    """Codec training augmentation: the corpus's rain mixed into a random ``fraction`` of the clips.

    Each chosen clip gets fresh noise shaped by :func:`rain_spectrum`, at an RMS drawn uniformly from
    ``levels`` (measured over its valid samples), added where ``mask`` is true; the sum is clamped to [-1, 1].
    Draws from torch's global generator (seeded by ``seed_everything``).

    Args:
        wav: waveforms ``[B, S]``.
        sample_rate: their sample rate in Hz.
        fraction: probability that a clip gets rain, in [0, 1].
        mask: valid samples ``[B, S]`` (all valid when ``None``).
        levels: (low, high) RMS range.

    Returns:
        The augmented waveforms ``[B, S]``; ``wav`` itself is left unchanged.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"rain fraction must be in [0, 1], got {fraction}")
    b, n = wav.shape
    valid = torch.ones_like(wav) if mask is None else mask.to(wav.dtype)
    freqs = torch.fft.rfftfreq(n, 1 / sample_rate, device=wav.device).clamp(min=1.0)
    noise = torch.fft.irfft(torch.fft.rfft(torch.randn(b, n, device=wav.device)) * rain_spectrum(freqs), n) * valid
    rms = (noise.pow(2).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1)).sqrt().clamp(min=1e-12)
    level = torch.empty(b, 1, device=wav.device).uniform_(*levels)
    chosen = (torch.rand(b, 1, device=wav.device) < fraction).to(wav.dtype)
    return (wav + chosen * level * noise / rms).clamp(-1.0, 1.0)


def ground_truth_files(roots: str | Path | Sequence[str | Path], clip_ids: Sequence[str]) -> list[Path]:
    """``<root>/gt/<id>.json`` of each clip, from the first corpus folder in ``roots`` that has it.

    Raises:
        FileNotFoundError: naming every clip without one and every folder searched.
    """
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    found = {i: next((r / GT_FOLDER / f"{i}.json" for r in roots if (r / GT_FOLDER / f"{i}.json").is_file()), None)
             for i in clip_ids}
    missing = [i for i, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(f"no ground truth {GT_FOLDER}/<id>.json for {missing} in "
                                f"{', '.join(map(str, roots))}")
    return [found[i] for i in clip_ids]


def ground_truth_file(roots: str | Path | Sequence[str | Path], clip_id: str) -> Path:
    """:func:`ground_truth_files` of one clip."""
    return ground_truth_files(roots, [clip_id])[0]


def read_ground_truth(item: GroundTruth) -> dict[str, Any]:
    """A ground-truth dict, read from its JSON file when given a path."""
    if isinstance(item, dict):
        return item
    path = Path(item)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file not found: {path}")
    return json.loads(path.read_text())


def impact_times(gt: dict[str, Any]) -> np.ndarray:
    """All on-screen impact times of a ground truth, ascending, in seconds. # [N]"""
    times = sorted(t for s in gt["sources"] if s["screen"] == "on_screen" for t in s["impact_times"])
    if not times:
        raise ValueError(f"ground truth {gt.get('id')!r} has no on-screen impact")
    return np.asarray(times)
