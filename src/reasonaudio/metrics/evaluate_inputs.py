"""What the evaluator (``reasonaudio-metrics``) reads: clip folders paired by file stem, captions, whole
audio files, the reference networks' weights under ``--weights`` (:data:`MODELS` and the CLAP /
ImageBind file names) and the per-file feature cache.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from reasonaudio.media import MediaError, load_audio, probe
from reasonaudio.metrics.backbones.panns import Cnn14
from reasonaudio.metrics.backbones.passt import PaSST
from reasonaudio.metrics.backbones.vggish import VGGish
from reasonaudio.models.synchformer import Synchformer

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".mkv", ".webm",
                            ".mov", ".avi"})
"""Files of a folder that are clips; anything else is listed as ignored."""
CACHE_VERSION = 1
"""Bump when extraction changes, to invalidate cached features."""


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


SYNCHFORMER_CHECKPOINT = "synchformer_state_dict.pth"
"""The official Synchformer checkpoint under ``--weights`` (DeSync)."""
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


# --------------------------------------------------------------------------- audio


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
