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

**Edit ranking** (``edit_weight`` > 0, for the synchrony reward's network; batches with ``edited_wav``, see
``SyntheticSyncDataModule(edits_per_clip=...)``). Offsets alone teach the head when the audio is *moved*;
a generator's worse candidates mostly *miss or add an impact* instead (docs/post_training.md). So each clip
also gives one aligned pair of its own audio and the same pair with an edited soundtrack (one impact
removed or added, its onset inside the pair's span; the video span and the offset 0 are the same), and the
head is trained to give the real audio the larger zero-offset contrast ``m = logit(0) − mean_c logit(c)``
(the reward's ``score="contrast"``): the logistic ranking loss ``softplus(m_edited − m_real)``, weighted by
``edit_weight`` and added to the cross-entropy. ``train/edit_acc`` and ``val/edit_acc`` are the fractions of
such pairs with ``m_real > m_edited`` (validation: every edit of every held-out clip, in the span that
centres it).

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

from reasonaudio.config import SYNC_FPS, SYNC_STRIDE, SYNC_TOKENS_PER_WINDOW
from reasonaudio.models.sync_offsets import (cut_pairs, grid_pairs, mel_bank, offset_frames, pair_frames, start_range,
                                             window_pairs)
from reasonaudio.models.synchformer import (Synchformer, motion_init_, onset_init_, save_synchformer,
                                            zero_offset_contrast)
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
        edit_weight: weight of the edit ranking loss (module docstring); 0 trains offsets only.
        optimizer: optimiser factory.
        lr_scheduler: schedule stepped every optimisation step.
        export: folder for ``synchformer.safetensors`` and ``metrics.json`` at the end of training
            (``None``: no export).
    """

    def __init__(self, net: Synchformer, pairs_per_clip: int = 8, event_init: bool = True, val_positions: int = 2,
                 edit_weight: float = 0.0, optimizer: OptimizerCallable = torch.optim.AdamW,
                 lr_scheduler: LRSchedulerCallable | None = None, export: str | None = None):
        super().__init__()
        save_system_hparams(self, ["net", "optimizer", "lr_scheduler"])
        if val_positions < 1 or pairs_per_clip < 1:
            raise ValueError(f"val_positions and pairs_per_clip must be >= 1, got {val_positions}, {pairs_per_clip}")
        if edit_weight < 0 or (edit_weight > 0 and net.config.num_offsets % 2 == 0):
            raise ValueError(f"edit_weight must be >= 0 and needs a zero-offset class (odd num_offsets), got "
                             f"{edit_weight} with {net.config.num_offsets} classes")
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
        video = self.clip_video(batch["frames"])
        banks = self.banks(batch["id"], batch["wav"], self._split())
        return self.pair_logits(video, banks, clip, classes, windows)

    def _split(self) -> str:
        return "train" if self.training else "val"

    def clip_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Visual tokens of whole clips, per window: ``[B, T, ...]`` frames → ``[B, W, 8, Dv]``."""
        return self.net.encode_video(frames).unflatten(1, (-1, SYNC_TOKENS_PER_WINDOW))

    def pair_logits(self, video: torch.Tensor, banks: torch.Tensor, clip: torch.Tensor, classes: torch.Tensor,
                    windows: torch.Tensor) -> torch.Tensor:
        """Offset logits ``[P, C]`` of pairs (clip, class, first window) from :meth:`clip_video` tokens and mel
        banks."""
        cfg, s = self.net.config, self.net.config.segments
        dev = video.device
        clip, classes, windows = clip.to(dev), classes.to(dev), windows.to(dev)
        span = torch.arange(s, device=dev)
        video = video[clip[:, None], windows[:, None] + span].flatten(1, 2)  # [P, S·8, Dv]
        banks = banks.to(dev)  # [B, R, 128, 66]
        rows = (SYNC_STRIDE * windows + offset_frames(cfg).to(dev)[classes])[:, None] + SYNC_STRIDE * span  # [P, S]
        keys = clip[:, None] * banks.shape[1] + rows
        distinct, where = torch.unique(keys, return_inverse=True)
        audio = self.net.encode_mel(banks.flatten(0, 1)[distinct][None])[0]  # [U·6, D]
        audio = audio.unflatten(0, (len(distinct), -1))[where].flatten(1, 2)  # [P, S·6, D]
        return self.net.offset_logits(video, audio).float()

    def edit_margins(self, batch: dict[str, Any], video: torch.Tensor, variant: torch.Tensor,
                     windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-offset contrasts ``m`` ``[P]`` of the real and of the edited audio of pairs (clip p, variant, window).

        ``variant[p]`` is the edited soundtrack of clip ``p`` of the batch, ``windows[p]`` the pair's first window.
        """
        split, b = self._split(), len(batch["id"])
        clip = torch.arange(b).repeat(len(variant) // b)
        zero = torch.full_like(clip, (self.net.config.num_offsets - 1) // 2)
        real = self.pair_logits(video, self.banks(batch["id"], batch["wav"], split), clip, zero, windows)
        keys = [f"{batch['id'][c]}#edit{int(e)}" for c, e in zip(clip.tolist(), variant.tolist())]
        edited_wav = batch["edited_wav"][clip.to(batch["edited_wav"].device), variant.to(batch["edited_wav"].device)]
        edited = self.pair_logits(video[clip.to(video.device)], self.banks(keys, edited_wav, split),
                                  torch.arange(len(clip)), zero, windows)
        return zero_offset_contrast(real), zero_offset_contrast(edited)

    def edit_windows(self, times: torch.Tensor, frames: int, generator: torch.Generator | None = None,
                     centred: bool = False) -> torch.Tensor:
        """First window of a zero-offset pair whose span holds the onset at ``times`` (s): drawn uniformly among the
        windows that do, or (``centred``) the one that puts it nearest the span's middle. ``[P]`` long."""
        cfg = self.net.config
        span = pair_frames(cfg)
        zero = torch.full((len(times),), (cfg.num_offsets - 1) // 2)
        last = start_range(cfg, zero, frames)[1] // SYNC_STRIDE  # [P]
        onset = (times.cpu() * SYNC_FPS).round().long()
        hi = torch.minimum(onset // SYNC_STRIDE, last)  # 8w ≤ onset
        lo = torch.minimum(((onset - span + SYNC_STRIDE) // SYNC_STRIDE).clamp(min=0), hi)  # onset ≤ 8w + span − 1
        if centred:
            best = ((onset - span // 2).float() / SYNC_STRIDE).round().long()
            return torch.maximum(lo, torch.minimum(best, hi))
        return lo + (torch.rand(len(times), generator=generator) * (hi - lo + 1)).long().clamp_max(hi - lo)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        clip, classes, windows = window_pairs(self.net.config, len(batch["id"]), batch["frames"].shape[1],
                                              self.hparams.pairs_per_clip)
        video = self.clip_video(batch["frames"])
        logits = self.pair_logits(video, self.banks(batch["id"], batch["wav"], "train"), clip, classes, windows)
        target = classes.to(logits.device)
        loss = F.cross_entropy(logits, target)
        self.log("train/acc", (logits.argmax(-1) == target).float().mean(), batch_size=len(target))
        if self.hparams.edit_weight > 0:
            if "edit_time" not in batch:
                raise ValueError("SyncTrain(edit_weight > 0) needs edited soundtracks in the batch: "
                                 "SyntheticSyncDataModule(edits_per_clip >= 1)")
            b, edits = batch["edit_time"].shape
            variant = torch.randint(0, edits, (b,))
            windows = self.edit_windows(batch["edit_time"].cpu()[torch.arange(b), variant], batch["frames"].shape[1])
            real, edited = self.edit_margins(batch, video, variant, windows)
            loss = loss + self.hparams.edit_weight * F.softplus(edited - real).mean()
            self.log("train/edit_acc", (real > edited).float().mean(), batch_size=b)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(target))
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
        if "edit_time" in batch:
            edits = batch["edit_time"].shape[1]
            variant = torch.arange(edits).repeat_interleave(b)  # every edit of every clip
            times = batch["edit_time"].cpu().T.reshape(-1)
            windows = self.edit_windows(times, batch["frames"].shape[1], centred=True)
            real, edited = self.edit_margins(batch, self.clip_video(batch["frames"]), variant, windows)
            self.log("val/edit_acc", (real > edited).float().mean(), prog_bar=True, batch_size=len(real),
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
