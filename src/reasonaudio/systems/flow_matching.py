"""FlowMatchingPretrain: the MM-DiT trained with conditional flow matching from the feature cache (paper §4.3).

Per batch (``CachedFeatureDataModule``): latents ``x1 [B, T, C]`` (normalised), Synchformer tokens
``[B, Ts, 768]``, MLLM frames and captions (or, with ``data.prefix_kv``, each clip's stored prompt KV). Text and video are dropped independently with
probability 0.1 (for CFG); the live conditioner reads the remaining video and text out through its
learnable queries (prefix-cached), and the DiT regresses ``x1 − x0`` at ``x_t = (1 − t) x0 + t x1`` with
logit-normal ``t``. The DiT's query tokens count as present when text *or* video survived (they
carry both); its sync tokens when video survived.

Validation: the flow loss at a fixed grid of ``t`` with fixed noise (``val/loss`` and one
``val/loss_t=…`` per time), comparable across runs; with the ``EMA`` callback, from the EMA weights.
``generate`` samples latents with CFG (conditional and unconditional in one batched call).

``compile: true`` (or a dict of :func:`torch.compile` options, e.g. ``{mode: max-autotune}``) compiles every DiT
block in place when the model is configured, on any strategy (``reasonaudio.models.parallel.apply_compile``):
training, validation and sampling then run the compiled blocks, and checkpoint keys, the EMA and exports are
those of the eager network. ``generate(compiled=True)`` instead compiles the whole guided Euler step per shape
(``reasonaudio.compiled_sampler``; CUDA graphs on a GPU).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from safetensors.torch import load_file
from torch import nn

from reasonaudio import flow
from reasonaudio.compiled_sampler import CompiledEulerSampler
from reasonaudio.models.parallel import parallelize
from reasonaudio.schedules import build_lr_scheduler
from reasonaudio.systems.hparams import save_system_hparams


class FlowMatchingPretrain(LightningModule):
    """Flow-matching pretraining system.

    Args:
        net: the velocity network (``MMDiT`` preset, e.g. ``dit_tiny``).
        conditioner: video+text → query tokens ``[B, Nq, D]`` (``MLLMQueryConditioner`` or an ablation).
        text_drop: probability of dropping an item's caption.
        video_drop: probability of dropping an item's video (MLLM frames and sync tokens).
        t_mean: mean of the logit-normal time distribution.
        t_std: std of the logit-normal time distribution.
        val_t_grid: flow times of the validation loss.
        val_noise_seed: seed of the validation noise.
        optimizer: optimiser factory (AdamW (0.9, 0.95) in the configs).
        lr_scheduler: schedule stepped every optimisation step (``RunWarmupStepDecay`` in the configs: it is
            laid out over the run's length, which :func:`~reasonaudio.schedules.build_lr_scheduler` passes).
        compile: compile the DiT blocks (True, or a dict of ``torch.compile`` options, ``{}`` meaning the
            defaults); False: eager.
    """

    def __init__(self, net: nn.Module, conditioner: nn.Module, text_drop: float = 0.1, video_drop: float = 0.1,
                 t_mean: float = 0.0, t_std: float = 1.0,
                 val_t_grid: Sequence[float] = flow.DEFAULT_T_GRID, val_noise_seed: int = 0,
                 optimizer: OptimizerCallable = torch.optim.AdamW, lr_scheduler: LRSchedulerCallable | None = None,
                 compile: bool | dict[str, Any] = False):
        super().__init__()
        save_system_hparams(self, ["net", "conditioner", "optimizer", "lr_scheduler"])
        for name, p in (("text_drop", text_drop), ("video_drop", video_drop)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        if not isinstance(compile, (bool, dict)):
            raise TypeError(f"compile must be a bool or a dict of torch.compile options, got {compile!r}")
        self.compile_options = None if compile is False else {} if compile is True else dict(compile)
        self.compiled_sampler: CompiledEulerSampler | None = None  # made on first generate(compiled=True)
        self.net = net
        self.conditioner = conditioner
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler

    def setup(self, stage: str) -> None:
        # Stored prefix KV (data ``prefix_kv``) must come from this conditioner's backbone; checked before any
        # sharding (configure_model), while the backbone's weights are whole.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        for store, meta in getattr(datamodule, "prefix_kv_stores", list)():
            if not hasattr(self.conditioner, "check_store"):
                raise TypeError(f"{type(self.conditioner).__name__} cannot read stored prefixes ({store}); "
                                "only query conditioners (MLLM, omni, text LLM) can — unset data.prefix_kv")
            self.conditioner.check_store(meta, store)

    def configure_model(self) -> None:
        """Apply the trainer's parallelism (FSDP2 sharding, activation checkpointing) and the DiT's compilation
        (``reasonaudio.models.parallel``)."""
        parallelize(self, self.compile_options)

    def conditions(self, batch: dict[str, Any], has_text: torch.Tensor, has_video: torch.Tensor) -> dict[str, Any]:
        """Network keyword arguments for the given presence flags ``[B]``."""
        b = batch["latent"].shape[0]
        stored = {"prefix_kv": batch["mllm_kv"]} if "mllm_kv" in batch else {}  # data.prefix_kv: no prompt pass
        queries = self.conditioner(batch["mllm_video"], batch["caption"], has_video=has_video, has_text=has_text,
                                   **stored)
        sync = batch.get("sync")
        if sync is None:  # a cache without sync tokens: the learned null stands in for every item
            sync = torch.zeros(b, getattr(self.net, "sync_len", 1), getattr(self.net, "sync_dim", 768),
                               device=self.device)
            has_video = torch.zeros_like(has_video)
        return {"queries": queries, "sync": sync, "has_text": has_text | has_video, "has_video": has_video}

    def _dropped_flags(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        b = batch["latent"].shape[0]
        keep_text = torch.rand(b, device=self.device) >= self.hparams.text_drop
        keep_video = torch.rand(b, device=self.device) >= self.hparams.video_drop
        return batch["has_text"] & keep_text, batch["has_video"] & keep_video

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x1 = batch["latent"]  # [B, T, C]
        cond = self.conditions(batch, *self._dropped_flags(batch))
        x0 = torch.randn_like(x1)
        t = flow.sample_t(x1.shape[0], self.hparams.t_mean, self.hparams.t_std, device=x1.device)
        loss = flow.loss(self.net(flow.interpolate(x0, x1, t), t, **cond), x0, x1)
        self.log("train/loss", loss, prog_bar=True, batch_size=x1.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x1 = batch["latent"]
        cond = self.conditions(batch, batch["has_text"], batch["has_video"])
        losses = flow.fixed_t_grid_loss(lambda x, t: self.net(x, t, **cond), x1,
                                        self.hparams.val_noise_seed + batch_idx, self.hparams.val_t_grid)
        b = x1.shape[0]
        self.log("val/loss", losses.mean(), prog_bar=True, batch_size=b, sync_dist=True)
        for t, value in zip(self.hparams.val_t_grid, losses):
            self.log(f"val/loss_t={t:g}", value, batch_size=b, sync_dist=True)

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], steps: int = 25, cfg: float = 4.5, seed: int = 0,
                 method: str = "euler", negative_caption: str | None = None, compiled: bool = False) -> torch.Tensor:
        """Sample normalised latents ``[B, T, C]`` (the shape of ``batch["latent"]``) for a batch's conditions.

        CFG contrasts the condition with the null condition, or, given ``negative_caption``, with that
        caption alone (video dropped), as MMAudio's negative prompts do. ``compiled`` (Euler only) runs each
        guided step as one compiled graph per shape (``self.compiled_sampler``, a
        :class:`~reasonaudio.compiled_sampler.CompiledEulerSampler` made on first use unless one was set; CUDA
        graphs on a GPU); the eager path integrates with torchdiffeq.
        """
        if compiled and method != "euler":
            raise ValueError(f"compiled sampling is Euler only, got method={method!r}")
        b, t_len, channels = batch["latent"].shape
        cond = self.conditions(batch, batch["has_text"], batch["has_video"])
        off = torch.zeros(b, dtype=torch.bool, device=self.device)
        if negative_caption:
            uncond = self.conditions(dict(batch, caption=[negative_caption] * b), ~off, off)
        else:
            uncond = self.conditions(batch, off, off)
        x0 = torch.randn(b, t_len, channels, generator=torch.Generator().manual_seed(seed)).to(self.device)
        if compiled:
            if self.compiled_sampler is None:
                self.compiled_sampler = CompiledEulerSampler(self.net)
            return self.compiled_sampler(x0, cond, uncond, steps, cfg)
        return flow.sample(lambda x, t: flow.cfg_velocity(self.net, x, t, cond, uncond, cfg), x0, steps, method)

    def load_ema(self, path: str) -> None:
        """Load exported EMA weights (``model.safetensors``); every trainable parameter must be in it."""
        result = self.load_state_dict(load_file(str(path)), strict=False)
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        missing = sorted(trainable & set(result.missing_keys))
        if result.unexpected_keys or missing:
            raise ValueError(f"{path} does not fit this model: unexpected {result.unexpected_keys[:10]}, "
                             f"missing trainable {missing[:10]}")

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer(params)
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": build_lr_scheduler(self.lr_scheduler, optimizer,
                                                                 self.trainer.estimated_stepping_batches),
                                 "interval": "step"}}
