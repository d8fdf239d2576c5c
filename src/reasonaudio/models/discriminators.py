"""GAN discriminators for the vocoder (BigVGAN v1/v2) and the mel VAE.

Waveform discriminators follow NVIDIA BigVGAN's ``discriminators.py`` (v2.4) module for module:

* :class:`MultiPeriodDiscriminator` (HiFi-GAN MPD, periods 2, 3, 5, 7, 11),
* :class:`MultiResolutionDiscriminator` (UnivNet MRD, BigVGAN v1),
* :class:`MultiScaleSubbandCQTDiscriminator` (BigVGAN v2's CQT-D), whose constant-Q transform is
  :class:`ConstantQTransform`, a torch reimplementation of nnAudio's ``CQT2010v2``.

Their parameter and buffer names equal the reference's, so the ``"mpd"`` / ``"mrd"`` entries of a
released ``bigvgan_discriminator_optimizer.pt`` load strictly (see :func:`bigvgan_discriminators`).
That is why weight and spectral normalisation use the legacy hook API (``weight_g`` / ``weight_v``,
``weight_orig`` names) rather than ``torch.nn.utils.parametrizations``.

Every waveform discriminator takes real and generated audio ``[B, 1, T]`` and returns
``(y_d_rs, y_d_gs, fmap_rs, fmap_gs)``: one logit tensor and one list of feature maps per
sub-discriminator, for the real and for the generated input. These plug straight into
:mod:`reasonaudio.losses`.

:class:`PatchDiscriminator1D` is the mel VAE's discriminator (per-patch logits on a mel ``[B, M, F]``).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import signal
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm, weight_norm
from torchaudio.transforms import Resample

DiscriminatorOutput = tuple[list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]], list[list[torch.Tensor]]]
"""``(y_d_rs, y_d_gs, fmap_rs, fmap_gs)`` of a waveform discriminator."""

MPD_PERIODS = (2, 3, 5, 7, 11)
MRD_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
"""BigVGAN v1 MRD resolutions as ``(n_fft, hop, win)``."""
CQT_FMIN = 32.70
"""Lowest CQT bin in Hz (C1; nnAudio's default, which BigVGAN v2 keeps)."""
LRELU_SLOPE = 0.1


def _normed(conv: nn.Module, spectral: bool = False) -> nn.Module:
    """Wrap ``conv`` in legacy weight (or spectral) normalisation.

    The legacy API is deprecated in favour of parametrizations, but only it stores the parameter
    names of NVIDIA's released checkpoints; its deprecation warning is therefore silenced here.
    """
    if spectral:
        return spectral_norm(conv)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
        return weight_norm(conv)


def _run_pair(discriminators: nn.ModuleList, y: torch.Tensor, y_hat: torch.Tensor) -> DiscriminatorOutput:
    """Apply each sub-discriminator ``d(x) -> (logits, fmap)`` to ``y`` and ``y_hat``."""
    y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
    for d in discriminators:
        y_d_r, fmap_r = d(y)
        y_d_g, fmap_g = d(y_hat)
        y_d_rs.append(y_d_r)
        y_d_gs.append(y_d_g)
        fmap_rs.append(fmap_r)
        fmap_gs.append(fmap_g)
    return y_d_rs, y_d_gs, fmap_rs, fmap_gs


# --------------------------------------------------------------------------- MPD


class DiscriminatorP(nn.Module):
    """One period of the MPD: the waveform folded into ``[T / p, p]`` and seen by (k, 1) convolutions.

    Args:
        period: folding period ``p``.
        kernel_size: temporal kernel of the strided convolutions.
        stride: temporal stride of the first four convolutions.
        use_spectral_norm: spectral instead of weight normalisation.
        channel_mult: width multiplier of the 32-128-512-1024-1024 stack.
    """

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3, use_spectral_norm: bool = False,
                 channel_mult: float = 1.0):
        super().__init__()
        self.period = period
        widths = [1] + [int(c * channel_mult) for c in (32, 128, 512, 1024, 1024)]
        pad = (kernel_size - 1) // 2
        self.convs = nn.ModuleList([
            _normed(nn.Conv2d(cin, cout, (kernel_size, 1), (stride if i < 4 else 1, 1), padding=(pad, 0)),
                    use_spectral_norm)
            for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:]))
        ])
        self.conv_post = _normed(nn.Conv2d(widths[-1], 1, (3, 1), 1, padding=(1, 0)), use_spectral_norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Waveform ``[B, 1, T]`` → logits ``[B, N]`` and six feature maps ``[B, C, T', p]``."""
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        x = x.view(b, c, -1, self.period)  # [B, 1, T / p, p]
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN / BigVGAN multi-period discriminator.

    Args:
        periods: one :class:`DiscriminatorP` per period (``mpd_reshapes``).
        use_spectral_norm: spectral instead of weight normalisation.
        channel_mult: width multiplier (``discriminator_channel_mult``).
    """

    def __init__(self, periods: Sequence[int] = MPD_PERIODS, use_spectral_norm: bool = False,
                 channel_mult: float = 1.0):
        super().__init__()
        self.discriminators = nn.ModuleList([
            DiscriminatorP(p, use_spectral_norm=use_spectral_norm, channel_mult=channel_mult) for p in periods
        ])

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> DiscriminatorOutput:
        """Real and generated waveforms ``[B, 1, T]`` → ``(y_d_rs, y_d_gs, fmap_rs, fmap_gs)``."""
        return _run_pair(self.discriminators, y, y_hat)


# --------------------------------------------------------------------------- MRD


class DiscriminatorR(nn.Module):
    """One resolution of the MRD: 2-D convolutions over a linear STFT magnitude.

    Args:
        resolution: ``(n_fft, hop, win)``.
        use_spectral_norm: spectral instead of weight normalisation.
        channel_mult: width multiplier of the 32-channel stack.
    """

    def __init__(self, resolution: Sequence[int], use_spectral_norm: bool = False, channel_mult: float = 1.0):
        super().__init__()
        if len(resolution) != 3:
            raise ValueError(f"an MRD resolution is (n_fft, hop, win), got {resolution}")
        self.n_fft, self.hop_length, self.win_length = (int(v) for v in resolution)
        ch = int(32 * channel_mult)
        self.convs = nn.ModuleList([
            _normed(nn.Conv2d(1, ch, (3, 9), padding=(1, 4)), use_spectral_norm),
            _normed(nn.Conv2d(ch, ch, (3, 9), stride=(1, 2), padding=(1, 4)), use_spectral_norm),
            _normed(nn.Conv2d(ch, ch, (3, 9), stride=(1, 2), padding=(1, 4)), use_spectral_norm),
            _normed(nn.Conv2d(ch, ch, (3, 9), stride=(1, 2), padding=(1, 4)), use_spectral_norm),
            _normed(nn.Conv2d(ch, ch, (3, 3), padding=(1, 1)), use_spectral_norm),
        ])
        self.conv_post = _normed(nn.Conv2d(ch, 1, (3, 3), padding=(1, 1)), use_spectral_norm)
        # The reference calls torch.stft without a window, i.e. a rectangular one; passing it
        # explicitly keeps the released weights' input statistics without torch's warning.
        self.register_buffer("window", torch.ones(self.win_length), persistent=False)

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, 1, T]`` → magnitude ``[B, n_fft / 2 + 1, frames]`` (reflect-padded, uncentred STFT)."""
        pad = (self.n_fft - self.hop_length) // 2
        x = F.pad(x, (pad, pad), mode="reflect").squeeze(1)  # [B, T + 2·pad]
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=False, return_complex=True)
        return torch.view_as_real(spec).norm(p=2, dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Waveform ``[B, 1, T]`` → logits ``[B, N]`` and six feature maps ``[B, C, F', frames]``."""
        x = self.spectrogram(x).unsqueeze(1)  # [B, 1, F, frames]
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiResolutionDiscriminator(nn.Module):
    """UnivNet / BigVGAN-v1 multi-resolution (STFT magnitude) discriminator.

    Args:
        resolutions: ``(n_fft, hop, win)`` per sub-discriminator.
        use_spectral_norm: spectral instead of weight normalisation.
        channel_mult: width multiplier.
    """

    def __init__(self, resolutions: Sequence[Sequence[int]] = MRD_RESOLUTIONS, use_spectral_norm: bool = False,
                 channel_mult: float = 1.0):
        super().__init__()
        self.discriminators = nn.ModuleList([
            DiscriminatorR(r, use_spectral_norm=use_spectral_norm, channel_mult=channel_mult) for r in resolutions
        ])

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> DiscriminatorOutput:
        """Real and generated waveforms ``[B, 1, T]`` → ``(y_d_rs, y_d_gs, fmap_rs, fmap_gs)``."""
        return _run_pair(self.discriminators, y, y_hat)


# --------------------------------------------------------------------------- CQT


def _lowpass_fir(band_center: float, transition: float, taps: int = 256) -> torch.Tensor:
    """Windowed FIR low-pass ``[1, 1, taps]`` (float32) with cut-off ``band_center`` × Nyquist."""
    pass_max, stop_min = band_center / (1 + transition), band_center * (1 + transition)
    h = signal.firwin2(taps, [0.0, pass_max, stop_min, 1.0], [1.0, 1.0, 0.0, 0.0])
    return torch.from_numpy(h.astype(np.float32))[None, None]


def _fir_decimate(x: torch.Tensor, kernel: torch.Tensor, factor: int) -> torch.Tensor:
    """Low-pass ``x`` ``[B, 1, S]`` with ``kernel`` and keep every ``factor``-th sample."""
    return F.conv1d(x, kernel, stride=factor, padding=(kernel.shape[-1] - 1) // 2)


class ConstantQTransform(nn.Module):
    """Complex constant-Q transform by octave-wise decimation (nnAudio ``CQT2010v2``, Schörkhuber 2010).

    The top octave is a strided ``conv1d`` of the zero-padded signal with ``bins_per_octave``
    complex time-domain kernels (periodic Hann windows of length ``⌈Q·sr/f⌉``, each divided by its
    window sum, centred in ``fft_len`` taps). Each lower octave reuses the same kernels on the signal
    low-passed and decimated by two once more, with half the hop. Bins are then scaled by
    ``downsample_factor · √length`` (nnAudio's ``"librosa"`` normalisation). When the top octave is
    far below Nyquist the input is first decimated ("early downsampling"), as in nnAudio.

    Buffer names (including nnAudio's ``lenghts`` spelling) match nnAudio so that BigVGAN's CQT-D
    state dicts load; the kernels built here equal nnAudio's (bit for bit in the tests).

    Args:
        sample_rate: input rate in Hz.
        hop_length: hop between frames in input samples (a multiple of ``2**(n_octaves - 1)``).
        n_bins: total number of bins.
        bins_per_octave: bins per octave.
        fmin: frequency of the lowest bin in Hz.
        filter_scale: scales the kernel lengths (Q = filter_scale / (2^(1/bpo) − 1)).
    """

    def __init__(self, sample_rate: int, hop_length: int, n_bins: int, bins_per_octave: int,
                 fmin: float = CQT_FMIN, filter_scale: float = 1.0):
        super().__init__()
        self.n_bins = n_bins
        q = float(filter_scale) / (2 ** (1 / bins_per_octave) - 1)
        n_filters = min(bins_per_octave, n_bins)
        self.n_octaves = math.ceil(n_bins / bins_per_octave)
        # The top octave's highest bin, and its lowest bin one octave (less a bin) below it.
        top = n_bins % bins_per_octave or bins_per_octave
        fmax_top = fmin * 2 ** (self.n_octaves - 1) * 2 ** ((top - 1) / bins_per_octave)
        fmin_top = fmax_top / 2 ** (1 - 1 / bins_per_octave)
        if fmax_top > sample_rate / 2:
            raise ValueError(f"the top CQT bin ({fmax_top:.1f} Hz) exceeds the Nyquist frequency of "
                             f"{sample_rate} Hz; use fewer bins")

        # Early downsampling (librosa's rule): decimate while the top octave (plus the Hann main
        # lobe) stays under 85 % of the new Nyquist and the hop stays divisible down to the lowest octave.
        cutoff = fmax_top * (1 + 0.5 * 1.5 / q)
        by_band = max(0, int(math.ceil(math.log2(0.85 * (sample_rate // 2) / cutoff)) - 1) - 1)
        by_hop = max(0, math.ceil(math.log2(hop_length)) - self.n_octaves + 1)
        self.downsample_factor = 2 ** min(by_band, by_hop)
        self.hop_length = hop_length // self.downsample_factor
        rate = sample_rate / self.downsample_factor
        if self.hop_length % 2 ** (self.n_octaves - 1):
            raise ValueError(f"hop_length {hop_length} (after early downsampling by {self.downsample_factor}: "
                             f"{self.hop_length}) must be divisible by 2**(n_octaves - 1) = "
                             f"{2 ** (self.n_octaves - 1)}")

        self.register_buffer("lowpass_filter", _lowpass_fir(0.5, 0.001))  # [1, 1, 256]
        if self.downsample_factor > 1:
            self.register_buffer("early_downsample_filter", _lowpass_fir(1 / self.downsample_factor, 0.03))
        else:
            self.early_downsample_filter = None

        freqs = fmin_top * 2.0 ** (np.arange(n_filters) / bins_per_octave)
        lengths = np.ceil(q * rate / freqs)
        self.fft_len = int(2 ** math.ceil(math.log2(lengths.max())))
        real = np.zeros((n_filters, self.fft_len))
        imag = np.zeros((n_filters, self.fft_len))
        for k, (f, n) in enumerate(zip(freqs, lengths.astype(int))):
            window = signal.get_window("hann", n, fftbins=True)
            # sample times −⌈n/2⌉ … ⌊n/2⌋ − 1
            phase = 2 * np.pi * f / rate * np.arange(-((n + 1) // 2), n // 2)
            # Odd lengths sit one tap left of centre, as in nnAudio.
            start = math.ceil(self.fft_len / 2 - n / 2) - (n % 2)
            real[k, start:start + n] = window * np.cos(phase) / window.sum()
            imag[k, start:start + n] = window * np.sin(phase) / window.sum()
        all_freqs = fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)
        self.register_buffer("lenghts", torch.from_numpy(np.ceil(q * rate / all_freqs)).float())  # [n_bins]
        self.register_buffer("cqt_kernels_real", torch.from_numpy(real.astype(np.float32))[:, None])  # [K, 1, L]
        self.register_buffer("cqt_kernels_imag", torch.from_numpy(imag.astype(np.float32))[:, None])

    def _octave(self, x: torch.Tensor, hop: int) -> torch.Tensor:
        """One octave: ``[B, 1, S]`` → ``[B, K, frames, 2]`` (real, imaginary)."""
        x = F.pad(x, (self.fft_len // 2, self.fft_len // 2))
        real = F.conv1d(x, self.cqt_kernels_real, stride=hop)
        imag = -F.conv1d(x, self.cqt_kernels_imag, stride=hop)  # correlation with the conjugate kernel
        return torch.stack((real, imag), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, 1, S]`` → CQT ``[B, n_bins, S // hop + 1, 2]`` (real, imaginary; low bins first)."""
        if self.early_downsample_filter is not None:
            x = _fir_decimate(x, self.early_downsample_filter, self.downsample_factor)
        hop = self.hop_length
        octaves = [self._octave(x, hop)]
        for _ in range(self.n_octaves - 1):
            hop //= 2
            x = _fir_decimate(x, self.lowpass_filter, 2)
            octaves.insert(0, self._octave(x, hop))
        cqt = torch.cat(octaves, 1)[:, -self.n_bins:]  # [B, n_bins, frames, 2]
        return cqt * self.downsample_factor * torch.sqrt(self.lenghts.view(-1, 1, 1))


class DiscriminatorCQT(nn.Module):
    """One scale of the CQT-D: 2-D convolutions over the complex CQT of the audio upsampled ×2.

    Each octave first gets its own (3, 9) convolution (``conv_pres``), since CQT statistics differ
    strongly between octaves; the results are concatenated along frequency.

    Args:
        sample_rate: audio rate in Hz (the CQT runs at twice this rate).
        hop_length: CQT hop at ``2 · sample_rate``.
        n_octaves: octaves analysed (from 32.7 Hz up).
        bins_per_octave: CQT resolution.
        filters: width of the first convolution.
        max_filters: cap on the width of later convolutions.
        filters_scale: width growth per strided convolution.
        dilations: time dilations of the strided convolutions.
        normalize_volume: remove DC and peak-normalise to 0.8 before the CQT.
    """

    def __init__(self, sample_rate: int, hop_length: int, n_octaves: int, bins_per_octave: int,
                 filters: int = 128, max_filters: int = 1024, filters_scale: int = 1,
                 dilations: Sequence[int] = (1, 2, 4), normalize_volume: bool = False):
        super().__init__()
        self.n_octaves = n_octaves
        self.bins_per_octave = bins_per_octave
        self.normalize_volume = normalize_volume
        self.cqt_transform = ConstantQTransform(2 * sample_rate, hop_length, n_octaves * bins_per_octave,
                                                bins_per_octave)
        self.conv_pres = nn.ModuleList([nn.Conv2d(2, 2, (3, 9), padding=(1, 4)) for _ in range(n_octaves)])
        self.convs = nn.ModuleList([nn.Conv2d(2, filters, (3, 9), padding=(1, 4))])
        cin = filters
        for i, d in enumerate(dilations):
            cout = min(filters_scale ** (i + 1) * filters, max_filters)
            self.convs.append(_normed(nn.Conv2d(cin, cout, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4))))
            cin = cout
        cout = min(filters_scale ** (len(dilations) + 1) * filters, max_filters)
        self.convs.append(_normed(nn.Conv2d(cin, cout, (3, 3), padding=(1, 1))))
        self.conv_post = _normed(nn.Conv2d(cout, 1, (3, 3), padding=(1, 1)))
        self.resample = Resample(orig_freq=sample_rate, new_freq=2 * sample_rate)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Waveform ``[B, 1, T]`` → logits ``[B, 1, frames, F']`` and one feature map per entry of ``convs``.

        As in the reference, the logits are not flattened and ``conv_post``'s output is not a feature map.
        """
        if self.normalize_volume:
            x = x - x.mean(dim=-1, keepdim=True)
            x = 0.8 * x / (x.abs().amax(dim=-1, keepdim=True) + 1e-9)
        z = self.cqt_transform(self.resample(x))  # [B, n_bins, frames, 2]
        z = z.permute(0, 3, 2, 1)  # [B, 2, frames, n_bins]: real and imaginary parts as channels
        bpo = self.bins_per_octave
        z = torch.cat([conv(z[..., i * bpo:(i + 1) * bpo]) for i, conv in enumerate(self.conv_pres)], dim=-1)
        fmap = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), LRELU_SLOPE)
            fmap.append(z)
        return self.conv_post(z), fmap


class MultiScaleSubbandCQTDiscriminator(nn.Module):
    """BigVGAN-v2 multi-scale sub-band CQT discriminator (CQT-D).

    Defaults are the released v2 configs (``cqtd_filters`` 128; the reference falls back to 32 when
    a config omits it).

    Args:
        sample_rate: audio rate in Hz.
        hop_lengths: CQT hop per scale (``cqtd_hop_lengths``).
        n_octaves: octaves per scale (``cqtd_n_octaves``).
        bins_per_octave: CQT resolution per scale (``cqtd_bins_per_octaves``).
        filters: ``cqtd_filters``.
        max_filters: ``cqtd_max_filters``.
        filters_scale: ``cqtd_filters_scale``.
        dilations: ``cqtd_dilations``.
        normalize_volume: ``cqtd_normalize_volume``.
    """

    def __init__(self, sample_rate: int, hop_lengths: Sequence[int] = (512, 256, 256),
                 n_octaves: Sequence[int] = (9, 9, 9), bins_per_octave: Sequence[int] = (24, 36, 48),
                 filters: int = 128, max_filters: int = 1024, filters_scale: int = 1,
                 dilations: Sequence[int] = (1, 2, 4), normalize_volume: bool = False):
        super().__init__()
        if not len(hop_lengths) == len(n_octaves) == len(bins_per_octave):
            raise ValueError(f"one hop, octave count and resolution per scale, got {hop_lengths}, {n_octaves}, "
                             f"{bins_per_octave}")
        self.discriminators = nn.ModuleList([
            DiscriminatorCQT(sample_rate, hop, octaves, bpo, filters=filters, max_filters=max_filters,
                             filters_scale=filters_scale, dilations=dilations, normalize_volume=normalize_volume)
            for hop, octaves, bpo in zip(hop_lengths, n_octaves, bins_per_octave)
        ])

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> DiscriminatorOutput:
        """Real and generated waveforms ``[B, 1, T]`` → ``(y_d_rs, y_d_gs, fmap_rs, fmap_gs)``."""
        return _run_pair(self.discriminators, y, y_hat)


# --------------------------------------------------------------------------- combinations


class CombinedDiscriminator(nn.Module):
    """Several waveform discriminators run as one: their per-sub-discriminator outputs are concatenated.

    Unlike the reference wrapper (attribute ``discrimiantor``, sic) the children live in
    ``discriminators``; BigVGAN's training script never uses the wrapper, so no released checkpoint
    depends on that name.

    Args:
        discriminators: modules with the ``forward(y, y_hat) -> (y_d_rs, y_d_gs, fmap_rs, fmap_gs)`` contract.
    """

    def __init__(self, discriminators: Sequence[nn.Module]):
        super().__init__()
        self.discriminators = nn.ModuleList(discriminators)

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> DiscriminatorOutput:
        """Real and generated waveforms ``[B, 1, T]`` → the concatenated outputs of every child."""
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for d in self.discriminators:
            r, g, fr, fg = d(y, y_hat)
            y_d_rs += r
            y_d_gs += g
            fmap_rs += fr
            fmap_gs += fg
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs


def bigvgan_discriminators(config: Mapping[str, Any]) -> tuple[MultiPeriodDiscriminator, nn.Module]:
    """Build the discriminator pair of a BigVGAN ``config.json`` as its ``train.py`` does.

    Args:
        config: the parsed config (``mpd_reshapes``, ``use_spectral_norm``,
            ``discriminator_channel_mult``, ``use_cqtd_instead_of_mrd`` and the ``cqtd_*`` fields, or
            ``resolutions`` with the optional ``mrd_use_spectral_norm`` / ``mrd_channel_mult``).

    Returns:
        ``(mpd, mrd)``, named like the ``"mpd"`` / ``"mrd"`` entries of BigVGAN's discriminator
        checkpoint; ``mrd`` is the CQT-D for v2 configs, the MRD otherwise.

    Raises:
        ValueError: the config asks for the multi-band discriminator (not implemented: no released
            model uses it) or for CQT-D input/output channels other than 1.
    """
    if config.get("use_mbd_instead_of_mrd", False):
        raise ValueError("use_mbd_instead_of_mrd=True: the multi-band discriminator is not implemented")
    spectral = bool(config["use_spectral_norm"])
    mult = config["discriminator_channel_mult"]
    mpd = MultiPeriodDiscriminator(config["mpd_reshapes"], use_spectral_norm=spectral, channel_mult=mult)
    if config.get("use_cqtd_instead_of_mrd", False):
        for key in ("cqtd_in_channels", "cqtd_out_channels"):
            if config.get(key, 1) != 1:
                raise ValueError(f"{key}={config[key]}: only mono input and one logit channel are supported")
        mrd: nn.Module = MultiScaleSubbandCQTDiscriminator(
            config["sampling_rate"], hop_lengths=config.get("cqtd_hop_lengths", (512, 256, 256)),
            n_octaves=config.get("cqtd_n_octaves", (9, 9, 9)),
            bins_per_octave=config.get("cqtd_bins_per_octaves", (24, 36, 48)),
            filters=config.get("cqtd_filters", 32), max_filters=config.get("cqtd_max_filters", 1024),
            filters_scale=config.get("cqtd_filters_scale", 1), dilations=config.get("cqtd_dilations", (1, 2, 4)),
            normalize_volume=config.get("cqtd_normalize_volume", False))
    else:
        mrd = MultiResolutionDiscriminator(config["resolutions"],
                                           use_spectral_norm=bool(config.get("mrd_use_spectral_norm", spectral)),
                                           channel_mult=config.get("mrd_channel_mult", mult))
    return mpd, mrd


# --------------------------------------------------------------------------- mel VAE


class PatchDiscriminator1D(nn.Module):
    """Patch discriminator on log-mels: a strided 1-D convolution stack with mel bands as channels.

    Each output logit judges one time patch across all bands (receptive field grows with
    ``n_layers``). Layout after pix2pix / Make-An-Audio 2's ``NLayerDiscriminator`` (``n_layers``
    stride-2 convolutions, one stride-1 convolution, a 1-channel head; LeakyReLU 0.2), with weight
    normalisation instead of BatchNorm so that no statistic couples the samples of a batch — the R1
    penalty and real/fake batches then see each sample independently.

    Args:
        in_channels: mel bands ``M``.
        channels: width of the first convolution (doubled per layer).
        max_channels: width cap.
        n_layers: number of stride-2 convolutions (time downsampling ``2**n_layers``).
        kernel_size: odd temporal kernel.
    """

    def __init__(self, in_channels: int = 80, channels: int = 64, max_channels: int = 512, n_layers: int = 3,
                 kernel_size: int = 5):
        super().__init__()
        if kernel_size % 2 == 0 or n_layers < 1:
            raise ValueError(f"kernel_size must be odd and n_layers >= 1, got {kernel_size}, {n_layers}")
        pad = kernel_size // 2
        widths = [in_channels] + [min(channels * 2 ** i, max_channels) for i in range(n_layers + 1)]
        self.convs = nn.ModuleList([
            parametrizations.weight_norm(nn.Conv1d(cin, cout, kernel_size, stride=2 if i < n_layers else 1,
                                                   padding=pad))
            for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:]))
        ])
        self.conv_post = parametrizations.weight_norm(nn.Conv1d(widths[-1], 1, kernel_size, padding=pad))

    def features(self, mel: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mel ``[B, M, F]`` → patch logits ``[B, 1, ⌈F / 2**n_layers⌉]`` and the feature maps of every layer."""
        x, fmap = mel, []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return x, fmap

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel ``[B, M, F]`` → patch logits ``[B, 1, ⌈F / 2**n_layers⌉]``."""
        return self.features(mel)[0]
