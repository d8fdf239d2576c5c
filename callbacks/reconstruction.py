"""ReconstructionLogger: ground truth vs reconstruction to TensorBoard (audio and mel images).

Works with any system that has ``reconstruct(batch) -> {"mel", "mel_hat", "wav", ["wav_hat"]}``
(``VAETrain``, ``VocoderTrain``). Mels are shown as one image, ground truth above reconstruction,
with a shared colour scale; audio is logged at the system's sample rate.
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger


def mel_pair_image(mel: torch.Tensor, mel_hat: torch.Tensor) -> torch.Tensor:
    """Stack two ``[M, F]`` mels (low frequencies at the bottom) into one ``[2M + 1, F]`` image in [0, 1]."""
    lo, hi = float(mel.min()), float(mel.max())
    scale = lambda m: ((m - lo) / max(hi - lo, 1e-6)).clamp(0, 1).flip(0)  # noqa: E731
    sep = torch.ones(1, mel.shape[1])
    return torch.cat([scale(mel), sep, scale(mel_hat)], dim=0)


class ReconstructionLogger(Callback):
    """Logs the first ``num_items`` items of the first validation batch.

    Args:
        num_items: items to log per validation run.
    """

    def __init__(self, num_items: int = 2):
        self.num_items = num_items

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero or batch["wav"].shape[0] == 0:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        rec = pl_module.reconstruct(batch)
        writer, step, sr = loggers[0].experiment, trainer.global_step, pl_module.mel.audio.sample_rate
        for i in range(min(self.num_items, rec["mel"].shape[0])):
            key = batch["id"][i]
            writer.add_image(f"val/mel/{key}", mel_pair_image(rec["mel"][i].float().cpu(), rec["mel_hat"][i].float().cpu()),
                             step, dataformats="HW")
            writer.add_audio(f"val/audio_gt/{key}", rec["wav"][i].float().cpu().clamp(-1, 1), step, sample_rate=sr)
            if "wav_hat" in rec:
                writer.add_audio(f"val/audio_rec/{key}", rec["wav_hat"][i].float().cpu().clamp(-1, 1), step,
                                 sample_rate=sr)
