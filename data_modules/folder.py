"""Your own videos: a folder (or a JSONL manifest) of clips with their audio and optional captions.

The corpus of ``make finetune DATA=…``. ``source`` is either

- a folder: every video file in it (not recursive; hidden files left out), id = file stem; or
- a JSONL manifest, one object per clip: ``id`` (required), ``video`` (path, relative to the manifest's
  folder; default ``<id>`` + a video extension there) and ``caption`` (optional).

``captions`` (a JSONL of ``id`` + ``caption``, e.g. ``reasonaudio-captions annotate``'s output) adds or
replaces captions by id; records there without a caption (rejected annotations) are ignored. A clip
without a caption gets ``has_text = False``: it is conditioned on the video alone, the prompt
``reasonaudio-generate`` uses for V2A. Captions are kept as written (VGGSound-Think or plain).
Every split (train, predict) is the whole set.
"""
from __future__ import annotations

from pathlib import Path

from reasonaudio.data_modules.clips import ClipDataModule, ClipRecord
from reasonaudio.data_modules.manifests import iter_jsonl

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
"""Files a folder source contributes (``reasonaudio-generate --videos`` takes the same)."""


def read_captions_jsonl(path: str | Path) -> dict[str, str]:
    """``{id: caption}`` of a JSONL file; objects without an ``id`` raise, empty or missing captions are left out."""
    captions = {}
    for _, where, item in iter_jsonl(Path(path)):
        if not isinstance(item.get("id"), str) or not item["id"]:
            raise ValueError(f"{where}: expected a non-empty string 'id'")
        caption = item.get("caption")
        if isinstance(caption, str) and caption.strip():
            captions[item["id"]] = caption
    return captions


def list_clips(source: str | Path) -> list[tuple[str, Path, str]]:
    """``(id, video, caption)`` of a folder or JSONL manifest (module docstring), in order.

    Raises:
        ValueError: no such source, no clips, duplicate ids, or a manifest video that does not exist.
    """
    source = Path(source)
    if source.is_dir():
        clips = [(p.stem, p, "") for p in sorted(source.iterdir())
                 if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")]
    elif source.is_file() and source.suffix == ".jsonl":
        clips = []
        for _, where, item in iter_jsonl(source):
            clip_id = item.get("id")
            if not isinstance(clip_id, str) or not clip_id:
                raise ValueError(f"{where}: expected a non-empty string 'id'")
            if item.get("video"):
                video = Path(item["video"]) if Path(item["video"]).is_absolute() else source.parent / item["video"]
            else:
                found = [source.parent / f"{clip_id}{e}" for e in VIDEO_EXTENSIONS
                         if (source.parent / f"{clip_id}{e}").is_file()]
                video = found[0] if found else source.parent / f"{clip_id}.mp4"
            if not video.is_file():
                raise ValueError(f"{where}: video not found: {video}")
            clips.append((clip_id, video, item.get("caption") or ""))
    else:
        raise ValueError(f"source must be a folder of videos or a .jsonl manifest, got {source}")
    if not clips:
        raise ValueError(f"no videos in {source} (extensions {', '.join(VIDEO_EXTENSIONS)})")
    ids = [c[0] for c in clips]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: duplicate clip ids {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    return clips


class VideoFolderDataModule(ClipDataModule):
    """Clips of a folder or JSONL manifest with optional captions (module docstring).

    Args:
        source: a folder of videos or a JSONL manifest.
        captions: JSONL of ``id`` + ``caption`` adding or replacing captions (None: the source's own).
        **kwargs: :class:`~reasonaudio.data_modules.clips.ClipDataModule` arguments.
    """

    corpus = "folder"

    def __init__(self, source: str, captions: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.source, self.captions = source, captions

    def records(self, split: str) -> list[ClipRecord] | None:
        extra = read_captions_jsonl(self.captions) if self.captions else {}
        return [ClipRecord(id=i, path=str(video), caption=extra.get(i, caption), has_video=True, corpus=self.corpus)
                for i, video, caption in list_clips(self.source)]
