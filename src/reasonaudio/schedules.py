"""Learning-rate schedules used by the stage configs (as ``lr_scheduler: {class_path: ...}``)."""
from __future__ import annotations

from typing import Sequence

import torch


class WarmupStepDecay(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up from 0 over ``warmup_steps``, then ×``gamma`` at each milestone (MMAudio's recipe).

    Step it every optimisation step.

    Args:
        optimizer: the optimiser.
        warmup_steps: steps of linear warm-up.
        milestones: steps at which the rate is multiplied by ``gamma``.
        gamma: decay factor per milestone.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 1000,
                 milestones: Sequence[int] = (), gamma: float = 0.1):
        if warmup_steps < 0 or not 0 < gamma <= 1:
            raise ValueError(f"need warmup_steps >= 0 and 0 < gamma <= 1, got {warmup_steps}, {gamma}")
        self.warmup_steps, self.milestones, self.gamma = warmup_steps, sorted(milestones), gamma
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        """Multiplier of the base rate at ``step``."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return warm * self.gamma ** sum(step >= m for m in self.milestones)
