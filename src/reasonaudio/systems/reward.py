"""RewardTrain: the audio-visual alignment classifier behind the synchrony reward (Diff-Foley style).

Batches come from ``CachedFeatureDataModule``: normalised VAE latents ``[B, T, C]`` (a fresh posterior
sample per item) and Synchformer tokens ``[B, Ts, 768]``. The classifier sees windows of
``L = T − ⌊max_shift · rate⌋`` audio frames (2 s of a 4 s clip): the video tokens are put on the audio
frame grid first (``AlignmentClassifier.encode_video``), then cut. Every clip gives three examples
that share one video window starting at frame s:

* **aligned** — its own audio at the same frames ``[s, s + L)`` (label 1);
* **shifted** — its own audio at ``[s + k, s + k + L)`` with |k| drawn from ``min_shift … max_shift``
  seconds, either sign, and s drawn so both windows lie inside the clip (label 0). Both windows
  are plain cuts of the real streams: no padding, no wrap-around seam, nothing but the timing
  tells a shifted example from an aligned one (a circular roll would leave a seam at the wrap
  point, which a classifier learns to spot instead of judging synchrony);
* **swapped** — another clip's audio at the same frames (label 0; the other clip is the next one in
  the batch with a different id).

The loss is the binary cross-entropy with the two negative types weighted ½ each, so both classes
weigh the same. Validation draws the windows from a fixed seed per batch and logs the loss and the
accuracy (P(aligned) > ½ judged correct) per type: ``val/acc_aligned``, ``val/acc_shifted``,
``val/acc_swapped`` and their balanced mean ``val/acc``. With ``export`` the classifier's weights are
written at the end of training as ``<export>/reward.safetensors`` (+ ``config.yaml``), the file
``ClassifierReward(checkpoint=...)`` reads. As a reward the classifier scores whole clips (its
convolutions and mean/max pooling take any length).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from safetensors.torch import save_file
from torch import nn

from reasonaudio.config import audio_preset as get_audio_preset
from reasonaudio.systems.hparams import save_system_hparams

NEGATIVES = ("shifted", "swapped")


def shift_range(num_frames: int, frame_rate: float, min_shift: float, max_shift: float) -> tuple[int, int]:
    """Smallest and largest shift in frames for ``min_shift … max_shift`` seconds (rounded inwards).

    Raises:
        ValueError: no such shift leaves a window of at least one frame in ``num_frames``.
    """
    lo, hi = math.ceil(min_shift * frame_rate - 1e-9), math.floor(max_shift * frame_rate + 1e-9)
    if not 0 < lo <= hi < num_frames:
        raise ValueError(f"shifts of {min_shift}…{max_shift} s do not fit {num_frames} frames at {frame_rate} Hz")
    return lo, hi


def swap_partners(ids: list[str]) -> torch.Tensor:
    """For each item the index of the next item (cyclically) with a different id, ``[B]`` long.

    Raises:
        ValueError: fewer than two distinct clips in the batch.
    """
    b = len(ids)
    if len(set(ids)) < 2:
        raise ValueError(f"swapped negatives need at least two different clips in a batch, got ids {ids}")
    return torch.tensor([next(j % b for j in range(i + 1, i + b) if ids[j % b] != ids[i]) for i in range(b)])


class RewardTrain(LightningModule):
    """Trains an :class:`~reasonaudio.models.reward.AlignmentClassifier` with shifted and swapped negatives.

    Args:
        classifier: the classifier (latents + sync tokens → logit).
        audio_preset: ``AudioConfig`` preset of the latents (sets the frame rate of the shifts).
        min_shift: smallest shift of a shifted negative, seconds.
        max_shift: largest shift, seconds.
        val_seed: seed of the validation shifts.
        optimizer: optimiser factory.
        lr_scheduler: schedule stepped every optimisation step.
        export: folder for ``reward.safetensors`` at the end of training (``None``: no export).
    """

    def __init__(self, classifier: nn.Module, audio_preset: str = "tiny", min_shift: float = 0.2,
                 max_shift: float = 2.0, val_seed: int = 0, optimizer: OptimizerCallable = torch.optim.AdamW,
                 lr_scheduler: LRSchedulerCallable | None = None, export: str | None = None):
        super().__init__()
        save_system_hparams(self, ["classifier", "optimizer", "lr_scheduler"])
        if not 0 < min_shift <= max_shift:
            raise ValueError(f"need 0 < min_shift <= max_shift, got {min_shift}, {max_shift}")
        self.classifier = classifier
        self.frame_rate = get_audio_preset(audio_preset).latent_rate
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler

    def examples(self, batch: dict[str, Any], generator: torch.Generator | None = None
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Audio windows ``[B, L, C]`` of the aligned, shifted and swapped examples, and their video ``[B, L, W]``."""
        audio, sync = batch["latent"], batch["sync"]
        b, t = audio.shape[:2]
        lo, hi = shift_range(t, self.frame_rate, self.hparams.min_shift, self.hparams.max_shift)
        length = t - hi
        size = torch.randint(lo, hi + 1, (b,), generator=generator)
        shift = size * (torch.randint(0, 2, (b,), generator=generator) * 2 - 1)
        # video window start s with both [s, s + L) and [s + k, s + k + L) inside [0, T)
        first = (-shift).clamp_min(0)
        room = (t - length - shift.abs() + 1).clamp_min(1)
        start = first + (torch.rand(b, generator=generator) * room).long().clamp_max(room - 1)
        frames = (start[:, None] + torch.arange(length)).to(audio.device)  # [B, L]
        shift = shift.to(audio.device)
        video = self.classifier.encode_video(sync, t)  # [B, T, W]
        rows = torch.arange(b, device=audio.device)[:, None]
        partner = swap_partners(list(batch["id"])).to(audio.device)
        crops = {"aligned": audio[rows, frames], "shifted": audio[rows, frames + shift[:, None]],
                 "swapped": audio[partner[:, None], frames]}
        return crops, video[rows, frames]

    def _losses(self, examples: dict[str, torch.Tensor], video: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = video.shape[0]
        logits = self.classifier.score(torch.cat(list(examples.values())),
                                       video.repeat(len(examples), 1, 1)).float().view(len(examples), b)
        labels = torch.tensor([1.0, 0.0, 0.0], device=logits.device)[:, None].expand_as(logits)
        weights = torch.tensor([1.0, 0.5, 0.5], device=logits.device)[:, None].expand_as(logits)
        loss = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights).sum() / (2 * b)
        correct = (logits > 0) == (labels > 0.5)
        return loss, {name: correct[i].float().mean() for i, name in enumerate(examples)}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, acc = self._losses(*self.examples(batch))
        b = batch["latent"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log_dict({f"train/acc_{k}": v for k, v in acc.items()}, batch_size=b)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        gen = torch.Generator().manual_seed(self.hparams.val_seed + batch_idx)
        loss, acc = self._losses(*self.examples(batch, gen))
        b = batch["latent"].shape[0]
        self.log("val/loss", loss, prog_bar=True, batch_size=b, sync_dist=True)
        self.log_dict({f"val/acc_{k}": v for k, v in acc.items()}, batch_size=b, sync_dist=True)
        balanced = 0.5 * acc["aligned"] + 0.25 * (acc["shifted"] + acc["swapped"])
        self.log("val/acc", balanced, prog_bar=True, batch_size=b, sync_dist=True)

    def on_train_end(self) -> None:
        if self.hparams.export is None or not self.trainer.is_global_zero:
            return

        out = Path(self.hparams.export)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.classifier.state_dict().items()}
        save_file(state, str(out / "reward.safetensors.tmp"))
        (out / "reward.safetensors.tmp").replace(out / "reward.safetensors")
        plain = json.loads(json.dumps(dict(self.hparams), default=repr))  # configs stay, objects become their repr
        (out / "config.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))

    def configure_optimizers(self):
        optimizer = self.optimizer(self.classifier.parameters())
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.lr_scheduler(optimizer), "interval": "step"}}
