"""Codec training losses and metrics as pure functions (BigVGAN vocoder, mel VAE).

GAN terms are least-squares (LSGAN), as in HiFi-GAN / BigVGAN (``bigvgan/loss.py``) and Make-An-Audio 2's
VAE discriminator. They take the per-sub-discriminator lists produced by
:mod:`reasonaudio.models.discriminators`; a single discriminator is a list of one.

BigVGAN's generator objective, with the weights applied by the caller::

    loss_G = gen_mpd + gen_mrd + fm_mpd + fm_mrd + λ_mel · mel
    λ_mel = 45 with mel_l1_loss (v1), 15 with multiscale_mel_loss (v2 configs)

Compute these in float32 (the STFTs cast their inputs; keep autocast off for the rest).
"""
from __future__ import annotations

import functools
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
import torchaudio.functional as AF

MULTISCALE_N_MELS = (5, 10, 20, 40, 80, 160, 320)
MULTISCALE_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
MRSTFT_RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))
"""``(n_fft, hop, win)`` of :func:`multi_resolution_stft_distance`."""


# --------------------------------------------------------------------------- adversarial


def discriminator_loss(real_outputs: Sequence[torch.Tensor], fake_outputs: Sequence[torch.Tensor]
                       ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Least-squares discriminator loss, summed over sub-discriminators.

    ``Σ_k mean((1 − D_k(y))²) + mean(D_k(ŷ)²)``; each mean runs over all logits (batch and patches).

    Args:
        real_outputs: logits on real inputs, one tensor per sub-discriminator.
        fake_outputs: logits on generated inputs (detached from the generator), same order.

    Returns:
        ``(total, real_parts, fake_parts)``: the scalar loss and the per-sub-discriminator terms
        ``mean((1 − D_k(y))²)`` and ``mean(D_k(ŷ)²)`` (tensors; BigVGAN logs them as floats).
    """
    if len(real_outputs) != len(fake_outputs):
        raise ValueError(f"{len(real_outputs)} real vs {len(fake_outputs)} generated discriminator outputs")
    real_parts = [torch.mean((1 - dr) ** 2) for dr in real_outputs]
    fake_parts = [torch.mean(dg ** 2) for dg in fake_outputs]
    return sum(r + g for r, g in zip(real_parts, fake_parts)), real_parts, fake_parts


def generator_adv_loss(fake_outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Least-squares generator loss ``Σ_k mean((1 − D_k(ŷ))²)``.

    Args:
        fake_outputs: logits on generated inputs, one tensor per sub-discriminator.

    Returns:
        ``(total, parts)``: the scalar loss and the per-sub-discriminator terms.
    """
    parts = [torch.mean((1 - dg) ** 2) for dg in fake_outputs]
    return sum(parts), parts


def feature_matching_loss(fmap_real: Sequence[Sequence[torch.Tensor]],
                          fmap_fake: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Feature matching ``2 · Σ_k Σ_l mean|f_kl(y) − f_kl(ŷ)|`` (BigVGAN's ``feature_loss``).

    The factor 2 is BigVGAN's λ_fm. Real feature maps are used as they are (not detached), as in
    the reference: the generator step only updates the generator.

    Args:
        fmap_real: per sub-discriminator, the feature maps of the real input.
        fmap_fake: the same for the generated input.
    """
    return 2 * sum(torch.mean(torch.abs(r - g)) for dr, dg in zip(fmap_real, fmap_fake) for r, g in zip(dr, dg))


# --------------------------------------------------------------------------- spectral reconstruction


def mel_l1_loss(mel_fake: torch.Tensor, mel_real: torch.Tensor) -> torch.Tensor:
    """Single-scale mel loss of BigVGAN v1: mean absolute difference of log-mels ``[B, M, F]``.

    The mels come from the training mel front end with ``fmax_for_loss``; BigVGAN weights this
    term by ``lambda_melloss`` = 45, which the caller applies.
    """
    return F.l1_loss(mel_fake, mel_real)


def transient_loss(mel_fake: torch.Tensor, mel_real: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Onset term of a codec: mean absolute difference of the one-hop rises of two log-mels ``[B, M, F]``.

    A rise is ``max(m[..., f + 1] - m[..., f], 0)``, the positive spectral flux per band that onset detectors
    threshold; plain L1 lets a model trade a sharp attack for a smeared one at little cost, this term does not.
    ``valid`` (``[B, 1, F]``, 1 for real frames) keeps only the rises between two real frames.
    """
    def rise(mel: torch.Tensor) -> torch.Tensor:
        return torch.relu(mel[..., 1:] - mel[..., :-1])

    diff = (rise(mel_fake) - rise(mel_real)).abs()
    if valid is None:
        return diff.mean()
    pairs = valid[..., 1:] * valid[..., :-1]
    return (diff * pairs).sum() / (pairs.sum() * diff.shape[1]).clamp(min=1)


@functools.lru_cache(maxsize=None)
def _mel_stft_constants(sample_rate: int, n_fft: int, n_mels: int, device: torch.device
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodic Hann window ``[n_fft]`` and Slaney mel bank ``[n_mels, n_fft / 2 + 1]`` (fmin 0, fmax Nyquist)."""
    # Cached tensors must stay usable by autograd even when first built inside a validation loop.
    with torch.inference_mode(False), warnings.catch_warnings():
        # The finest scales (e.g. 320 mels on 2048 points) have empty filters by design in the reference.
        warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
        fb = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate,
                                norm="slaney", mel_scale="slaney")  # [n_freqs, n_mels]
        # float64 then float32, like the reference's scipy window
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64).float()
        return window.to(device), fb.T.contiguous().to(device)


def multiscale_mel_loss(wav_fake: torch.Tensor, wav_real: torch.Tensor, sample_rate: int,
                        n_mels: Sequence[int] = MULTISCALE_N_MELS, window_lengths: Sequence[int] = MULTISCALE_WINDOWS,
                        clamp_eps: float = 1e-5, power: float = 1.0) -> torch.Tensor:
    """BigVGAN-v2 multi-scale mel loss (DAC's ``MelSpectrogramLoss``), summed over scales.

    Per scale (window ``w``, ``m`` mels): STFT with a periodic Hann window of ``w``, hop ``w / 4``,
    ``center=True`` (reflect padding); magnitude; Slaney mel bank (fmin 0, fmax Nyquist); then
    ``L1(log10(clamp(mel_fake, eps)^power), log10(clamp(mel_real, eps)^power))`` with a mean over
    all elements. The reference also has a magnitude term, but with weight 0 in every BigVGAN
    config (and it compares the log-mels again), so it is left out. BigVGAN v2 weights the total
    by ``lambda_melloss`` = 15, applied by the caller.

    Args:
        wav_fake: generated waveform ``[..., T]`` (e.g. ``[B, 1, T]``).
        wav_real: real waveform, same shape.
        sample_rate: waveform rate in Hz (defines the mel banks).
        n_mels: mel bands per scale.
        window_lengths: STFT window (= FFT size) per scale.
        clamp_eps: floor of the mel magnitudes before the log.
        power: exponent of the mel magnitudes.

    Returns:
        Scalar loss.
    """
    if len(n_mels) != len(window_lengths):
        raise ValueError(f"one mel count per window, got {n_mels} and {window_lengths}")
    fake = wav_fake.reshape(-1, wav_fake.shape[-1]).float()  # [N, T]
    real = wav_real.reshape(-1, wav_real.shape[-1]).float()
    loss = fake.new_zeros(())
    for m, w in zip(n_mels, window_lengths):
        window, mel_basis = _mel_stft_constants(sample_rate, w, m, fake.device)
        logs = []
        for x in (fake, real):
            mag = torch.stft(x, w, hop_length=w // 4, window=window, center=True, return_complex=True).abs()
            logs.append(torch.log10(torch.matmul(mel_basis, mag).clamp(min=clamp_eps).pow(power)))  # [N, m, frames]
        loss = loss + F.l1_loss(logs[0], logs[1])
    return loss


def multi_resolution_stft_distance(wav_fake: torch.Tensor, wav_real: torch.Tensor,
                                   resolutions: Sequence[Sequence[int]] = MRSTFT_RESOLUTIONS,
                                   eps: float = 1e-8) -> torch.Tensor:
    """Multi-resolution STFT distance (Yamamoto et al. 2019; auraloss ``MultiResolutionSTFTLoss`` semantics).

    Per resolution ``(n_fft, hop, win)``: magnitudes ``|S| = sqrt(max(re² + im², eps))`` of a
    periodic-Hann, ``center=True`` STFT; spectral convergence ``‖|S_real| − |S_fake|‖_F / ‖|S_real|‖_F``
    (Frobenius norms over the whole batch) plus ``mean|ln|S_real| − ln|S_fake||``. The result is the
    mean over resolutions. Used as a validation metric (lower is better; 0 for identical signals).

    Args:
        wav_fake: generated waveform ``[..., T]`` (``[B, T]`` or ``[B, 1, T]``).
        wav_real: real waveform, same shape.
        resolutions: ``(n_fft, hop, win)`` triples.
        eps: floor of the power spectrum.

    Returns:
        Scalar distance.
    """
    fake = wav_fake.reshape(-1, wav_fake.shape[-1]).float()  # [N, T]
    real = wav_real.reshape(-1, wav_real.shape[-1]).float()
    total = fake.new_zeros(())
    for n_fft, hop, win in resolutions:
        window = torch.hann_window(win, device=fake.device)
        fake_mag, real_mag = (
            torch.view_as_real(torch.stft(x, n_fft, hop_length=hop, win_length=win, window=window,
                                          return_complex=True)).pow(2).sum(-1).clamp(min=eps).sqrt()
            for x in (fake, real))  # [N, n_fft / 2 + 1, frames]
        convergence = torch.linalg.norm(real_mag - fake_mag) / torch.linalg.norm(real_mag)
        total = total + convergence + F.l1_loss(torch.log(fake_mag), torch.log(real_mag))
    return total / len(resolutions)


# --------------------------------------------------------------------------- VAE


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) of a diagonal Gaussian posterior.

    ``½ Σ (μ² + σ² − 1 − log σ²)`` summed over every non-batch element (channels and time), then
    averaged over the batch — the reduction of LDM / Make-An-Audio 2 (``sum / batch``), with which
    their 1e-6 KL weight is calibrated.

    Args:
        mean: posterior mean ``[B, ...]`` (e.g. ``[B, C, T]``).
        logvar: posterior log-variance ``log σ²``, same shape.

    Returns:
        Scalar KL per sample.
    """
    kl = 0.5 * (mean.pow(2) + torch.exp(logvar) - 1.0 - logvar)
    return kl.sum() / mean.shape[0]


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                        eps: float = 1e-4, max_weight: float = 1e4) -> torch.Tensor:
    """Adaptive adversarial weight of Taming Transformers / LDM.

    ``λ = ‖∇_w rec‖ / (‖∇_w gan‖ + eps)`` at the decoder's last layer ``w``, clamped to
    ``[0, max_weight]`` and detached, so the adversarial gradient reaching ``w`` is as large as the
    reconstruction gradient. The caller multiplies by its ``disc_weight``.

    Args:
        rec_loss: scalar reconstruction loss (graph kept; only gradients w.r.t. ``last_layer`` are taken).
        gan_loss: scalar adversarial generator loss.
        last_layer: weight tensor of the generator's output layer.
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = torch.linalg.norm(rec_grad) / (torch.linalg.norm(gan_grad) + eps)
    return weight.clamp(0.0, max_weight).detach()


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty (Mescheder et al. 2018) on real data.

    ``E_batch ‖∇_x Σ D(x)‖²``: the squared norm of the gradient of the summed logits (all patches)
    w.r.t. each real input, averaged over the batch. The graph is kept so the penalty trains the
    discriminator; the caller applies its weight (Make-An-Audio 2 uses 3; StyleGAN's γ/2).

    Args:
        real_logits: discriminator logits on ``real_inputs``, any shape ``[B, ...]``.
        real_inputs: the real batch ``[B, ...]``, with ``requires_grad`` set before the forward pass.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()
