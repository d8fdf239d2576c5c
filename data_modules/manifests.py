"""Readers for the corpora's own metadata files, returning typed :class:`ManifestRow` records.

Every reader validates as it goes and raises ``ValueError`` naming the file, the 1-based line and
the column of the first bad value (``vggsound.csv, line 3, column 'start_seconds': expected a
number, got 'abc'``), or ``<file>: manifest is empty`` when a file holds no records. Formats (see
``notes/dataset-formats.md``):

- ``vggsound_csv``: VGGSound's headerless ``youtube_id,start_seconds,label,split``; row id
  ``<ytid>_<start:06d>``.
- ``mmaudio_tsv``: MMAudio's header ``id<TAB>label`` (video sets) or ``id<TAB>caption`` (audio
  sets); row id ``id``.
- ``think_jsonl``: one object per line with ``id`` and a VGGSound-Think ``caption``, optionally
  ``video``, ``audio``, ``label``, ``duration``; row id ``id``.
- ``audiocaps_csv``: header ``audiocap_id,youtube_id,start_time,caption``, one row per caption
  (5 per clip in val/test), all kept; row id ``<ytid>_<start:06d>``.
- ``wavcaps_json``: ``{"num_captions_per_audio": 1, "data": [items]}``, every item with ``id``,
  ``caption``, ``audio``, ``duration`` (FreeSound, SoundBible, AudioSet-SL ``as_final.json``,
  BBC); row id ``id`` without a ``.wav`` suffix.

Media files are located by :func:`resolve_media`, either from an explicit path in the row or as
``<media_root>/<id><ext>``.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from reasonaudio.captions.format import CaptionFormatError, parse_caption

ManifestFormat = Literal["vggsound_csv", "mmaudio_tsv", "think_jsonl", "audiocaps_csv", "wavcaps_json"]

MEDIA_EXTENSIONS: tuple[str, ...] = (".mp4", ".mkv", ".webm", ".wav", ".flac")
"""Extensions :func:`resolve_media` tries by default, videos first."""

VGGSOUND_COLUMNS = ("youtube_id", "start_seconds", "label", "split")
AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")

# The released WavCaps JSONs carry this literal instead of a path; users are expected to fill it
# in, so it means "no explicit path" and the file is looked up by id.
WAVCAPS_AUDIO_PLACEHOLDER = "wav_path"


@dataclass(frozen=True)
class ManifestRow:
    """One record of a manifest.

    Args:
        id: clip id; media files are named ``<id><ext>``.
        corpus: corpus name (``vggsound``, ``audiocaps``, ``audioset_sl``, ...).
        manifest: path of the file the row came from, for error messages.
        line: 1-based position of the record: its line in CSV/TSV/JSONL files, its item number in
            the ``data`` list of a WavCaps ``.json`` document (those ship on a single line).
        caption: free-text caption (AudioCaps, WavCaps, MMAudio audio sets) or the VGGSound-Think
            caption text as written in the file (already validated).
        label: class label (VGGSound, MMAudio video sets, optional in Think files).
        start: clip start in the source video, seconds.
        duration: clip duration in seconds, where the manifest gives it.
        split: split name given by the manifest itself (VGGSound ``train`` / ``test``).
        video: explicit video path from the manifest, relative to the media root or absolute.
        audio: explicit audio path from the manifest, relative to the media root or absolute.
    """

    id: str
    corpus: str
    manifest: str
    line: int
    caption: str | None = None
    label: str | None = None
    start: float | None = None
    duration: float | None = None
    split: str | None = None
    video: str | None = None
    audio: str | None = None

    @property
    def location(self) -> str:
        """``<manifest>, line <n>`` (``item <n>`` for a JSON document), for error messages."""
        unit = "item" if Path(self.manifest).suffix == ".json" else "line"
        return f"{self.manifest}, {unit} {self.line}"


def clip_id(youtube_id: str, start: float) -> str:
    """Returns the clip id ``<ytid>_<start:06d>`` used by VGGSound, MMAudio and av-benchmark."""
    return f"{youtube_id}_{int(start):06d}"


def _fail(where: str, column: str, problem: str) -> ValueError:
    """Builds the error for a bad value: ``<where>, column '<column>': <problem>``."""
    return ValueError(f"{where}, column {column!r}: {problem}")


def _text(value: Any, where: str, column: str) -> str:
    """Returns a required, non-empty text value, stripped."""
    if value is None:
        raise _fail(where, column, "missing")
    if not isinstance(value, str):
        raise _fail(where, column, f"expected text, got {value!r}")
    if not value.strip():
        raise _fail(where, column, "empty")
    return value.strip()


def _optional_text(value: Any, where: str, column: str) -> str | None:
    """Returns ``None`` for an absent value, else a non-empty text value."""
    return None if value is None else _text(value, where, column)


def _number(value: Any, where: str, column: str) -> float:
    """Returns a required finite, non-negative number (times and durations)."""
    if value is None:
        raise _fail(where, column, "missing")
    # bool is an int subclass; JSON true/false is never a time.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(where, column, f"expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise _fail(where, column, f"expected a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise _fail(where, column, f"expected a finite non-negative number, got {value!r}")
    return number


def _optional_number(value: Any, where: str, column: str) -> float | None:
    """Returns ``None`` for an absent value, else a finite, non-negative number."""
    return None if value is None else _number(value, where, column)


def _table(
    path: Path, delimiter: str, columns: tuple[str, ...] | None, required: tuple[str, ...]
) -> tuple[tuple[str, ...], list[tuple[int, dict[str, str]]]]:
    """Reads the non-blank records of a CSV/TSV file.

    Args:
        path: the file.
        delimiter: comma or tab.
        columns: column names of a headerless file; ``None`` reads them from the first line.
        required: columns the header must contain (ignored for headerless files).

    Returns:
        The column names and, per record, its 1-based first line and ``{column: value}``.
        Missing trailing values are left out of the dict, so callers report them by column.

    Raises:
        ValueError: on an empty file, a header without a required column, or a record with more
            values than columns.
    """
    # utf-8-sig: spreadsheet exports start with a BOM that would otherwise stick to column 1.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        if columns is None:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}: manifest is empty")
            columns = tuple(name.strip() for name in header)
            for name in required:
                if name not in columns:
                    raise _fail(f"{path}, line 1", name, f"not in the header {list(columns)}")
        records = []
        # A quoted field may span lines; report the line where the record starts.
        next_line = reader.line_num + 1
        for values in reader:
            line, next_line = next_line, reader.line_num + 1
            if not any(value.strip() for value in values):
                continue
            if len(values) > len(columns):
                raise ValueError(
                    f"{path}, line {line}: {len(values)} values for {len(columns)} columns "
                    f"{list(columns)} (unquoted delimiter in a field?)"
                )
            records.append((line, dict(zip(columns, values))))
    if not records:
        raise ValueError(f"{path}: manifest is empty")
    return columns, records


def read_vggsound_csv(path: str | Path, corpus: str = "vggsound") -> list[ManifestRow]:
    """Reads VGGSound's headerless ``vggsound.csv`` (``youtube_id,start_seconds,label,split``).

    Labels containing commas are quoted; youtube ids may begin with ``-``.
    """
    path = Path(path)
    rows = []
    for line, record in _table(path, ",", VGGSOUND_COLUMNS, ())[1]:
        where = f"{path}, line {line}"
        youtube_id = _text(record.get("youtube_id"), where, "youtube_id")
        start = _number(record.get("start_seconds"), where, "start_seconds")
        rows.append(
            ManifestRow(
                id=clip_id(youtube_id, start),
                corpus=corpus,
                manifest=str(path),
                line=line,
                label=_text(record.get("label"), where, "label"),
                start=start,
                split=_text(record.get("split"), where, "split"),
            )
        )
    return rows


def read_mmaudio_tsv(path: str | Path, corpus: str = "mmaudio") -> list[ManifestRow]:
    """Reads an MMAudio training tsv: header ``id<TAB>label`` (video sets) or ``id<TAB>caption``."""
    path = Path(path)
    columns, records = _table(path, "\t", None, ("id",))
    text_column = next((c for c in ("label", "caption") if c in columns), None)
    if text_column is None:
        raise _fail(f"{path}, line 1", "label", f"the header {list(columns)} needs 'label' or 'caption'")
    rows = []
    for line, record in records:
        where = f"{path}, line {line}"
        text = _text(record.get(text_column), where, text_column)
        rows.append(
            ManifestRow(
                id=_text(record.get("id"), where, "id"),
                corpus=corpus,
                manifest=str(path),
                line=line,
                label=text if text_column == "label" else None,
                caption=text if text_column == "caption" else None,
            )
        )
    return rows


def read_audiocaps_csv(path: str | Path, corpus: str = "audiocaps") -> list[ManifestRow]:
    """Reads an AudioCaps split (``audiocap_id,youtube_id,start_time,caption``).

    Every caption row is kept; rows of the same clip share the id ``<ytid>_<start:06d>``.
    """
    path = Path(path)
    rows = []
    for line, record in _table(path, ",", None, AUDIOCAPS_COLUMNS)[1]:
        where = f"{path}, line {line}"
        youtube_id = _text(record.get("youtube_id"), where, "youtube_id")
        start = _number(record.get("start_time"), where, "start_time")
        rows.append(
            ManifestRow(
                id=clip_id(youtube_id, start),
                corpus=corpus,
                manifest=str(path),
                line=line,
                caption=_text(record.get("caption"), where, "caption"),
                start=start,
            )
        )
    return rows


def iter_jsonl(path: Path) -> Iterator[tuple[int, str, dict]]:
    """The objects of a JSONL file with their line numbers and an error location (``"<path>, line N"``);
    blank lines are skipped, a line that is not a JSON object raises ``ValueError`` naming file and line."""
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{path}, line {line}"
            try:
                item = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: invalid JSON ({error.msg})") from None
            if not isinstance(item, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(item).__name__}")
            yield line, where, item


def read_think_jsonl(path: str | Path, corpus: str = "vggsound_think") -> list[ManifestRow]:
    """Reads a VGGSound-Think JSONL file; each caption must parse as a VGGSound-Think caption.

    The caption is kept as written; parse it with :func:`reasonaudio.captions.format.parse_caption`
    for its structure.
    """
    path = Path(path)
    rows = []
    for line, where, item in iter_jsonl(path):
        row_id = _text(item.get("id"), where, "id")
        caption = _text(item.get("caption"), where, "caption")
        try:
            parse_caption(caption)
        except CaptionFormatError as error:
            raise _fail(where, "caption", str(error)) from error
        rows.append(
            ManifestRow(
                id=row_id,
                corpus=corpus,
                manifest=str(path),
                line=line,
                caption=caption,
                label=_optional_text(item.get("label"), where, "label"),
                duration=_optional_number(item.get("duration"), where, "duration"),
                video=_optional_text(item.get("video"), where, "video"),
                audio=_optional_text(item.get("audio"), where, "audio"),
            )
        )
    if not rows:
        raise ValueError(f"{path}: manifest is empty")
    return rows


def read_wavcaps_json(path: str | Path, corpus: str = "wavcaps") -> list[ManifestRow]:
    """Reads a WavCaps JSON document (FreeSound, SoundBible, AudioSet-SL, BBC).

    Follows the WavCaps loader contract: every item has ``id``, ``caption``, ``audio`` and
    ``duration``. AudioSet-SL ids carry a ``.wav`` suffix (``"Yb0RFKhbpFJA.wav"``); it is dropped
    so that ids name files of any extension. An ``audio`` value equal to the released
    placeholder ``"wav_path"`` counts as no explicit path.

    Args:
        path: the ``*_final.json`` file.
        corpus: corpus name recorded in the rows, e.g. ``freesound`` or ``audioset_sl``.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"{path}: manifest is empty")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: invalid JSON ({error.msg})") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise ValueError(f'{path}: expected {{"num_captions_per_audio": 1, "data": [...]}}')
    per_audio = document.get("num_captions_per_audio")
    if per_audio != 1:
        raise _fail(str(path), "num_captions_per_audio", f"expected 1, got {per_audio!r}")
    rows = []
    for number, item in enumerate(document["data"], start=1):
        where = f"{path}, item {number}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(item).__name__}")
        row_id = _text(item.get("id"), where, "id").removesuffix(".wav")
        caption = _text(item.get("caption"), where, "caption")
        audio = _text(item.get("audio"), where, "audio")
        rows.append(
            ManifestRow(
                id=row_id,
                corpus=corpus,
                manifest=str(path),
                line=number,
                caption=caption,
                duration=_number(item.get("duration"), where, "duration"),
                audio=None if audio == WAVCAPS_AUDIO_PLACEHOLDER else audio,
            )
        )
    if not rows:
        raise ValueError(f"{path}: manifest is empty")
    return rows


READERS: dict[ManifestFormat, Callable[..., list[ManifestRow]]] = {
    "vggsound_csv": read_vggsound_csv,
    "mmaudio_tsv": read_mmaudio_tsv,
    "think_jsonl": read_think_jsonl,
    "audiocaps_csv": read_audiocaps_csv,
    "wavcaps_json": read_wavcaps_json,
}
"""Reader per :data:`ManifestFormat`."""


def read_manifest(path: str | Path, fmt: ManifestFormat, corpus: str | None = None) -> list[ManifestRow]:
    """Reads a manifest in the given format (the entry point for configs).

    Args:
        path: the manifest file.
        fmt: one of :data:`ManifestFormat`.
        corpus: corpus name for the rows; defaults to the reader's own (``vggsound``, ...).

    Raises:
        ValueError: for an unknown format, or any problem the reader finds.
    """
    if fmt not in READERS:
        raise ValueError(f"unknown manifest format {fmt!r}; expected one of {sorted(READERS)}")
    reader = READERS[fmt]
    return reader(path) if corpus is None else reader(path, corpus=corpus)


def resolve_media(
    row: ManifestRow, media_root: str | Path, extensions: tuple[str, ...] = MEDIA_EXTENSIONS
) -> Path:
    """Finds the media file of a row.

    An explicit ``video`` or ``audio`` path in the row whose extension is in ``extensions`` wins
    (video first) and must exist; a relative one is taken under ``media_root``. Otherwise the
    file is ``<media_root>/<id><ext>`` for the first extension in ``extensions`` that exists.
    Passing audio-only extensions thus selects a row's audio over its video.

    Args:
        row: the manifest row.
        media_root: folder holding the media files.
        extensions: accepted extensions, lower case with the dot, in order of preference.

    Returns:
        Path of an existing file.

    Raises:
        ValueError: naming the manifest, the line and the missing path(s).
    """
    root = Path(media_root)
    for column, explicit in (("video", row.video), ("audio", row.audio)):
        if explicit is not None and Path(explicit).suffix.lower() in extensions:
            # Joining an absolute path onto root yields the absolute path unchanged.
            path = root / explicit
            if not path.is_file():
                raise _fail(row.location, column, f"media file {path} does not exist")
            return path
    candidates = [root / f"{row.id}{extension}" for extension in extensions]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(path) for path in candidates)
    raise ValueError(f"{row.location}: no media file for id {row.id!r} (tried {tried})")
