"""The synthetic world: what its impacts sound like and where each clip's ground truth is written.

The generator (:mod:`reasonaudio.data_modules.synthetic`) renders from these definitions and the benchmark
(:mod:`reasonaudio.metrics.synthetic`) scores against them, so both import this module and neither imports the
other. A corpus folder holds one ground-truth file per clip, ``gt/<id>.json`` (the scene dict documented in the
generator); :func:`ground_truth_file` finds it among several corpus folders and :func:`impact_times` reads the
on-screen impact times from it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

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
