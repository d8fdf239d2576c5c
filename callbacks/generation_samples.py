"""AudioSampleLogger: generated audio, mels and captions of a few validation clips, in TensorBoard.

Runs on rank 0 at each validation on the first batch's first ``num_items`` clips, with whatever
weights the system validates with (the EMA weights when the ``EMA`` callback is on). Metrics of
generated audio are :class:`reasonaudio.callbacks.generation_metrics.GenerationMetrics`' job; this callback only
lets a person look and listen.

Sampled latents become audio through :class:`reasonaudio.systems.codec.AudioDecoder`: the VAE of the
feature cache (its latent statistics included) and a vocoder, loaded from files the first time they
are used.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from reasonaudio.callbacks.reconstruction import mel_pair_image
from reasonaudio.systems.codec import AudioDecoder


class AudioSampleLogger(Callback):
    """Logs generated samples of validation clips (rank 0, TensorBoard).

    Per clip: ``val/generated/<id>`` (audio), ``val/generated_mel/<id>`` (the ground-truth mel above the
    generated one) and ``val/caption/<id>``.

    Args:
        vae: the VAE architecture of the feature cache (e.g. ``mel_vae_tiny``).
        vae_checkpoint: the VAE checkpoint that made the feature cache.
        vocoder: a ``VocoderTrain`` checkpoint or a BigVGAN folder.
        num_items: clips per validation.
        steps: Euler steps.
        cfg: guidance scale.
        seed: noise seed (the same clips get the same noise at every validation).
        audio_preset: ``AudioConfig`` preset of the codec (sets the sample rate).
    """

    def __init__(self, vae: nn.Module, vae_checkpoint: str, vocoder: str, num_items: int = 2, steps: int = 25,
                 cfg: float = 4.5, seed: int = 0, audio_preset: str = "tiny"):
        self.decoder = AudioDecoder(vae, vae_checkpoint, vocoder, audio_preset)
        self.num_items, self.steps, self.cfg, self.seed = num_items, steps, cfg, seed

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is None:
            return
        n = min(self.num_items, batch["latent"].shape[0])
        sub = {k: v[:n] for k, v in batch.items()}
        latents = pl_module.generate(sub, steps=self.steps, cfg=self.cfg, seed=self.seed)
        wavs = self.decoder.audio(latents)
        mels_gt, mels = self.decoder.mel(sub["latent"]), self.decoder.mel(latents)
        step = trainer.global_step
        for i, clip_id in enumerate(sub["id"]):
            tb.experiment.add_audio(f"val/generated/{clip_id}", wavs[i].float().cpu(), step,
                                    sample_rate=self.decoder.sample_rate)
            tb.experiment.add_image(f"val/generated_mel/{clip_id}", mel_pair_image(mels_gt[i].cpu(), mels[i].cpu()),
                                    step, dataformats="HW")
            tb.experiment.add_text(f"val/caption/{clip_id}", sub["caption"][i] or "(no caption)", step)
