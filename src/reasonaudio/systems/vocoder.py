"""VocoderTrain: BigVGAN training (paper Appendix B.2; NVIDIA's recipe, notes/pretrained-components.md §1.5).

Per batch, on a random ``segment_size``-sample crop of each clip's valid audio:

* discriminators (from ``disc_start``): least-squares loss of the period discriminator (MPD) and of
  the resolution discriminator (MRD for v1, CQT-D for v2) on real vs generated waveforms;
* generator: ``mel_weight · mel`` (single-scale L1 between log-mels, ×45; or the v2 multi-scale mel
  loss, ×15) plus, from ``disc_start``, both discriminators' least-squares and feature-matching terms;
  optionally ``transient_weight`` × the L1 between the one-hop log-mel rises of output and input.

Optionally the corpus's off-screen rain is mixed into a fraction of the clips before cropping
(``rain_augment``; docs/decisions.md "Demo codec and impacts under rain").

Both optimisers are AdamW (0.8, 0.99) with an exponential learning-rate decay per step (BigVGAN-v2),
gradients clipped by norm. ``global_step`` counts generator updates. Validation logs the full-clip
log-mel L1 and the multi-resolution STFT distance of the resynthesis.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from reasonaudio.losses import (discriminator_loss, feature_matching_loss, generator_adv_loss, mel_l1_loss,
                                multi_resolution_stft_distance, multiscale_mel_loss, transient_loss)
from reasonaudio.models.bigvgan import BigVGAN
from reasonaudio.models.mel import MelSpectrogram
from reasonaudio.synthetic_world import mix_rain
from reasonaudio.systems.hparams import save_system_hparams


def _exponential_decay(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9999996)


class VocoderTrain(LightningModule):
    """GAN vocoder training system.

    Args:
        generator: mel ``[B, M, F]`` → waveform ``[B, 1, F · hop]`` (a ``BigVGAN`` preset).
        period_discriminator: ``MultiPeriodDiscriminator``.
        resolution_discriminator: ``MultiResolutionDiscriminator`` (v1) or ``MultiScaleSubbandCQTDiscriminator`` (v2).
        audio_preset: ``AudioConfig`` preset of the mel input; its hop must equal the generator's upsampling.
        segment_size: training crop in samples (rounded down to whole hops).
        mel_loss: ``"single"`` (L1 between log-mels, v1) or ``"multiscale"`` (v2).
        mel_weight: weight of the mel loss (45 for single-scale, 15 for multi-scale).
        disc_start: step at which the adversarial terms switch on (mel-only regression before).
        grad_clip: gradient-norm clip for both networks (500 in BigVGAN-v2; 0 disables it).
        optimizer: generator optimiser factory.
        disc_optimizer: discriminator optimiser factory.
        lr_scheduler: learning-rate schedule for both optimisers, stepped every batch.
        init_generator_from: a released BigVGAN folder (``config.json`` + ``bigvgan_generator.pt``) whose
            weights replace the generator's when fitting starts; its architecture must match ``generator``.
        transient_weight: weight of the onset term, the L1 between the one-hop rises of the generated and the
            input log-mel (:func:`~reasonaudio.losses.transient_loss`); 0 disables it.
        rain_augment: fraction of training clips into which the synthetic corpus's rain is mixed before
            cropping (:func:`~reasonaudio.synthetic_world.mix_rain`); 0 disables it.
    """

    def __init__(self, generator: nn.Module, period_discriminator: nn.Module, resolution_discriminator: nn.Module,
                 audio_preset: str = "paper", segment_size: int = 8192,
                 mel_loss: Literal["single", "multiscale"] = "single", mel_weight: float = 45.0,
                 disc_start: int = 0, grad_clip: float = 500.0,
                 optimizer: OptimizerCallable = torch.optim.AdamW,
                 disc_optimizer: OptimizerCallable = torch.optim.AdamW,
                 lr_scheduler: LRSchedulerCallable = _exponential_decay, init_generator_from: str | None = None,
                 transient_weight: float = 0.0, rain_augment: float = 0.0):
        super().__init__()
        save_system_hparams(self, ["generator", "period_discriminator", "resolution_discriminator", "optimizer",
                                   "disc_optimizer", "lr_scheduler"])
        self.automatic_optimization = False
        if mel_loss not in ("single", "multiscale"):
            raise ValueError(f"mel_loss must be 'single' or 'multiscale', got {mel_loss!r}")
        self.generator = generator
        self.mpd = period_discriminator
        self.mrd = resolution_discriminator
        self.mel = MelSpectrogram(audio_preset)
        hop = self.mel.audio.hop_length
        if segment_size < hop:
            raise ValueError(f"segment_size {segment_size} is shorter than one hop ({hop})")
        self.segment = segment_size // hop * hop
        self.optimizer, self.disc_optimizer, self.lr_scheduler = optimizer, disc_optimizer, lr_scheduler

    def on_fit_start(self) -> None:
        if str(self.trainer.precision).startswith("16"):
            # The discriminator steps its raw optimiser, which a GradScaler would not see.
            raise ValueError(f"{type(self).__name__} supports fp32 and bf16 precision, not {self.trainer.precision!r}")
        folder = self.hparams.init_generator_from
        if folder and self.global_step == 0:  # a resumed run already holds its own weights

            released = BigVGAN.from_pretrained(folder)
            mismatch = self.generator.load_state_dict(released.state_dict(), strict=False)
            if mismatch.missing_keys or mismatch.unexpected_keys:
                raise ValueError(f"{folder}: released generator does not match the configured one; missing "
                                 f"{mismatch.missing_keys[:10]}, unexpected {mismatch.unexpected_keys[:10]}")

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Vocode: mel ``[B, M, F]`` → waveform ``[B, F · hop]``."""
        return self.generator(mel).flatten(1)

    # ------------------------------------------------------------------ training

    def _crops(self, batch: dict[str, Any]) -> torch.Tensor:
        """A random hop-aligned ``[B, 1, segment]`` crop of each item's valid audio (zero-padded if shorter)."""
        wav, mask = batch["wav"], batch["wav_mask"]
        if self.hparams.rain_augment > 0:
            wav = mix_rain(wav, self.mel.audio.sample_rate, self.hparams.rain_augment, mask)
        hop = self.mel.audio.hop_length
        out = wav.new_zeros(wav.shape[0], self.segment)
        for i in range(wav.shape[0]):
            valid = int(mask[i].sum())
            room = max(0, valid - self.segment) // hop
            start = int(torch.randint(0, room + 1, ())) * hop
            piece = wav[i, start:start + min(self.segment, valid)]
            out[i, : piece.shape[0]] = piece
        return out.unsqueeze(1)

    def _mel_loss(self, y: torch.Tensor, y_hat: torch.Tensor, mel: torch.Tensor,
                  mel_hat: torch.Tensor | None) -> torch.Tensor:
        if self.hparams.mel_loss == "multiscale":
            return multiscale_mel_loss(y_hat.squeeze(1), y.squeeze(1), self.mel.audio.sample_rate)
        return mel_l1_loss(mel_hat, mel)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if batch["wav"].shape[0] == 0:
            return  # every item of this batch was skipped (SkippedSampleLogger records them)
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        y = self._crops(batch)  # [B, 1, T]
        mel = self.mel(y.squeeze(1))  # [B, M, T / hop]
        y_hat = self.generator(mel)  # [B, 1, T]
        adversarial = self.global_step >= self.hparams.disc_start
        logs: dict[str, torch.Tensor] = {}
        if adversarial:
            d_loss = (discriminator_loss(*self.mpd(y, y_hat.detach())[:2])[0]
                      + discriminator_loss(*self.mrd(y, y_hat.detach())[:2])[0])
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            logs["train/grad_norm_d"] = self._clip(list(self.mpd.parameters()) + list(self.mrd.parameters()))
            # The raw optimiser step keeps global_step counting generator updates only.
            opt_d.optimizer.step()
            logs["train/disc"] = d_loss
        # the output's log-mel, taken once for the single-scale loss and the onset term
        needs_mel_hat = self.hparams.mel_loss == "single" or self.hparams.transient_weight > 0
        mel_hat = self.mel(y_hat.squeeze(1)) if needs_mel_hat else None
        mel_loss = self._mel_loss(y, y_hat, mel, mel_hat)
        g_loss = self.hparams.mel_weight * mel_loss
        if self.hparams.transient_weight > 0:
            logs["train/transient"] = transient = transient_loss(mel_hat, mel)
            g_loss = g_loss + self.hparams.transient_weight * transient
        if adversarial:
            _, p_fake, p_fmap_real, p_fmap_fake = self.mpd(y, y_hat)
            _, r_fake, r_fmap_real, r_fmap_fake = self.mrd(y, y_hat)
            adv = generator_adv_loss(p_fake)[0] + generator_adv_loss(r_fake)[0]
            fm = feature_matching_loss(p_fmap_real, p_fmap_fake) + feature_matching_loss(r_fmap_real, r_fmap_fake)
            g_loss = g_loss + adv + fm
            logs.update({"train/gen_adv": adv, "train/feature_matching": fm})
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        logs["train/grad_norm_g"] = self._clip(list(self.generator.parameters()))
        opt_g.step()
        sched_g.step()
        if adversarial:
            sched_d.step()
        logs.update({"train/mel": mel_loss, "train/loss": g_loss})
        self.log_dict(logs, prog_bar=True, batch_size=y.shape[0])

    def _clip(self, params: list[nn.Parameter]) -> torch.Tensor:
        limit = self.hparams.grad_clip if self.hparams.grad_clip > 0 else float("inf")
        return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], limit)

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Full-clip resynthesis: mels ``[B, M, F]`` of input and output, waveforms ``[B, S]``."""
        hop = self.mel.audio.hop_length
        wav = batch["wav"][:, : batch["wav"].shape[1] // hop * hop]
        mel = self.mel(wav)
        wav_hat = self(mel)[:, : wav.shape[1]]
        return {"mel": mel, "mel_hat": self.mel(wav_hat), "wav": wav, "wav_hat": wav_hat}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if batch["wav"].shape[0] == 0:
            return
        rec = self.reconstruct(batch)
        b = rec["wav"].shape[0]
        self.log_dict({"val/mel_l1": mel_l1_loss(rec["mel_hat"], rec["mel"]),
                       "val/mrstft": multi_resolution_stft_distance(rec["wav_hat"], rec["wav"])},
                      batch_size=b, sync_dist=True)

    def configure_optimizers(self):
        opt_g = self.optimizer(self.generator.parameters())
        opt_d = self.disc_optimizer(list(self.mpd.parameters()) + list(self.mrd.parameters()))
        return [opt_g, opt_d], [self.lr_scheduler(opt_g), self.lr_scheduler(opt_d)]


def trained_generator(path: str) -> nn.Module:
    """A vocoder for other stages: a ``VocoderTrain`` checkpoint (``.ckpt``) or a released BigVGAN folder.

    Returned in eval mode with gradients off and weight norm folded (inference form). Use it from YAML as
    ``vocoder: {class_path: reasonaudio.systems.vocoder.trained_generator, init_args: {path: ...}}``.
    """
    p = Path(path)
    if p.is_dir():
        generator = BigVGAN.from_pretrained(p)
    elif p.is_file():
        generator = VocoderTrain.load_from_checkpoint(p, map_location="cpu").generator
    else:
        raise FileNotFoundError(f"vocoder not found: {p} (expected a VocoderTrain .ckpt or a BigVGAN folder)")
    if hasattr(generator, "remove_weight_norm"):
        generator.remove_weight_norm()
    return generator.eval().requires_grad_(False)
