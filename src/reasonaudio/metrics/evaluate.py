"""``reasonaudio-metrics``: objective metrics of a folder of generated audio, av-benchmark style.

    reasonaudio-metrics --pred DIR [--gt DIR] [--videos DIR] [--captions CSV]
                        [--metrics fd_panns,kl_panns,...] --weights DIR --out results.json

Files are paired by file stem (``<ytid>_<start:06d>.flac`` in ``--pred`` ↔ ``<ytid>_<start:06d>.wav``
in ``--gt`` ↔ ``<ytid>_<start:06d>.mp4`` in ``--videos``), exactly as av-benchmark pairs
KL_PANNs. Nothing is dropped or replaced silently: unpaired stems, files that cannot be decoded,
clips too short for a network, ambiguous stems (``a.wav`` and ``a.flac``) and non-media files are
all listed in the JSON and summarised on stdout. Every clip is read whole, mono, at its native
rate, and each network gets av-benchmark's input (``AudioBackbone.prepare``: DC removed,
resampled with torchaudio's default resampler, cut to ``--duration`` seconds).

Which clips each metric uses (av-benchmark's ``evaluate.py``):

==========  ====================================================  =============================
metric      definition                                            clips
==========  ====================================================  =============================
fd_panns    Fréchet distance of PANNs Cnn14 2048-d embeddings     all generated vs all ground truth
fd_vggish   Fréchet distance of VGGish 0.96 s window embeddings   all windows of all clips, both sides
fd_passt    Fréchet distance of PaSST 768-d embeddings            paired clips
kl_panns    mean KL(softmax gt ‖ softmax generated), Cnn14        paired clips
kl_passt    the same with PaSST logits                            paired clips
is_panns    Inception Score (10 splits, seed 2020), Cnn14         all generated (sorted by stem)
is_passt    the same with PaSST logits                            all generated
desync      mean |Synchformer offset| (first / last 4.8 s)        generated audio ↔ ``--videos``
clap        caption–audio cosine, MS-CLAP 2023 (``--clap laion``:  generated clips with a caption
            LAION-CLAP), the checkpoint named in the results
==========  ====================================================  =============================

Weights are read from ``--weights DIR`` under their official file names
(``Cnn14_16k_mAP=0.438.pth``, ``vggish-10086976.pth``, ``passt-s-f128-p16-s10-ap.476-swa.pt``,
``synchformer_state_dict.pth``, ``CLAP_weights_2023.pth`` + ``msclap_gpt2/``); a metric whose file is
missing is reported as ``weights not found: <path>`` and the others are still computed. Nothing is downloaded.

Extracted features are cached per file (key: resolved path, size, modification time, network,
weights file identity, ``--duration``) under ``--cache-dir`` (default
``$XDG_CACHE_HOME/reasonaudio/metrics``), so a second run against the same ground truth only runs
the networks on new or changed files.

Exit status: 0 when every requested metric was computed and every file was usable; 3 when the
results were written but a metric could not be computed (missing weights, too few clips) or some
file was unusable; 2 for a usage error (argparse). Unpaired stems alone do not change the status.

More metrics plug in through :func:`register_metric` (a :class:`MetricSpec` whose ``compute``
receives the :class:`Evaluation`); docs/evaluation.md shows CLAP and ImageBind registered this way.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from tqdm import tqdm

from reasonaudio.config import SYNC_FPS
from reasonaudio.media import MediaError, load_audio, load_video, probe
from reasonaudio.metrics.backbones import AudioBackbone, AudioFeatures, resample
from reasonaudio.metrics.backbones_panns import Cnn14
from reasonaudio.metrics.backbones_passt import PaSST
from reasonaudio.metrics.backbones_vggish import VGGish
from reasonaudio.metrics.desync import audio_tokens, desync_seconds, video_tokens
from reasonaudio.metrics.frechet import FrechetDistance
from reasonaudio.metrics.scores import IS_SEED, IS_SPLITS, InceptionScore, KLDivergence
from reasonaudio.models.synchformer import AUDIO_WINDOW, SYNC_SAMPLE_RATE, Synchformer

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INCOMPLETE = 3
MEDIA_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".mkv", ".webm",
                            ".mov", ".avi"})
"""Files of a folder that are clips; anything else is listed as ignored."""
CACHE_VERSION = 1
"""Bump when extraction changes, to invalidate cached features."""
SYNCHFORMER_CHECKPOINT = "synchformer_state_dict.pth"


# --------------------------------------------------------------------------- folders and pairing


@dataclass
class Folder:
    """The clips of one folder, by stem.

    Attributes:
        root: the folder.
        files: stem → file for every media file with a unique stem.
        duplicates: stems held by more than one media file (all of them are left out).
        ignored: names of entries that are not media files (sub-folders, .json, …).
    """

    root: Path
    files: dict[str, Path]
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready description."""
        return {"dir": str(self.root), "files": len(self.files), "duplicate_stems": self.duplicates,
                "ignored": self.ignored}


def scan_folder(root: str | os.PathLike) -> Folder:
    """Index the media files directly inside ``root`` by stem (not recursive)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"not a folder: {root}")
    by_stem: dict[str, list[Path]] = defaultdict(list)
    ignored = []
    for entry in sorted(root.iterdir()):
        if entry.is_file() and entry.suffix.lower() in MEDIA_SUFFIXES:
            by_stem[entry.stem].append(entry)
        else:
            ignored.append(entry.name)
    files = {stem: paths[0] for stem, paths in sorted(by_stem.items()) if len(paths) == 1}
    duplicates = {stem: [p.name for p in paths] for stem, paths in sorted(by_stem.items()) if len(paths) > 1}
    return Folder(root, files, duplicates, ignored)


def read_captions(path: str | os.PathLike) -> dict[str, str]:
    """Captions by clip id from a CSV with a ``caption`` column and an id column (``name``, ``id`` or ``clip_id``).

    Raises:
        ValueError: missing columns, or an id listed twice (the message names the file and the id).
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        id_column = next((c for c in ("name", "id", "clip_id") if c in columns), None)
        if id_column is None or "caption" not in columns:
            raise ValueError(f"{path}: needs a 'caption' column and an id column ('name', 'id' or 'clip_id'), "
                             f"got {columns}")
        captions: dict[str, str] = {}
        for row in reader:
            clip_id = Path(row[id_column]).stem
            if clip_id in captions:
                raise ValueError(f"{path}: clip id {clip_id!r} is listed twice")
            captions[clip_id] = row["caption"]
    return captions


# --------------------------------------------------------------------------- networks and cache


@dataclass(frozen=True)
class ModelSpec:
    """How the evaluator builds one network from ``--weights DIR``.

    Attributes:
        checkpoint: file name under ``--weights``.
        build: ``build(checkpoint_path) -> nn.Module`` loading the weights (eval mode).
    """

    checkpoint: str
    build: Callable[[Path], nn.Module]


MODELS: dict[str, ModelSpec] = {
    "panns": ModelSpec(Cnn14.checkpoint_name, lambda path: Cnn14().load_checkpoint(path)),
    "vggish": ModelSpec(VGGish.checkpoint_name, lambda path: VGGish().load_checkpoint(path)),
    "passt": ModelSpec(PaSST.checkpoint_name, lambda path: PaSST().load_checkpoint(path)),
    "synchformer": ModelSpec(SYNCHFORMER_CHECKPOINT, lambda path: Synchformer.from_checkpoint(path)),
}
"""Networks by name; ``panns``, ``vggish``, ``passt`` are :class:`AudioBackbone` s."""


class WeightsMissing(Exception):
    """A network's checkpoint is not in ``--weights``."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(f"weights not found: {path}")


class EmbeddingCache:
    """Per-file features on disk, keyed by (resolved path, size, mtime, extractor id).

    Args:
        root: cache folder; None disables caching.
    """

    def __init__(self, root: Path | None):
        self.root = root

    def _file(self, path: Path, extractor: str) -> Path | None:
        if self.root is None:
            return None
        st = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{extractor}".encode()).hexdigest()
        return self.root / extractor.split("|")[0] / key[:2] / f"{key}.pt"

    def load(self, path: Path, extractor: str) -> dict[str, torch.Tensor] | None:
        """The cached features of ``path``, or None (also for an unreadable cache entry)."""
        file = self._file(path, extractor)
        if file is None or not file.is_file():
            return None
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign cache entry is recomputed, not trusted
            log.warning("ignoring unreadable cache entry %s: %s", file, err)
            return None

    def save(self, path: Path, extractor: str, value: dict[str, torch.Tensor]) -> None:
        """Store ``value`` for ``path`` (atomically)."""
        file = self._file(path, extractor)
        if file is None:
            return
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".tmp{os.getpid()}")
        torch.save({k: v.detach().cpu().contiguous().clone() for k, v in value.items()}, tmp)
        os.replace(tmp, file)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/reasonaudio/metrics`` (``~/.cache/reasonaudio/metrics``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reasonaudio" / "metrics"


# --------------------------------------------------------------------------- the evaluation


def read_audio(path: Path) -> tuple[torch.Tensor, int]:
    """The whole first audio stream of ``path``, mono (channel mean), at its native rate: ``([S], rate)``.

    Raises:
        MediaError: no audio stream, or a decode error.
    """
    info = probe(path)
    if info.audio is None or not info.audio.sample_rate:
        raise MediaError(path, "no audio stream")
    clip = load_audio(path, info.audio.sample_rate)
    return clip.wav, info.audio.sample_rate


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Evaluation:
    """Everything a metric needs: paired files, networks, cached per-clip features, and a problem log.

    Features are extracted once per network and side (all requested audio networks in one decoding
    pass), memoised, and cached on disk. Problems (unreadable files, clips too short for a network)
    are recorded per file in :attr:`problems` and those clips are left out of what needs them.

    Args:
        pred: the generated clips.
        gt: the ground-truth clips (None: metrics that need them are unavailable).
        videos: the ground-truth videos for DeSync (None: unavailable).
        captions: captions by clip id (None: unavailable).
        weights: folder of checkpoints.
        duration: seconds of each clip that are scored (av-benchmark's ``--audio_length``).
        device: where the networks run.
        batch_size: clips per network call.
        cache: the feature cache.
        audio_backbones: audio networks to extract in the shared decoding pass.
        is_splits: splits of the Inception Score.
        clap: the CLAP of the ``clap`` metric, a :data:`CLAP_CHECKPOINTS` key.
    """

    def __init__(self, pred: Folder, gt: Folder | None, videos: Folder | None, captions: dict[str, str] | None,
                 weights: Path, duration: float, device: torch.device, batch_size: int, cache: EmbeddingCache,
                 audio_backbones: Iterable[str] = (), is_splits: int = IS_SPLITS, clap: str = "msclap"):
        if clap not in CLAP_CHECKPOINTS:
            raise ValueError(f"clap must be one of {sorted(CLAP_CHECKPOINTS)}, got {clap!r}")
        self.clap = clap
        self.pred, self.gt, self.videos, self.captions = pred, gt, videos, captions
        self.weights, self.duration, self.device, self.batch_size = weights, duration, device, batch_size
        self.cache, self.is_splits = cache, is_splits
        self.audio_backbones = tuple(dict.fromkeys(audio_backbones))
        self.problems: dict[str, list[str]] = defaultdict(list)
        self.short: dict[str, float] = {}
        self._models: dict[str, nn.Module] = {}
        self._features: dict[tuple[str, str], dict[str, AudioFeatures]] = {}
        self._desync: dict[str, float] | None = None

    # ------------------------------------------------------------------ inputs

    def folder(self, side: str) -> Folder:
        """``"pred"``, ``"gt"`` or ``"videos"``."""
        folder = {"pred": self.pred, "gt": self.gt, "videos": self.videos}[side]
        if folder is None:
            raise ValueError(f"no --{side} folder was given")
        return folder

    def paired(self, *sides: str) -> list[str]:
        """Sorted stems present in every one of ``sides`` (default ``pred`` and ``gt``)."""
        sides = sides or ("pred", "gt")
        stems = set(self.folder(sides[0]).files)
        for side in sides[1:]:
            stems &= set(self.folder(side).files)
        return sorted(stems)

    def problem(self, path: Path, reason: str) -> None:
        """Record why ``path`` is (partly) left out."""
        if reason not in self.problems[str(path)]:
            self.problems[str(path)].append(reason)

    def iter_audio(self, side: str, stems: Sequence[str] | None = None) -> Iterator[tuple[str, torch.Tensor, int]]:
        """``(stem, [S] mono waveform at its native rate, rate)`` of readable clips; failures become problems."""
        folder = self.folder(side)
        for stem in stems if stems is not None else sorted(folder.files):
            path = folder.files[stem]
            try:
                wav, rate = read_audio(path)
            except MediaError as err:
                self.problem(path, f"unreadable audio: {err.reason}")
                continue
            self._note_length(path, wav.shape[0] / rate)
            yield stem, wav, rate

    def _note_length(self, path: Path, seconds: float, tolerance: float = 1e-3) -> None:
        """Remember files shorter than ``duration`` (scored as they are, listed in the report)."""
        if seconds < self.duration - tolerance:
            self.short[str(path)] = round(seconds, 4)

    # ------------------------------------------------------------------ networks

    def weights_path(self, name: str) -> Path:
        """Checkpoint path of network ``name``; raises :class:`WeightsMissing` when it is absent."""
        path = self.weights / MODELS[name].checkpoint
        if not path.exists():
            raise WeightsMissing(path)
        return path

    def model(self, name: str) -> nn.Module:
        """Network ``name`` loaded from ``--weights`` (once), on :attr:`device`, in eval mode."""
        if name not in self._models:
            self._models[name] = MODELS[name].build(self.weights_path(name)).to(self.device).eval()
        return self._models[name]

    def _extractor_id(self, name: str, *extra) -> str:
        path = self.weights_path(name)
        st = path.stat()
        return "|".join(str(x) for x in (name, CACHE_VERSION, f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}",
                                         self.duration, *extra))

    # ------------------------------------------------------------------ audio embeddings

    def audio_features(self, name: str, side: str) -> dict[str, AudioFeatures]:
        """Per-stem features of audio network ``name`` for ``side`` (``pred`` or ``gt``), usable clips only.

        The first call for a side extracts every network of ``audio_backbones`` whose weights
        exist, in one decoding pass over the folder.
        """
        self.weights_path(name)  # WeightsMissing before any work
        if (name, side) not in self._features:
            names = [n for n in dict.fromkeys((*self.audio_backbones, name))
                     if (n, side) not in self._features and (self.weights / MODELS[n].checkpoint).exists()]
            self._extract(names, side)
        return self._features[(name, side)]

    def _extract(self, names: list[str], side: str) -> None:
        folder = self.folder(side)
        models: dict[str, AudioBackbone] = {n: self.model(n) for n in names}
        ids = {n: self._extractor_id(n) for n in names}
        out: dict[str, dict[str, AudioFeatures]] = {n: {} for n in names}
        todo: list[str] = []
        for stem in sorted(folder.files):
            for n in names:
                cached = self.cache.load(folder.files[stem], ids[n])
                if cached is not None:
                    out[n][stem] = AudioFeatures(cached["embedding"], cached.get("logits"))
                    self._note_length(folder.files[stem], float(cached["seconds"]))
            if any(stem not in out[n] for n in names):
                todo.append(stem)
        with tqdm(total=len(todo), desc=f"{side} audio ({', '.join(names)})", unit="clip", disable=not todo) as bar:
            for chunk in _batches(todo, self.batch_size):
                clips = list(self.iter_audio(side, chunk))
                for n, model in models.items():
                    self._run_backbone(model, ids[n], folder, [c for c in clips if c[0] not in out[n]], out[n])
                bar.update(len(chunk))
        for n in names:
            self._features[(n, side)] = out[n]

    def _run_backbone(self, model: AudioBackbone, extractor: str, folder: Folder,
                      clips: list[tuple[str, torch.Tensor, int]], out: dict[str, AudioFeatures]) -> None:
        """Embed ``clips`` (batched by prepared length) into ``out`` and the cache."""
        groups: dict[int, list[tuple[str, torch.Tensor, float]]] = defaultdict(list)
        for stem, wav, rate in clips:
            x = model.prepare(wav.to(self.device), rate, self.duration)  # [1, S']
            if x.shape[1] < model.min_samples:
                self.problem(folder.files[stem], f"too short for {model.title}: {x.shape[1] / model.sample_rate:.2f} s"
                                                 f" < {model.min_samples / model.sample_rate:.2f} s")
                continue
            groups[x.shape[1]].append((stem, x, wav.shape[0] / rate))
        with torch.no_grad():
            for items in groups.values():
                feats = model(torch.cat([x for _, x, _ in items]))
                for i, (stem, _, seconds) in enumerate(items):
                    f = AudioFeatures(feats.embedding[i].cpu(), None if feats.logits is None else feats.logits[i].cpu())
                    out[stem] = f
                    value = {"embedding": f.embedding, "seconds": torch.tensor(seconds, dtype=torch.float64)}
                    if f.logits is not None:
                        value["logits"] = f.logits
                    self.cache.save(folder.files[stem], extractor, value)

    # ------------------------------------------------------------------ DeSync

    def desync_per_clip(self) -> dict[str, float]:
        """DeSync (seconds) of every generated clip that has a ground-truth video."""
        if self._desync is not None:
            return self._desync
        model: Synchformer = self.model("synchformer")
        size = model.config.image_size
        video_id = self._extractor_id("synchformer", "video", size)
        audio_id = self._extractor_id("synchformer", "audio")
        stems = self.paired("pred", "videos")
        result: dict[str, float] = {}
        for stem in tqdm(stems, desc="DeSync", unit="clip", disable=not stems):
            v = self._sync_video(model, self.videos.files[stem], video_id, size)
            a = self._sync_audio(model, stem, audio_id) if v is not None else None
            if v is None or a is None:
                continue
            try:
                result[stem] = float(desync_seconds(model, v[None].to(self.device), a[None].to(self.device))[0])
            except ValueError as err:
                video = self.videos.files[stem].name
                self.problem(self.pred.files[stem], f"not scored by DeSync (video {video}): {err}")
        self._desync = result
        return result

    def _sync_video(self, model: Synchformer, path: Path, extractor: str, size: int) -> torch.Tensor | None:
        """``[S·8, D]`` visual tokens of the first ``duration`` seconds of a video (cached)."""
        cached = self.cache.load(path, extractor)
        if cached is not None:
            self._note_length(path, float(cached["seconds"]))
            return cached["tokens"]
        try:
            clip = load_video(path, SYNC_FPS, duration=self.duration, size=size)
        except MediaError as err:
            self.problem(path, f"unreadable video: {err.reason}")
            return None
        real = int(clip.mask.nonzero().max()) + 1 if clip.mask.any() else 0
        self._note_length(path, real / SYNC_FPS)
        try:
            with torch.no_grad():
                tokens = video_tokens(model, clip.frames[None, :real].to(self.device))[0].cpu()
        except ValueError as err:
            self.problem(path, f"video too short for DeSync: {err}")
            return None
        self.cache.save(path, extractor, {"tokens": tokens, "seconds": torch.tensor(real / SYNC_FPS)})
        return tokens

    def _sync_audio(self, model: Synchformer, stem: str, extractor: str) -> torch.Tensor | None:
        """``[S·6, D]`` audio tokens of the first ``duration`` seconds of a generated clip (cached).

        av-benchmark's ``SynchformerAudioDataset``: mono, torchaudio's default resampler to
        16 kHz, no DC removal.
        """
        path = self.pred.files[stem]
        cached = self.cache.load(path, extractor)
        if cached is not None:
            self._note_length(path, float(cached["seconds"]))
            return cached["tokens"]
        clips = list(self.iter_audio("pred", [stem]))
        if not clips:
            return None
        _, wav, rate = clips[0]
        wav = resample(wav.to(self.device)[None].float(), rate, SYNC_SAMPLE_RATE)
        wav = wav[:, :round(self.duration * SYNC_SAMPLE_RATE)]
        if wav.shape[1] < AUDIO_WINDOW:
            self.problem(path, f"audio too short for DeSync: {wav.shape[1] / SYNC_SAMPLE_RATE:.2f} s")
            return None
        with torch.no_grad():
            tokens = audio_tokens(model, wav)[0].cpu()
        self.cache.save(path, extractor, {"tokens": tokens, "seconds": torch.tensor(clips[0][1].shape[0] / rate)})
        return tokens


# --------------------------------------------------------------------------- metrics registry


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
        from reasonaudio.metrics.msclap import MSCLAPScore

        files = (ev.weights / MSCLAP_FILE, ev.weights / MSCLAP_TEXT_FOLDER)
        metric = MSCLAPScore(str(files[0]), str(files[1]))
        checkpoint = f"{CLAP_CHECKPOINTS['msclap']}: {files[0]} + {files[1]}"
    else:
        from reasonaudio.metrics.clap import CLAPScore

        metric = CLAPScore(str(ev.weights / CLAP_FOLDER))
        checkpoint = f"{CLAP_CHECKPOINTS['laion']}: {ev.weights / CLAP_FOLDER}"
    for stem, wav, rate in ev.iter_audio("pred", sorted(set(ev.pred.files) & set(ev.captions))):
        metric.update(wav[None, :round(ev.duration * rate)], rate, [ev.captions[stem]])
    if metric.count == 0:
        raise ValueError("no generated clip with a caption")
    return MetricResult(float(metric.compute()), clips=int(metric.count), details={"checkpoint": checkpoint})


def _ib(ev: Evaluation) -> MetricResult:
    from reasonaudio.metrics.imagebind import IBScore

    metric = IBScore(str(ev.weights / IMAGEBIND_FILE), size=IMAGEBIND_SIZE, audio_length=ev.duration)
    for stem, wav, rate in ev.iter_audio("pred", ev.paired("pred", "videos")):
        metric.update(wav[None, :round(ev.duration * rate)], rate, [ev.videos.files[stem]])
    if metric.count == 0:
        raise ValueError("no generated clip with a video")
    return MetricResult(float(metric.compute()), clips=int(metric.count))


CLAP_FOLDER = "larger_clap_general"
"""LAION-CLAP in transformers' format (``ClapModel`` folder) under ``--weights`` (``--clap laion``)."""
MSCLAP_FILE = "CLAP_weights_2023.pth"
"""MS-CLAP 2023's released checkpoint (HF ``microsoft/msclap``) under ``--weights`` (``--clap msclap``, default)."""
MSCLAP_TEXT_FOLDER = "msclap_gpt2"
"""MS-CLAP 2023's text encoder under ``--weights``: HF ``gpt2`` saved with ``save_pretrained``."""
CLAP_CHECKPOINTS = {"msclap": "MS-CLAP 2023 (microsoft/msclap CLAP_weights_2023.pth, GPT-2 text encoder)",
                    "laion": "LAION-CLAP larger_clap_general (music_speech_audioset_epoch_15_esc_89.98)"}
"""``--clap`` choices and the checkpoint each names in the results."""
IMAGEBIND_FILE = "imagebind_huge.pth"
"""The released ImageBind checkpoint under ``--weights``."""
IMAGEBIND_SIZE = "huge"
"""ImageBind tower sizes (``"tiny"`` in tests)."""

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


# --------------------------------------------------------------------------- running and reporting


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


def _format_value(result: MetricResult) -> str:
    if result.value is None:
        return "—"
    return f"{result.value:.4f}" if math.isfinite(result.value) else str(result.value)


def format_table(results: dict[str, MetricResult]) -> str:
    """A Markdown table: metric, value, clips, status."""
    lines = ["| metric | value | clips | status |", "|---|---:|---:|---|"]
    for name, r in results.items():
        spec = METRICS[name]
        arrow = "↑" if spec.higher_is_better else "↓"
        lines.append(f"| {spec.title} {arrow} | {_format_value(r)} | {r.clips} | {r.status} |")
    named = [f"{METRICS[n].title}: {r.details['checkpoint']}" for n, r in results.items() if "checkpoint" in r.details]
    return "\n".join(lines + ([""] + [f"checkpoint of {line}" for line in named] if named else []))


def build_parser() -> argparse.ArgumentParser:
    """The ``reasonaudio-metrics`` argument parser."""
    p = argparse.ArgumentParser(prog="reasonaudio-metrics", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, type=Path, help="folder of generated clips (audio or video files)")
    p.add_argument("--gt", type=Path, help="folder of ground-truth clips, paired by file stem")
    p.add_argument("--videos", type=Path, help="folder of ground-truth videos for DeSync, paired by file stem")
    p.add_argument("--captions", type=Path, help="CSV with an id column (name/id/clip_id) and 'caption'")
    p.add_argument("--metrics", help="comma-separated metric names (default: every registered metric whose "
                                     f"inputs are given); available: {', '.join(METRICS)}")
    p.add_argument("--weights", type=Path, default=Path("weights"),
                   help="folder with the official checkpoint files (default: ./weights)")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="results JSON (default: results.json)")
    p.add_argument("--duration", type=float, default=8.0,
                   help="seconds of each clip that are scored (av-benchmark's --audio_length; default 8)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"feature cache (default: {default_cache_dir()})")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--batch-size", type=int, default=16, help="clips per network call (default 16)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available)")
    p.add_argument("--is-splits", type=int, default=IS_SPLITS, help="Inception Score splits (default 10)")
    p.add_argument("--clap", choices=tuple(CLAP_CHECKPOINTS), default="msclap",
                   help=f"CLAP of the clap metric: msclap = {CLAP_CHECKPOINTS['msclap']} ({MSCLAP_FILE} and "
                        f"{MSCLAP_TEXT_FOLDER}/ under --weights; the paper's, default), laion = "
                        f"{CLAP_CHECKPOINTS['laion']} ({CLAP_FOLDER}/ under --weights)")
    return p


def _inputs_given(spec: MetricSpec, args: argparse.Namespace) -> str | None:
    """None when every input ``spec`` needs was given, else the missing option."""
    for need in spec.needs:
        if getattr(args, need) is None:
            return f"--{need}"
    return None


def _select_metrics(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    if args.metrics:
        names = [n.strip() for n in args.metrics.split(",") if n.strip()]
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            parser.error(f"unknown metric(s) {', '.join(unknown)}; available: {', '.join(METRICS)}")
        for n in names:
            missing = _inputs_given(METRICS[n], args)
            if missing:
                parser.error(f"metric {n} needs {missing}")
        return list(dict.fromkeys(names)), {}
    names, skipped = [], {}
    for n, spec in METRICS.items():
        missing = _inputs_given(spec, args)
        if missing:
            skipped[n] = f"needs {missing}"
        else:
            names.append(n)
    return names, skipped


SUBCOMMANDS = ("listening-test", "mos")
"""First arguments that select the subjective-evaluation tools (:mod:`reasonaudio.metrics.listening`)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``reasonaudio-metrics``; returns the exit status (module docstring).

    ``reasonaudio-metrics listening-test …`` and ``reasonaudio-metrics mos …`` run the listening-test
    tools instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        from reasonaudio.metrics.listening import main as listening_main
        return listening_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.batch_size < 1 or args.is_splits < 1:
        parser.error("--duration must be > 0, --batch-size and --is-splits >= 1")
    names, skipped = _select_metrics(parser, args)
    folders = {}
    for side in ("pred", "gt", "videos"):
        if getattr(args, side) is not None:
            try:
                folders[side] = scan_folder(getattr(args, side))
            except ValueError as err:
                parser.error(f"--{side}: {err}")
    if not folders["pred"].files:
        parser.error(f"--pred: no media files in {args.pred}")
    captions = None
    if args.captions is not None:
        try:
            captions = read_captions(args.captions)
        except (OSError, ValueError) as err:
            parser.error(f"--captions: {err}")
    cache = EmbeddingCache(None if args.no_cache else (args.cache_dir or default_cache_dir()))
    ev = Evaluation(folders["pred"], folders.get("gt"), folders.get("videos"), captions, args.weights, args.duration,
                    torch.device(args.device), args.batch_size, cache,
                    audio_backbones=[b for n in names for b in METRICS[n].audio_backbones], is_splits=args.is_splits,
                    clap=args.clap)
    results = run_metrics(ev, names)
    pairing = {}
    if ev.gt is not None:
        pairing["paired"] = len(ev.paired("pred", "gt"))
        pairing["pred_only"] = sorted(set(ev.pred.files) - set(ev.gt.files))
        pairing["gt_only"] = sorted(set(ev.gt.files) - set(ev.pred.files))
    if ev.videos is not None:
        pairing["pred_without_video"] = sorted(set(ev.pred.files) - set(ev.videos.files))
    if captions is not None:
        pairing["pred_without_caption"] = sorted(set(ev.pred.files) - set(captions))
    duplicates = {side: f.duplicates for side, f in folders.items() if f.duplicates}
    incomplete = any(r.status != "ok" for r in results.values()) or bool(ev.problems) or bool(duplicates)
    status = EXIT_INCOMPLETE if incomplete else EXIT_OK
    report = {
        "metrics": {n: {"title": METRICS[n].title, **asdict(r)} for n, r in results.items()},
        "skipped": skipped,
        "inputs": {side: f.summary() for side, f in folders.items()},
        "pairing": pairing,
        "problems": dict(ev.problems),
        "shorter_than_duration": ev.short,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
                  | {"metrics": names, "cache_dir": str(cache.root) if cache.root else None},
        "exit_status": status,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(format_table(results))
    _print_summary(ev, folders, pairing, skipped, args.out)
    return status


def _print_summary(ev: Evaluation, folders: dict[str, Folder], pairing: dict, skipped: dict[str, str],
                   out: Path, shown: int = 20) -> None:
    lines = []
    for side, f in folders.items():
        lines.append(f"{side}: {len(f.files)} clips in {f.root}"
                     + (f", {len(f.duplicates)} ambiguous stems left out" if f.duplicates else "")
                     + (f", {len(f.ignored)} non-media entries ignored" if f.ignored else ""))
    for key in ("pred_only", "gt_only", "pred_without_video", "pred_without_caption"):
        if pairing.get(key):
            items = pairing[key]
            lines.append(f"{key}: {len(items)} ({', '.join(items[:shown])}{', …' if len(items) > shown else ''})")
    if ev.problems:
        lines.append(f"{len(ev.problems)} file(s) with problems:")
        for path, reasons in list(ev.problems.items())[:shown]:
            lines.append(f"  {path}: {'; '.join(reasons)}")
        if len(ev.problems) > shown:
            lines.append(f"  … {len(ev.problems) - shown} more")
    if ev.short:
        lines.append(f"{len(ev.short)} file(s) shorter than --duration {ev.duration:g} s (scored as they are)")
    for name, reason in skipped.items():
        lines.append(f"skipped {name}: {reason}")
    lines.append(f"results: {out}")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
