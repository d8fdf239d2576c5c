"""BigVGAN generator (NVIDIA BigVGAN v2.4), key-compatible with the released generator folders.

Legend: B batch, M mel bands, F mel frames, C channels, T time steps at the current stage.

log-mel ``[B, M, F]`` → ``conv_pre`` → per stage i: transposed conv (×``upsample_rates[i]``, not
anti-aliased) → mean of ``len(resblock_kernel_sizes)`` AMP blocks → … → anti-aliased Snake(Beta)
→ ``conv_post`` → tanh or clamp → waveform ``[B, 1, F · hop]`` with ``hop = prod(upsample_rates)``.

The AMP blocks, Snake / SnakeBeta and the anti-aliased activation live in
:mod:`reasonaudio.models.bigvgan_blocks` (re-exported here).

Parameter and buffer names equal the reference's, so ``bigvgan_generator.pt`` (``{"generator":
state_dict}``) loads strictly; this is why weight normalisation uses the legacy hook API, the only
one that stores ``weight_g`` / ``weight_v`` as the released checkpoints do.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import nn

# The public building blocks are re-exported: ``from reasonaudio.models.bigvgan import Snake`` keeps working.
from reasonaudio.models.bigvgan_blocks import (AA_TAPS, Activation1d, AMPBlock1, AMPBlock2, DownSample1d,
                                               LowPassFilter1d, Snake, SnakeBeta, UpSample1d, _activation,
                                               _fuse_weight_norm, _weight_normed, kaiser_sinc_filter)
from reasonaudio.models.checkpoints import check_state_dict

__all__ = ["BigVGANConfig", "BigVGAN", "bigvgan_v2_44k_512x", "bigvgan_paper", "bigvgan_paper16k", "bigvgan_tiny",
           "CONFIG_NAME", "WEIGHTS_NAME", "AA_TAPS", "Activation1d", "AMPBlock1", "AMPBlock2", "DownSample1d",
           "LowPassFilter1d", "Snake", "SnakeBeta", "UpSample1d", "kaiser_sinc_filter"]

CONFIG_NAME = "config.json"
"""Hyper-parameter file of a released generator folder."""
WEIGHTS_NAME = "bigvgan_generator.pt"
"""Weight file of a released generator folder: ``{"generator": state_dict}``."""


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


def bigvgan_tiny(channels: int = 64) -> BigVGAN:
    """A CPU-sized BigVGAN-v2 for the ``tiny`` audio preset: 32 mels, 16 kHz, hop 256 = 4·4·4·4.

    ``channels`` initial channels, halved at each of the four stages (64 → 32 → 16 → 8 → 4 by default; the demo codec
    uses 128), and one AMP block (kernel 3, dilations 1/3/5) per stage.
    """
    return BigVGAN(num_mels=32, upsample_rates=(4, 4, 4, 4), upsample_kernel_sizes=(8, 8, 8, 8),
                   upsample_initial_channel=channels, resblock="1", resblock_kernel_sizes=(3,),
                   resblock_dilation_sizes=((1, 3, 5),), activation="snakebeta", snake_logscale=True,
                   use_tanh_at_final=False, use_bias_at_final=False, sampling_rate=16000)
