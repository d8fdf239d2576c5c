"""VAETrain: fits a :class:`~reasonaudio.models.vae.MelVAE` (paper Appendix B.1).

Objective per step (manual optimisation, two optimisers):

* VAE: ``rec + kl_weight · KL [+ transient_weight · transient] + [step ≥ disc_start] · λ_adapt · disc_weight
  · adv``, where ``rec`` is the L1 between mel and reconstruction on valid frames (optionally ``rec / exp(s) + s``
  with a learned scalar log-variance ``s``, Make-An-Audio 2 / LDM), KL is against N(0, I) summed over the latent
  and averaged over the batch, ``transient`` the L1 between the one-hop rises of reconstruction and input
  (onsets; :func:`~reasonaudio.losses.transient_loss`), ``adv`` the least-squares generator loss of a patch
  discriminator, and ``λ_adapt = ‖∇rec‖ / ‖∇adv‖`` at the decoder's last layer (Taming / LDM).
* Discriminator (from ``disc_start``): least-squares loss on real vs reconstructed mels, plus an
  optional R1 penalty on real inputs.

Optionally the synthetic corpus's rain is mixed into a fraction of the training clips (``rain_augment``;
docs/decisions.md "Demo codec and impacts under rain"); validation and the mel statistics see the clips as they are.

Validation logs ``val/l1`` (posterior mean), ``val/kl`` and, with a vocoder, ``val/mrstft`` — the
multi-resolution STFT distance between the input waveform and the vocoded reconstruction.
``predict`` accumulates per-channel latent statistics (see ``reasonaudio.callbacks.latent_stats``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from reasonaudio.losses import (adaptive_gan_weight, discriminator_loss, generator_adv_loss, kl_divergence,
                                multi_resolution_stft_distance, r1_penalty, transient_loss)
from reasonaudio.models.mel import MelSpectrogram
from reasonaudio.synthetic_world import mix_rain
from reasonaudio.systems.hparams import save_system_hparams


class VAETrain(LightningModule):
    """Mel VAE training system.

    Args:
        net: the VAE (``MelVAE`` or a preset such as ``mel_vae_tiny``).
        discriminator: patch discriminator on mel images (``None`` trains without the GAN term).
        vocoder: optional mel → waveform model (e.g. a BigVGAN) used for validation audio and ``val/mrstft``.
        audio_preset: ``AudioConfig`` preset of the mel front end; must match ``net``'s mel bands.
        kl_weight: weight of the KL term.
        disc_weight: weight of the adversarial term (before the adaptive factor).
        disc_start: step at which the discriminator and the adversarial term switch on.
        learned_logvar: divide the reconstruction loss by a learned scalar variance.
        r1_weight: weight of the R1 penalty on real mels (0 disables it).
        optimizer: optimiser factory for the VAE (and the learned log-variance).
        disc_optimizer: optimiser factory for the discriminator.
        grad_clip: gradient-norm clip for both optimisers (0 disables it).
        mel_stats_batches: training batches used to set the VAE's per-bin mel mean/std before the
            first step when they are still at their identity defaults (0 keeps them).
        rain_augment: fraction of training clips into which the synthetic corpus's rain is mixed
            (:func:`~reasonaudio.synthetic_world.mix_rain`); 0 disables it.
        transient_weight: weight of the onset term, the L1 between the one-hop rises of the reconstruction
            and the input (:func:`~reasonaudio.losses.transient_loss`); 0 disables it.
    """

    def __init__(self, net: nn.Module, discriminator: nn.Module | None = None, vocoder: nn.Module | None = None,
                 audio_preset: str = "s16k", kl_weight: float = 1e-6, disc_weight: float = 0.5,
                 disc_start: int = 10_000, learned_logvar: bool = False, r1_weight: float = 0.0,
                 optimizer: OptimizerCallable = torch.optim.AdamW,
                 disc_optimizer: OptimizerCallable = torch.optim.AdamW, grad_clip: float = 1.0,
                 mel_stats_batches: int = 16, rain_augment: float = 0.0, transient_weight: float = 0.0):
        super().__init__()
        save_system_hparams(self, ["net", "discriminator", "vocoder", "optimizer", "disc_optimizer"])
        self.automatic_optimization = False
        self.net = net
        self.discriminator = discriminator
        self.vocoder = vocoder.eval().requires_grad_(False) if vocoder is not None else None
        self.mel = MelSpectrogram(audio_preset)
        self.optimizer = optimizer
        self.disc_optimizer = disc_optimizer
        self.logvar = nn.Parameter(torch.zeros(())) if learned_logvar else None
        n_mels = self.mel.audio.n_mels
        if net.data_mean.shape[1] != n_mels:
            raise ValueError(f"net expects {net.data_mean.shape[1]} mel bands, preset {audio_preset!r} has {n_mels}")

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Reconstruct the mel of ``wav`` ``[B, S]`` from the posterior mean: ``[B, M, F]``."""
        return self.net(self.mel(wav), sample=False)[0]

    # ------------------------------------------------------------------ training

    def on_fit_start(self) -> None:
        if str(self.trainer.precision).startswith("16"):
            # The discriminator steps its raw optimiser, which a GradScaler would not see.
            raise ValueError(f"{type(self).__name__} supports fp32 and bf16 precision, not {self.trainer.precision!r}")
        net = self.net
        unset = bool((net.data_mean == 0).all() and (net.data_std == 1).all())
        if self.hparams.mel_stats_batches > 0 and unset and self.trainer.datamodule is not None:
            mean, std = self.mel_statistics(self.trainer.datamodule.train_dataloader(), self.hparams.mel_stats_batches)
            net.data_mean.copy_(mean.view_as(net.data_mean))
            net.data_std.copy_(std.view_as(net.data_std))

    @torch.no_grad()
    def mel_statistics(self, loader, max_batches: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-bin mean and std ``[M]`` of the log-mel over valid frames of ``max_batches`` batches (all ranks)."""
        n_mels = self.mel.audio.n_mels
        acc = torch.zeros(3, n_mels, dtype=torch.float64, device=self.device)
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            if batch["wav"].shape[0] == 0:
                continue
            mel, w = self._frames({k: batch[k].to(self.device) for k in ("wav", "wav_mask")})
            acc[0] += (mel * w).sum(dim=(0, 2)).double()
            acc[1] += (mel.pow(2) * w).sum(dim=(0, 2)).double()
            acc[2] += w.sum().double()
        acc = self.trainer.strategy.reduce(acc, reduce_op="sum")
        if float(acc[2, 0]) == 0:
            raise ValueError("VAETrain: no valid mel frames to compute mel statistics from")
        mean = acc[0] / acc[2]
        # A floor of 0.1 log units keeps near-constant bins (e.g. silent bands) from blowing up inputs.
        std = (acc[1] / acc[2] - mean.pow(2)).clamp(min=1e-2).sqrt()
        return mean.float(), std.float()

    def _frames(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mel ``[B, M, F]`` and a valid-frame weight ``[B, 1, F]`` (a frame is valid when its hop is real audio)."""
        mel = self.mel(batch["wav"])
        hop = self.mel.audio.hop_length
        valid = batch["wav_mask"][:, : mel.shape[-1] * hop].reshape(mel.shape[0], -1, hop).all(-1)
        return mel, valid.unsqueeze(1).to(mel.dtype)

    def _rec_loss(self, mel: torch.Tensor, rec: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        l1 = ((rec - mel).abs() * w).sum() / (w.sum() * mel.shape[1]).clamp(min=1)
        return l1 if self.logvar is None else l1 / torch.exp(self.logvar) + self.logvar

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if batch["wav"].shape[0] == 0:
            return  # every item of this batch was skipped (SkippedSampleLogger records them)
        opts = self.optimizers()
        opt_vae, opt_disc = opts if isinstance(opts, list) else (opts, None)
        if self.hparams.rain_augment > 0:
            batch = {**batch, "wav": mix_rain(batch["wav"], self.mel.audio.sample_rate, self.hparams.rain_augment,
                                              batch["wav_mask"])}
        mel, w = self._frames(batch)
        rec, mean, std = self.net(mel, sample=True)
        rec_loss = self._rec_loss(mel, rec, w)
        kl = kl_divergence(mean, 2 * torch.log(std))
        loss = rec_loss + self.hparams.kl_weight * kl
        gan_on = self.discriminator is not None and self.global_step >= self.hparams.disc_start
        logs = {"train/rec": rec_loss, "train/kl": kl}
        if self.hparams.transient_weight > 0:
            logs["train/transient"] = transient = transient_loss(rec, mel, w)
            loss = loss + self.hparams.transient_weight * transient
        if gan_on:
            adv = generator_adv_loss([self.discriminator(rec * w)])[0]
            weight = adaptive_gan_weight(rec_loss, adv, self.net.last_layer) * self.hparams.disc_weight
            loss = loss + weight * adv
            logs.update({"train/adv": adv, "train/adv_weight": weight})
        opt_vae.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self._clip(opt_vae)
        opt_vae.step()
        logs["train/loss"] = loss
        if gan_on:
            real = (mel * w).detach().requires_grad_(self.hparams.r1_weight > 0)
            real_logits = self.discriminator(real)
            d_loss = discriminator_loss([real_logits], [self.discriminator((rec * w).detach())])[0]
            if self.hparams.r1_weight > 0:
                d_loss = d_loss + self.hparams.r1_weight * r1_penalty(real_logits, real)
            opt_disc.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            self._clip(opt_disc)
            # Step the wrapped torch optimiser so that Lightning's global_step counts VAE updates
            # only (one per batch): max_steps, disc_start and val_check_interval then mean batches.
            opt_disc.optimizer.step()
            logs["train/disc"] = d_loss
        self.log_dict(logs, prog_bar=True, batch_size=mel.shape[0])

    def _clip(self, opt) -> None:
        if self.hparams.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Ground truth and reconstruction: mels ``[B, M, F]`` and, with a vocoder, waveforms ``[B, S]``."""
        mel, _ = self._frames(batch)
        rec = self.net(mel, sample=False)[0]
        out = {"mel": mel, "mel_hat": rec, "wav": batch["wav"][:, : mel.shape[-1] * self.mel.audio.hop_length]}
        if self.vocoder is not None:
            out["wav_hat"] = self.vocoder(rec).reshape(rec.shape[0], -1)[:, : out["wav"].shape[1]]
        return out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if batch["wav"].shape[0] == 0:
            return
        mel, w = self._frames(batch)
        rec, mean, std = self.net(mel, sample=False)
        b = mel.shape[0]
        l1 = ((rec - mel).abs() * w).sum() / (w.sum() * mel.shape[1]).clamp(min=1)
        self.log_dict({"val/l1": l1, "val/kl": kl_divergence(mean, 2 * torch.log(std))}, batch_size=b, sync_dist=True)
        if self.vocoder is not None:
            wav_hat = self.vocoder(rec).reshape(b, -1)
            n = min(wav_hat.shape[1], batch["wav"].shape[1])
            self.log("val/mrstft", multi_resolution_stft_distance(wav_hat[:, :n], batch["wav"][:, :n]),
                     batch_size=b, sync_dist=True)

    # ------------------------------------------------------------------ latent statistics

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor] | None:
        """Per-channel sums of posterior means over valid latent frames (reduced by ``LatentStatsWriter``)."""
        if batch["wav"].shape[0] == 0:
            return None
        mel, w = self._frames(batch)
        mean, _ = self.net.encode(mel)  # [B, C, T]
        d = self.net.downsample
        wl = w[..., : mean.shape[-1] * d].reshape(w.shape[0], 1, -1, d).amin(-1)  # [B, 1, T]
        return {"sum": (mean * wl).sum(dim=(0, 2)).double(), "sum_sq": (mean.pow(2) * wl).sum(dim=(0, 2)).double(),
                "count": wl.sum().double()}

    # The vocoder is frozen and rebuilt from its own file, so checkpoints do not carry a copy of it.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("vocoder.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.vocoder is not None:
            checkpoint["state_dict"].update({f"vocoder.{k}": v for k, v in self.vocoder.state_dict().items()})

    def configure_optimizers(self):
        vae_params = list(self.net.parameters()) + ([self.logvar] if self.logvar is not None else [])
        opts = [self.optimizer(vae_params)]
        if self.discriminator is not None:
            opts.append(self.disc_optimizer(self.discriminator.parameters()))
        return opts


def trained_vae(path: str) -> nn.Module:
    """The frozen ``MelVAE`` of a ``VAETrain`` checkpoint (e.g. the ``make latent-stats`` output), in eval mode.

    Use it from YAML as ``vae: {class_path: reasonaudio.systems.vae.trained_vae, init_args: {path: ...}}``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"VAE checkpoint not found: {p}")
    return VAETrain.load_from_checkpoint(p, map_location="cpu").net.eval().requires_grad_(False)


def load_vae_weights(vae: nn.Module, path: str | Path) -> nn.Module:
    """Load the ``net.*`` weights (and latent statistics) of a ``VAETrain`` checkpoint into ``vae``, strictly."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"VAE checkpoint not found: {p}")
    state = torch.load(p, map_location="cpu", weights_only=False)["state_dict"]
    vae.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}, strict=True)
    return vae.eval().requires_grad_(False)
