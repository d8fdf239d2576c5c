"""GenerationMetrics: generate audio for a fixed evaluation subset at validation, score it, log ``val/<metric>``.

At every ``every_n_validations``-th validation run of ``fit`` (sanity checks excluded; every run of
``validate``) the callback samples
latents for the first ``max_items`` validation clips of each process (the validation loader is not
shuffled, so the subset is the same every time; under DDP each process scores its own share and the
metrics sum their states across processes), with fixed noise (``seed + batch index``) and the
weights the system validates with — the EMA weights when the ``EMA`` callback is on, since EMA swaps
them in for the whole validation epoch. Latents are decoded by ``reasonaudio.systems.codec.AudioDecoder`` (VAE,
then vocoder), and every configured metric is updated:

==================================  =========================================================
metric                              fed with
==================================  =========================================================
``SyntheticScore`` subclasses       the audio and each clip's ``gt/<id>.json`` (required)
``CLAPScore``, ``MSCLAPScore``      the audio and the caption with its VGGSound-Think tags
                                    removed (clips without a caption are not scored)
``IBScore``                         the audio and the clip's ground-truth video (clips
                                    generated without video are not scored)
``FrechetDistance``                 generated audio on the fake side, ground-truth audio on
                                    the real side (once, if it keeps its real statistics)
``KLDivergence``                    generated and ground-truth audio, paired by clip
``InceptionScore``                  the generated audio (the table shows the mean)
``DeSync``                          the ground-truth video at 25 fps and the audio, clip by clip
anything with ``update_generated``  the whole :class:`GeneratedClips` batch
==================================  =========================================================

Media and ground truth are found through ``corpora``: folders with a ``manifest.jsonl`` (the
``think_jsonl`` format; the synthetic corpus writes one) whose rows name each clip's video and audio,
and, for synthetic corpora, ``gt/<id>.json``.

Metrics are given as factories (a ``class_path`` with ``init_args`` in YAML) and built in ``setup``;
one whose weights are missing (``FileNotFoundError``) is reported as ``weights not found: <file>``
instead of stopping the run. With ``table``, the end of validation writes ``results.md`` and
``results.csv`` to the run directory (:mod:`reasonaudio.metrics.table`: Table 2's columns, then the
others).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import Metric

from reasonaudio.data_modules.manifests import read_think_jsonl
from reasonaudio.media import load_audio, load_video
from reasonaudio.metrics.clap import CLAPScore
from reasonaudio.metrics.desync import DeSync
from reasonaudio.metrics.frechet import FrechetDistance
from reasonaudio.metrics.imagebind import IBScore
from reasonaudio.metrics.msclap import MSCLAPScore
from reasonaudio.metrics.scores import InceptionScore, KLDivergence
from reasonaudio.metrics.synthetic import SyntheticScore
from reasonaudio.metrics.table import columns, write_tables
from reasonaudio.systems.codec import AudioDecoder


@dataclass(frozen=True)
class ClipMedia:
    """Where a clip's ground-truth media live (``None``: the corpus has none)."""

    video: Path | None = None
    audio: Path | None = None
    ground_truth: Path | None = None


@dataclass
class GeneratedClips:
    """One batch of generated audio with everything a metric may compare it with.

    Attributes:
        ids: clip ids. audio: generated waveforms ``[B, S]``. sample_rate: their rate.
        captions: the captions the audio was generated from ("" when none).
        media: each clip's ground-truth media (empty :class:`ClipMedia` when unknown).
        has_video: whether the clip was generated with its video.
    """

    ids: list[str]
    audio: torch.Tensor
    sample_rate: int
    captions: list[str]
    media: list[ClipMedia]
    has_video: list[bool] = field(default_factory=list)
    _reference: list[torch.Tensor] | None = field(default=None, repr=False)

    def reference_audio(self) -> list[torch.Tensor]:
        """Every clip's ground-truth audio ``[S]`` at :attr:`sample_rate` (decoded once per batch)."""
        if self._reference is None:
            missing = [i for i, m in zip(self.ids, self.media) if m.audio is None]
            if missing:
                raise ValueError(f"no ground-truth audio (in the configured corpora's manifests) for clips "
                                 f"{missing[:5]}")
            self._reference = [load_audio(m.audio, self.sample_rate).wav for m in self.media]
        return self._reference

    def ground_truth(self) -> list[Path]:
        """Every clip's ``gt/<id>.json``; raises when one has none."""
        missing = [i for i, m in zip(self.ids, self.media) if m.ground_truth is None]
        if missing:
            raise ValueError(f"no ground truth (gt/<id>.json in the configured corpora) for clips {missing[:5]}")
        return [m.ground_truth for m in self.media]

    def with_video(self) -> tuple[list[int], list[Path]]:
        """Indices and video paths of the clips generated from their video."""
        idx = [i for i, (m, v) in enumerate(zip(self.media, self.has_video)) if v and m.video is not None]
        missing = [self.ids[i] for i, v in enumerate(self.has_video) if v and self.media[i].video is None]
        if missing:
            raise ValueError(f"no video file (in the configured corpora's manifests) for clips {missing[:5]}")
        return idx, [self.media[i].video for i in idx]


def plain_caption(caption: str) -> str:
    """A caption without VGGSound-Think markup (``<HINT>``, ``<TRACK …>``, ``<KEYWORDS>``), one space apart."""
    return " ".join(re.sub(r"<[^>]*>", " ", caption).split())


def update_metric(metric: Metric, clips: GeneratedClips, real: bool = True) -> None:
    """Feed one batch to a metric with the inputs its ``update`` takes (module docstring).

    ``real=False`` leaves a ``FrechetDistance``'s real side alone (its statistics are already complete).
    """
    sr = clips.sample_rate
    if isinstance(metric, SyntheticScore):
        metric.update(clips.audio, sr, clips.ground_truth())
    elif isinstance(metric, (CLAPScore, MSCLAPScore)):
        idx = [i for i, c in enumerate(clips.captions) if c.strip()]
        if idx:
            metric.update(clips.audio[idx], sr, [plain_caption(clips.captions[i]) for i in idx])
    elif isinstance(metric, IBScore):
        idx, videos = clips.with_video()
        if idx:
            metric.update(clips.audio[idx], sr, videos)
    elif isinstance(metric, FrechetDistance):
        metric.update(clips.audio, real=False, sample_rate=sr)
        if real or metric.reset_real_features:
            for wav in clips.reference_audio():  # lengths differ from clip to clip
                metric.update(wav[None], real=True, sample_rate=sr)
    elif isinstance(metric, KLDivergence):
        for i, wav in enumerate(clips.reference_audio()):
            metric.update(clips.audio[i:i + 1], wav[None], sr)
    elif isinstance(metric, InceptionScore):
        metric.update(clips.audio, sr)
    elif isinstance(metric, DeSync):
        idx, videos = clips.with_video()
        for i, path in zip(idx, videos):
            video = load_video(path, 25.0)
            metric.update(video.frames[video.mask][None], clips.audio[i:i + 1], sr)
    elif hasattr(metric, "update_generated"):
        metric.update_generated(clips)
    else:
        raise TypeError(f"GenerationMetrics cannot feed {type(metric).__name__}: give it an "
                        "update_generated(clips: GeneratedClips) method or add a case to update_metric")


def metric_value(metric: Metric) -> float | str:
    """The metric's value as a float (a tuple's first entry: InceptionScore's mean), or why there is none.

    Every process calls ``compute`` (it gathers the states of all processes), even one that scored
    nothing itself; a metric with no clip anywhere returns NaN or raises ``ValueError``.
    """
    try:
        value = metric.compute()
    except ValueError:
        if metric.update_count:
            raise
        return "no scorable clips"
    value = float(value[0] if isinstance(value, (tuple, list)) else value)
    return "no scorable clips" if value != value else value  # NaN: nothing was scored


def read_corpora(corpora: Sequence[str]) -> dict[str, ClipMedia]:
    """Clip id → media paths, from each folder's ``manifest.jsonl`` (earlier folders win on repeated ids)."""
    found: dict[str, ClipMedia] = {}
    for folder in map(Path, corpora):
        manifest = folder / "manifest.jsonl"
        if not manifest.is_file():
            raise FileNotFoundError(2, "corpus manifest not found", str(manifest))
        for row in read_think_jsonl(manifest):
            gt = folder / "gt" / f"{row.id}.json"
            found.setdefault(row.id, ClipMedia(video=folder / row.video if row.video else None,
                                               audio=folder / row.audio if row.audio else None,
                                               ground_truth=gt if gt.is_file() else None))
    return found


class GenerationMetrics(Callback):
    """Scores generated audio of a fixed validation subset with configurable metrics.

    Args:
        vae: the VAE architecture of the feature cache (e.g. ``mel_vae_tiny``).
        vae_checkpoint: the VAE checkpoint that made the feature cache.
        vocoder: a ``VocoderTrain`` checkpoint or a BigVGAN folder.
        metrics: metric name → metric factory; logged as ``val/<name>``.
        corpora: folders with ``manifest.jsonl`` (and ``gt/``) holding the validation clips' media.
        max_items: clips per process per validation (``None``: the whole validation set).
        every_n_validations: score every n-th validation run (the first one included).
        steps: Euler steps.
        cfg: guidance scale.
        seed: base noise seed (batch ``i`` uses ``seed + i``).
        audio_preset: ``AudioConfig`` preset of the codec (sets the sample rate).
        table: write ``results.md`` / ``results.csv`` to the run directory after validation.
    """

    def __init__(self, vae: nn.Module, vae_checkpoint: str, vocoder: str,
                 metrics: dict[str, Callable[[], Metric]], corpora: list[str] | None = None,
                 max_items: int | None = 16, every_n_validations: int = 1, steps: int = 25, cfg: float = 4.5,
                 seed: int = 0, audio_preset: str = "tiny", table: bool = False):
        if every_n_validations < 1 or (max_items is not None and max_items < 1):
            raise ValueError(f"every_n_validations and max_items must be at least 1, got {every_n_validations}, "
                             f"{max_items}")
        if not metrics:
            raise ValueError("GenerationMetrics needs at least one metric")
        self.decoder = AudioDecoder(vae, vae_checkpoint, vocoder, audio_preset)
        self.factories = dict(metrics)
        self.corpora = list(corpora or [])
        self.max_items, self.every_n = max_items, every_n_validations
        self.steps, self.cfg, self.seed, self.table = steps, cfg, seed, table
        self.metrics: dict[str, Metric] = {}
        self.unavailable: dict[str, str] = {}
        self.results: dict[str, float | str] = {}
        self._media: dict[str, ClipMedia] | None = None
        self._validations = 0
        self._real_complete: set[str] = set()
        self._active = False
        self._seen = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.metrics or self.unavailable:
            return
        for name, factory in self.factories.items():
            try:
                self.metrics[name] = factory()
            except FileNotFoundError as e:
                self.unavailable[name] = f"weights not found: {e.filename or e}"
                rank_zero_info(f"GenerationMetrics: {name}: {self.unavailable[name]}")
        self._media = read_corpora(self.corpora)

    def state_dict(self) -> dict[str, Any]:
        """The validation-run counter, so a resumed run keeps scoring on the same validations."""
        return {"validations": self._validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._validations = int(state_dict["validations"])

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = False
        if trainer.sanity_checking:
            return
        fitting = trainer.state.fn == TrainerFn.FITTING
        self._active = not fitting or self._validations % self.every_n == 0  # `validate` always scores
        self._validations += fitting
        self._seen = 0
        for metric in self.metrics.values():
            metric.reset()
            metric.to(pl_module.device)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._active or not self.metrics or (self.max_items is not None and self._seen >= self.max_items):
            return
        b = batch["latent"].shape[0]
        n = b if self.max_items is None else min(b, self.max_items - self._seen)
        sub = {k: v[:n] for k, v in batch.items()}
        latents = pl_module.generate(sub, steps=self.steps, cfg=self.cfg, seed=self.seed + batch_idx)
        clips = GeneratedClips(ids=list(sub["id"]), audio=self.decoder.audio(latents).float().cpu(),
                               sample_rate=self.decoder.sample_rate, captions=[c or "" for c in sub["caption"]],
                               media=[self._media.get(i, ClipMedia()) for i in sub["id"]],
                               has_video=[bool(v) for v in sub["has_video"]])
        for name, metric in self.metrics.items():
            update_metric(metric, clips, real=name not in self._real_complete)
        self._seen += n

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active:
            return
        self.results = dict(self.unavailable)
        for name, metric in self.metrics.items():
            self.results[name] = value = metric_value(metric)
            if isinstance(value, float):
                pl_module.log(f"val/{name}", value, batch_size=max(self._seen, 1))
            if not getattr(metric, "reset_real_features", True):
                self._real_complete.add(name)  # a FrechetDistance keeping its ground-truth statistics
            metric.reset()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not (self._active and self.table and trainer.is_global_zero):
            return
        model = str(trainer.ckpt_path) if trainer.ckpt_path else f"step {trainer.global_step}"
        per = " per process" if trainer.world_size > 1 else ""
        label = f"{model} ({self._seen} clips{per})"
        folder = trainer.log_dir or "."
        md, _ = write_tables(folder, {label: self.results}, columns(list(self.factories)))
        rank_zero_info(f"GenerationMetrics: results table written to {md} and {md.with_suffix('.csv')}")
