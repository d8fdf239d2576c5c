"""Learning-rate schedules used by the stage configs (as ``lr_scheduler: {class_path: ...}``)."""
from __future__ import annotations

from typing import Callable, Sequence

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


class RunWarmupStepDecay(torch.optim.lr_scheduler.LambdaLR):
    """:class:`WarmupStepDecay` laid out in fractions of the run, so a run of any length gets all of it.

    Linear warm-up over the first ``warmup`` of the run, then ×``gamma`` at each fraction in
    ``milestones``. The systems pass the run's length (``trainer.estimated_stepping_batches``)
    through :func:`build_lr_scheduler`; configs leave ``total_steps`` unset. Step it every
    optimisation step.

    Args:
        optimizer: the optimiser.
        total_steps: optimisation steps of the whole run.
        warmup: fraction of the run spent warming up, in [0, 1).
        milestones: fractions of the run, in (0, 1), at which the rate is multiplied by ``gamma``.
        gamma: decay factor per milestone.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int | None = None, warmup: float = 0.05,
                 milestones: Sequence[float] = (0.8,), gamma: float = 0.1):
        if total_steps is None or total_steps < 1:
            raise ValueError(f"RunWarmupStepDecay needs the run's length, got total_steps={total_steps} "
                             "(systems pass it through reasonaudio.schedules.build_lr_scheduler)")
        if not 0 <= warmup < 1 or not all(0 < m < 1 for m in milestones) or not 0 < gamma <= 1:
            raise ValueError(f"need 0 <= warmup < 1, milestones in (0, 1) and 0 < gamma <= 1, "
                             f"got {warmup}, {list(milestones)}, {gamma}")
        self.total_steps = total_steps
        self.warmup_steps = round(warmup * total_steps)
        self.milestones = sorted(round(m * total_steps) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        """Multiplier of the base rate at ``step``."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return warm * self.gamma ** sum(step >= m for m in self.milestones)


def build_lr_scheduler(factory: Callable[..., torch.optim.lr_scheduler.LRScheduler],
                       optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """``factory(optimizer)``, also passing ``total_steps`` to a schedule whose config leaves it unset.

    LightningCLI turns an ``lr_scheduler: {class_path, init_args}`` entry into a partial that carries
    every init argument, defaults included; a ``total_steps`` among them that is still ``None`` is
    filled with the run's length here, so no config repeats ``trainer.max_steps``.
    """
    keywords = getattr(factory, "keywords", None) or {}
    if "total_steps" in keywords and keywords["total_steps"] is None:
        return factory(optimizer, total_steps=total_steps)
    return factory(optimizer)
