"""Preference groups on disk (``PreferenceStore``) and ``PreferenceDataModule``, which serves them.

A group is one condition (a row of a feature cache) with K candidates sampled from a model, their
noise seeds and their rewards. Layout of a store folder (written by
``reasonaudio.systems.preference_builder.PreferenceDataBuilder``)::

    meta.json              the settings that made the groups (model, reward, K, sampler, seed, threshold);
                           a later run with other settings is refused
    groups/<row:06d>.pt    a kept group: {"id", "row", "seeds" [K] long, "rewards" [K], "latents" [K, T, C]},
                           with "gt_onset_error" / "gt_onset_f1" [K] when the stage was given the ground truth
    dropped/<row:06d>.pt   a group whose reward spread (max − min) was ≤ the threshold: the same without latents
    summary.json           counts, reward and spread statistics, rewritten as groups are added; with ground
                           truth also how the reward's winners and losers score on it (``ground_truth``)

``latents`` are the DiT's normalised latents as sampled. Every file is written to a hidden temporary
name and renamed into place, so a killed run leaves whole groups or none; a rerun skips the rows
that have a file (kept or dropped), so resuming never duplicates a group. Candidate ``k`` of cache
row ``i`` has the seed ``seed + i·K + k`` (distinct everywhere), so a resumed run samples exactly
what an uninterrupted one would.

``PreferenceDataModule`` reads a feature cache and a store: ``predict`` yields the cache's rows that
have no group yet (with their row index), ``fit`` yields kept groups joined with their conditions
(caption, MLLM frames, sync tokens, presence flags) from the cache, and validation reads held-out
caches as ``CachedFeatureDataModule`` does.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler

from reasonaudio.data_modules.features import (CachedFeatureDataset, StoredPrefixTransfer, collate_features,
                                               prefix_stores)
from reasonaudio.data_modules.resumable import ResumableLoader
from reasonaudio.preference_objectives import reward_ranking

META = "meta.json"
SUMMARY = "summary.json"
KEPT = "groups"
DROPPED = "dropped"


def _atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` then rename onto ``path`` (same folder, so the rename is atomic)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    tmp.replace(path)


def ground_truth_of_pairs(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """What the ground truth says of the reward's choices, over groups that carry ``gt_onset_error`` / ``gt_onset_f1``:
    the onset error and F1 of each group's winner (arg-max reward) and loser (arg-min), the winner − loser error
    difference with its standard error, and (``ranking``) :func:`reasonaudio.preference_objectives.reward_ranking`
    over every candidate."""
    best = [int(g["rewards"].argmax()) for g in groups]
    worst = [int(g["rewards"].argmin()) for g in groups]
    err_w = np.array([float(g["gt_onset_error"][i]) for g, i in zip(groups, best)])
    err_l = np.array([float(g["gt_onset_error"][i]) for g, i in zip(groups, worst)])
    diff = err_w - err_l
    return {"pairs": len(groups), "winner_onset_error_s": float(err_w.mean()),
            "loser_onset_error_s": float(err_l.mean()),
            "winner_minus_loser_error_s": float(diff.mean()),
            "winner_minus_loser_error_sem_s": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None,
            "winner_onset_f1": float(np.mean([float(g["gt_onset_f1"][i]) for g, i in zip(groups, best)])),
            "loser_onset_f1": float(np.mean([float(g["gt_onset_f1"][i]) for g, i in zip(groups, worst)])),
            "ranking": reward_ranking([g["rewards"].numpy() for g in groups],
                                      [g["gt_onset_error"].numpy() for g in groups])}


class PreferenceStore:
    """A folder of preference groups (module docstring).

    Args:
        root: the store folder (created on the first write).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Record ``settings`` in ``meta.json``, or refuse if the store was made with other settings."""
        meta = self.root / META
        plain = json.loads(json.dumps(settings, default=str))
        if meta.is_file():
            earlier = json.loads(meta.read_text())
            if earlier != plain:
                changed = sorted(k for k in set(earlier) | set(plain) if earlier.get(k) != plain.get(k))
                raise ValueError(f"{meta}: the groups there were made with other settings ({changed}: "
                                 f"{[earlier.get(k) for k in changed]} vs {[plain.get(k) for k in changed]}); "
                                 "use another folder or delete it")
            return
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(meta, lambda p: p.write_text(json.dumps(plain, indent=2)))

    def _files(self, kind: str) -> list[Path]:
        return sorted((self.root / kind).glob("[0-9]*.pt"))

    def kept(self) -> list[Path]:
        """Files of the kept groups, by row."""
        return self._files(KEPT)

    def dropped(self) -> list[Path]:
        """Files of the dropped groups, by row."""
        return self._files(DROPPED)

    def finished_rows(self) -> set[int]:
        """Cache rows that have a group (kept or dropped)."""
        return {int(p.stem) for p in self.kept() + self.dropped()}

    def write(self, row: int, clip_id: str, seeds: torch.Tensor, rewards: torch.Tensor,
              latents: torch.Tensor | None, ground_truth: dict[str, torch.Tensor] | None = None) -> None:
        """Write one group atomically: kept with ``latents [K, T, C]``, dropped when ``latents`` is None.

        ``ground_truth``: per-candidate scores against the clip's ground truth (``onset_error``,
        ``onset_f1``, each ``[K]``), stored as ``gt_<name>`` when the stage knows the ground truth.
        """
        kind = DROPPED if latents is None else KEPT
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        group = {"id": clip_id, "row": int(row), "seeds": seeds.detach().cpu().long(),
                 "rewards": rewards.detach().cpu().float()}
        for name, values in (ground_truth or {}).items():
            group[f"gt_{name}"] = values.detach().cpu().float()
        if latents is not None:
            group["latents"] = latents.detach().cpu().float().contiguous()
        _atomic_write(folder / f"{int(row):06d}.pt", lambda p: torch.save(group, p))

    @staticmethod
    def load(path: str | Path) -> dict[str, Any]:
        """One group file."""
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a foreign or corrupt file: say which
            raise ValueError(f"cannot read preference group {path}: {err}") from err

    def summary(self) -> dict[str, Any]:
        """Counts and reward statistics over every group; also written to ``summary.json``."""
        groups = [self.load(p) for p in self.kept() + self.dropped()]
        kept = len(self.kept())
        spreads = [float(g["rewards"].max() - g["rewards"].min()) for g in groups]
        rewards = torch.cat([g["rewards"] for g in groups]) if groups else torch.zeros(0)
        out = {"groups": len(groups), "kept": kept, "dropped": len(groups) - kept,
               "reward_mean": float(rewards.mean()) if groups else float("nan"),
               "reward_std": float(rewards.std()) if rewards.numel() > 1 else float("nan"),
               "spread_mean": float(np.mean(spreads)) if spreads else float("nan"),
               "spread_min": float(np.min(spreads)) if spreads else float("nan"),
               "spread_quantiles": ({str(q): float(np.quantile(spreads, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)}
                                    if spreads else {})}
        judged = [g for g in groups[:kept] if "gt_onset_error" in g]  # the kept groups form the pairs
        if judged:
            out["ground_truth"] = ground_truth_of_pairs(judged)
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.root / SUMMARY, lambda p: p.write_text(json.dumps(out, indent=2)))
        return out


class _RowDataset(CachedFeatureDataset):
    """Cache items of chosen rows, with their row index (``row``), latents from the posterior mean."""

    def __init__(self, root: str | Path, rows: list[int] | None = None, prefix_kv: str | None = None):
        super().__init__(root, sample_latent=False, prefix_kv=prefix_kv)
        if rows is not None:
            done = set(self.valid.tolist())
            missing = sorted(set(rows) - done)
            if missing:
                raise ValueError(f"{root}: rows {missing[:10]} are not written in this feature cache")
            self.valid = np.asarray(rows, dtype=np.int64)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = super().__getitem__(i)
        item["row"] = int(self.valid[i])
        return item


class PreferenceGroupDataset(Dataset):
    """Kept groups of a store joined with their conditions from the feature cache.

    Items: the cache item of the group's row (``id``, ``caption``, ``sync``, ``mllm_video``, flags, and
    its data ``latent`` used only for shapes) plus ``latents [K, T, C]``, ``rewards [K]``, ``seeds [K]``.
    """

    def __init__(self, cache: str | Path, store: PreferenceStore, prefix_kv: str | None = None):
        self.files = store.kept()
        if not self.files:
            raise ValueError(f"{store.root}: no kept preference groups (run the preference_data stage first)")
        self.groups = [PreferenceStore.load(p) for p in self.files]
        self.conditions = _RowDataset(cache, [g["row"] for g in self.groups], prefix_kv)
        for g, path in zip(self.groups, self.files):
            cached = self.conditions.cache.rows[g["row"]]["id"]
            if cached != g["id"]:
                raise ValueError(f"{path}: group of {g['id']!r} but row {g['row']} of {cache} is {cached!r}")

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = self.groups[i]
        return {**self.conditions[i], "latents": g["latents"], "rewards": g["rewards"], "seeds": g["seeds"]}


def collate_groups(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``collate_features`` plus ``row [B]`` and, for groups, ``latents [B, K, T, C]``, ``rewards``/``seeds [B, K]``."""
    batch = collate_features(items)
    batch["row"] = torch.tensor([x["row"] for x in items], dtype=torch.long)
    if "latents" in items[0]:
        if len({tuple(x["latents"].shape) for x in items}) != 1:
            raise ValueError("preference groups of one batch must have the same K and latent shape")
        for key in ("latents", "rewards", "seeds"):
            batch[key] = torch.stack([x[key] for x in items])
    return batch


class PreferenceDataModule(StoredPrefixTransfer):
    """Conditions to sample (``predict``) and preference groups to train on (``fit``).

    Args:
        cache: the feature cache whose rows are the conditions.
        groups: the preference store folder.
        val: held-out feature caches for validation.
        batch_size: groups (fit) or conditions (predict) per batch.
        groups_per_epoch: groups drawn (with replacement) per training epoch; default: each kept group
            once, shuffled. Online post-training sets it to ``regenerate every N steps × batch_size``.
        num_workers: DataLoader worker processes.
        seed: sampling seed.
        prefix_kv: name of the stored prefix KV store of ``cache`` and the ``val`` caches (stage ``prefix_kv``):
            the frozen conditioner then skips the prompt's forward pass (as in pretraining).
    """

    def __init__(self, cache: str, groups: str, val: list[str] | None = None, batch_size: int = 8,
                 groups_per_epoch: int | None = None, num_workers: int = 0, seed: int = 0,
                 prefix_kv: str | None = None):
        super().__init__()
        self.prefix_kv = prefix_kv
        self.cache, self.val_roots = cache, list(val or [])
        self.store = PreferenceStore(groups)
        self.batch_size, self.groups_per_epoch = batch_size, groups_per_epoch
        self.num_workers, self.seed = num_workers, seed
        self._epoch = 0

    def use_store(self, root: str | Path) -> None:
        """Train on another store from the next training dataloader on (online post-training)."""
        self.store = PreferenceStore(root)

    def prefix_kv_stores(self) -> list[tuple[Path, dict[str, Any]]]:
        """``(folder, meta)`` of every prefix KV store in use, for the model to check."""
        return prefix_stores([self.cache, *self.val_roots], self.prefix_kv)

    def predict_dataset(self) -> Dataset:
        """Cache rows without a group in the store yet."""
        ds = _RowDataset(self.cache, prefix_kv=self.prefix_kv)
        finished = self.store.finished_rows()
        pending = [r for r in ds.valid.tolist() if r not in finished]
        rank_zero_info(f"[preference_data] {self.cache}: {len(ds)} conditions, {len(ds) - len(pending)} already in "
                       f"{self.store.root}, {len(pending)} to sample")
        return _RowDataset(self.cache, pending, self.prefix_kv)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.predict_dataset(), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate_groups)

    def train_dataloader(self) -> DataLoader:
        ds = PreferenceGroupDataset(self.cache, self.store, self.prefix_kv)
        # A loader reloaded every epoch (online mode) draws anew: its first pass is the trainer's epoch. Not
        # in the seed: a resumed run rebuilds the loader at the restored epoch and the loader's restored state
        # already names its pass, so an epoch added to the seed would shift every later pass's order.
        epoch = self.trainer.current_epoch if self.trainer is not None else self._epoch
        self._epoch += 1
        sampler = RandomSampler(ds, replacement=self.groups_per_epoch is not None,
                                num_samples=self.groups_per_epoch, generator=torch.Generator())
        return ResumableLoader(ds, seed=self.seed, first_epoch=epoch, batch_size=self.batch_size, sampler=sampler,
                               num_workers=self.num_workers, collate_fn=collate_groups)

    def val_dataloader(self) -> DataLoader:
        if not self.val_roots:
            raise ValueError("PreferenceDataModule: no validation caches configured")
        sets = [CachedFeatureDataset(r, sample_latent=False, prefix_kv=self.prefix_kv) for r in self.val_roots]
        return DataLoader(ConcatDataset(sets), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate_features)
