"""Strict state-dict checks with errors a user can act on (shared by every released-checkpoint loader)."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], header: str, shown: int = 10) -> None:
    """Raise ValueError naming missing / unexpected keys and shape mismatches between ``state`` and ``model``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f", … and {len(items) - shown} more" if len(items) > shown else ""
            problems.append(f"{title} ({len(items)}): " + ", ".join(items[:shown]) + more)
    if problems:
        raise ValueError(header + "; " + "; ".join(problems))
