"""BigVGAN generator (NVIDIA BigVGAN v2.4), key-compatible with the released generator folders.

Legend: B batch, M mel bands, F mel frames, C channels, T time steps at the current stage.

log-mel ``[B, M, F]`` → ``conv_pre`` → per stage i: transposed conv (×``upsample_rates[i]``, not
anti-aliased) → mean of ``len(resblock_kernel_sizes)`` AMP blocks → … → anti-aliased Snake(Beta)
→ ``conv_post`` → tanh or clamp → waveform ``[B, 1, F · hop]`` with ``hop = prod(upsample_rates)``.

An AMP block alternates anti-aliased periodic activations and dilated convolutions with residual
connections (``resblock "1"``: act → dilated conv → act → conv, per dilation; ``"2"``: act → dilated
conv). The anti-aliased activation upsamples ×2 with a 12-tap Kaiser-windowed sinc filter, applies
Snake / SnakeBeta, low-passes with the same filter and downsamples ×2 (alias-free GAN style).

Parameter and buffer names equal the reference's, so ``bigvgan_generator.pt`` (``{"generator":
state_dict}``) loads strictly; this is why weight normalisation uses the legacy hook API, the only
one that stores ``weight_g`` / ``weight_v`` as the released checkpoints do. The resamplers compute
the reference's filtering exactly (same 12-tap filters, replicate padding and crop) but as one GEMM
over overlapping blocks rather than as depthwise (transposed) convolutions, which are slow on CPU;
with Snake in four element-wise passes instead of five, the activations run ~1.2–2× faster, and
waveforms agree with the reference to float rounding.

Presets (all ``resblock "1"``, kernels (3, 7, 11), dilations (1, 3, 5) × 3, SnakeBeta in log scale):

=====================  ====  ===================  ===================  ====  =====  ===========  ==========
preset                 mels  upsample rates       kernels              C0    hop    tanh / bias  params
=====================  ====  ===================  ===================  ====  =====  ===========  ==========
bigvgan_v2_44k_512x    128   8, 4, 2, 2, 2, 2     16, 8, 4, 4, 4, 4    1536  512    no / no      122.19 M
bigvgan_paper          128   5, 4, 2, 2, 2, 2     9, 8, 4, 4, 4, 4     1536  320    no / no      113.93 M
bigvgan_paper16k       80    5, 4, 2, 2, 2, 2     9, 8, 4, 4, 4, 4     1536  320    no / no      113.41 M
bigvgan_tiny           32    4, 4, 4, 4           8, 8, 8, 8           64    256    no / no      0.06 M
=====================  ====  ===================  ===================  ====  =====  ===========  ==========

``bigvgan_tiny`` keeps only the kernel-3 AMP block per stage.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import remove_weight_norm, weight_norm

from reasonaudio.models.checkpoints import check_state_dict

CONFIG_NAME = "config.json"
"""Hyper-parameter file of a released generator folder."""
WEIGHTS_NAME = "bigvgan_generator.pt"
"""Weight file of a released generator folder: ``{"generator": state_dict}``."""

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


@dataclass(frozen=True)
class BigVGANConfig:
    """The fields of a released BigVGAN ``config.json`` that define the generator and its mel input.

    Training-only fields (optimiser, discriminators, losses, data loading) are ignored on reading.

    Args:
        num_mels: mel bands of the input.
        upsample_rates: per-stage upsampling factors; their product is the hop size.
        upsample_kernel_sizes: per-stage transposed-convolution kernels.
        upsample_initial_channel: width after ``conv_pre``; halved at every stage.
        resblock: ``"1"`` or ``"2"`` (AMP block variant).
        resblock_kernel_sizes: kernels of the parallel AMP blocks of a stage.
        resblock_dilation_sizes: dilations of each of those blocks.
        activation: ``"snake"`` or ``"snakebeta"``.
        snake_logscale: Snake parameters stored in log scale.
        use_tanh_at_final: tanh on the output (v1); otherwise clamp to [-1, 1] (v2).
        use_bias_at_final: bias in ``conv_post`` (v1); absent in v2.
        sampling_rate: waveform rate in Hz, if known.
        hop_size: mel hop; must equal the product of ``upsample_rates`` (filled in when omitted).
        n_fft: mel STFT size, if known.
        win_size: mel window length, if known.
        fmin: lowest mel frequency, if known.
        fmax: highest mel frequency (``None``: Nyquist or unknown).
    """

    num_mels: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock: Literal["1", "2"] = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    activation: Literal["snake", "snakebeta"] = "snakebeta"
    snake_logscale: bool = True
    use_tanh_at_final: bool = True
    use_bias_at_final: bool = True
    sampling_rate: int | None = None
    hop_size: int | None = None
    n_fft: int | None = None
    win_size: int | None = None
    fmin: float | None = None
    fmax: float | None = None

    REQUIRED = ("num_mels", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel", "resblock",
                "resblock_kernel_sizes", "resblock_dilation_sizes", "activation", "snake_logscale")
    """Fields without which the reference cannot build a generator (it has no defaults for them)."""

    def __post_init__(self) -> None:
        # Normalise JSON lists to tuples so configs compare equal and stay hashable.
        for name in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "resblock_dilation_sizes",
                           tuple(tuple(int(d) for d in ds) for ds in self.resblock_dilation_sizes))
        object.__setattr__(self, "resblock", str(self.resblock))
        _validate_architecture(self)
        if self.hop_size is None:
            object.__setattr__(self, "hop_size", self.hop_length)
        elif self.hop_size != self.hop_length:
            raise ValueError(f"hop_size {self.hop_size} differs from the product of upsample_rates "
                             f"{list(self.upsample_rates)} = {self.hop_length}")

    @property
    def hop_length(self) -> int:
        """Waveform samples per mel frame: the product of the upsampling rates."""
        return math.prod(self.upsample_rates)

    def generator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`BigVGAN` for this configuration."""
        names = ("num_mels", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel", "resblock",
                 "resblock_kernel_sizes", "resblock_dilation_sizes", "activation", "snake_logscale",
                 "use_tanh_at_final", "use_bias_at_final", "sampling_rate")
        return {name: getattr(self, name) for name in names}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the released field names (lists for sequences)."""
        return json.loads(json.dumps(asdict(self)))  # tuples → lists

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> BigVGANConfig:
        """Read the generator fields of a released ``config.json`` dict, ignoring training fields.

        Args:
            data: the parsed JSON.
            source: name used in error messages (e.g. the file path).
        """
        missing = [name for name in cls.REQUIRED if name not in data]
        if missing:
            raise ValueError(f"{source} lacks the generator field(s) {missing}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BigVGANConfig:
        """Read a released ``config.json``.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file is not valid JSON or lacks a generator field.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BigVGAN config not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))


def _validate_architecture(cfg: BigVGANConfig) -> None:
    """Raise ValueError for a configuration the generator cannot be built from."""
    if cfg.num_mels <= 0:
        raise ValueError(f"num_mels must be positive, got {cfg.num_mels}")
    if len(cfg.upsample_rates) != len(cfg.upsample_kernel_sizes) or not cfg.upsample_rates:
        raise ValueError(f"upsample_rates {list(cfg.upsample_rates)} and upsample_kernel_sizes "
                         f"{list(cfg.upsample_kernel_sizes)} must be non-empty and of equal length")
    for u, k in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes):
        # (k − u) odd would make the transposed conv return u·T + 1 samples, breaking F·hop.
        if u < 1 or k < u or (k - u) % 2:
            raise ValueError(f"upsample kernel {k} for rate {u} must be >= the rate with an even difference "
                             "so that each stage outputs exactly rate × input samples")
    if cfg.upsample_initial_channel < 2 ** len(cfg.upsample_rates):
        raise ValueError(f"upsample_initial_channel {cfg.upsample_initial_channel} is too small to halve "
                         f"{len(cfg.upsample_rates)} times")
    if cfg.resblock not in ("1", "2"):
        raise ValueError(f"resblock must be '1' or '2', got {cfg.resblock!r}")
    if len(cfg.resblock_kernel_sizes) != len(cfg.resblock_dilation_sizes) or not cfg.resblock_kernel_sizes:
        raise ValueError(f"resblock_kernel_sizes {list(cfg.resblock_kernel_sizes)} and resblock_dilation_sizes "
                         f"{[list(d) for d in cfg.resblock_dilation_sizes]} must be non-empty and of equal length")
    if any(k % 2 == 0 for k in cfg.resblock_kernel_sizes):
        raise ValueError(f"resblock_kernel_sizes must be odd to preserve length, got {list(cfg.resblock_kernel_sizes)}")
    if cfg.activation not in ("snake", "snakebeta"):
        raise ValueError(f"activation must be 'snake' or 'snakebeta', got {cfg.activation!r}")


class BigVGAN(nn.Module):
    """BigVGAN generator: log-mel ``[B, num_mels, F]`` → waveform ``[B, 1, F · hop_length]`` in [-1, 1].

    Args:
        num_mels: mel bands of the input.
        upsample_rates: per-stage upsampling factors; ``hop_length`` is their product.
        upsample_kernel_sizes: per-stage transposed-convolution kernels (kernel − rate even).
        upsample_initial_channel: width after ``conv_pre``, halved at every stage.
        resblock: AMP block variant, ``"1"`` (two convolutions per dilation) or ``"2"`` (one).
        resblock_kernel_sizes: kernels of the parallel AMP blocks of a stage (their outputs are averaged).
        resblock_dilation_sizes: dilations of each of those blocks.
        activation: ``"snake"`` or ``"snakebeta"``.
        snake_logscale: store Snake parameters in log scale (all v2 models).
        use_tanh_at_final: tanh on the output; ``False`` clamps to [-1, 1] instead (v2).
        use_bias_at_final: bias in ``conv_post`` (``False`` in v2: no ``conv_post.bias`` key).
        sampling_rate: waveform rate in Hz; metadata only (written to ``config.json``).

    Weights are stored weight-normalised (``weight_g`` / ``weight_v``) for training and loading
    released checkpoints; call :meth:`remove_weight_norm` before inference. Initialisation is
    PyTorch's default: the reference's ``init_weights`` (N(0, 0.01)) writes into the weight that
    weight normalisation recomputes from ``weight_g`` / ``weight_v``, so it never takes effect there either.
    """

    def __init__(self, num_mels: int, upsample_rates: Sequence[int], upsample_kernel_sizes: Sequence[int],
                 upsample_initial_channel: int, resblock: Literal["1", "2"] = "1",
                 resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
                 resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
                 activation: Literal["snake", "snakebeta"] = "snakebeta", snake_logscale: bool = True,
                 use_tanh_at_final: bool = True, use_bias_at_final: bool = True, sampling_rate: int | None = None):
        super().__init__()
        self.config = BigVGANConfig(
            num_mels=num_mels, upsample_rates=upsample_rates, upsample_kernel_sizes=upsample_kernel_sizes,
            upsample_initial_channel=upsample_initial_channel, resblock=resblock,
            resblock_kernel_sizes=resblock_kernel_sizes, resblock_dilation_sizes=resblock_dilation_sizes,
            activation=activation, snake_logscale=snake_logscale, use_tanh_at_final=use_tanh_at_final,
            use_bias_at_final=use_bias_at_final, sampling_rate=sampling_rate)
        cfg = self.config
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        c0 = cfg.upsample_initial_channel
        self.conv_pre = _weight_normed(nn.Conv1d(num_mels, c0, 7, padding=3))
        # One-element ModuleLists: the released keys are ``ups.{i}.0.*``.
        self.ups = nn.ModuleList([
            nn.ModuleList([_weight_normed(nn.ConvTranspose1d(c0 // 2 ** i, c0 // 2 ** (i + 1), k, u,
                                                             padding=(k - u) // 2))])
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))])
        block = AMPBlock1 if cfg.resblock == "1" else AMPBlock2
        # Flat list, stage-major: block ``i · num_kernels + j`` is kernel j of stage i (released key order).
        self.resblocks = nn.ModuleList([
            block(c0 // 2 ** (i + 1), k, d, cfg.activation, cfg.snake_logscale)
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)])
        c_last = c0 // 2 ** len(cfg.upsample_rates)
        self.activation_post = _activation(cfg.activation, c_last, cfg.snake_logscale)
        self.conv_post = _weight_normed(nn.Conv1d(c_last, 1, 7, padding=3, bias=use_bias_at_final))

    @property
    def hop_length(self) -> int:
        """Waveform samples per mel frame."""
        return self.config.hop_length

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Vocode a log-mel spectrogram.

        Args:
            mel: ``[B, num_mels, F]`` log-mel frames (natural log, BigVGAN's mel definition).

        Returns:
            Waveform ``[B, 1, F · hop_length]`` in [-1, 1] (the reference's shape, with its channel axis).
        """
        if mel.dim() != 3 or mel.shape[1] != self.config.num_mels:
            raise ValueError(f"expected a mel [B, {self.config.num_mels}, F], got shape {tuple(mel.shape)}")
        x = self.conv_pre(mel)  # [B, C0, F]
        for i, (up,) in enumerate(self.ups):
            x = up(x)  # [B, C0 / 2^(i+1), T · u_i]
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            total = blocks[0](x)
            for blk in blocks[1:]:
                total = total + blk(x)
            x = total / self.num_kernels  # the stage output is the mean of its AMP blocks
        x = self.conv_post(self.activation_post(x))  # [B, 1, F · hop]
        return torch.tanh(x) if self.config.use_tanh_at_final else x.clamp(-1.0, 1.0)

    def remove_weight_norm(self) -> None:
        """Fold every ``weight_g`` / ``weight_v`` pair into a plain ``weight`` for inference (idempotent).

        Outputs are unchanged; the forward pass no longer recomputes the weights.
        """
        for conv in [self.conv_pre, self.conv_post, *(up for (up,) in self.ups)]:
            _fuse_weight_norm(conv)
        for blk in self.resblocks:
            blk.remove_weight_norm()

    @classmethod
    def from_config(cls, config: BigVGANConfig) -> BigVGAN:
        """Build a randomly initialised generator; ``model.config`` keeps every field of ``config``."""
        model = cls(**config.generator_kwargs())
        model.config = config  # keeps the mel fields (n_fft, fmin, …) the constructor does not take
        return model

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> BigVGAN:
        """Load a released generator folder (``config.json`` + ``bigvgan_generator.pt``), offline and strictly.

        A checkpoint saved after :meth:`remove_weight_norm` (plain ``weight`` keys) is accepted too:
        the model folds its weight normalisation first.

        Args:
            folder: a local folder such as a copy of ``nvidia/bigvgan_v2_44khz_128band_512x``.

        Returns:
            The generator in eval mode, weight norm kept when the checkpoint has it.

        Raises:
            FileNotFoundError: the folder, ``config.json`` or ``bigvgan_generator.pt`` is missing.
            ValueError: invalid config, no ``"generator"`` entry, or weights that do not match the config
                (the message lists missing / unexpected keys and shape mismatches).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"BigVGAN folder not found: {folder}")
        weights_path = folder / WEIGHTS_NAME
        config = BigVGANConfig.from_json(folder / CONFIG_NAME)
        if not weights_path.is_file():
            raise FileNotFoundError(f"BigVGAN weights not found: {weights_path}")
        checkpoint = torch.load(weights_path, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or "generator" not in checkpoint:
            found = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
            raise ValueError(f"{weights_path} has no 'generator' entry (found {found})")
        state = checkpoint["generator"]
        model = cls.from_config(config)
        if "conv_pre.weight" in state and "conv_pre.weight_g" not in state:
            model.remove_weight_norm()
        check_state_dict(model, state, f"{weights_path} does not match {folder / CONFIG_NAME}")
        model.load_state_dict(state, strict=True)
        return model.eval()

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write a released-format folder: ``config.json`` and ``bigvgan_generator.pt`` = ``{"generator": sd}``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        torch.save({"generator": self.state_dict()}, folder / WEIGHTS_NAME)


def bigvgan_v2_44k_512x() -> BigVGAN:
    """NVIDIA ``bigvgan_v2_44khz_128band_512x`` (44.1 kHz, 128 mels, hop 512; 122.19 M parameters).

    Mel: n_fft 2048, window 2048, fmin 0, fmax Nyquist, natural log (the ``s44k`` audio preset).
    """
    return BigVGAN(num_mels=128, upsample_rates=(8, 4, 2, 2, 2, 2), upsample_kernel_sizes=(16, 8, 4, 4, 4, 4),
                   upsample_initial_channel=1536, resblock="1", resblock_kernel_sizes=(3, 7, 11),
                   resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)), activation="snakebeta",
                   snake_logscale=True, use_tanh_at_final=False, use_bias_at_final=False, sampling_rate=44100)


def _table7(num_mels: int, sampling_rate: int) -> BigVGAN:
    return BigVGAN(num_mels=num_mels, upsample_rates=(5, 4, 2, 2, 2, 2), upsample_kernel_sizes=(9, 8, 4, 4, 4, 4),
                   upsample_initial_channel=1536, resblock="1", resblock_kernel_sizes=(3, 7, 11),
                   resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)), activation="snakebeta",
                   snake_logscale=True, use_tanh_at_final=False, use_bias_at_final=False, sampling_rate=sampling_rate)


def bigvgan_paper() -> BigVGAN:
    """The paper's vocoder (Table 7): upsample (5, 4, 2, 2, 2, 2), kernels (9, 8, 4, 4, 4, 4), hop 320, 44.1 kHz.

    Table 7 gives only the upsampling; the rest is BigVGAN-v2 (1536 channels, SnakeBeta in log scale,
    AMP block "1" with kernels 3/7/11 and dilations 1/3/5, no tanh, no final bias) with the ``paper``
    audio preset's 128 mels at 44.1 kHz. This gives 113.93 M parameters, not the paper's 121.6 M, which
    no configuration with these kernels reaches (notes/pretrained-components.md §1.2; docs/decisions.md).
    """
    return _table7(128, 44100)


def bigvgan_paper16k() -> BigVGAN:
    """Table 7's vocoder for the ``paper16k`` preset (80 mels at 16 kHz): 113.41 M parameters."""
    return _table7(80, 16000)


def bigvgan_tiny() -> BigVGAN:
    """A CPU-sized BigVGAN-v2 for the ``tiny`` audio preset: 32 mels, 16 kHz, hop 256 = 4·4·4·4.

    64 initial channels (64 → 32 → 16 → 8 → 4) and one AMP block (kernel 3, dilations 1/3/5) per stage.
    """
    return BigVGAN(num_mels=32, upsample_rates=(4, 4, 4, 4), upsample_kernel_sizes=(8, 8, 8, 8),
                   upsample_initial_channel=64, resblock="1", resblock_kernel_sizes=(3,),
                   resblock_dilation_sizes=((1, 3, 5),), activation="snakebeta", snake_logscale=True,
                   use_tanh_at_final=False, use_bias_at_final=False, sampling_rate=16000)
