"""FeatureExtraction: the ``features`` stage — frozen encoders turn clip batches into cacheable features.

``reasonaudio predict --config lightning_configs/features.yaml`` runs it over a data module's split;
``reasonaudio.callbacks.feature_writer.FeatureCacheWriter`` stores what ``predict_step`` returns. Per clip:

==================  ===================  ===============================================
key                 shape                meaning
==================  ===================  ===============================================
latent_mean         ``[T, C]``           VAE posterior mean (DiT layout, un-normalised)
latent_std          ``[T, C]``           VAE posterior std
sync                ``[Ts, 768]``        Synchformer tokens (zeros for audio-only clips)
mllm_video          ``[Tm, 3, h, w]``    uint8 frames for the MLLM (kept as inputs: the
                                         query read-out trains, so only the prompt's KV
                                         can be cached — stage ``prefix_kv``)
==================  ===================  ===============================================
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn

from reasonaudio.config import SYNC_DIM, SequenceConfig
from reasonaudio.config import audio_preset as get_audio_preset
from reasonaudio.data_modules.clips import SkippedSample
from reasonaudio.models.mel import MelSpectrogram
from reasonaudio.systems.hparams import save_system_hparams
from reasonaudio.systems.vae import load_vae_weights


class FeatureExtraction(LightningModule):
    """Predict-only system producing the feature cache.

    Args:
        vae: the mel VAE architecture (e.g. ``mel_vae_tiny``); its weights come from ``vae_checkpoint``.
        vae_checkpoint: a ``VAETrain`` checkpoint (ideally the ``make latent-stats`` output, which also carries
            the latent statistics), loaded strictly when the stage starts.
        sync_encoder: Synchformer visual encoder (``SynchformerVisualEncoder``) mapping ``[B, T, 3, H, W]`` uint8
            frames at 25 fps to ``[B, Ts, 768]`` tokens; ``None`` stores no sync tokens.
        sync_checkpoint: the encoder's weights by path: a ``make sync`` export (``synchformer.safetensors``,
            whose recorded config must match ``sync_encoder``'s) or the official ``synchformer_state_dict.pth``;
            its ``vfeat_extractor.`` part is loaded strictly when the stage starts, and the cache records the
            loaded weights' hash (``sync_weights_sha256``), so caches of different weights are never mixed.
        audio_preset: ``AudioConfig`` preset of the VAE's mel front end.
        duration: clip seconds (must match the data module's).
    """

    def __init__(self, vae: nn.Module, vae_checkpoint: str | None = None, sync_encoder: nn.Module | None = None,
                 sync_checkpoint: str | None = None, audio_preset: str = "tiny", duration: float = 8.0):
        super().__init__()
        save_system_hparams(self, ["vae", "sync_encoder"])
        self.vae = vae.eval().requires_grad_(False)
        self.sync_encoder = sync_encoder.eval().requires_grad_(False) if sync_encoder is not None else None
        self.mel = MelSpectrogram(audio_preset)
        self.seq = SequenceConfig(duration, get_audio_preset(audio_preset))

    def setup(self, stage: str) -> None:
        # Weights are loaded here rather than in __init__ so that configs instantiate without them.
        if self.hparams.vae_checkpoint:
            load_vae_weights(self.vae, self.hparams.vae_checkpoint)
        if self.hparams.sync_checkpoint:
            if self.sync_encoder is None:
                raise ValueError("sync_checkpoint is set but there is no sync_encoder to load it into")
            self.sync_encoder.load_checkpoint(self.hparams.sync_checkpoint)

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-clip shapes of the fixed-size arrays (the cache allocates them up front)."""
        shapes = {"latent_mean": (self.seq.latent_len, self.seq.audio.latent_channels),
                  "latent_std": (self.seq.latent_len, self.seq.audio.latent_channels)}
        if self.sync_encoder is not None:
            shapes["sync"] = (self.seq.sync_len, SYNC_DIM)
        return shapes

    def too_short(self, batch: dict[str, Any]) -> list[str | None]:
        """Per item, the ``too_short`` verdict (None when the clip fills ``duration`` seconds).

        Features are stored without masks, so a clip the data module padded would train the model on
        padding as if it were content: such clips are refused (docs/decisions.md, "Short training clips").
        """
        seq, rate = self.seq, self.seq.audio.sample_rate
        verdicts: list[str | None] = []
        for i in range(batch["wav"].shape[0]):
            reason = None
            real = int(batch["wav_mask"][i, : seq.valid_samples].sum())
            if real < seq.valid_samples:
                reason = f"too_short: audio {real / rate:.2f} s < {seq.duration:.2f} s"
            elif bool(batch["has_video"][i]):
                masks = [batch["sync_mask"][i] if "sync_mask" in batch else None,
                         batch["mllm_mask"][i] if batch.get("mllm_mask") else None]
                for mask in masks:  # each stream's frames cover `duration` seconds
                    if mask is not None and not bool(mask.all()):
                        seconds = seq.duration * int(mask.sum()) / mask.numel()
                        reason = f"too_short: video {seconds:.2f} s < {seq.duration:.2f} s"
                        break
            verdicts.append(reason)
        return verdicts

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        if batch["wav"].shape[0] == 0:
            return {"id": [], "skipped": batch["skipped"]}
        verdicts = self.too_short(batch)
        if any(verdicts):
            batch = _refuse(batch, verdicts)
            if batch["wav"].shape[0] == 0:
                return {"id": [], "skipped": batch["skipped"]}
        wav = batch["wav"][:, : self.seq.num_samples]
        if wav.shape[1] != self.seq.num_samples:
            raise ValueError(f"clips have {wav.shape[1]} samples, the features stage expects {self.seq.num_samples} "
                             f"({self.seq.duration} s at {self.seq.audio.name}); align data and model durations")
        mean, std = self.vae.encode(self.mel(wav))  # [B, C, T]
        out: dict[str, Any] = {"id": batch["id"], "skipped": batch["skipped"],
                               "latent_mean": mean.transpose(1, 2).float().cpu(),
                               "latent_std": std.transpose(1, 2).float().cpu()}
        if self.sync_encoder is not None:
            sync = torch.zeros(wav.shape[0], self.seq.sync_len, SYNC_DIM)
            has_video = batch["has_video"]
            if has_video.any():
                tokens = self.sync_encoder(batch["sync_video"][has_video])  # [b, Ts, 768]
                assert tokens.shape[1:] == (self.seq.sync_len, SYNC_DIM), tokens.shape
                sync[has_video.cpu()] = tokens.float().cpu()
            out["sync"] = sync
        if "mllm_video" in batch:
            out["mllm_video"] = batch["mllm_video"]
        return out


def _refuse(batch: dict[str, Any], verdicts: list[str | None]) -> dict[str, Any]:
    """The batch without the items that have a verdict; those join ``batch["skipped"]``."""
    keep = [v is None for v in verdicts]
    paths = batch.get("path") or [""] * len(verdicts)
    refused = [SkippedSample(id=batch["id"][i], path=paths[i], reason=v) for i, v in enumerate(verdicts) if v]
    kept: dict[str, Any] = {"skipped": list(batch["skipped"]) + refused}
    index = torch.tensor(keep, dtype=torch.bool)
    for key, value in batch.items():
        if key == "skipped":
            continue
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == len(keep):
            kept[key] = value[index.to(value.device)]
        elif isinstance(value, list) and len(value) == len(keep):
            kept[key] = [x for x, k in zip(value, keep) if k]
        else:
            kept[key] = value
    return kept
