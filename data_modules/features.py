"""The feature cache: its on-disk format, a reader, and ``CachedFeatureDataModule`` for training from it.

Layout of a cache folder (written by ``reasonaudio.callbacks.feature_writer.FeatureCacheWriter``)::

    meta.json            {"num_clips", "arrays": {name: [per-clip shape]}, "source": ..., "latent_stats": ...}
    index.jsonl          one row per clip, in row order: id, caption, label, has_video, corpus
    <name>.f32           float32 memmap [num_clips, *shape] per fixed-size array (latent_mean, latent_std, sync)
    done.u8              uint8 memmap [num_clips]: 1 once a clip's row is written
    mllm/<row>.npy       uint8 [Tm, 3, h, w] MLLM frames (video clips only; sizes vary with aspect ratio)
    skipped.tsv          clips that could not be decoded: id, path, reason
    sync_encoder.pt      the Synchformer visual encoder's weights that made ``sync`` (for generation)
    prefix_kv/<name>/    optional stored prefix KV caches of one MLLM (stage ``prefix_kv``,
                         ``reasonaudio.models.prefix_kv``): meta.json + <row>.safetensors

Rows are fixed by the source's record order, so an interrupted extraction resumes by filling the
rows whose ``done`` flag is still 0 (data modules skip the others with ``skip_done_in``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from reasonaudio.data_modules.resumable import ResumableLoader
from reasonaudio.data_modules.sampling import check_weights, corpus_sampler
from reasonaudio.models.prefix_kv import clip_stamp, load_prefix, read_meta

META = "meta.json"
INDEX = "index.jsonl"
DONE = "done.u8"
SYNC_WEIGHTS = "sync_encoder.pt"
SYNC_HASH = "sync_weights_sha256"
"""meta.json key: ``weights_hash()`` of the Synchformer visual encoder that made ``sync``."""
PREFIX_KV = "prefix_kv"


class FeatureCache:
    """Read access to a cache folder (memory-mapped; cheap to open in every worker).

    Args:
        root: the cache folder.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / META).is_file():
            raise FileNotFoundError(f"not a feature cache (no {META}): {self.root}")
        self.meta = json.loads((self.root / META).read_text())
        self.rows = [json.loads(line) for line in (self.root / INDEX).read_text().splitlines() if line.strip()]
        n = self.meta["num_clips"]
        if len(self.rows) != n:
            raise ValueError(f"{self.root / INDEX}: {len(self.rows)} rows, meta.json says {n}")
        self.arrays = {name: np.memmap(self.root / f"{name}.f32", dtype=np.float32, mode="r", shape=(n, *shape))
                       for name, shape in self.meta["arrays"].items()}
        self.done = np.memmap(self.root / DONE, dtype=np.uint8, mode="r", shape=(n,))

    def __len__(self) -> int:
        return len(self.rows)

    def done_ids(self) -> set[str]:
        """Ids of the clips whose features are written."""
        return {r["id"] for r, d in zip(self.rows, self.done) if d}

    def written_rows(self) -> np.ndarray:
        """Row numbers of the clips whose features are written."""
        return np.flatnonzero(np.asarray(self.done))

    def frames_shape(self, row: int) -> tuple[int, ...] | None:
        """A row's MLLM frames' shape, read from the file's header only."""
        path = self.root / "mllm" / f"{row}.npy"
        return np.load(path, mmap_mode="r").shape if self.rows[row]["has_video"] and path.exists() else None

    def frames(self, row: int) -> torch.Tensor | None:
        """A row's MLLM frames ``[Tm, 3, h, w]`` uint8, None for audio-only clips (or caches made without them)."""
        path = self.root / "mllm" / f"{row}.npy"
        return torch.from_numpy(np.load(path)) if self.rows[row]["has_video"] and path.exists() else None

    def prefix_store(self, name: str) -> Path:
        """The folder of the prefix KV store ``name``."""
        return prefix_store_dir(self.root, name)


def prefix_store_dir(cache: str | Path, name: str) -> Path:
    """Where a cache keeps its prefix KV store ``name``."""
    return Path(cache) / PREFIX_KV / name


def stored_rows(store: Path) -> set[int]:
    """Rows a prefix KV store holds (one directory listing, not a stat per row)."""
    if not store.is_dir():
        return set()
    with os.scandir(store) as entries:
        return {int(e.name[:-12]) for e in entries if e.name.endswith(".safetensors") and e.name[:-12].isdigit()}


class CachedFeatureDataset(Dataset):
    """Training items from one cache: only rows that were written.

    Each item re-samples its latent from the stored posterior (``mean + std · ε``), so every epoch sees
    a fresh draw, as MMAudio does, and normalises it per channel with the VAE's latent statistics
    stored in ``meta.json`` (the DiT's input space).

    Returns dicts with ``id``, ``latent`` ``[T, C]``, ``sync`` ``[Ts, 768]`` (when cached), ``caption``,
    ``has_video``, ``has_text``, ``corpus`` and, when cached, ``mllm_video`` ``[Tm, 3, h, w]`` uint8 —
    or, with ``prefix_kv``, ``mllm_kv`` (the clip's :class:`~reasonaudio.models.prefix_kv.StoredPrefix`
    from the store of that name, which the conditioner reads instead of the frames).
    """

    def __init__(self, root: str | Path, sample_latent: bool = True, prefix_kv: str | None = None,
                 text: Literal["caption", "label"] = "caption", video: bool = True):
        self.cache = FeatureCache(root)
        self.sample_latent = sample_latent
        self.text, self.video = check_text_and_video(text, video, prefix_kv)
        self.prefix_kv = self.cache.prefix_store(prefix_kv) if prefix_kv else None
        if "latent_stats" not in self.cache.meta:
            raise ValueError(f"{self.cache.root / META} has no latent_stats: the cache was not finished by "
                             "FeatureCacheWriter, so its latents cannot be normalised")
        stats = self.cache.meta["latent_stats"]
        self.latent_mean, self.latent_std = torch.tensor(stats["mean"]), torch.tensor(stats["std"])
        self.valid = self.cache.written_rows()
        if text != "caption" and (lacking := [int(r) for r in self.valid if text not in self.cache.rows[int(r)]]):
            raise ValueError(f"{self.cache.root / 'index.jsonl'}: {len(lacking)} clips have no {text!r} (first: row "
                             f"{lacking[0]}), so they cannot be read with text={text!r}")
        if self.prefix_kv is not None:
            read_meta(self.prefix_kv)  # a clear error when the store is missing or unreadable
            held = stored_rows(self.prefix_kv)
            missing = [int(r) for r in self.valid if int(r) not in held]
            if missing:
                raise FileNotFoundError(f"{self.prefix_kv}: {len(missing)} of {len(self.valid)} clips have no stored "
                                        f"prefix (first: {self.prefix_kv / f'{missing[0]}.safetensors'}); "
                                        "finish it with `make prefix-kv`")

    def __len__(self) -> int:
        return len(self.valid)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.valid[i])
        meta = self.cache.rows[row]
        mean = torch.from_numpy(np.array(self.cache.arrays["latent_mean"][row]))
        latent = mean
        if self.sample_latent:
            std = torch.from_numpy(np.array(self.cache.arrays["latent_std"][row]))
            latent = mean + std * torch.randn_like(std)
        latent = (latent - self.latent_mean) / self.latent_std  # [T, C]
        caption = str(meta[self.text])
        item = {"id": meta["id"], "latent": latent, "caption": caption, "has_video": meta["has_video"] and self.video,
                "has_text": bool(caption.strip()), "corpus": meta.get("corpus", "")}
        if "sync" in self.cache.arrays:
            item["sync"] = torch.from_numpy(np.array(self.cache.arrays["sync"][row]))
        if self.prefix_kv is not None:
            item["mllm_kv"] = stored = load_prefix(self.prefix_kv / f"{row}.safetensors")
            expected = clip_stamp(meta["id"], meta["caption"], self.cache.frames_shape(row))
            if stored.clip != expected:
                raise ValueError(f"{stored.source}: stale stored prefix, made from {stored.clip} but the cache's row {row} "
                                 f"is now {expected}; rebuild the store with `make prefix-kv`")
        elif self.video and (frames := self.cache.frames(row)) is not None:
            item["mllm_video"] = frames
        return item


def check_text_and_video(text: str, video: bool, prefix_kv: str | None) -> tuple[str, bool]:
    """The ``text`` / ``video`` options of the feature datasets, checked: a stored prefix KV was made from the
    captions and the frames, so it cannot stand for another text or for no video."""
    if text not in ("caption", "label"):
        raise ValueError(f"text must be 'caption' or 'label', got {text!r}")
    if prefix_kv and (text != "caption" or not video):
        raise ValueError(f"prefix_kv {prefix_kv!r} was stored from the captions and the videos: it cannot be used with "
                         f"text={text!r}, video={video}; set prefix_kv: null")
    return text, bool(video)


def collate_features(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors (``latent`` ``[B, T, C]``, ``sync`` ``[B, Ts, 768]``), keep strings and frames as lists."""
    batch: dict[str, Any] = {k: [x[k] for x in items] for k in ("id", "caption", "corpus")}
    batch["latent"] = torch.stack([x["latent"] for x in items])
    batch["has_video"] = torch.tensor([x["has_video"] for x in items], dtype=torch.bool)
    batch["has_text"] = torch.tensor([x["has_text"] for x in items], dtype=torch.bool)
    if all("sync" in x for x in items):
        batch["sync"] = torch.stack([x["sync"] for x in items])
    batch["mllm_video"] = [x.get("mllm_video") for x in items]
    if all("mllm_kv" in x for x in items):
        batch["mllm_kv"] = [x["mllm_kv"] for x in items]
    return batch


class StoredPrefixTransfer(LightningDataModule):
    """Base of data modules whose batches may carry stored prefixes (``mllm_kv``): only their keys/values go
    to the device (non-blocking); ids and positions stay on the CPU, where the conditioner compares them
    with the prompts (no device-to-host syncs per item)."""

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        stored = batch.pop("mllm_kv", None) if isinstance(batch, dict) else None
        batch = super().transfer_batch_to_device(batch, device, dataloader_idx)
        if stored is not None:
            batch["mllm_kv"] = [s.to(device, non_blocking=True) for s in stored]
        return batch


def check_same_sync_weights(caches: list[FeatureCache]) -> None:
    """Refuse caches whose sync tokens came from different Synchformer weights (``meta.json`` ``SYNC_HASH``).

    Caches without sync tokens are not compared; a cache written before hashes were recorded has
    none, and mixing it with a hashed cache is refused too.

    Raises:
        ValueError: two caches disagree; the message names both folders and their hashes.
    """
    with_sync = [c for c in caches if "sync" in c.meta["arrays"]]
    for cache in with_sync[1:]:
        first, this = with_sync[0].meta.get(SYNC_HASH), cache.meta.get(SYNC_HASH)
        if first != this:
            raise ValueError(f"feature caches built with different sync encoder weights must not be mixed: "
                             f"{with_sync[0].root} ({SYNC_HASH} {first}) and {cache.root} ({SYNC_HASH} {this}); "
                             "rebuild both with the same sync_checkpoint")


def prefix_stores(caches: list[str | Path], name: str | None) -> list[tuple[Path, dict[str, Any]]]:
    """``(folder, meta)`` of the prefix KV store ``name`` of each cache ([] without a name)."""
    if not name:
        return []
    stores = [prefix_store_dir(c, name) for c in caches]  # a path only: no need to open each cache
    return [(s, read_meta(s)) for s in stores]


class CachedFeatureDataModule(StoredPrefixTransfer):
    """Trains from one or more caches, mixing them with per-cache weights (e.g. VT2A + T2A).

    Args:
        train: training cache folders.
        val: validation cache folders (latents from the posterior mean, not sampled).
        weights: relative share of each training cache per epoch (default: proportional to size).
        samples_per_epoch: items per training epoch (default: the total size).
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        seed: sampling seed.
        prefix_kv: name of the stored prefix KV store (``<cache>/prefix_kv/<name>``, stage ``prefix_kv``) every
            cache has: items carry ``mllm_kv`` instead of MLLM frames, and the conditioner skips the
            prompt's forward pass. None: the conditioner reads frames and captions live.
        text: the items' text: each clip's ``caption`` or its class ``label`` (Table 8's text formats).
        video: False reads every item as text-to-audio (``has_video`` false: no MLLM frames, null sync
            tokens), e.g. to evaluate text-only generation on video clips' captions (Table 3 at toy scale).
    """

    def __init__(self, train: list[str], val: list[str] | None = None, weights: list[float] | None = None,
                 samples_per_epoch: int | None = None, batch_size: int = 16, num_workers: int = 0, seed: int = 0,
                 prefix_kv: str | None = None, text: Literal["caption", "label"] = "caption", video: bool = True):
        super().__init__()
        self.prefix_kv = prefix_kv
        self.text, self.video = check_text_and_video(text, video, prefix_kv)
        check_weights(weights, len(train))
        self.train_roots, self.val_roots = list(train), list(val or [])
        self.weights = weights
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        options = {"prefix_kv": self.prefix_kv, "text": self.text, "video": self.video}
        self.train_sets = [CachedFeatureDataset(r, **options) for r in self.train_roots]
        self.val_sets = [CachedFeatureDataset(r, sample_latent=False, **options) for r in self.val_roots]
        empty = [r for r, ds in zip(self.train_roots, self.train_sets) if len(ds) == 0]
        if empty:
            raise ValueError(f"feature caches with no written clips: {empty}")
        check_same_sync_weights([ds.cache for ds in [*self.train_sets, *self.val_sets]])

    def prefix_kv_stores(self) -> list[tuple[Path, dict[str, Any]]]:
        """``(folder, meta)`` of every prefix KV store in use, for the model to check."""
        return prefix_stores([*self.train_roots, *self.val_roots], self.prefix_kv)

    def train_dataloader(self) -> DataLoader:
        sampler = corpus_sampler([len(ds) for ds in self.train_sets], self.weights, self.samples_per_epoch, self.seed)
        return ResumableLoader(ConcatDataset(self.train_sets), seed=self.seed, batch_size=self.batch_size, sampler=sampler,
                               num_workers=self.num_workers, collate_fn=collate_features)

    def val_dataloader(self) -> DataLoader:
        if not self.val_sets:
            raise ValueError("CachedFeatureDataModule: no validation caches configured")
        return DataLoader(ConcatDataset(self.val_sets), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate_features)


class CachePromptDataset(Dataset):
    """The MLLM prompts of a cache's written rows (stage ``prefix_kv``): ``id``, ``row``, ``caption``,
    ``has_video``, ``has_text``, ``mllm_video`` (``[Tm, 3, h, w]`` uint8 or None).

    Args:
        cache: the feature cache folder.
        skip_done_in: a prefix KV store folder; rows it already holds are left out (resume).
    """

    def __init__(self, cache: str | Path, skip_done_in: str | Path | None = None):
        self.cache = FeatureCache(cache)
        rows = self.cache.written_rows()
        if skip_done_in is not None:
            held = stored_rows(Path(skip_done_in))
            rows = [r for r in rows if int(r) not in held]
        self.rows = [int(r) for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        meta = self.cache.rows[row]
        frames = self.cache.frames(row)
        if meta["has_video"] and frames is None:
            raise FileNotFoundError(f"{self.cache.root / 'mllm' / f'{row}.npy'}: clip {meta['id']} has video but no "
                                    "MLLM frames; extract the cache with load_mllm_video: true")
        return {"id": meta["id"], "row": row, "caption": meta["caption"], "has_video": frames is not None,
                "has_text": bool(meta["caption"].strip()), "mllm_video": frames}


def collate_prompts(items: list[dict[str, Any]]) -> dict[str, Any]:
    batch: dict[str, Any] = {k: [x[k] for x in items] for k in ("id", "row", "caption", "mllm_video")}
    for k in ("has_video", "has_text"):
        batch[k] = torch.tensor([x[k] for x in items], dtype=torch.bool)
    return batch


class CachePromptDataModule(LightningDataModule):
    """Predict-only: a feature cache's MLLM prompts, for the ``prefix_kv`` stage (resumable).

    Args:
        cache: the feature cache folder.
        name: the store's name; it is written to ``<cache>/prefix_kv/<name>`` (:attr:`store_dir`), and the
            rows already there are skipped.
        batch_size: prompts per batch.
        num_workers: DataLoader worker processes.
    """

    def __init__(self, cache: str, name: str, batch_size: int = 8, num_workers: int = 0):
        super().__init__()
        if not name or "/" in name:
            raise ValueError(f"prefix KV store name must be a plain folder name, got {name!r}")
        self.cache, self.name = Path(cache), name
        self.batch_size, self.num_workers = batch_size, num_workers

    @property
    def store_dir(self) -> Path:
        return prefix_store_dir(self.cache, self.name)

    def setup(self, stage: str | None = None) -> None:
        self.dataset = CachePromptDataset(self.cache, skip_done_in=self.store_dir)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=collate_prompts)
