"""A training ``DataLoader`` whose position is part of the checkpoint, so a resumed run sees the same batches.

``ResumableLoader`` is a ``torch.utils.data.DataLoader`` with Lightning's ``state_dict`` /
``load_state_dict`` interface (Lightning saves it in the fit loop's state and restores it before the
first batch after a resume). What makes an epoch's batches a function of ``(seed, epoch)`` alone:

- **Order.** At the start of each pass the sampler's generator is re-seeded from ``(seed, epoch)``
  (any sampler that draws from a ``generator`` attribute: ``RandomSampler``, ``WeightedRandomSampler``;
  found through Lightning's ``DistributedSamplerWrapper`` too). ``epoch`` counts the passes started.
- **Within-epoch offset.** The state is ``{epoch, batches}``: the pass and how many of its batches
  the training loop has taken (counted in the main process, so worker prefetching does not count).
  A restored loader skips that many index batches in its next pass without loading them; under DDP
  they are this rank's batches, so the skip is per rank as the sampler shards.
- **Item randomness** (e.g. the feature cache's posterior sample): every batch is fetched with the
  ``torch`` / ``numpy`` / ``random`` generators seeded from ``(seed, epoch, batch, rank)``, in the worker
  or, without workers, in the main process (whose generators are put back afterwards). So it does
  not depend on which worker fetches the batch, nor on how many batches that worker fetched before.
- **Workers** get ``base_seed = f(seed, epoch, rank)`` (the loader's own generator), so worker ``w``'s
  seed is ``f(seed, epoch, rank) + w``, as torch derives it.

The model's randomness (noise, timesteps, dropout) is ``reasonaudio.callbacks.resume.ExactResume``'s part.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

DATA_STREAM = 1
"""Seed-sequence tags keeping the streams apart (order, workers, items; model steps use their own)."""
ORDER, WORKERS, ITEMS = 0, 1, 2


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integer keys (numpy ``SeedSequence``: well mixed, no collisions by sum)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@contextmanager
def seeded_generators(seed: int) -> Iterator[None]:
    """Seed ``torch`` (CPU), ``numpy`` and ``random`` from ``seed`` inside the block; restore them after it."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


class SeededBatch(list):
    """A batch of indices that carries the seed its items are drawn with (pickles to workers with it)."""

    seed: int


class SeededItems(Dataset):
    """Fetches each batch (``__getitems__``) under ``seeded_generators(batch.seed)``; otherwise the dataset itself."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        seed = getattr(indices, "seed", None)
        if seed is None:
            return [self.dataset[i] for i in indices]
        with seeded_generators(seed):
            return [self.dataset[i] for i in indices]


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _order_generator(sampler: Any) -> torch.Generator | None:
    """The generator a sampler draws its order from (through Lightning's ``DistributedSamplerWrapper``)."""
    inner = getattr(getattr(sampler, "dataset", None), "_sampler", None)  # DistributedSamplerWrapper
    return getattr(inner if inner is not None else sampler, "generator", None)


class _SkipAndSeed:
    """A loader's index batches for its current pass: the first ``skip`` dropped unloaded, the rest seeded.

    Read when torch's iterator starts or resets (persistent workers), so it always sees the current pass.
    """

    def __init__(self, loader: "ResumableLoader"):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader.batch_sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[SeededBatch]:
        loader = self.loader
        keys = (loader.seed, DATA_STREAM, ITEMS, loader.epoch, _rank())
        for i, indices in enumerate(loader.batch_sampler):  # type: ignore[arg-type]
            if i < loader.skip:
                continue
            batch = SeededBatch(indices)
            batch.seed = derive_seed(*keys, i)
            yield batch


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` (same arguments) whose order, items and position depend only on ``seed``,
    the epoch and the batch index; its ``state_dict`` is the position, which Lightning checkpoints.

    Args:
        dataset: the map-style dataset.
        seed: the data seed (order, item draws, worker seeds).
        first_epoch: the index of this loader's first pass. A loader made anew every ``n`` epochs
            (``reload_dataloaders_every_n_epochs``) passes the trainer's epoch here, so its passes are keyed
            by the trainer's epochs and draw anew; the seed must not carry the epoch (a loader rebuilt on
            resume is made at a later epoch than the one it replaces, and its restored state already says
            which pass it is in, so an epoch in the seed would be counted twice).
        **kwargs: ``DataLoader`` arguments; ``shuffle=True`` without a ``sampler`` draws a ``RandomSampler``
            from a generator of this loader. A given ``sampler`` is re-seeded through its ``generator``.
    """

    def __init__(self, dataset: Dataset, seed: int = 0, first_epoch: int = 0, **kwargs: Any):
        if kwargs.get("batch_size", 1) is None or kwargs.get("batch_sampler") is not None:
            raise ValueError("ResumableLoader batches by batch_size (no batch_sampler, no batch_size=None)")
        if kwargs.pop("shuffle", False) and kwargs.get("sampler") is None:
            kwargs["sampler"] = RandomSampler(dataset, generator=torch.Generator())  # type: ignore[arg-type]
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(SeededItems(dataset), **kwargs)
        self.seed = seed
        if first_epoch < 0:
            raise ValueError(f"first_epoch must be >= 0, got {first_epoch}")
        self.epoch = first_epoch - 1  # the pass under way (first_epoch - 1: none started)
        self.batches_taken = 0
        self.skip = 0  # batches of the pass under way to leave out (set by a restored position)
        self.epoch_length: int | None = None  # batches per epoch when the trainer takes fewer than len(self)
        self._restored = False

    @property
    def _index_sampler(self) -> Any:
        return _SkipAndSeed(self)  # torch's iterators read their index batches from here

    def __iter__(self) -> Iterator[Any]:
        return self._pass()

    def _pass(self) -> Iterator[Any]:
        # Starts at the first next(), after Lightning's epoch hooks (which may set epoch_length).
        length = min(len(self), self.epoch_length or len(self))
        if self._restored and 0 < self.skip < length:
            self.batches_taken = self.skip  # continue the restored pass
        else:
            self.epoch, self.skip, self.batches_taken = self.epoch + 1, 0, 0
        self._restored = False
        order = _order_generator(self.sampler)
        if order is not None:
            order.manual_seed(derive_seed(self.seed, DATA_STREAM, ORDER, self.epoch))
        self.generator.manual_seed(derive_seed(self.seed, DATA_STREAM, WORKERS, self.epoch, _rank()))
        iterator = super().__iter__()  # reads _index_sampler (with the skip) now
        for batch in iterator:
            self.batches_taken += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The pass under way and how many of its batches training has taken."""
        return {"epoch": self.epoch, "batches": self.batches_taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue pass ``epoch`` after its first ``batches`` batches (a finished pass: start the next one)."""
        self.epoch, self.skip, self._restored = int(state["epoch"]), int(state["batches"]), True
        if self.skip == 0:  # nothing of that pass taken yet: run it whole
            self.epoch -= 1
