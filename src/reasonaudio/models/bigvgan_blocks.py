"""BigVGAN building blocks: Snake / SnakeBeta, the anti-aliased activation with its ×2 resamplers, AMP blocks.

Legend: B batch, C channels, T time steps at the current stage.

An AMP block alternates anti-aliased periodic activations and dilated convolutions with residual
connections (``resblock "1"``: act → dilated conv → act → conv, per dilation; ``"2"``: act → dilated
conv). The anti-aliased activation upsamples ×2 with a 12-tap Kaiser-windowed sinc filter, applies
Snake / SnakeBeta, low-passes with the same filter and downsamples ×2 (alias-free GAN style).

Attribute and buffer names equal the reference's: they are the checkpoint keys below ``resblocks.*`` and
``activation_post.*`` of :class:`reasonaudio.models.bigvgan.BigVGAN`. The resamplers compute the
reference's filtering exactly (same 12-tap filters, replicate padding and crop) but as one GEMM over
overlapping blocks rather than as depthwise (transposed) convolutions, which are slow on CPU; with Snake
in four element-wise passes instead of five, the activations run ~1.2–2× faster, and waveforms agree
with the reference to float rounding.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import remove_weight_norm, weight_norm

AA_TAPS = 12
"""Taps of the anti-aliasing low-pass filter (the reference's default, used by every release)."""
_UP_PAD = 3
"""Samples replicated on each side before ×2 upsampling: the 12-tap filter at stride 2 reaches 3
input samples past each edge of the kept output (the reference pads 5 and crops the surplus)."""
_UP_CROP = 11
"""Leading outputs of the zero-stuffed convolution that the upsampler drops for input padded by 3:
the reference's crop of 15 minus the 2 × 2 outputs of the 2 padding samples it adds on top."""
_DOWN_PAD_LEFT, _DOWN_PAD_RIGHT = AA_TAPS // 2 - 1, AA_TAPS // 2
"""Replicated samples before the strided low-pass (even kernel: one fewer on the left)."""
_BLOCK = 32
"""Output samples per block of the block-Toeplitz resampling (see :func:`_toeplitz_index`)."""
_SNAKE_EPS = 1e-9
"""Added to the Snake denominators to avoid a division by zero (reference value)."""


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass filter ``[1, 1, kernel_size]``, normalised to sum 1.

    Args:
        cutoff: cut-off frequency as a fraction of the sample rate (0.25 for ×2 resampling).
        half_width: half the transition band width, same unit (0.3 for ×2 resampling).
        kernel_size: number of taps; even, so the filter is centred between two samples.

    Returns:
        The filter of BigVGAN's ``kaiser_sinc_filter1d`` (Kaiser's β from the attenuation
        ``A = 2.285 · (kernel_size/2 − 1) · π · 4 · half_width + 7.95`` dB).
    """
    if kernel_size <= 0 or kernel_size % 2:
        raise ValueError(f"kernel_size must be a positive even number, got {kernel_size}")
    if not 0 < cutoff <= 0.5:
        raise ValueError(f"cutoff must be in (0, 0.5], got {cutoff}")
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta)
    time = torch.arange(-half, half) + 0.5
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    # Unit DC gain, so a constant input passes through unchanged.
    return (taps / taps.sum()).view(1, 1, kernel_size)


def _replicate_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Replicate the edge samples of ``x`` ``[B, C, T]``; concatenation is cheaper than F.pad's replicate kernel."""
    return torch.cat([x[..., :1].expand(-1, -1, left), x, x[..., -1:].expand(-1, -1, right)], dim=-1)


def _toeplitz_index(rows: int, cols: int, offset: int, in_step: int, out_step: int) -> torch.Tensor:
    """Tap index of every entry of a block-Toeplitz resampling matrix ``[rows, cols]``; AA_TAPS marks a zero.

    Entry ``(i, n)`` weighs input ``i`` of a block into output ``n`` with tap
    ``k = out_step · n + offset − in_step · i`` when ``0 <= k < AA_TAPS``. Why blocks: the same short
    filter runs over every channel, and oneDNN's depthwise (transposed) convolutions reach only a
    few GFLOP/s on CPU; cutting the padded signal into overlapping blocks turns the whole filter
    bank into one GEMM, which does ~6× the multiply-adds at far more than 6× the throughput.
    """
    taps = out_step * torch.arange(cols) + offset - in_step * torch.arange(rows)[:, None]  # [rows, cols]
    return torch.where((taps >= 0) & (taps < AA_TAPS), taps, AA_TAPS)


def _blocked_fir(padded: torch.Tensor, matrix: torch.Tensor, step: int) -> torch.Tensor:
    """Apply ``matrix`` ``[W, N]`` to the windows of width W starting every ``step`` samples.

    ``[B, C, L]`` → ``[B, C, blocks · N]``, one row of the GEMM per (batch, channel, block).
    """
    batch, channels, _ = padded.shape
    width = matrix.shape[0]
    windows = padded.unfold(-1, width, step)  # [B, C, blocks, W] (overlapping view)
    return (windows.reshape(-1, width) @ matrix).view(batch, channels, -1)


def _weight_normed(conv: nn.Module) -> nn.Module:
    """Wrap ``conv`` in legacy weight normalisation (``weight_g`` / ``weight_v``, dim 0).

    The legacy API is deprecated in favour of parametrizations, but only it stores the parameter
    names of NVIDIA's released checkpoints; its deprecation warning is therefore silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
        return weight_norm(conv)


def _fuse_weight_norm(conv: nn.Module) -> None:
    """Fold ``weight_g`` / ``weight_v`` of ``conv`` into a plain ``weight`` (no-op when already folded)."""
    if hasattr(conv, "weight_g"):
        remove_weight_norm(conv)


def _dilated_conv(channels: int, kernel_size: int, dilation: int) -> nn.Module:
    """Weight-normed, length-preserving dilated convolution ``[B, C, T]`` → ``[B, C, T]``."""
    return _weight_normed(nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                                    padding=(kernel_size * dilation - dilation) // 2))


class Snake(nn.Module):
    """Snake activation ``x + sin²(αx) / α`` with a learned frequency α per channel.

    Args:
        channels: number of channels ``C``.
        logscale: store log α (initialised to 0, i.e. α = 1) and exponentiate at run time, as the
            v2 models do; otherwise store α itself (initialised to 1).
    """

    def __init__(self, channels: int, logscale: bool = True):
        super().__init__()
        self.logscale = logscale
        self.alpha = nn.Parameter(torch.zeros(channels) if logscale else torch.ones(channels))

    def _scale(self, p: torch.Tensor) -> torch.Tensor:
        """A per-channel parameter as a ``[C, 1]`` factor in linear scale."""
        return (p.exp() if self.logscale else p).unsqueeze(-1)

    def _magnitude(self) -> torch.Tensor:
        """The parameter that divides sin²: α for Snake."""
        return self.alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        alpha = self._scale(self.alpha)  # [C, 1]
        inv_mag = 1.0 / (self._scale(self._magnitude()) + _SNAKE_EPS)  # [C, 1]
        return torch.addcmul(x, torch.sin(x * alpha).square(), inv_mag)


class SnakeBeta(Snake):
    """SnakeBeta activation ``x + sin²(αx) / β``: frequency α and magnitude β per channel.

    Args:
        channels: number of channels ``C``.
        logscale: store log α and log β (initialised to 0) and exponentiate at run time.
    """

    def __init__(self, channels: int, logscale: bool = True):
        super().__init__(channels, logscale)
        self.beta = nn.Parameter(torch.zeros(channels) if logscale else torch.ones(channels))

    def _magnitude(self) -> torch.Tensor:
        return self.beta


class UpSample1d(nn.Module):
    """×2 band-limited upsampling ``[B, C, T]`` → ``[B, C, 2T]`` with edge samples replicated.

    Holds the 12-tap filter as buffer ``filter`` ``[1, 1, 12]`` (checkpoint key name). Computes the
    reference's replicate-pad → zero-stuffing transposed convolution (×2 gain) → crop, block-wise.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("filter", kaiser_sinc_filter(0.25, 0.3, AA_TAPS))
        # Block: _BLOCK inputs plus the filter margin → 2 · _BLOCK outputs.
        self.register_buffer("tap_index", _toeplitz_index(_BLOCK + 2 * _UP_PAD, 2 * _BLOCK, _UP_CROP, 2, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        length = x.shape[-1]
        blocks = -(-length // _BLOCK)
        # Zero-stuffing halves the DC gain; the ×2 is exact in the weights, saving a pass over 2T samples.
        matrix = F.pad(2.0 * self.filter.view(-1), (0, 1))[self.tap_index]  # [_BLOCK + 6, 2 · _BLOCK]
        # The tail beyond T only completes the last block; its outputs are cropped.
        padded = _replicate_pad(x, _UP_PAD, _UP_PAD + blocks * _BLOCK - length)  # [B, C, blocks · _BLOCK + 6]
        return _blocked_fir(padded, matrix, _BLOCK)[..., :2 * length]  # [B, C, 2T]


class LowPassFilter1d(nn.Module):
    """Strided low-pass ``[B, C, 2T]`` → ``[B, C, T]`` with edge samples replicated.

    Holds the 12-tap filter as buffer ``filter`` ``[1, 1, 12]`` (checkpoint key name). Computes the
    reference's replicate-pad (5 left, 6 right) → depthwise convolution with stride 2, block-wise.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("filter", kaiser_sinc_filter(0.25, 0.3, AA_TAPS))
        # Block: 2 · _BLOCK inputs plus the filter margin → _BLOCK outputs.
        self.register_buffer("tap_index", _toeplitz_index(2 * _BLOCK + AA_TAPS - 2, _BLOCK, 0, -1, -2),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, 2T]
        assert x.shape[-1] % 2 == 0, "the low-pass follows a ×2 upsampler, so its input length is even"
        length = x.shape[-1] // 2
        blocks = -(-length // _BLOCK)
        matrix = F.pad(self.filter.view(-1), (0, 1))[self.tap_index]  # [2 · _BLOCK + 10, _BLOCK]
        padded = _replicate_pad(x, _DOWN_PAD_LEFT, _DOWN_PAD_RIGHT + 2 * (blocks * _BLOCK - length))
        return _blocked_fir(padded, matrix, 2 * _BLOCK)[..., :length]  # [B, C, T]


class DownSample1d(nn.Module):
    """×2 downsampling ``[B, C, 2T]`` → ``[B, C, T]``; the extra level gives the checkpoint key
    ``downsample.lowpass.filter``."""

    def __init__(self):
        super().__init__()
        self.lowpass = LowPassFilter1d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, 2T]
        return self.lowpass(x)


class Activation1d(nn.Module):
    """Anti-aliased activation ``[B, C, T]`` → ``[B, C, T]``: ×2 upsample → ``act`` → low-pass, ×2 downsample.

    The periodic activation creates harmonics above the Nyquist frequency; evaluating it at twice the
    rate and low-passing before decimation keeps them from aliasing back into the band.

    Args:
        act: the element-wise activation (:class:`Snake` or :class:`SnakeBeta`).
    """

    def __init__(self, act: Snake):
        super().__init__()
        self.act = act
        self.upsample = UpSample1d()
        self.downsample = DownSample1d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        return self.downsample(self.act(self.upsample(x)))


def _activation(kind: str, channels: int, logscale: bool) -> Activation1d:
    """Anti-aliased Snake (``"snake"``) or SnakeBeta (``"snakebeta"``) over ``channels`` channels."""
    return Activation1d(SnakeBeta(channels, logscale) if kind == "snakebeta" else Snake(channels, logscale))


class AMPBlock1(nn.Module):
    """AMP block "1": per dilation d, ``x + conv(act(conv_d(act(x))))``, ``[B, C, T]`` → ``[B, C, T]``.

    Args:
        channels: width ``C``.
        kernel_size: kernel of all convolutions.
        dilations: dilation of ``convs1[i]``; ``convs2[i]`` is undilated.
        activation: ``"snake"`` or ``"snakebeta"``.
        logscale: Snake parameters in log scale.
    """

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], activation: str, logscale: bool):
        super().__init__()
        self.convs1 = nn.ModuleList([_dilated_conv(channels, kernel_size, d) for d in dilations])
        self.convs2 = nn.ModuleList([_dilated_conv(channels, kernel_size, 1) for _ in dilations])
        # Interleaved as in the reference: activations[2i] precedes convs1[i], activations[2i + 1] convs2[i].
        self.activations = nn.ModuleList([_activation(activation, channels, logscale)
                                          for _ in range(2 * len(dilations))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations[0::2], self.activations[1::2]):
            x = c2(a2(c1(a1(x)))) + x
        return x

    def remove_weight_norm(self) -> None:
        """Fold weight normalisation into plain weights (inference)."""
        for conv in [*self.convs1, *self.convs2]:
            _fuse_weight_norm(conv)


class AMPBlock2(nn.Module):
    """AMP block "2": per dilation d, ``x + conv_d(act(x))``, ``[B, C, T]`` → ``[B, C, T]``.

    Args:
        channels: width ``C``.
        kernel_size: kernel of all convolutions.
        dilations: dilation of ``convs[i]``.
        activation: ``"snake"`` or ``"snakebeta"``.
        logscale: Snake parameters in log scale.
    """

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], activation: str, logscale: bool):
        super().__init__()
        self.convs = nn.ModuleList([_dilated_conv(channels, kernel_size, d) for d in dilations])
        self.activations = nn.ModuleList([_activation(activation, channels, logscale) for _ in dilations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        for conv, act in zip(self.convs, self.activations):
            x = conv(act(x)) + x
        return x

    def remove_weight_norm(self) -> None:
        """Fold weight normalisation into plain weights (inference)."""
        for conv in self.convs:
            _fuse_weight_norm(conv)
