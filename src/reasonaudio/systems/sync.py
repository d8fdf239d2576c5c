"""SyncTrain: the ``sync`` stage — Synchformer's offset classification on shifted audio-visual pairs.

Batches are whole clips (``reasonaudio.data_modules.sync.SyntheticSyncDataModule``): 25-fps frames ``[B, T, 3, H, H]``
uint8 and 16 kHz audio ``[B, N]``. Every clip gives ``pairs_per_clip`` pairs per step, each a
uniformly drawn offset class c of the head's grid (``config.num_offsets`` classes over
±``config.max_offset`` s) and a video start on a window boundary such that the video span and the
audio span moved by the class offset both lie inside the clip (``models.sync_offsets.window_pairs``).
The clip's visual tokens are computed once and shared by its pairs, and only the distinct audio
windows the pairs use are encoded: on a CPU this makes a pair several times cheaper than cutting
and encoding each one. The loss is the cross-entropy of the offset logits against c,
Synchformer's objective (``offset_type: grid``).

Validation is deterministic: every held-out clip at every class and ``val_positions`` starts
spanning the clip. It logs ``val/loss``, ``val/acc`` (top-1) and ``val/acc_within_one``
(|predicted − true offset| ≤ one class step; LRS3's "±1 class" accuracy in the Synchformer paper).
With ``export``, the whole model (checkpoint key layout, config in the metadata) is written at
the end of training as ``<export>/synchformer.safetensors`` together with ``metrics.json`` (the last
validation's numbers): the file the features stage (``sync_checkpoint``) and DeSync load.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from reasonaudio.config import SYNC_STRIDE, SYNC_TOKENS_PER_WINDOW
from reasonaudio.models.sync_offsets import cut_pairs, grid_pairs, mel_bank, offset_frames, window_pairs
from reasonaudio.models.synchformer import Synchformer, motion_init_, onset_init_, save_synchformer
from reasonaudio.systems.hparams import save_system_hparams

EXPORT_FILE = "synchformer.safetensors"
"""File name of the exported model inside ``export``."""


class SyncTrain(LightningModule):
    """Trains a full :class:`~reasonaudio.models.synchformer.Synchformer` to classify audio-visual offsets.

    Args:
        net: the model (its config sets the windows, the offset grid and the frame size).
        pairs_per_clip: training pairs cut from each clip of a batch.
        event_init: start both patch embeddings as change detectors, the visual tubelets as frame
            differences (:func:`~reasonaudio.models.synchformer.motion_init_`) and the audio patches as
            differences over time (:func:`~reasonaudio.models.synchformer.onset_init_`); for training from
            scratch (with random init the tokens mostly encode the static scene and steady sounds).
        val_positions: video starts per class and held-out clip in validation.
        optimizer: optimiser factory.
        lr_scheduler: schedule stepped every optimisation step.
        export: folder for ``synchformer.safetensors`` and ``metrics.json`` at the end of training
            (``None``: no export).
    """

    def __init__(self, net: Synchformer, pairs_per_clip: int = 8, event_init: bool = True, val_positions: int = 2,
                 optimizer: OptimizerCallable = torch.optim.AdamW, lr_scheduler: LRSchedulerCallable | None = None,
                 export: str | None = None):
        super().__init__()
        save_system_hparams(self, ["net", "optimizer", "lr_scheduler"])
        if val_positions < 1 or pairs_per_clip < 1:
            raise ValueError(f"val_positions and pairs_per_clip must be >= 1, got {val_positions}, {pairs_per_clip}")
        if event_init:
            motion_init_(net.vfeat_extractor)
            onset_init_(net.afeat_extractor)
        self.net = net
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        # (split, clip id) → mel windows at every frame (not trainable). The split is part of the key:
        # corpora number their clips alike (the training and held-out synthetic sets both start at synth_000000).
        self._banks: dict[tuple[str, str], torch.Tensor] = {}
        self.last_val: dict[str, float] = {}

    def banks(self, ids: list[str], wav: torch.Tensor, split: str) -> torch.Tensor:
        """``[B, P, 128, 66]`` mel banks of the clips of ``split`` (computed the first time a clip is seen, then kept)."""
        for i, clip_id in enumerate(ids):
            if (split, clip_id) not in self._banks:
                self._banks[split, clip_id] = mel_bank(self.net, wav[i])
        return torch.stack([self._banks[split, i] for i in ids])

    def logits(self, batch: dict[str, Any], classes: torch.Tensor, starts: torch.Tensor,
               clip: torch.Tensor | None = None) -> torch.Tensor:
        """Offset logits ``[P, C]`` of pairs (class, start) cut from clip ``clip[p]`` of the batch (default p)."""
        clip = torch.arange(len(classes)) if clip is None else clip
        frames = batch["frames"][clip.to(batch["frames"].device)]
        banks = self.banks(batch["id"], batch["wav"], "val")[clip.to(batch["wav"].device)]
        video, mel = cut_pairs(self.net.config, frames, banks, classes, starts)
        return self.net.offset_logits(self.net.encode_video(video), self.net.encode_mel(mel)).float()

    def window_logits(self, batch: dict[str, Any], clip: torch.Tensor, classes: torch.Tensor,
                      windows: torch.Tensor) -> torch.Tensor:
        """Offset logits ``[P, C]`` of :func:`~reasonaudio.models.sync_offsets.window_pairs` pairs."""
        cfg, s = self.net.config, self.net.config.segments
        video = self.net.encode_video(batch["frames"])  # [B, W·8, Dv], the whole clips
        video = video.unflatten(1, (-1, SYNC_TOKENS_PER_WINDOW))  # [B, W, 8, Dv]
        dev = video.device
        clip, classes, windows = clip.to(dev), classes.to(dev), windows.to(dev)
        span = torch.arange(s, device=dev)
        video = video[clip[:, None], windows[:, None] + span].flatten(1, 2)  # [P, S·8, Dv]
        banks = self.banks(batch["id"], batch["wav"], "train" if self.training else "val").to(dev)  # [B, R, 128, 66]
        rows = (SYNC_STRIDE * windows + offset_frames(cfg).to(dev)[classes])[:, None] + SYNC_STRIDE * span  # [P, S]
        keys = clip[:, None] * banks.shape[1] + rows
        distinct, where = torch.unique(keys, return_inverse=True)
        audio = self.net.encode_mel(banks.flatten(0, 1)[distinct][None])[0]  # [U·6, D]
        audio = audio.unflatten(0, (len(distinct), -1))[where].flatten(1, 2)  # [P, S·6, D]
        return self.net.offset_logits(video, audio).float()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        clip, classes, windows = window_pairs(self.net.config, len(batch["id"]), batch["frames"].shape[1],
                                              self.hparams.pairs_per_clip)
        logits = self.window_logits(batch, clip, classes, windows)
        target = classes.to(logits.device)
        loss = F.cross_entropy(logits, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(target))
        self.log("train/acc", (logits.argmax(-1) == target).float().mean(), batch_size=len(target))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        classes, starts = grid_pairs(self.net.config, batch["frames"].shape[1], self.hparams.val_positions)
        b, n = len(batch["id"]), len(classes)
        clip = torch.arange(b).repeat_interleave(n)
        logits = self.logits(batch, classes.repeat(b), starts.repeat(b), clip)
        target = classes.repeat(b).to(logits.device)
        wrong_by = (logits.argmax(-1) - target).abs()
        pairs = b * n
        self.log("val/loss", F.cross_entropy(logits, target), batch_size=pairs, sync_dist=True)
        self.log("val/acc", (wrong_by == 0).float().mean(), prog_bar=True, batch_size=pairs, sync_dist=True)
        self.log("val/acc_within_one", (wrong_by <= 1).float().mean(), prog_bar=True, batch_size=pairs,
                 sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.last_val = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}

    def on_train_end(self) -> None:
        if self.hparams.export is None or not self.trainer.is_global_zero:
            return
        out = Path(self.hparams.export)
        save_synchformer(self.net, out / EXPORT_FILE)
        summary = {"global_step": self.global_step, **self.last_val, "config": self.net.config.to_dict()}
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")

    def configure_optimizers(self):
        optimizer = self.optimizer(self.net.parameters())
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.lr_scheduler(optimizer), "interval": "step"}}
