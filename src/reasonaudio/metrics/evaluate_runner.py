"""The evaluator's state: :class:`Evaluation` holds the paired inputs, loads the networks from
``--weights`` once, extracts per-clip features (all audio networks in one decoding pass; DeSync tokens)
through the feature cache, and logs the files it had to leave out.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn
from tqdm import tqdm

from reasonaudio.config import SYNC_FPS
from reasonaudio.media import MediaError, load_video
from reasonaudio.metrics.backbones import AudioBackbone, AudioFeatures, resample
from reasonaudio.metrics.desync import audio_tokens, desync_seconds, video_tokens
from reasonaudio.metrics.evaluate_inputs import (CACHE_VERSION, CLAP_CHECKPOINTS, MODELS, EmbeddingCache, Folder,
                                                 WeightsMissing, read_audio)
from reasonaudio.metrics.scores import IS_SPLITS
from reasonaudio.models.synchformer import AUDIO_WINDOW, SYNC_SAMPLE_RATE, Synchformer


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
