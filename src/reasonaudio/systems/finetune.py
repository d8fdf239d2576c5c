"""FlowMatchingFinetune: the pretraining objective on your own clips, from a pretrained export, LoRA or full.

* **Weights.** ``pretrained`` (an EMA / post-training export: ``model.safetensors`` or its folder, the
  format a released model ships in) is loaded into the DiT and the conditioner when the stage starts.
* **LoRA** (``lora_rank`` > 0): the DiT and the conditioner are frozen and peft LoRA adapters are put on
  the DiT's linear layers (as post-training does, ``systems/post_train.py``); only the adapters train.
  **Full** (``lora_rank = 0``): every weight pretraining trains does (the DiT, the conditioner's queries
  and connector); the MLLM stays frozen either way.
* **Objective.** The flow-matching loss of :class:`FlowMatchingPretrain` with its condition dropout, so
  the model keeps classifier-free guidance.
* **Export** (``export``): ``<export>/model.safetensors`` in the EMA export's layout (LoRA merged), which
  ``reasonaudio-generate --ema`` and ``load_policy_weights`` read, ``config.yaml`` (this system's
  hyperparameters) and, with LoRA, ``<export>/adapter/`` (peft, ``base_model_name_or_path`` = the
  pretrained export).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from reasonaudio import flow
from reasonaudio.systems.flow_matching import FlowMatchingPretrain
from reasonaudio.systems.hparams import save_system_hparams
from reasonaudio.systems.policy_weights import StartsFromExport, add_lora, export_state, write_export


class FlowMatchingFinetune(StartsFromExport, FlowMatchingPretrain):
    """Fine-tuning from a pretrained export (module docstring).

    Args:
        net: the DiT architecture of the pretrained model.
        conditioner: its conditioner.
        pretrained: the pretrained export (``model.safetensors`` or its folder), loaded when the stage starts.
        lora_rank: LoRA rank; 0 = full fine-tuning.
        lora_alpha: LoRA α (default: the rank, scale 1).
        lora_targets: regex over module names selecting the linear layers to adapt (default: all).
        text_drop: probability of dropping an item's caption (CFG).
        video_drop: probability of dropping an item's video.
        t_mean: mean of the logit-normal t.
        t_std: std of the logit-normal t.
        val_t_grid: flow times of the validation loss.
        val_noise_seed: seed of the validation noise.
        optimizer: optimiser factory (applied to the trainable weights only).
        lr_scheduler: schedule stepped every optimisation step.
        export: folder for the fine-tuned weights at the end of training (None: no export).
        compile: compile the DiT blocks, LoRA adapters included (as :class:`FlowMatchingPretrain`).
    """

    def __init__(self, net: nn.Module, conditioner: nn.Module, pretrained: str | None = None, lora_rank: int = 64,
                 lora_alpha: float | None = None, lora_targets: str | None = None, text_drop: float = 0.1,
                 video_drop: float = 0.1, t_mean: float = 0.0, t_std: float = 1.0,
                 val_t_grid: Sequence[float] = flow.DEFAULT_T_GRID, val_noise_seed: int = 0,
                 optimizer: OptimizerCallable = torch.optim.AdamW, lr_scheduler: LRSchedulerCallable | None = None,
                 export: str | None = None, compile: bool | dict[str, Any] = False):
        with warnings.catch_warnings():  # the parent records its own argument subset; replaced just below
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            super().__init__(net, conditioner, text_drop, video_drop, t_mean, t_std, val_t_grid, val_noise_seed,
                             optimizer, lr_scheduler, compile)
        self.hparams.clear()
        save_system_hparams(self, ["net", "conditioner", "optimizer", "lr_scheduler"])
        if lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0: full fine-tuning), got {lora_rank}")
        if lora_rank:
            self.conditioner.requires_grad_(False)
            self.net = add_lora(net, lora_rank, lora_alpha, lora_targets)

    @property
    def lora(self) -> bool:
        return self.hparams.lora_rank > 0

    def export_state(self) -> dict[str, torch.Tensor]:
        """The fine-tuned model in the EMA export's layout (``net.*`` with LoRA merged, ``conditioner.*``)."""
        return export_state(self, merge=self.lora)

    def save_export(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.yaml`` (and ``adapter/`` with LoRA) into ``folder``."""
        return write_export(self, folder, self.export_state(), adapter=self.lora)

    def on_train_end(self) -> None:
        if self.hparams.export and self.trainer.is_global_zero:
            self.save_export(self.hparams.export)
