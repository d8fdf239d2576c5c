"""LatentStatsWriter: per-channel latent mean/std over a corpus, stored with the VAE checkpoint.

Run after training: ``reasonaudio predict --config <vae run>/config.yaml --ckpt_path <ckpt>
--trainer.callbacks+=reasonaudio.callbacks.latent_stats.LatentStatsWriter --trainer.callbacks.output=<path>``
(or the ``latent_stats`` stage config). The system's ``predict_step`` returns per-batch sums over
valid latent frames; this callback reduces them (across processes too), sets the VAE's
``latent_mean`` / ``latent_std`` buffers and writes a checkpoint that carries them, plus a JSON copy.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class LatentStatsWriter(Callback):
    """Accumulates latent statistics during ``predict`` and saves them.

    Args:
        output: checkpoint path to write (the JSON goes next to it as ``<stem>.json``).
    """

    def __init__(self, output: str):
        self.output = Path(output)
        self._sum = self._sum_sq = None
        self._count = torch.zeros((), dtype=torch.float64)

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if outputs is None:
            return
        s, sq = outputs["sum"].cpu(), outputs["sum_sq"].cpu()
        self._sum = s if self._sum is None else self._sum + s
        self._sum_sq = sq if self._sum_sq is None else self._sum_sq + sq
        self._count += outputs["count"].cpu()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._sum is None:
            raise ValueError("LatentStatsWriter: the predict pass produced no valid latent frames")
        stats = torch.stack([self._sum, self._sum_sq, self._count.expand_as(self._sum)])
        stats = trainer.strategy.reduce(stats.to(pl_module.device), reduce_op="sum").cpu()
        mean = stats[0] / stats[2]
        std = (stats[1] / stats[2] - mean.pow(2)).clamp(min=1e-12).sqrt()
        net = pl_module.net
        net.latent_mean.copy_(mean.view_as(net.latent_mean).to(net.latent_mean))
        net.latent_std.copy_(std.view_as(net.latent_std).to(net.latent_std))
        self.output.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.output)
        if trainer.is_global_zero:
            self.output.with_suffix(".json").write_text(json.dumps(
                {"latent_mean": mean.tolist(), "latent_std": std.tolist(), "frames": int(stats[2][0])}, indent=2))
