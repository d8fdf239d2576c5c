"""Audio embedding backbones of the objective metrics: the shared interface, input policy and checkpoint reading.

av-benchmark scores generated audio with three pretrained audio classifiers (notes/anchors-mmaudio-avbench.md §7):

==========  =========  ======================================  ================================================
backbone    rate       output per clip                         checkpoint file (local, never downloaded)
==========  =========  ======================================  ================================================
``panns``   16 kHz     2048-d embedding + 527 AudioSet logits  ``Cnn14_16k_mAP=0.438.pth`` (zenodo 3987831)
``vggish``  16 kHz     128-d per 0.96 s window, no classifier  ``vggish-10086976.pth`` (torchvggish release)
``passt``   32 kHz     768-d embedding + 527 AudioSet logits   ``passt-s-f128-p16-s10-ap.476-swa.pt`` (PaSST)
==========  =========  ======================================  ================================================

Each is implemented in this package (``panns.py``, ``vggish.py``, ``passt.py``),
key-compatible with its official checkpoint, and proved equal to the field-standard package
(``panns-inference``, ``torchvggish``, ``hear21passt``) on shared random weights in
``tests/test_metrics_backbones.py``. docs/evaluation.md says why we do not call those packages
at run time.

Input policy (av-benchmark's ``AudioDataset``): :meth:`AudioBackbone.prepare` takes a mono
waveform, removes its DC offset (subtracts the clip's mean), resamples it with torchaudio's
default windowed-sinc resampler (``torchaudio.transforms.Resample(orig, new)``, what
av-benchmark uses), optionally cuts it to a maximum duration, and applies the backbone's own
length policy (PaSST: zero-pad or cut to 10 s).
"""
from __future__ import annotations

import errno
import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Mapping, Self

import numpy as np
import torch
import torchaudio
from torch import nn

from reasonaudio.models.checkpoints import check_state_dict


@dataclass
class AudioFeatures:
    """What a backbone returns for a batch of clips.

    Attributes:
        embedding: ``[B, D]`` clip embeddings, or ``[B, W, D]`` per-window embeddings (VGGish:
            one per 0.96 s); Fréchet distances pool every window of every clip.
        logits: ``[B, C]`` class logits (before any sigmoid / softmax), or None for a backbone
            without a classifier.
    """

    embedding: torch.Tensor
    logits: torch.Tensor | None

    def flat_embedding(self) -> torch.Tensor:
        """``[N, D]``: the embedding with any window axis folded into the batch."""
        return self.embedding.reshape(-1, self.embedding.shape[-1])


class AudioBackbone(nn.Module):
    """A frozen audio classifier / embedder used by the metrics.

    Subclasses set the class attributes and ``sample_rate`` / ``embedding_dim`` / ``num_classes``,
    and implement ``forward(wav [B, S] at sample_rate) -> AudioFeatures``.

    Attributes:
        title: human-readable name used in messages.
        checkpoint_name: the official checkpoint file name (what ``--weights DIR`` must hold).
        checkpoint_source: where the official file comes from (shown when it is missing).
        checkpoint_key: entry holding the state dict when the file is a training checkpoint.
    """

    title: ClassVar[str]
    checkpoint_name: ClassVar[str]
    checkpoint_source: ClassVar[str]
    checkpoint_key: ClassVar[str | None] = None
    sample_rate: int
    embedding_dim: int
    num_classes: int

    @property
    def min_samples(self) -> int:
        """Shortest input (samples at ``sample_rate``, after :meth:`fit_length`) the network accepts."""
        return 1

    def fit_length(self, wav: torch.Tensor) -> torch.Tensor:
        """Backbone-specific length policy on ``[B, S]`` at ``sample_rate`` (default: none)."""
        return wav

    def prepare(self, wav: torch.Tensor, sample_rate: int, max_seconds: float | None = None) -> torch.Tensor:
        """av-benchmark's input policy: DC removal → resampling → cut to ``max_seconds`` → :meth:`fit_length`.

        Args:
            wav: ``[B, S]`` or ``[S]`` mono waveform.
            sample_rate: rate of ``wav``.
            max_seconds: keep at most this much (av-benchmark's ``--audio_length``); None keeps all.

        Returns:
            ``[B, S']`` float32 at :attr:`sample_rate`.
        """
        if wav.ndim == 1:
            wav = wav[None]
        if wav.ndim != 2:
            raise ValueError(f"expected a mono waveform [B, S] or [S], got shape {tuple(wav.shape)}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        wav = wav.float()
        wav = wav - wav.mean(dim=-1, keepdim=True)
        wav = resample(wav, sample_rate, self.sample_rate)
        if max_seconds is not None:
            wav = wav[:, :round(max_seconds * self.sample_rate)]
        return self.fit_length(wav)

    def check_input(self, wav: torch.Tensor) -> None:
        """Raise ValueError unless ``wav`` is ``[B, S]`` with S ≥ :attr:`min_samples`."""
        if wav.ndim != 2:
            raise ValueError(f"{self.title} expects a waveform [B, S] at {self.sample_rate} Hz, "
                             f"got shape {tuple(wav.shape)}")
        if wav.shape[1] < self.min_samples:
            raise ValueError(f"{self.title} needs at least {self.min_samples} samples "
                             f"({self.min_samples / self.sample_rate:.3f} s at {self.sample_rate} Hz), "
                             f"got {wav.shape[1]}")

    @torch.no_grad()
    def embed(self, wav: torch.Tensor, sample_rate: int, max_seconds: float | None = None) -> AudioFeatures:
        """:meth:`prepare` then ``forward``, without gradients."""
        weight = next(self.parameters())
        return self(self.prepare(wav.to(weight.device), sample_rate, max_seconds))

    def checkpoint_state(self, state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """Hook: map the official checkpoint's keys onto this module's (default: unchanged)."""
        return state

    def load_checkpoint(self, path: str | os.PathLike) -> Self:
        """Load the official checkpoint strictly and offline; returns this model in eval mode.

        Raises:
            FileNotFoundError: ``path`` does not exist (the message names the official file).
            ValueError: not a state dict, or keys / shapes that do not match this model.
        """
        state = read_checkpoint(path, f"{self.title} checkpoint", self.checkpoint_key,
                                expected=f"{self.checkpoint_name}, {self.checkpoint_source}")
        state = self.checkpoint_state(state)
        check_state_dict(self, state, f"{path} does not match {type(self).__name__}")
        self.load_state_dict(state, strict=True)
        return self.eval()


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int, device: str) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig, new).to(device)


def resample(wav: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """``[..., S]`` from ``orig`` to ``new`` Hz with torchaudio's default resampler (av-benchmark's
    ``torchaudio.transforms.Resample(orig, new)``: Hann-windowed sinc, 6 zero crossings, roll-off
    0.99), its filter kept per rate pair and device."""
    if orig == new:
        return wav
    return _resampler(orig, new, str(wav.device))(wav)


# numpy objects that training checkpoints (PANNs: the sampler state) pickle next to the weights;
# allowed explicitly so that torch.load keeps weights_only=True (no arbitrary code on load).
_NUMPY_GLOBALS = [
    np.ndarray, np.dtype,
    np._core.multiarray._reconstruct, (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    np._core.multiarray.scalar, (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    *(getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")),
]


def read_checkpoint(path: str | os.PathLike, what: str, key: str | None = None,
                    expected: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True`` (numpy arrays next to the weights allowed).

    Args:
        path: the file.
        what: what it is, for messages ("PANNs Cnn14 16 kHz checkpoint").
        key: entry holding the state dict in a training checkpoint (``"model"``); a file that
            is already a flat state dict is accepted too.
        expected: the official file, named when ``path`` is missing.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file does not load with ``weights_only=True`` or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        hint = f" (expected {expected})" if expected else ""
        raise FileNotFoundError(errno.ENOENT, f"{what} not found{hint}", str(path))
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path} is not a {what} that loads with torch.load(weights_only=True): "
                         f"{str(err).splitlines()[0]}") from err
    if key is not None and isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
        obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a {what} state dict (a mapping of names to tensors)")
    return dict(obj)
