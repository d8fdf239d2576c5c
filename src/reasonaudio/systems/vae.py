"""VAETrain: fits a :class:`~reasonaudio.models.vae.MelVAE` on audio batches.

Objective (this stage so far): L1 between the mel and its reconstruction on valid frames plus a
KL penalty (weight 1e-6, Make-An-Audio 2). The adversarial term of the paper's Appendix B.1 arrives
with the codec issue. Logged: ``train/loss``, ``train/l1``, ``train/kl``, ``val/l1`` (posterior
mean, no sampling), ``val/kl``.
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from reasonaudio.models.mel import MelSpectrogram


class VAETrain(LightningModule):
    """Mel VAE training system.

    Args:
        net: the VAE (``MelVAE`` or a preset such as ``mel_vae_tiny``).
        audio_preset: ``AudioConfig`` preset of the mel front end; must match ``net``'s mel bands.
        kl_weight: weight of the KL term.
        optimizer: optimizer factory (``torch.optim.AdamW`` by default).
    """

    def __init__(self, net: nn.Module, audio_preset: str = "s16k", kl_weight: float = 1e-6,
                 optimizer: OptimizerCallable = torch.optim.AdamW):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        self.mel = MelSpectrogram(audio_preset)
        self.optimizer = optimizer
        n_mels = self.mel.audio.n_mels
        if getattr(net, "data_mean", torch.zeros(1, n_mels, 1)).shape[1] != n_mels:
            raise ValueError(f"net expects {net.data_mean.shape[1]} mel bands, preset {audio_preset!r} has {n_mels}")

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Reconstruct the mel of ``wav`` ``[B, S]`` from the posterior mean: ``[B, M, F]``."""
        return self.net(self.mel(wav), sample=False)[0]

    def _losses(self, batch: dict[str, Any], sample: bool) -> dict[str, torch.Tensor]:
        mel = self.mel(batch["wav"])  # [B, M, F]
        hop = self.mel.audio.hop_length
        # A frame is valid when its hop of samples is real audio (not padding).
        valid = batch["wav_mask"][:, : mel.shape[-1] * hop].reshape(mel.shape[0], -1, hop).all(-1)  # [B, F]
        rec, mean, logvar = self.net(mel, sample=sample)
        w = valid.unsqueeze(1).float()
        l1 = ((rec - mel).abs() * w).sum() / (w.sum() * mel.shape[1]).clamp(min=1)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2)).mean()
        return {"l1": l1, "kl": kl, "loss": l1 + self.hparams.kl_weight * kl}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if batch["wav"].shape[0] == 0:
            return None  # every item of this batch was skipped (logged by SkippedSampleLogger)
        losses = self._losses(batch, sample=True)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=batch["wav"].shape[0])
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if batch["wav"].shape[0] == 0:
            return
        losses = self._losses(batch, sample=False)
        self.log_dict({"val/l1": losses["l1"], "val/kl": losses["kl"]}, batch_size=batch["wav"].shape[0])

    def configure_optimizers(self):
        return self.optimizer(self.parameters())
