"""The trained codec pair — mel VAE and vocoder — that turns the DiT's normalised latents into audio.

One home for decoding latents: generation (``reasonaudio-generate``), the evaluation and sample callbacks,
preference data, post-training validation, the demo and the study all hold an :class:`AudioDecoder`. It takes
each half as a module or as the file that holds it (a ``VAETrain`` checkpoint, a ``VocoderTrain`` checkpoint or a
released BigVGAN folder) and reads files the first time it decodes (or at :meth:`AudioDecoder.load`), so configs
that name it instantiate without weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from reasonaudio.config import audio_preset as get_audio_preset
from reasonaudio.systems.vae import load_vae_weights, trained_vae
from reasonaudio.systems.vocoder import trained_generator


class AudioDecoder:
    """Normalised latents ``[B, T, C]`` → mels ``[B, M, F]`` → waveforms ``[B, S]`` in [-1, 1].

    Args:
        vae: the VAE architecture of the feature cache (e.g. ``mel_vae_tiny``), or a trained VAE when
            ``vae_checkpoint`` is None; None to take the whole model from ``vae_checkpoint``.
        vae_checkpoint: the ``VAETrain`` checkpoint that made the feature cache (``make latent-stats`` output); its
            ``net.*`` weights and latent statistics are loaded strictly into ``vae``.
        vocoder: a ``VocoderTrain`` checkpoint, a BigVGAN folder, or a vocoder module.
        audio_preset: ``AudioConfig`` preset of the codec (sets :attr:`sample_rate`).
    """

    def __init__(self, vae: nn.Module | None = None, vae_checkpoint: str | Path | None = None,
                 vocoder: str | Path | nn.Module | None = None, audio_preset: str = "tiny"):
        if vae is None and vae_checkpoint is None:
            raise ValueError("decoding needs a VAE: set vae, vae_checkpoint or both")
        if vocoder is None:
            raise ValueError("decoding needs a vocoder (a VocoderTrain checkpoint or a BigVGAN folder)")
        self.sample_rate = get_audio_preset(audio_preset).sample_rate
        self._vae, self._vae_checkpoint, self._vocoder = vae, vae_checkpoint, vocoder
        self._loaded: tuple[nn.Module, nn.Module] | None = None

    def load(self) -> AudioDecoder:
        """Read the files now (where they lie; nothing is moved), so a missing file fails here."""
        self._read()
        return self

    def models(self, device: torch.device | str = "cpu") -> tuple[nn.Module, nn.Module]:
        """``(vae, vocoder)`` on ``device``, read from their files on first use."""
        return tuple(m.to(device) for m in self._read())

    def _read(self) -> tuple[nn.Module, nn.Module]:
        if self._loaded is None:
            if self._vae_checkpoint is None:
                vae = self._vae
            elif self._vae is None:
                vae = trained_vae(str(self._vae_checkpoint))
            else:
                vae = load_vae_weights(self._vae, self._vae_checkpoint)
            vocoder = self._vocoder if isinstance(self._vocoder, nn.Module) else trained_generator(str(self._vocoder))
            self._loaded = (vae, vocoder)
        return self._loaded

    @torch.no_grad()
    def mel(self, latents: torch.Tensor) -> torch.Tensor:
        """Undo the DiT's latent normalisation and decode: ``[B, T, C]`` → mels ``[B, M, F]``."""
        vae, _ = self.models(latents.device)
        return vae.decode(vae.unnormalize_latent(latents.transpose(1, 2)))

    @torch.no_grad()
    def audio(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, T, C]`` normalised latents → waveforms ``[B, T · downsample · hop]`` in [-1, 1]."""
        _, vocoder = self.models(latents.device)
        return vocoder(self.mel(latents)).flatten(1).clamp(-1.0, 1.0)

    __call__ = audio
