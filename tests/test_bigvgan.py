"""BigVGAN generator against NVIDIA's reference implementation (the ``bigvgan`` PyPI package, v2.4.1).

The reference builds each generator, its parameters get random perturbations (so that log-scale
Snake α / β are not all zero and every layer matters), and it is saved in the released folder
format (``config.json`` + ``bigvgan_generator.pt`` = ``{"generator": state_dict}``). Our
``BigVGAN.from_pretrained`` must load that folder strictly and produce the same waveform from the
log-mel of a real fixture clip. The two large configurations (BigVGAN-v2 44 kHz 512× and the paper's
hop-320 vocoder) are built once per module; the remaining tests use small configurations.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from bigvgan.activations import Snake as RefSnake
from bigvgan.activations import SnakeBeta as RefSnakeBeta
from bigvgan.alias_free_activation.torch.act import Activation1d as RefActivation1d
from bigvgan.alias_free_activation.torch.filter import kaiser_sinc_filter1d
from bigvgan.bigvgan import BigVGAN as RefBigVGAN
from bigvgan.env import AttrDict
from jsonargparse import ArgumentParser
from torch import nn

from reasonaudio.config import audio_preset
from reasonaudio.media import load_audio
from reasonaudio.models.bigvgan import (CONFIG_NAME, WEIGHTS_NAME, Activation1d, BigVGAN, BigVGANConfig, Snake,
                                        SnakeBeta, bigvgan_paper, bigvgan_paper16k, bigvgan_tiny, bigvgan_v2_44k_512x,
                                        kaiser_sinc_filter)
from reasonaudio.models.mel import MelSpectrogram

pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.* is deprecated:FutureWarning")

TOL = 1e-5
"""Largest allowed waveform difference from the reference (fp32)."""

RELEASED_44K_512X = {
    "resblock": "1", "num_gpus": 0, "batch_size": 4, "learning_rate": 0.0001, "adam_b1": 0.8, "adam_b2": 0.99,
    "lr_decay": 0.9999996, "seed": 1234,
    "upsample_rates": [8, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [16, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 1536, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "use_tanh_at_final": False, "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True,
    "use_cqtd_instead_of_mrd": True, "cqtd_filters": 128, "cqtd_max_filters": 1024, "cqtd_filters_scale": 1,
    "cqtd_dilations": [1, 2, 4], "cqtd_hop_lengths": [512, 256, 256], "cqtd_n_octaves": [9, 9, 9],
    "cqtd_bins_per_octaves": [24, 36, 48], "mpd_reshapes": [2, 3, 5, 7, 11], "use_spectral_norm": False,
    "discriminator_channel_mult": 1, "use_multiscale_melloss": True, "lambda_melloss": 15, "clip_grad_norm": 500,
    "segment_size": 65536, "num_mels": 128, "num_freq": 2049, "n_fft": 2048, "hop_size": 512, "win_size": 2048,
    "sampling_rate": 44100, "fmin": 0, "fmax": None, "fmax_for_loss": None, "num_workers": 4,
    "dist_config": {"dist_backend": "nccl", "dist_url": "tcp://localhost:54321", "world_size": 1},
}
"""``config.json`` of nvidia/bigvgan_v2_44khz_128band_512x (BigVGAN repo configs/, v2.4), training fields included."""

PAPER_CONFIG = {
    "resblock": "1", "upsample_rates": [5, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [9, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 1536, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "use_tanh_at_final": False,
    "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True, "num_mels": 128,
    "n_fft": 1280, "hop_size": 320, "win_size": 1280, "sampling_rate": 44100, "fmin": 0, "fmax": None,
    "segment_size": 65536, "learning_rate": 0.0001,
}
"""The paper's Table 7 vocoder with the ``paper`` audio preset (44.1 kHz), as a v2-style ``config.json``."""
PAPER16K_CONFIG = dict(PAPER_CONFIG, num_mels=80, sampling_rate=16000, fmax=8000)
"""The same at 16 kHz / 80 mels (the ``paper16k`` preset)."""

PARAMS_44K_512X = 122_184_529
"""Parameters of bigvgan_v2_44khz_128band_512x with weight norm (the README's "122M")."""
PARAMS_PAPER = 113_926_993
"""Parameters of the Table 7 configuration at 128 mels and 1536 channels (the paper states 121.6M)."""
PARAMS_PAPER16K = 113_410_897
"""The same at 80 mels."""

SMALL = dict(num_mels=12, upsample_rates=[4, 2, 2], upsample_kernel_sizes=[8, 4, 4], upsample_initial_channel=32,
             resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 2]], use_tanh_at_final=False,
             use_bias_at_final=False, activation="snakebeta", snake_logscale=True, resblock="1")
"""A fast configuration with two parallel AMP blocks per stage."""


def reference(config: dict, seed: int) -> RefBigVGAN:
    """The reference generator for a ``config.json`` dict, every parameter perturbed, in eval mode."""
    model = RefBigVGAN(AttrDict(copy.deepcopy(config)), use_cuda_kernel=False).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if name.endswith(("alpha", "beta")) else 0.02
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def save_release(folder: Path, config: dict, state: dict) -> Path:
    """Write the released folder format."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    torch.save({"generator": state}, folder / WEIGHTS_NAME)
    return folder


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


pytestmark = pytest.mark.usefixtures("one_thread")  # 2-thread pools stall on a shared 2-core runner


@dataclass
class Case:
    """A large reference generator, its released folder, and both models' output on a real clip."""

    config: dict
    folder: Path
    ref: RefBigVGAN
    ours: BigVGAN
    mel: torch.Tensor  # [1, M, F]
    ref_wave: torch.Tensor  # [1, 1, F · hop]
    ours_wave: torch.Tensor


CASES = {  # config, audio preset of the mel, fixture clip, mel frames (≈ 0.25 s)
    "v2_44k_512x": (RELEASED_44K_512X, "s44k", "dog.wav", 22),
    "paper": (PAPER_CONFIG, "paper", "rain.wav", 13),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, fixtures_dir: Path, tmp_path_factory) -> Case:
    config, preset, clip, frames = CASES[request.param]
    audio = audio_preset(preset)
    samples = frames * audio.hop_length
    wav = load_audio(fixtures_dir / "media" / "audio" / clip, audio.sample_rate, start=1.0,
                     duration=samples / audio.sample_rate).wav
    mel = MelSpectrogram(preset)(wav[None])  # [1, M, F]
    assert mel.shape == (1, config["num_mels"], frames)
    ref = reference(config, seed=0)
    folder = save_release(tmp_path_factory.mktemp(request.param), config, ref.state_dict())
    ours = BigVGAN.from_pretrained(folder)
    with torch.no_grad():
        ref_wave, ours_wave = ref(mel), ours(mel)
    return Case(config, folder, ref, ours, mel, ref_wave, ours_wave)


def test_released_folder_matches_reference(case: Case):
    hop = math.prod(case.config["upsample_rates"])
    assert case.ours_wave.shape == (1, 1, case.mel.shape[-1] * hop)
    # The comparison means something only if the waveform is neither silent nor clipped.
    assert case.ref_wave.std() > 1e-3 and (case.ref_wave.abs() < 1).float().mean() > 0.9
    assert max_diff(case.ours_wave, case.ref_wave) <= TOL


def test_parameter_count_and_keys_equal_reference(case: Case):
    expected = PARAMS_44K_512X if case.config is RELEASED_44K_512X else PARAMS_PAPER
    assert n_params(case.ref) == n_params(case.ours) == expected
    ours_keys, ref_keys = case.ours.state_dict().keys(), case.ref.state_dict().keys()
    assert list(ours_keys) == list(ref_keys)
    assert "conv_pre.weight_g" in ours_keys and "conv_post.bias" not in ours_keys
    assert not any("parametrizations" in k for k in ours_keys)


def test_remove_weight_norm_keeps_output(case: Case):
    fused = copy.deepcopy(case.ours)
    fused.remove_weight_norm()
    fused.remove_weight_norm()  # idempotent
    keys = fused.state_dict().keys()
    assert "conv_pre.weight" in keys and not any(k.endswith(("weight_g", "weight_v")) for k in keys)
    with torch.no_grad():
        wave = fused(case.mel)
    assert max_diff(wave, case.ours_wave) <= TOL
    assert max_diff(wave, case.ref_wave) <= TOL


def test_wrong_config_names_mismatching_keys(case: Case, tmp_path: Path):
    wrong = dict(case.config, num_mels=case.config["num_mels"] // 2)
    folder = tmp_path / "wrong"
    folder.mkdir()
    (folder / CONFIG_NAME).write_text(json.dumps(wrong))
    (folder / WEIGHTS_NAME).symlink_to(case.folder / WEIGHTS_NAME)
    c0, mels = case.config["upsample_initial_channel"], case.config["num_mels"]
    with pytest.raises(ValueError, match="shape mismatches") as err:
        BigVGAN.from_pretrained(folder)
    assert f"conv_pre.weight_v: checkpoint ({c0}, {mels}, 7) vs model ({c0}, {mels // 2}, 7)" in str(err.value)
    assert "missing keys" not in str(err.value) and WEIGHTS_NAME in str(err.value)


def test_presets_match_released_and_paper_configs():
    v2, paper = bigvgan_v2_44k_512x(), bigvgan_paper()
    assert v2.config.generator_kwargs() == BigVGANConfig.from_dict(RELEASED_44K_512X).generator_kwargs()
    assert paper.config.generator_kwargs() == BigVGANConfig.from_dict(PAPER_CONFIG).generator_kwargs()
    paper16k = bigvgan_paper16k()
    assert paper16k.config.generator_kwargs() == BigVGANConfig.from_dict(PAPER16K_CONFIG).generator_kwargs()
    assert n_params(v2) == PARAMS_44K_512X and n_params(paper) == PARAMS_PAPER
    assert n_params(paper16k) == PARAMS_PAPER16K
    for model, preset in ((v2, "s44k"), (paper, "paper"), (paper16k, "paper16k"), (bigvgan_tiny(), "tiny")):
        audio = audio_preset(preset)
        assert (model.hop_length, model.config.num_mels, model.config.sampling_rate) == \
            (audio.hop_length, audio.n_mels, audio.sample_rate)


# --------------------------------------------------------------------------- small configurations


@pytest.mark.parametrize("half_width", [0.3, 0.2, 0.05])  # Kaiser β: each branch of the attenuation formula
@pytest.mark.parametrize("kernel_size", [12, 8])
def test_kaiser_sinc_filter_equals_reference(kernel_size: int, half_width: float):
    ours = kaiser_sinc_filter(0.25, half_width, kernel_size)
    torch.testing.assert_close(ours, kaiser_sinc_filter1d(0.25, half_width, kernel_size), rtol=0, atol=1e-7)


def test_kaiser_sinc_filter_rejects_odd_kernel():
    with pytest.raises(ValueError, match="got 11"):
        kaiser_sinc_filter(0.25, 0.3, 11)


@pytest.mark.parametrize("length", [1, 2, 31, 32, 33, 100])  # block size 32: below, at and across block edges
@pytest.mark.parametrize("kind,logscale", [("snakebeta", True), ("snake", False), ("snake", True)])
def test_activation_matches_reference(kind: str, logscale: bool, length: int):
    channels = 3
    ref_act = RefSnakeBeta(channels, alpha_logscale=logscale) if kind == "snakebeta" else \
        RefSnake(channels, alpha_logscale=logscale)
    ref = RefActivation1d(ref_act)
    ours = Activation1d(SnakeBeta(channels, logscale) if kind == "snakebeta" else Snake(channels, logscale))
    gen = torch.Generator().manual_seed(length)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.rand(p.shape, generator=gen) * 0.5)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, channels, length, generator=gen)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) <= TOL


@pytest.mark.parametrize("overrides", [
    {},
    {"resblock": "2", "activation": "snake", "snake_logscale": False, "use_tanh_at_final": True,
     "use_bias_at_final": True},
    {"activation": "snake", "use_tanh_at_final": True},
], ids=["v2-snakebeta", "resblock2-snake-linear-tanh-bias", "snake-logscale-tanh"])
def test_small_configs_match_reference(overrides: dict, tmp_path: Path):
    config = {**SMALL, **overrides}
    ref = reference(config, seed=1)
    ours = BigVGAN.from_pretrained(save_release(tmp_path, config, ref.state_dict()))
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert ("conv_post.bias" in ours.state_dict()) == config["use_bias_at_final"]
    mel = torch.randn(2, config["num_mels"], 9) - 3
    with torch.no_grad():
        wave = ours(mel)
        assert wave.shape == (2, 1, 9 * 16)
        assert max_diff(wave, ref(mel)) <= TOL


def test_checkpoint_saved_without_weight_norm_loads(tmp_path: Path, capsys):
    ref = reference(SMALL, seed=2)
    ref.remove_weight_norm()  # prints a line
    ours = BigVGAN.from_pretrained(save_release(tmp_path, SMALL, ref.state_dict()))
    assert "conv_pre.weight" in ours.state_dict()
    mel = torch.randn(1, SMALL["num_mels"], 7)
    with torch.no_grad():
        assert max_diff(ours(mel), ref(mel)) <= TOL


def test_save_pretrained_loads_in_reference(tmp_path: Path, capsys):
    ours = BigVGAN(**SMALL)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours.save_pretrained(tmp_path)
    # The reference's own folder loader; its public from_pretrained wrapper does not run with the
    # installed huggingface_hub (it no longer passes `proxies` / `resume_download`).
    ref = RefBigVGAN._from_pretrained(model_id=str(tmp_path), revision=None, cache_dir=None, force_download=False,
                                      proxies=None, resume_download=False, local_files_only=True, token=None,
                                      strict=True).eval()
    again = BigVGAN.from_pretrained(tmp_path)
    assert again.config == ours.config
    mel = torch.randn(1, SMALL["num_mels"], 6)
    with torch.no_grad():
        expected = ours.eval()(mel)
        assert max_diff(ref(mel), expected) <= TOL
        assert torch.equal(again(mel), expected)


def test_missing_files_are_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        BigVGAN.from_pretrained(tmp_path / "nowhere")
    (tmp_path / WEIGHTS_NAME).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        BigVGAN.from_pretrained(tmp_path)
    (tmp_path / WEIGHTS_NAME).unlink()
    (tmp_path / CONFIG_NAME).write_text(json.dumps(SMALL))
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        BigVGAN.from_pretrained(tmp_path)


def test_bad_checkpoint_and_config_are_reported(tmp_path: Path):
    (tmp_path / CONFIG_NAME).write_text(json.dumps(SMALL))
    torch.save({"model": {}}, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="no 'generator' entry.*'model'"):
        BigVGAN.from_pretrained(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({k: v for k, v in SMALL.items() if k != "activation"}))
    with pytest.raises(ValueError, match=r"lacks the generator field\(s\) \['activation'\]"):
        BigVGAN.from_pretrained(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps(dict(SMALL, hop_size=256)))
    with pytest.raises(ValueError, match="hop_size 256 differs"):
        BigVGAN.from_pretrained(tmp_path)


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path):
    state = reference(SMALL, seed=3).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["conv_post.weight_g"]
    save_release(tmp_path, SMALL, state)
    expected = r"missing keys \(1\): conv_post.weight_g; unexpected keys \(1\): extra.weight"
    with pytest.raises(ValueError, match=expected):
        BigVGAN.from_pretrained(tmp_path)


@pytest.mark.parametrize("overrides,message", [
    ({"upsample_kernel_sizes": [9, 4, 4]}, "kernel 9 for rate 4"),
    ({"upsample_kernel_sizes": [8, 4]}, "equal length"),
    ({"resblock_dilation_sizes": [[1, 3]]}, "equal length"),
    ({"resblock_kernel_sizes": [3, 4]}, r"odd to preserve length, got \[3, 4\]"),
    ({"activation": "relu"}, "'relu'"),
    ({"resblock": "3"}, "'3'"),
    ({"upsample_initial_channel": 4}, "upsample_initial_channel 4"),
])
def test_invalid_architectures_are_rejected(overrides: dict, message: str):
    with pytest.raises(ValueError, match=message):
        BigVGAN(**{**SMALL, **overrides})


def test_forward_rejects_wrong_mel_shape():
    with pytest.raises(ValueError, match=r"expected a mel \[B, 32, F\], got shape \(1, 80, 5\)"):
        bigvgan_tiny()(torch.zeros(1, 80, 5))


def test_tiny_preset_trains():
    model = bigvgan_tiny()
    wave = model(torch.randn(2, 32, 8) - 4)
    assert wave.shape == (2, 1, 8 * 256)
    wave.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name in ("conv_pre.weight_g", "conv_pre.weight_v", "resblocks.0.activations.0.act.alpha",
                 "resblocks.0.activations.0.act.beta", "ups.3.0.weight_v", "conv_post.weight_v"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name


@pytest.mark.parametrize("net", [
    {"class_path": "reasonaudio.models.bigvgan.bigvgan_tiny"},
    {"class_path": "reasonaudio.models.bigvgan.BigVGAN", "init_args": SMALL},
])
def test_usable_as_class_path(net: dict):
    parser = ArgumentParser()
    parser.add_argument("--net", type=nn.Module)
    init = parser.instantiate(parser.parse_args(["--net", json.dumps(net)]))
    assert isinstance(init.net, BigVGAN)


def test_tiny_preset_width():
    """``channels`` sets the first stage's width; each of the four stages halves it."""
    parser = ArgumentParser()
    parser.add_argument("--net", type=nn.Module)
    net = {"class_path": "reasonaudio.models.bigvgan.bigvgan_tiny", "init_args": {"channels": 128}}
    wide = parser.instantiate(parser.parse_args(["--net", json.dumps(net)])).net
    widths = [up[0].weight_v.shape[1] for up in wide.ups]  # ConvTranspose1d weight: [in, out, kernel]
    assert wide.conv_pre.weight_v.shape[0] == 128 and widths == [64, 32, 16, 8]
    assert [up[0].weight_v.shape[1] for up in bigvgan_tiny().ups] == [32, 16, 8, 4]
