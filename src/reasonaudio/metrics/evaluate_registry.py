"""The evaluator's metrics: :class:`MetricSpec` / :class:`MetricResult`, the registry :data:`METRICS`
(:func:`register_metric`), the built-in metrics (FD, KL, IS of PANNs / VGGish / PaSST, CLAP, IB,
DeSync) and :func:`run_metrics`, which computes a selection and turns failures into statuses.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from reasonaudio.metrics.clap import CLAPScore
from reasonaudio.metrics.evaluate_inputs import (CLAP_CHECKPOINTS, CLAP_FOLDER, IMAGEBIND_FILE, MODELS, MSCLAP_FILE,
                                                 MSCLAP_TEXT_FOLDER, WeightsMissing)
from reasonaudio.metrics.evaluate_runner import Evaluation
from reasonaudio.metrics.frechet import FrechetDistance
from reasonaudio.metrics.imagebind import IBScore
from reasonaudio.metrics.msclap import MSCLAPScore
from reasonaudio.metrics.scores import IS_SEED, InceptionScore, KLDivergence

log = logging.getLogger(__name__)

IMAGEBIND_SIZE = "huge"
"""ImageBind tower sizes (``"tiny"`` in tests)."""


@dataclass
class MetricResult:
    """One metric's outcome.

    Attributes:
        value: the score, or None when it could not be computed.
        status: ``"ok"``, ``"weights not found: <path>"``, or ``"error: <reason>"``.
        clips: clips that entered the score.
        details: extra numbers (e.g. the IS std, the ground-truth clip count).
    """

    value: float | None
    status: str = "ok"
    clips: int = 0
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """A metric the evaluator can compute.

    Attributes:
        name: the ``--metrics`` name.
        title: the table header (``FD_PANNs``).
        compute: ``compute(evaluation) -> MetricResult``; may raise ValueError (reported as an
            error) or :class:`WeightsMissing`.
        needs: inputs it requires among ``"gt"``, ``"videos"``, ``"captions"``.
        weights: networks (:data:`MODELS` names) or paths under ``--weights`` it loads; a missing
            one makes the result ``weights not found: <path>``.
        higher_is_better: for the table's arrow.
        audio_backbones: :data:`MODELS` audio networks to extract in the shared decoding pass.
    """

    name: str
    title: str
    compute: Callable[[Evaluation], MetricResult]
    needs: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    higher_is_better: bool = False
    audio_backbones: tuple[str, ...] = ()


METRICS: dict[str, MetricSpec] = {}
"""Registered metrics by name, in table order."""


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add (or replace) a metric of the evaluator."""
    METRICS[spec.name] = spec
    return spec


def _stack(feats: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([f.reshape(-1, f.shape[-1]) for f in feats])


def _frechet(backbone: str, paired: bool) -> Callable[[Evaluation], MetricResult]:
    def compute(ev: Evaluation) -> MetricResult:
        pred, gt = ev.audio_features(backbone, "pred"), ev.audio_features(backbone, "gt")
        if paired:
            stems = sorted(pred.keys() & gt.keys())
            pred, gt = {s: pred[s] for s in stems}, {s: gt[s] for s in stems}
        if not pred or not gt:
            raise ValueError("no usable generated or ground-truth clips")
        metric = FrechetDistance(num_features=next(iter(pred.values())).embedding.shape[-1])
        metric.update(_stack(f.embedding for f in gt.values()), real=True)
        metric.update(_stack(f.embedding for f in pred.values()), real=False)
        return MetricResult(float(metric.compute()), clips=len(pred),
                            details={"gt_clips": len(gt), "pred_embeddings": int(metric.fake_count),
                                     "gt_embeddings": int(metric.real_count),
                                     "clip_set": "paired" if paired else "all"})
    return compute


def _kl(backbone: str) -> Callable[[Evaluation], MetricResult]:
    def compute(ev: Evaluation) -> MetricResult:
        pred, gt = ev.audio_features(backbone, "pred"), ev.audio_features(backbone, "gt")
        stems = sorted(pred.keys() & gt.keys())
        if not stems:
            raise ValueError("no paired clips")
        metric = KLDivergence()
        metric.update(torch.stack([pred[s].logits for s in stems]), torch.stack([gt[s].logits for s in stems]))
        return MetricResult(float(metric.compute()), clips=len(stems))
    return compute


def _inception(backbone: str) -> Callable[[Evaluation], MetricResult]:
    def compute(ev: Evaluation) -> MetricResult:
        pred = ev.audio_features(backbone, "pred")
        metric = InceptionScore(splits=ev.is_splits, seed=IS_SEED)
        if not pred:
            raise ValueError("no usable generated clips")
        metric.update(torch.stack([pred[s].logits for s in sorted(pred)]))
        mean, std = metric.compute()
        return MetricResult(float(mean), clips=len(pred), details={"std": float(std), "splits": ev.is_splits})
    return compute


def _desync(ev: Evaluation) -> MetricResult:
    per_clip = ev.desync_per_clip()
    if not per_clip:
        raise ValueError("no generated clip with a usable ground-truth video")
    return MetricResult(sum(per_clip.values()) / len(per_clip), clips=len(per_clip))


def _clap(ev: Evaluation) -> MetricResult:
    """Caption–audio cosine with the CLAP chosen by ``--clap``: MS-CLAP 2023 (the paper's, default) or LAION."""
    if ev.clap == "msclap":
        files = (ev.weights / MSCLAP_FILE, ev.weights / MSCLAP_TEXT_FOLDER)
        metric = MSCLAPScore(str(files[0]), str(files[1]))
        checkpoint = f"{CLAP_CHECKPOINTS['msclap']}: {files[0]} + {files[1]}"
    else:
        metric = CLAPScore(str(ev.weights / CLAP_FOLDER))
        checkpoint = f"{CLAP_CHECKPOINTS['laion']}: {ev.weights / CLAP_FOLDER}"
    for stem, wav, rate in ev.iter_audio("pred", sorted(set(ev.pred.files) & set(ev.captions))):
        metric.update(wav[None, :round(ev.duration * rate)], rate, [ev.captions[stem]])
    if metric.count == 0:
        raise ValueError("no generated clip with a caption")
    return MetricResult(float(metric.compute()), clips=int(metric.count), details={"checkpoint": checkpoint})


def _ib(ev: Evaluation) -> MetricResult:
    metric = IBScore(str(ev.weights / IMAGEBIND_FILE), size=IMAGEBIND_SIZE, audio_length=ev.duration)
    for stem, wav, rate in ev.iter_audio("pred", ev.paired("pred", "videos")):
        metric.update(wav[None, :round(ev.duration * rate)], rate, [ev.videos.files[stem]])
    if metric.count == 0:
        raise ValueError("no generated clip with a video")
    return MetricResult(float(metric.compute()), clips=int(metric.count))


for _spec in (
    MetricSpec("fd_panns", "FD_PANNs", _frechet("panns", paired=False), ("gt",), ("panns",), False, ("panns",)),
    MetricSpec("kl_panns", "KL_PANNs", _kl("panns"), ("gt",), ("panns",), False, ("panns",)),
    MetricSpec("is_panns", "IS_PANNs", _inception("panns"), (), ("panns",), True, ("panns",)),
    MetricSpec("fd_vggish", "FD_VGG", _frechet("vggish", paired=False), ("gt",), ("vggish",), False, ("vggish",)),
    MetricSpec("fd_passt", "FD_PaSST", _frechet("passt", paired=True), ("gt",), ("passt",), False, ("passt",)),
    MetricSpec("kl_passt", "KL_PaSST", _kl("passt"), ("gt",), ("passt",), False, ("passt",)),
    MetricSpec("is_passt", "IS_PaSST", _inception("passt"), (), ("passt",), True, ("passt",)),
    MetricSpec("clap", "CLAP", _clap, ("captions",), (), True),  # its files depend on --clap; _clap names them
    MetricSpec("ib", "IB", _ib, ("videos",), (IMAGEBIND_FILE,), True),
    MetricSpec("desync", "DeSync", _desync, ("videos",), ("synchformer",), False),
):
    register_metric(_spec)


# --------------------------------------------------------------------------- running


def _missing_weights(spec: MetricSpec, weights: Path) -> Path | None:
    for name in spec.weights:
        path = weights / (MODELS[name].checkpoint if name in MODELS else name)
        if not path.exists():
            return path
    return None


def run_metrics(ev: Evaluation, names: Sequence[str]) -> dict[str, MetricResult]:
    """Compute ``names`` in order; missing weights and ``ValueError`` s become results with a status."""
    results = {}
    for name in names:
        spec = METRICS[name]
        missing = _missing_weights(spec, ev.weights)
        if missing is not None:
            results[name] = MetricResult(None, f"weights not found: {missing}")
            continue
        try:
            result = spec.compute(ev)
        except WeightsMissing as err:
            result = MetricResult(None, str(err))
        except FileNotFoundError as err:  # a metric that loads its own weights (CLAPScore, IBScore)
            result = MetricResult(None, f"weights not found: {err.filename or err}")
        except ValueError as err:
            result = MetricResult(None, f"error: {err}")
        if result.value is not None and not math.isfinite(result.value):
            result = MetricResult(None, f"error: the value is {result.value}", result.clips, result.details)
        results[name] = result
        log.info("%s: %s", name, results[name])
    return results
