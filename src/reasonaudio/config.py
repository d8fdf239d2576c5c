"""Audio and sequence configuration: every length in the suite is derived here, and only here.

`AudioConfig` holds the signal-processing constants (sample rate, STFT, mel bank, latent layout);
`SequenceConfig` turns a clip duration into every length a stage needs (waveform samples, mel
frames, latent tokens, Synchformer frames and tokens, MLLM video frames).

Presets (DESIGN §4):

=========  ========  ======  =====  ======  ======  =========  ===========================
preset     rate      n_fft   hop    mels    fmax    log        latent (channels × rate)
=========  ========  ======  =====  ======  ======  =========  ===========================
s16k       16 kHz    1024    256    80      8 kHz   log10      20 × 31.25 Hz (MMAudio-16k)
s44k       44.1 kHz  2048    512    128     22.05k  ln         40 × 43.07 Hz (BigVGAN-v2)
paper      44.1 kHz  1280    320    128     22.05k  ln         40 × 68.9 Hz (Table 7 vocoder)
paper16k   16 kHz    1280    320    80      8 kHz   ln         20 × 25 Hz (Table 7 hop at 16 kHz)
tiny       16 kHz    512     256    32      8 kHz   ln         8 × 31.25 Hz (CPU demo)
=========  ========  ======  =====  ======  ======  =========  ===========================

The ``paper`` preset follows the paper: it generates 44 kHz audio (Table 3's discussion: "ReasonAudio
generates 44 kHz audio that is downsampled to 16 kHz" for the metrics), and its vocoder (Table 7)
upsamples [5,4,2,2,2,2] = hop 320. The mel bank is not given; we take BigVGAN-v2-44k's (128 mels to
Nyquist, natural log), n_fft = win = 4 × hop as the other presets, and MMAudio-44k's 40 latent
channels: 137.8 mel frames/s and, with the ×2 VAE downsampling, 68.9 latents/s (552 for 8 s).
``paper16k`` is the earlier reading (16 kHz, 80 mels: 25 latents/s, one per 25-fps video frame),
kept as its own preset (``docs/decisions.md``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

SYNC_FPS = 25
"""Synchformer input frame rate (MMAudio issue #88: the paper's "24 fps" is 192 tokens / 8 s)."""
SYNC_WINDOW = 16
"""Frames per Synchformer window."""
SYNC_STRIDE = 8
"""Stride between Synchformer windows (50 % overlap)."""
SYNC_TOKENS_PER_WINDOW = 8
"""MotionFormer output tokens per window (temporal patch 2: 16 frames → 8 tokens)."""
SYNC_DIM = 768
"""Width of a Synchformer token."""


@dataclass(frozen=True)
class AudioConfig:
    """Signal-processing constants shared by the mel front end, VAE, vocoder and DiT.

    Args:
        name: preset name, recorded in artifacts.
        sample_rate: waveform rate in Hz.
        n_fft: FFT size of the mel STFT.
        win_length: STFT window length.
        hop_length: STFT hop; also the vocoder's total upsampling factor.
        n_mels: number of mel bands.
        fmin: lowest mel frequency in Hz.
        fmax: highest mel frequency in Hz (``None`` = Nyquist).
        log_base: ``"e"`` (BigVGAN) or ``"10"`` (MMAudio-16k / Make-An-Audio 2) for the log-mel.
        latent_channels: VAE latent width.
        latent_downsample: VAE temporal downsampling from mel frames to latents.
    """

    name: str = "tiny"
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 256
    n_mels: int = 32
    fmin: float = 0.0
    fmax: float | None = 8000.0
    log_base: Literal["e", "10"] = "e"
    latent_channels: int = 8
    latent_downsample: int = 2

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.hop_length <= 0 or self.hop_length > self.n_fft:
            raise ValueError(f"hop_length must be in (0, n_fft={self.n_fft}], got {self.hop_length}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if (self.n_fft - self.hop_length) % 2:
            raise ValueError(f"n_fft - hop_length must be even for symmetric padding, got {self.n_fft}-{self.hop_length}")
        if self.fmax is not None and self.fmax > self.sample_rate / 2:
            raise ValueError(f"fmax {self.fmax} exceeds the Nyquist frequency {self.sample_rate / 2}")
        if self.log_base not in ("e", "10"):
            raise ValueError(f"log_base must be 'e' or '10', got {self.log_base!r}")
        if self.latent_downsample < 1:
            raise ValueError(f"latent_downsample must be >= 1, got {self.latent_downsample}")

    @property
    def samples_per_latent(self) -> int:
        """Waveform samples covered by one latent token."""
        return self.hop_length * self.latent_downsample

    @property
    def mel_rate(self) -> float:
        """Mel frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def latent_rate(self) -> float:
        """Latent tokens per second."""
        return self.sample_rate / self.samples_per_latent

    def to_dict(self) -> dict:
        """Plain dict for artifacts and configs."""
        return asdict(self)


PRESETS: dict[str, AudioConfig] = {
    "s16k": AudioConfig("s16k", 16000, 1024, 1024, 256, 80, 0.0, 8000.0, "10", 20, 2),
    "s44k": AudioConfig("s44k", 44100, 2048, 2048, 512, 128, 0.0, None, "e", 40, 2),
    "paper": AudioConfig("paper", 44100, 1280, 1280, 320, 128, 0.0, None, "e", 40, 2),
    "paper16k": AudioConfig("paper16k", 16000, 1280, 1280, 320, 80, 0.0, 8000.0, "e", 20, 2),
    "tiny": AudioConfig("tiny", 16000, 512, 512, 256, 32, 0.0, 8000.0, "e", 8, 2),
}


def audio_preset(name: str) -> AudioConfig:
    """Return a named preset (``s16k``, ``s44k``, ``paper``, ``paper16k``, ``tiny``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown audio preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class SequenceConfig:
    """Every length that a clip of ``duration`` seconds implies.

    The waveform is rounded *up* to a whole number of latent tokens (MMAudio: 8 s at 44.1 kHz is
    352,800 samples → 353,280 = 345 × 1024), so no audio is ever cut off.

    Args:
        duration: clip length in seconds.
        audio: the audio configuration.
        mllm_fps: frames per second fed to the MLLM (Qwen2.5-VL default in the paper: 2).
    """

    duration: float = 8.0
    audio: AudioConfig = field(default_factory=AudioConfig)
    mllm_fps: float = 2.0

    def __post_init__(self) -> None:
        if not self.duration > 0:
            raise ValueError(f"duration must be positive, got {self.duration}")
        if not self.mllm_fps > 0:
            raise ValueError(f"mllm_fps must be positive, got {self.mllm_fps}")

    @property
    def latent_len(self) -> int:
        """Latent tokens: ceil(duration · sr / hop / downsample)."""
        exact = self.duration * self.audio.sample_rate / self.audio.samples_per_latent
        return math.ceil(round(exact, 6))

    @property
    def num_samples(self) -> int:
        """Waveform samples, rounded up to a whole latent."""
        return self.latent_len * self.audio.samples_per_latent

    @property
    def valid_samples(self) -> int:
        """Samples that carry real signal (``round(duration · sr)``); the rest is padding."""
        return round(self.duration * self.audio.sample_rate)

    @property
    def mel_frames(self) -> int:
        """Mel frames of ``num_samples`` samples."""
        return self.num_samples // self.audio.hop_length

    @property
    def sync_frames(self) -> int:
        """Video frames at 25 fps fed to Synchformer."""
        return round(self.duration * SYNC_FPS)

    @property
    def sync_windows(self) -> int:
        """Synchformer windows of 16 frames with stride 8."""
        if self.sync_frames < SYNC_WINDOW:
            raise ValueError(f"duration {self.duration} s is shorter than one Synchformer window (0.64 s)")
        return (self.sync_frames - SYNC_WINDOW) // SYNC_STRIDE + 1

    @property
    def sync_len(self) -> int:
        """Synchformer tokens: windows × 8 (192 for 8 s)."""
        return self.sync_windows * SYNC_TOKENS_PER_WINDOW

    @property
    def mllm_frames(self) -> int:
        """Video frames sampled for the MLLM (at least one)."""
        return max(1, math.floor(round(self.duration * self.mllm_fps, 6)))

    def summary(self) -> dict:
        """All derived lengths, for logs and artifacts."""
        return {
            "duration": self.duration,
            "preset": self.audio.name,
            "num_samples": self.num_samples,
            "mel_frames": self.mel_frames,
            "latent_len": self.latent_len,
            "sync_frames": self.sync_frames,
            "sync_len": self.sync_len,
            "mllm_frames": self.mllm_frames,
        }
