"""The audio embedding backbones of the objective metrics, and loading one by name.

- ``base``: the shared interface (:class:`AudioBackbone`, :class:`AudioFeatures`), the input policy, the
  resampler and checkpoint reading;
- ``panns``: PANNs Cnn14 (16 kHz); ``vggish``: VGGish (16 kHz); ``passt``: PaSST (32 kHz), each key-compatible
  with its official checkpoint.
"""
from __future__ import annotations

import os

from torch import nn

from reasonaudio.metrics.backbones.base import AudioBackbone, AudioFeatures, read_checkpoint, resample
from reasonaudio.metrics.backbones.panns import Cnn14
from reasonaudio.metrics.backbones.passt import PaSST
from reasonaudio.metrics.backbones.vggish import VGGish

__all__ = ["AudioBackbone", "AudioFeatures", "BACKBONE_NAMES", "Cnn14", "PaSST", "VGGish", "load_backbone",
           "read_checkpoint", "resample", "resolve_backbone"]

BACKBONE_NAMES = ("panns", "vggish", "passt")
"""Names :func:`load_backbone` accepts."""


def load_backbone(name: str, checkpoint: str | os.PathLike) -> AudioBackbone:
    """Build backbone ``name`` (``panns``, ``vggish`` or ``passt``) at its official size from ``checkpoint``.

    Raises:
        ValueError: an unknown name, or a checkpoint that does not match.
        FileNotFoundError: ``checkpoint`` does not exist (``filename`` is the path).
    """
    classes = {"panns": Cnn14, "vggish": VGGish, "passt": PaSST}
    if name not in classes:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONE_NAMES)}")
    return classes[name]().load_checkpoint(checkpoint)


def resolve_backbone(backbone: AudioBackbone | str | None,
                     checkpoint: str | os.PathLike | None) -> AudioBackbone | None:
    """A metric's ``backbone`` argument: a module as is, or a name loaded from ``checkpoint`` (YAML configs)."""
    if backbone is None or isinstance(backbone, nn.Module):
        if checkpoint is not None:
            raise ValueError("checkpoint is only used with a backbone name ('panns', 'vggish', 'passt')")
        return backbone
    if checkpoint is None:
        raise ValueError(f"backbone {backbone!r} needs checkpoint=<path to its official weights file>")
    return load_backbone(backbone, checkpoint)
