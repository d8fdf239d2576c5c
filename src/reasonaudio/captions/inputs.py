"""The clips to annotate, read from a videos manifest.

Accepted manifests (format from the extension, as ``reasonaudio-data check`` does):

- ``.jsonl``: one object per line with ``id`` and optionally ``video``, ``audio``, ``label`` and
  ``duration`` (a ``caption``, if present, is ignored): the synthetic corpus's ``manifest.jsonl``
  and any VGGSound-Think file qualify. Without ``video``/``audio`` the media is looked up as
  ``<media_root>/<id><ext>``.
- ``.csv``: VGGSound's headerless ``vggsound.csv`` (or an AudioCaps split); ``.tsv``: an MMAudio
  video set. Media is ``<media_root>/<id>.mp4`` (any of ``MEDIA_EXTENSIONS``).

Relative media paths are taken under ``media_root``, which defaults to the manifest's folder.
Every clip records absolute paths, so the output JSONL loads from any working directory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from reasonaudio.data_modules.manifests import MEDIA_EXTENSIONS, ManifestRow, iter_jsonl, read_manifest, resolve_media

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")


@dataclass(frozen=True)
class ClipInput:
    """One clip to annotate.

    Args:
        id: clip id (unique within the manifest).
        video: absolute video path, or None for an audio-only row.
        audio: absolute path of a separate audio file, or None (the video's track is used).
        label: class label, when the manifest has one (used by ``diversity``).
        duration: seconds, when the manifest gives it.
        where: ``<manifest>, line <n>`` for messages.
    """

    id: str
    video: str | None
    audio: str | None = None
    label: str | None = None
    duration: float | None = None
    where: str = ""

    def to_record(self) -> dict:
        """The clip's fields for an output line (``think_jsonl`` names; absent values left out)."""
        record = {"id": self.id, "video": self.video, "audio": self.audio, "label": self.label,
                  "duration": self.duration}
        return {k: v for k, v in record.items() if v is not None}


def _explicit(value: str | None, root: Path, where: str, column: str) -> Path | None:
    """An explicit media path of a row (relative to ``root``), which must exist."""
    if value is None:
        return None
    media = root / value
    if not media.is_file():
        raise ValueError(f"{where}, column {column!r}: media file {media} does not exist")
    return media


def _jsonl_clips(path: Path, root: Path) -> list[ClipInput]:
    """Reads a JSONL videos manifest."""
    clips = []
    for line, where, item in iter_jsonl(path):
        if not isinstance(item.get("id"), str) or not item["id"].strip():
            raise ValueError(f"{where}: expected a JSON object with a non-empty string 'id'")
        for key in ("video", "audio", "label"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise ValueError(f"{where}, column {key!r}: expected text, got {item[key]!r}")
        duration = item.get("duration")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                     or not math.isfinite(duration) or duration <= 0):
            raise ValueError(f"{where}, column 'duration': expected a positive number, got {duration!r}")
        clip_id = item["id"].strip()
        video = _explicit(item.get("video"), root, where, "video")
        audio = _explicit(item.get("audio"), root, where, "audio")
        if video is None and audio is None:
            row = ManifestRow(id=clip_id, corpus="captions", manifest=str(path), line=line)
            video = resolve_media(row, root, MEDIA_EXTENSIONS)
        if video is not None and video.suffix.lower() not in VIDEO_SUFFIXES:
            video, audio = None, audio or video
        clips.append(ClipInput(id=clip_id, video=str(video.resolve()) if video else None,
                               audio=str(audio.resolve()) if audio else None, label=item.get("label"),
                               duration=float(duration) if duration is not None else None, where=where))
    return clips


def read_clips(manifest: str | Path, media_root: str | Path | None = None) -> list[ClipInput]:
    """Reads the clips of a videos manifest (formats in the module docstring).

    Args:
        manifest: ``.jsonl``, ``.csv`` or ``.tsv`` file.
        media_root: folder for relative media paths and id lookups; default the manifest's folder.

    Raises:
        ValueError: naming the file and line of a bad record, a missing media file or a repeated id.
    """
    path = Path(manifest)
    if not path.is_file():
        raise ValueError(f"{path}: videos manifest not found")
    root = Path(media_root) if media_root is not None else path.parent
    suffix = path.suffix.lower()
    fmt = "jsonl"
    if suffix == ".jsonl":
        clips = _jsonl_clips(path, root)
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8-sig") as handle:
            first = handle.readline()
        fmt = "mmaudio_tsv" if suffix == ".tsv" else "audiocaps_csv" if first.startswith("audiocap_id") \
            else "vggsound_csv"
        clips = []
        for row in read_manifest(path, fmt):
            media = resolve_media(row, root).resolve()
            is_video = media.suffix.lower() in VIDEO_SUFFIXES
            clips.append(ClipInput(id=row.id, video=str(media) if is_video else None,
                                   audio=None if is_video else str(media), label=row.label,
                                   duration=row.duration, where=row.location))
    else:
        raise ValueError(f"{path}: unknown videos manifest type {suffix!r}; expected .jsonl, .csv or .tsv")
    if not clips:
        raise ValueError(f"{path}: manifest is empty")
    seen: dict[str, str] = {}
    unique = []
    for clip in clips:
        if clip.id in seen:
            # AudioCaps lists several captions per clip; one annotation per clip id.
            if fmt == "audiocaps_csv":
                continue
            raise ValueError(f"{clip.where}: clip id {clip.id!r} repeats {seen[clip.id]}")
        seen[clip.id] = clip.where
        unique.append(clip)
    return unique

