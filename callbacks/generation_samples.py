"""GenerationSampleLogger: sample audio for a few validation clips and log it (audio, mels, captions).

Runs at each validation on the first batch's first ``num_items`` clips, with whatever weights the
system validates with (the EMA weights when the ``EMA`` callback is on). Decoding needs the VAE
(its latent statistics included) and a vocoder, loaded from files the first time they are used.
With ``ground_truth`` folders (synthetic corpora: ``<folder>/gt/<id>.json``), it also logs the
synthetic metrics of the generated audio: ``val/onset_error``, ``val/onset_f1``,
``val/offscreen_presence``, ``val/timbre_agreement``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from callbacks.reconstruction import mel_pair_image


class GenerationSampleLogger(Callback):
    """Logs generated samples of validation clips.

    Args:
        vae: the VAE architecture of the feature cache (e.g. ``mel_vae_tiny``).
        vae_checkpoint: the VAE checkpoint that made the feature cache (``make latent-stats`` output).
        vocoder: a ``VocoderTrain`` checkpoint or a BigVGAN folder.
        num_items: clips per validation.
        steps: Euler steps.
        cfg: guidance scale.
        ground_truth: synthetic corpus folders holding ``gt/<id>.json`` for the validation clips.
        audio_preset: ``AudioConfig`` preset of the codec (sets the sample rate).
    """

    def __init__(self, vae: nn.Module, vae_checkpoint: str, vocoder: str, num_items: int = 2, steps: int = 25, cfg: float = 4.5,
                 ground_truth: list[str] | None = None, audio_preset: str = "tiny"):
        from reasonaudio.config import audio_preset as get_audio_preset

        self.sample_rate = get_audio_preset(audio_preset).sample_rate
        self.vae, self.vae_checkpoint, self.vocoder_path = vae, vae_checkpoint, vocoder
        self.num_items, self.steps, self.cfg = num_items, steps, cfg
        self.ground_truth = [Path(p) for p in ground_truth or []]
        self._decoders = None

    def _decoders_on(self, device):
        if self._decoders is None:
            from reasonaudio.systems.vae import load_vae_weights
            from reasonaudio.systems.vocoder import trained_generator

            self._decoders = (load_vae_weights(self.vae, self.vae_checkpoint), trained_generator(self.vocoder_path))
        return tuple(m.to(device) for m in self._decoders)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        from reasonaudio.generation import latents_to_audio, score_synthetic

        n = min(self.num_items, batch["latent"].shape[0])
        sub = {k: v[:n] for k, v in batch.items()}
        vae, vocoder = self._decoders_on(pl_module.device)
        latents = pl_module.generate(sub, steps=self.steps, cfg=self.cfg, seed=0)
        wavs = latents_to_audio(latents, vae, vocoder)
        sr = self.sample_rate
        gts = [next((d / "gt" / f"{i}.json" for d in self.ground_truth if (d / "gt" / f"{i}.json").exists()), None)
               for i in sub["id"]]
        if gts and all(gts):
            scores = score_synthetic(wavs, sr, gts)
            pl_module.log_dict({f"val/{k}": v for k, v in scores.items()}, batch_size=n)
        tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is None:
            return
        step = trainer.global_step
        mels_gt = vae.decode(vae.unnormalize_latent(sub["latent"].transpose(1, 2)))
        mels = vae.decode(vae.unnormalize_latent(latents.transpose(1, 2)))
        for i, clip_id in enumerate(sub["id"]):
            tb.experiment.add_audio(f"val/generated/{clip_id}", wavs[i].float().cpu(), step, sample_rate=sr)
            tb.experiment.add_image(f"val/generated_mel/{clip_id}", mel_pair_image(mels_gt[i].cpu(), mels[i].cpu()),
                                    step, dataformats="HW")
            tb.experiment.add_text(f"val/caption/{clip_id}", sub["caption"][i] or "(no caption)", step)
