"""Exact resume and preemption: every training step's randomness is a function of (seed, rank, batch);
SIGTERM / SIGUSR1 write ``last.ckpt`` after the step under way and end the run; checkpoint writes are atomic.

``reasonaudio fit`` adds this callback to every stage (a forced ``resume`` argument group in the CLI, like
``checkpoint``), so a new stage is covered without configuration.

**Randomness.** Before each training batch the ``torch`` (CPU and every CUDA device), ``numpy`` and
``random`` generators are seeded from ``(seed, rank, batch index)``, the batch index being Lightning's
count of training batches, which the checkpoint restores. So the noise, flow times, condition-dropout
masks, crops and negatives a step draws do not depend on what ran before it in this process: validation,
sampling callbacks, the sanity check, iterator start-up. The checkpoint also carries the generator
states at save time (restored on load, for anything that draws before the first batch). The data's
part (order, position within the epoch, per-item draws, worker seeds) is
``reasonaudio.data_modules.resumable.ResumableLoader``'s state, which Lightning saves with the fit loop.

**Preemption.** On SIGTERM or SIGUSR1 (SLURM's warning signal, ``#SBATCH --signal=SIGUSR1@120``) this
callback's handler (in place of Lightning's) notes the signal; at the end of the training batch under
way (or the next one, when it came during validation) ``last.ckpt`` is written next to the other
checkpoints and the run ends through Lightning's SIGTERM path (exit status 0); under SLURM, SIGUSR1 also
requeues the job (``scontrol requeue``) and the requeued job resumes with ``fit --ckpt_path last``.
Tested in one process; under DDP the ranks may see the signal at different batches (not handled).

**The last step.** ``FinalStepCheckpoint`` (the CLI's ``checkpoint`` group) writes ``last.ckpt`` when fitting
ends unless that step was already saved. Lightning alone writes it at the end only when it wrote none before, so
a 1,500-step run with ``every_n_train_steps: 1000`` ended with step 1,000's weights in ``last.ckpt``.

**Atomic writes.** ``AtomicCheckpointIO`` writes ``<name>.tmp-<pid>`` in the checkpoint's folder,
fsyncs it and renames it over the target, so a kill during a save leaves the previous file whole.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from reasonaudio.data_modules.resumable import ResumableLoader, derive_seed

MODEL_STREAM = 0
"""Seed-sequence tag of the training steps' draws (the data streams use
``reasonaudio.data_modules.resumable.DATA_STREAM``)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target's folder, fsync, then an atomic rename over the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself
        finally:
            os.close(fd)


def rng_states() -> dict[str, Any]:
    """The ``torch`` (CPU, CUDA), ``numpy`` and ``random`` generator states, as tensors and Python numbers
    (so ``torch.load(weights_only=True)``, Lightning's default, reads them)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                      int(has_gauss), float(gauss)],
            "python": random.getstate(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` returned (CUDA states only when as many devices are visible)."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    cuda = states.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def seed_step(seed: int, rank: int, batch: int) -> None:
    """Seed every generator for training batch ``batch`` of rank ``rank``."""
    s = derive_seed(seed, MODEL_STREAM, rank, batch)
    torch.manual_seed(s)  # CPU and all CUDA devices
    np.random.seed(s % 2**32)
    random.seed(s)


class ExactResume(Callback):
    """Per-batch seeding, generator states in checkpoints, SIGTERM/SIGUSR1 → ``last.ckpt`` and exit, atomic saves.

    Args:
        seed: the seed of the training steps' draws; None: the resumed checkpoint's, else the run's
            ``seed_everything`` value (``PL_GLOBAL_SEED``), else 0.
        requeue: on SIGUSR1 under SLURM (``SLURM_JOB_ID`` set), requeue the job after writing ``last.ckpt``.
    """

    def __init__(self, seed: int | None = None, requeue: bool = True):
        self.seed = seed
        self.requeue = requeue
        self._signal: int | None = None
        self._restored_seed: int | None = None
        self._saved_step: int | None = None

    def _seed(self) -> int:
        if self.seed is not None:
            return self.seed
        if self._restored_seed is not None:  # a resumed run keeps drawing from the run it continues
            return self._restored_seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if stage == "fit" and hasattr(signal, "SIGUSR1"):
            # Registered before Lightning's own handlers (trainer._run), so Lightning's SLURM handler, which
            # would save mid-step to default_root_dir, stays out; Lightning still composes its SIGTERM handler.
            signal.signal(signal.SIGUSR1, self._on_signal)
        self._signal = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning's SIGTERM handler (registered after setup) would end the run at the next batch end even when
        # the signal came after this callback's check there, without a checkpoint; this one defers to that check.
        self._sigterm = signal.signal(signal.SIGTERM, self._on_signal)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) == self._on_signal:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        if getattr(self, "_sigterm", None) is not None and signal.getsignal(signal.SIGTERM) == self._on_signal:
            signal.signal(signal.SIGTERM, self._sigterm)
            self._sigterm = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A trainer that takes fewer batches per epoch than the loader has (limit_train_batches) ends the
        # loader's pass early; the loader must know, to tell a finished pass from one to continue.
        loaders = trainer.train_dataloader
        loaders = loaders.values() if isinstance(loaders, dict) else loaders if isinstance(loaders, (list, tuple)) \
            else [loaders]
        for loader in loaders:
            if isinstance(loader, ResumableLoader) and trainer.num_training_batches < len(loader):
                loader.epoch_length = int(trainer.num_training_batches)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        seed_step(self._seed(), trainer.global_rank, trainer.fit_loop.epoch_loop.batch_progress.total.ready)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._signal is None:
            return
        usr1 = self._signal != signal.SIGTERM
        self._save_last(trainer, signal.Signals(self._signal).name)
        job = os.environ.get("SLURM_JOB_ID")
        if usr1 and self.requeue and job and trainer.is_global_zero:
            array = os.environ.get("SLURM_ARRAY_JOB_ID")
            job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else job
            result = subprocess.call(["scontrol", "requeue", job])
            (rank_zero_info if result == 0 else rank_zero_warn)(f"[resume] scontrol requeue {job}: exit status {result}")
        # Lightning's SIGTERM path ends the run right after this batch's logging (SystemExit, status 0); with
        # should_stop instead, the epoch's end would run and later checkpoints would record a finished epoch
        # whose batches the loader has not given.
        trainer._signal_connector.received_sigterm = True

    def _save_last(self, trainer: Trainer, why: str) -> None:
        ckpt = trainer.checkpoint_callback
        folder = Path(ckpt.dirpath) if ckpt is not None and ckpt.dirpath else Path(trainer.default_root_dir)
        path = folder / "last.ckpt"
        trainer.save_checkpoint(path)
        self._saved_step = trainer.global_step
        rank_zero_info(f"[resume] {why}: wrote {path} after step {trainer.global_step}; "
                       "resume with `fit --ckpt_path last`")

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self._seed(), "rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_seed = int(state_dict["seed"])
        set_rng_states(state_dict["rng"])


class FinalStepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` holds the step at which fitting ended.

    Lightning (2.6) writes ``last.ckpt`` at the end of training only if it has written none before: after a save at
    ``every_n_train_steps`` the final steps of a run were missing from it, and stages that read ``last.ckpt`` (the
    demo's VAE and vocoder) or resume from it (``--ckpt_path last``) got the earlier weights. A run stopped by a signal
    ends through ``ExactResume``, which writes ``last.ckpt`` itself.
    """

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.save_last and trainer.global_step > 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        else:
            super().on_train_end(trainer, pl_module)
