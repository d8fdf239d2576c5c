"""Discriminators and codec losses against BigVGAN (``bigvgan`` PyPI package), nnAudio, auraloss and closed forms.

The reference discriminators are built with random weights from a BigVGAN-v2-44k-style config,
their state dicts are loaded strictly into ours, and every logit and feature map is compared on
real fixture audio.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reasonaudio import losses as L
from reasonaudio.media import load_audio
from reasonaudio.models import discriminators as D

R = pytest.importorskip("bigvgan.discriminators", reason="test-only dependency `bigvgan` (pip install -e '.[dev]')")
ref_loss = pytest.importorskip("bigvgan.loss")
AttrDict = pytest.importorskip("bigvgan.env").AttrDict
nn_cqt = pytest.importorskip("nnAudio.features.cqt")
auraloss_freq = pytest.importorskip("auraloss.freq")

pytestmark = [
    # the reference code's own warnings (legacy weight_norm, window-less stft)
    pytest.mark.filterwarnings("ignore:.*weight_norm.* is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:A window was not provided:UserWarning"),
    pytest.mark.filterwarnings("ignore:Empty filters detected:UserWarning"),
]

SR = 44100
SEGMENT = 4096  # 0.09 s (the full-width MPD and CQT-D are costly on 2 cores); a multiple of 256 so that
# every CQT octave has the same frame count
TOL = 1e-5


def v2_config(**overrides) -> AttrDict:
    """Discriminator fields of ``bigvgan_v2_44khz_128band_512x``'s config (fresh: the reference mutates it)."""
    cfg = dict(sampling_rate=SR, mpd_reshapes=[2, 3, 5, 7, 11], use_spectral_norm=False, discriminator_channel_mult=1,
               resolutions=[[1024, 120, 600], [2048, 240, 1200], [512, 50, 240]], use_cqtd_instead_of_mrd=True,
               cqtd_filters=128, cqtd_max_filters=1024, cqtd_filters_scale=1, cqtd_dilations=[1, 2, 4],
               cqtd_hop_lengths=[512, 256, 256], cqtd_n_octaves=[9, 9, 9], cqtd_bins_per_octaves=[24, 36, 48])
    cfg.update(overrides)
    return AttrDict(cfg)


def excerpt(fixtures_dir, name: str, start: float, rate: int = SR, n: int = SEGMENT) -> torch.Tensor:
    """``n`` samples of a fixture clip from ``start`` s, ``[n]``."""
    return load_audio(fixtures_dir / "media" / "audio" / name, rate, start=start, duration=n / rate).wav


@pytest.fixture(scope="module")
def audio(fixtures_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and "generated" batches ``[2, 1, SEGMENT]``: typing and rain, and other excerpts of them."""
    y = torch.stack([excerpt(fixtures_dir, "typing.wav", 1.8), excerpt(fixtures_dir, "rain.wav", 2.0)])[:, None]
    y_hat = torch.stack([excerpt(fixtures_dir, "typing.wav", 3.6), excerpt(fixtures_dir, "rain.wav", 4.0)])[:, None]
    assert y.abs().amax(-1).min() > 0.1  # not silence
    return y, y_hat


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def max_diff(a, b) -> float:
    """Largest absolute difference between two equally nested lists of tensors (shapes must match)."""
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape
        return float((a - b).abs().max())
    assert len(a) == len(b)
    return max(max_diff(x, y) for x, y in zip(a, b))


def load_reference(ref: nn.Module, ours: nn.Module) -> None:
    """Same keys in the same order, then a strict load of the reference's (random) weights into ours."""
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)


@torch.no_grad()
def compare(ref: nn.Module, ours: nn.Module, y: torch.Tensor, y_hat: torch.Tensor
            ) -> tuple[float, D.DiscriminatorOutput]:
    """Max abs difference over all logits and feature maps, and our outputs."""
    ref_out, our_out = ref.eval()(y, y_hat), ours.eval()(y, y_hat)
    return max_diff(list(ref_out), list(our_out)), our_out


# --------------------------------------------------------------------------- discriminators vs BigVGAN


def test_mpd_matches_bigvgan(audio):
    torch.manual_seed(0)
    ref = R.MultiPeriodDiscriminator(v2_config())
    ours = D.MultiPeriodDiscriminator()
    assert n_params(ours) == n_params(ref) == 41_105_770
    load_reference(ref, ours)
    assert compare(ref, ours, *audio)[0] <= TOL


def test_mpd_spectral_norm_and_channel_mult_match_bigvgan(audio):
    torch.manual_seed(1)
    ref = R.MultiPeriodDiscriminator(v2_config(use_spectral_norm=True, discriminator_channel_mult=0.25))
    ours = D.MultiPeriodDiscriminator(use_spectral_norm=True, channel_mult=0.25)
    load_reference(ref, ours)  # weight_orig / weight_u / weight_v
    assert compare(ref, ours, *audio)[0] <= TOL


def test_mrd_matches_bigvgan(audio):
    torch.manual_seed(2)
    ref = R.MultiResolutionDiscriminator(v2_config())
    ours = D.MultiResolutionDiscriminator()
    assert n_params(ours) == n_params(ref) == 280_902
    load_reference(ref, ours)
    assert compare(ref, ours, *audio)[0] <= TOL


def test_cqtd_matches_bigvgan(audio):
    torch.manual_seed(3)
    ref = R.MultiScaleSubbandCQTDiscriminator(v2_config())
    ours = D.MultiScaleSubbandCQTDiscriminator(SR)
    assert n_params(ours) == n_params(ref) == 4_454_304
    load_reference(ref, ours)  # includes the CQT kernels, filters and the resampler's kernel
    diff, (y_d_rs, _, fmap_rs, _) = compare(ref, ours, *audio)
    assert diff <= TOL
    assert [tuple(t.shape) for t in y_d_rs] == [(2, 1, 17, 27), (2, 1, 33, 41), (2, 1, 33, 54)]
    assert [len(f) for f in fmap_rs] == [5, 5, 5]


def test_cqtd_normalize_volume_matches_bigvgan(audio):
    torch.manual_seed(4)
    ref = R.MultiScaleSubbandCQTDiscriminator(v2_config(cqtd_filters=16, cqtd_normalize_volume=True,
                                                        cqtd_hop_lengths=[512], cqtd_n_octaves=[9],
                                                        cqtd_bins_per_octaves=[24]))
    ours = D.MultiScaleSubbandCQTDiscriminator(SR, (512,), (9,), (24,), filters=16, normalize_volume=True)
    load_reference(ref, ours)
    y, y_hat = audio
    assert compare(ref, ours, 0.5 * y[:1], y_hat[:1])[0] <= TOL


@pytest.mark.parametrize("sr,hop,n_bins,bpo,early", [
    (2 * SR, 512, 216, 24, 1),   # the three CQT-D scales of BigVGAN v2 at 44.1 kHz
    (2 * SR, 256, 324, 36, 1),
    (2 * SR, 256, 432, 48, 1),
    (192000, 512, 216, 24, 2),   # early downsampling by 2
    (48000, 256, 100, 12, 1),    # n_bins not a whole number of octaves
])
def test_cqt_matches_nnaudio(fixtures_dir, sr, hop, n_bins, bpo, early):
    """Kernels built here (not loaded) equal nnAudio's CQT2010v2, and so does the transform."""
    ref = nn_cqt.CQT2010v2(sr=sr, hop_length=hop, n_bins=n_bins, bins_per_octave=bpo, output_format="Complex",
                           pad_mode="constant", verbose=False)
    ours = D.ConstantQTransform(sr, hop, n_bins, bpo)
    assert ours.downsample_factor == ref.downsample_factor == early
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)
    assert max_diff(list(our_sd.values()), list(ref_sd.values())) <= 1e-7
    x = excerpt(fixtures_dir, "typing.wav", 1.8, rate=sr, n=hop * 64)[None, None]  # [1, 1, S]
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert got.shape == want.shape == (1, n_bins, 65, 2)
    assert max_diff(got, want) <= TOL * float(want.abs().max())


def test_cqt_rejects_bad_configs():
    with pytest.raises(ValueError, match="Nyquist"):
        D.ConstantQTransform(16000, 512, 9 * 24, 24)  # top bin ≈ 16.4 kHz
    with pytest.raises(ValueError, match="divisible"):
        D.ConstantQTransform(2 * SR, 384, 9 * 24, 24)  # 384 / 2**8 is not whole


# --------------------------------------------------------------------------- builders and wrappers


def test_bigvgan_discriminators_v2_and_v1_configs():
    v2 = v2_config(discriminator_channel_mult=0.25)  # narrow MPD: only the wiring is under test
    mpd, cqtd = D.bigvgan_discriminators(v2)
    assert isinstance(cqtd, D.MultiScaleSubbandCQTDiscriminator)
    load_reference(R.MultiPeriodDiscriminator(v2), mpd)
    load_reference(R.MultiScaleSubbandCQTDiscriminator(v2), cqtd)

    v1 = v2_config(use_cqtd_instead_of_mrd=False, mrd_channel_mult=0.5, mrd_use_spectral_norm=True)
    _, mrd = D.bigvgan_discriminators(v1)
    assert isinstance(mrd, D.MultiResolutionDiscriminator)
    load_reference(R.MultiResolutionDiscriminator(v1), mrd)

    with pytest.raises(ValueError, match="multi-band"):
        D.bigvgan_discriminators(v2_config(use_mbd_instead_of_mrd=True))


def test_combined_concatenates_children(audio):
    torch.manual_seed(5)
    mpd = D.MultiPeriodDiscriminator(periods=(2, 3), channel_mult=0.125)
    mrd = D.MultiResolutionDiscriminator(channel_mult=0.25)
    y, y_hat = audio
    with torch.no_grad():
        combined = D.CombinedDiscriminator([mpd, mrd])(y, y_hat)
        parts = [mpd(y, y_hat), mrd(y, y_hat)]
    assert [len(c) for c in combined] == [5, 5, 5, 5]
    assert max_diff(list(combined), [parts[0][i] + parts[1][i] for i in range(4)]) == 0.0


# --------------------------------------------------------------------------- mel VAE discriminator


def test_patch_discriminator_shapes_and_independence():
    torch.manual_seed(6)
    disc = D.PatchDiscriminator1D(in_channels=80, channels=16, max_channels=64, n_layers=3)
    mel = torch.randn(2, 80, 50)
    logits, fmap = disc.features(mel)
    assert logits.shape == (2, 1, 7)  # ⌈50 / 8⌉ patches
    assert torch.equal(disc(mel), logits)
    assert [f.shape[1] for f in fmap] == [16, 32, 64, 64, 1]
    other = mel.clone()
    other[1] = torch.randn(80, 50)
    assert torch.equal(disc(other)[0], logits[0])  # no batch statistics
    with pytest.raises(ValueError):
        D.PatchDiscriminator1D(kernel_size=4)


def test_patch_discriminator_trains_with_r1():
    torch.manual_seed(7)
    disc = D.PatchDiscriminator1D(in_channels=8, channels=8, n_layers=2)
    real = torch.randn(3, 8, 32, requires_grad=True)
    logits = disc(real)
    d_loss = L.discriminator_loss([logits], [disc(torch.randn(3, 8, 32))])[0] + 3.0 * L.r1_penalty(logits, real)
    d_loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters())


# --------------------------------------------------------------------------- losses vs BigVGAN / auraloss


@pytest.fixture(scope="module")
def mrd_outputs(audio):
    torch.manual_seed(8)
    with torch.no_grad():
        return D.MultiResolutionDiscriminator(channel_mult=0.25)(*audio)


def test_gan_losses_match_bigvgan(mrd_outputs):
    y_d_rs, y_d_gs, fmap_rs, fmap_gs = mrd_outputs
    total, real_parts, fake_parts = L.discriminator_loss(y_d_rs, y_d_gs)
    ref_total, ref_real, ref_fake = ref_loss.discriminator_loss(y_d_rs, y_d_gs)
    assert abs(float(total - ref_total)) <= TOL * float(ref_total)
    assert [float(t) for t in real_parts] == pytest.approx(ref_real, rel=TOL)
    assert [float(t) for t in fake_parts] == pytest.approx(ref_fake, rel=TOL)

    gen, gen_parts = L.generator_adv_loss(y_d_gs)
    ref_gen, ref_gen_parts = ref_loss.generator_loss(y_d_gs)
    assert float(gen) == pytest.approx(float(ref_gen), rel=TOL)
    assert max_diff(gen_parts, ref_gen_parts) <= TOL

    fm = L.feature_matching_loss(fmap_rs, fmap_gs)
    assert float(fm) == pytest.approx(float(ref_loss.feature_loss(fmap_rs, fmap_gs)), rel=TOL)


@pytest.mark.parametrize("rate", [22050, 44100])
def test_multiscale_mel_loss_matches_bigvgan(fixtures_dir, rate):
    n = 11025  # 0.5 s at 22.05 kHz, 0.25 s at 44.1 kHz
    y = torch.stack([excerpt(fixtures_dir, "typing.wav", 1.8, rate, n),
                     excerpt(fixtures_dir, "rain.wav", 2.0, rate, n)])
    y_hat = torch.stack([excerpt(fixtures_dir, "typing.wav", 3.6, rate, n),
                         excerpt(fixtures_dir, "rain.wav", 4.0, rate, n)])
    y, y_hat = y[:, None], y_hat[:, None]  # [2, 1, T]
    want = float(ref_loss.MultiScaleMelSpectrogramLoss(rate)(y_hat, y))
    assert float(L.multiscale_mel_loss(y_hat, y, rate)) == pytest.approx(want, rel=TOL)
    assert float(L.multiscale_mel_loss(y, y, rate)) == 0.0


def test_multiscale_mel_loss_trains_after_an_inference_mode_call():
    """Its cached window and mel banks, first built under inference mode (a validation loop), still allow backward."""
    y = torch.randn(1, 1, 4096) * 0.1
    with torch.inference_mode():
        L.multiscale_mel_loss(y, y, 16000)
    y_hat = (0.5 * y).requires_grad_()
    L.multiscale_mel_loss(y_hat, y, 16000).backward()
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0


def test_mrstft_distance_matches_auraloss_and_closed_form(audio):
    y, y_hat = audio
    ref = auraloss_freq.MultiResolutionSTFTLoss(fft_sizes=[512, 1024, 2048], hop_sizes=[128, 256, 512],
                                                win_lengths=[512, 1024, 2048])
    assert float(L.multi_resolution_stft_distance(y_hat, y)) == pytest.approx(float(ref(y_hat, y)), rel=TOL)
    assert float(L.multi_resolution_stft_distance(y[:, 0], y[:, 0])) == 0.0  # [B, T] input too
    # ŷ = a·y: spectral convergence |1 − a|, log-magnitude distance |ln a| (no floor in the way)
    a = 0.5
    got = float(L.multi_resolution_stft_distance(a * y, y, eps=1e-30))
    assert got == pytest.approx(abs(1 - a) + abs(math.log(a)), rel=1e-5)


# --------------------------------------------------------------------------- closed forms


def test_lsgan_losses_on_constant_logits():
    a, b = 0.3, -0.4
    real = [torch.full((2, 7), a), torch.full((2, 1, 5, 3), a)]
    fake = [torch.full((2, 7), b), torch.full((2, 1, 5, 3), b)]
    total, real_parts, fake_parts = L.discriminator_loss(real, fake)
    assert float(total) == pytest.approx(2 * ((1 - a) ** 2 + b ** 2))
    assert [float(t) for t in real_parts] == pytest.approx([(1 - a) ** 2] * 2)
    assert [float(t) for t in fake_parts] == pytest.approx([b ** 2] * 2)
    gen, parts = L.generator_adv_loss(fake)
    assert float(gen) == pytest.approx(2 * (1 - b) ** 2) and len(parts) == 2
    with pytest.raises(ValueError):
        L.discriminator_loss(real, fake[:1])


def test_feature_matching_and_mel_l1_on_constant_offsets():
    fmap = [[torch.randn(2, 4, 9), torch.randn(2, 1, 3)], [torch.randn(2, 8, 5, 2)]]
    shifted = [[f + 0.25 for f in d] for d in fmap]
    assert float(L.feature_matching_loss(fmap, shifted)) == pytest.approx(2 * 3 * 0.25)
    mel = torch.randn(2, 80, 10)
    assert float(L.mel_l1_loss(mel - 0.5, mel)) == pytest.approx(0.5)


def test_kl_divergence_closed_form():
    torch.manual_seed(9)
    mean, logvar = torch.randn(4, 3, 10), torch.randn(4, 3, 10)
    var = logvar.exp()
    per_element = 0.5 * (mean ** 2 + var - 1 - torch.log(var))
    assert float(L.kl_divergence(mean, logvar)) == pytest.approx(float(per_element.sum() / 4), rel=1e-6)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    closed = torch.distributions.kl_divergence(q, p).sum() / 4
    assert float(L.kl_divergence(mean, logvar)) == pytest.approx(float(closed), rel=1e-5)
    assert float(L.kl_divergence(torch.zeros(2, 5), torch.zeros(2, 5))) == 0.0


def test_adaptive_gan_weight_on_linear_layer():
    x = torch.tensor([3.0, 4.0])  # ‖x‖ = 5
    w = torch.tensor([0.1, -0.2], requires_grad=True)
    out = w @ x
    rec, gan = 2.0 * out, -0.5 * out  # ∇_w rec = 2x, ∇_w gan = −0.5x
    weight = L.adaptive_gan_weight(rec, gan, w)
    assert float(weight) == pytest.approx(10.0 / (2.5 + 1e-4))
    assert not weight.requires_grad
    (rec + gan).backward()  # the graph survives for the real backward pass
    # a vanishing adversarial gradient is clamped to the maximum weight
    w2 = torch.tensor([1.0], requires_grad=True)
    assert float(L.adaptive_gan_weight(5.0 * w2.sum(), 0.0 * w2.sum(), w2)) == 1e4


def test_r1_penalty_on_linear_discriminator():
    torch.manual_seed(10)
    w = torch.randn(8, 16, requires_grad=True)
    x = torch.randn(5, 8, 16, requires_grad=True)
    logits = (x * w).sum(dim=(1, 2)) + 0.7  # D(x) = ⟨w, x⟩ + b, so ∇_x D = w for every sample
    penalty = L.r1_penalty(logits, x)
    assert float(penalty.detach()) == pytest.approx(float(w.detach().pow(2).sum()), rel=1e-6)
    (grad_w,) = torch.autograd.grad(penalty, w)  # differentiable w.r.t. the discriminator
    assert torch.allclose(grad_w, 2 * w)
