"""VGGish (Hershey et al.), key-compatible with torchvggish's ``vggish-10086976.pth``, without PCA and last ReLU.

Legend: B clips, S samples at 16 kHz, E = 0.96 s examples per clip, D = 128.

* Front end (the TensorFlow reference ``mel_features.py``, in float64): frames of 400 samples
  every 160 (25 ms / 10 ms, no padding) × periodic Hann → |rfft 512| → HTK-mel matrix (64 bands,
  125–7500 Hz, DC bin zeroed) → ``log(mel + 0.01)`` → non-overlapping examples of 96 frames
  (0.96 s) → ``[B·E, 1, 96, 64]``. 8 s of audio gives 8 examples.
* Network: VGG ``features`` (conv 64, pool, 128, pool, 256, 256, pool, 512, 512, pool; 3×3 convs
  with ReLU) → flatten in (time, frequency, channel) order → ``embeddings`` Linear 12288 → 4096 →
  ReLU → 4096 → ReLU → 128.

As audioldm_eval and av-benchmark do for FD_VGG, the final ReLU of the released model and the
PCA / 8-bit quantisation post-processing are left out: the output is the raw 128-d layer, one per
example, and FD pools the examples of every clip. tests/test_metrics_backbones.py compares this
class with torchvggish's ``VGG`` (last ReLU replaced by Identity, as av-benchmark does) and its
``waveform_to_examples`` on shared random weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from reasonaudio.metrics.backbones.base import AudioBackbone, AudioFeatures

SAMPLE_RATE = 16000
WINDOW = 400
"""STFT window: 25 ms at 16 kHz."""
HOP = 160
"""STFT hop: 10 ms."""
N_FFT = 512
"""The next power of two above the window."""
MEL_BANDS = 64
MEL_FMIN = 125.0
MEL_FMAX = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96
"""Frames per example (0.96 s); examples do not overlap."""


def _hertz_to_mel(hz: np.ndarray | float) -> np.ndarray | float:
    """HTK mel scale: ``1127 · ln(1 + f / 700)``."""
    return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)


def vggish_mel_matrix() -> np.ndarray:
    """``[257, 64]`` float64 triangular HTK-mel weights of VGGish (the reference ``spectrogram_to_mel_matrix``)."""
    bins_mel = _hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1))
    edges = np.linspace(_hertz_to_mel(MEL_FMIN), _hertz_to_mel(MEL_FMAX), MEL_BANDS + 2)
    lower = (bins_mel[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - bins_mel[:, None]) / (edges[2:] - edges[1:-1])
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights[0] = 0.0  # HTK leaves out the DC bin
    return weights


@dataclass(frozen=True)
class VGGishConfig:
    """Sizes of a VGGish; the defaults are the released model.

    Args:
        channels: widths of the 6 convolutions (64, 128, 256, 256, 512, 512).
        hidden: width of the two hidden fully connected layers (4096).
        embedding_dim: output width (128).
    """

    channels: tuple[int, ...] = (64, 128, 256, 256, 512, 512)
    hidden: int = 4096
    embedding_dim: int = 128

    def __post_init__(self) -> None:
        if len(self.channels) != 6 or min(self.channels) < 1:
            raise ValueError(f"VGGish has 6 convolutions with positive widths, got channels={self.channels}")


VGGISH_TINY = VGGishConfig(channels=(4, 8, 8, 8, 16, 16), hidden=32, embedding_dim=16)
"""A CPU-sized VGGish with the official front end (tests; random weights)."""


class VGGish(AudioBackbone):
    """VGGish embeddings: ``[B, S]`` at 16 kHz → ``[B, E, 128]``, one per 0.96 s example.

    Args:
        config: model sizes (the released model by default).
    """

    title = "VGGish"
    checkpoint_name = "vggish-10086976.pth"
    checkpoint_source = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"

    def __init__(self, config: VGGishConfig = VGGishConfig()):
        super().__init__()
        self.config = config
        self.sample_rate = SAMPLE_RATE
        self.embedding_dim = config.embedding_dim
        self.num_classes = 0
        layers: list[nn.Module] = []
        cin = 1
        for i, cout in enumerate(config.channels):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
            if i in (0, 1, 3, 5):  # pool after conv 64, 128, the second 256 and the second 512
                layers.append(nn.MaxPool2d(2, 2))
            cin = cout
        self.features = nn.Sequential(*layers)
        flat = config.channels[-1] * (EXAMPLE_FRAMES // 16) * (MEL_BANDS // 16)
        self.embeddings = nn.Sequential(nn.Linear(flat, config.hidden), nn.ReLU(),
                                        nn.Linear(config.hidden, config.hidden), nn.ReLU(),
                                        nn.Linear(config.hidden, config.embedding_dim))
        self.register_buffer("mel_matrix", torch.from_numpy(vggish_mel_matrix()), persistent=False)
        self.register_buffer("window", torch.hann_window(WINDOW, periodic=True, dtype=torch.float64),
                             persistent=False)
        self.eval()

    @property
    def min_samples(self) -> int:
        """One example: 96 frames = ``400 + 95 · 160`` samples (0.975 s)."""
        return WINDOW + (EXAMPLE_FRAMES - 1) * HOP

    def examples(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` → ``[B, E, 96, 64]`` float32 log-mel examples, E = frames // 96 (computed in float64)."""
        self.check_input(wav)
        frames = wav.double().unfold(-1, WINDOW, HOP)  # [B, F, 400]
        spectrum = torch.fft.rfft(frames * self.window, n=N_FFT).abs()  # [B, F, 257]
        log_mel = torch.log(spectrum @ self.mel_matrix + LOG_OFFSET)  # [B, F, 64]
        count = log_mel.shape[1] // EXAMPLE_FRAMES
        return log_mel[:, :count * EXAMPLE_FRAMES].unflatten(1, (count, EXAMPLE_FRAMES)).float()

    def forward(self, wav: torch.Tensor) -> AudioFeatures:
        """``[B, S]`` waveform at 16 kHz → embedding ``[B, E, 128]`` (no logits)."""
        x = self.examples(wav)  # [B, E, 96, 64]
        b, e = x.shape[:2]
        x = self.features(x.reshape(b * e, 1, EXAMPLE_FRAMES, MEL_BANDS).to(self.embeddings[0].weight.dtype))
        x = x.permute(0, 2, 3, 1).reshape(b * e, -1)  # [B·E, T·M·C] in (time, frequency, channel) order
        return AudioFeatures(embedding=self.embeddings(x).reshape(b, e, -1), logits=None)
