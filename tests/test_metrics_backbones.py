"""Metric backbones against the field-standard packages, on shared random weights.

Each of our backbones loads the reference model's own state dict strictly (so the key names and
shapes are the official checkpoints') and must give the same outputs:

* PANNs Cnn14 16 kHz vs ``panns_inference.models.Cnn14`` (panns-inference 0.1.1): embedding and
  ``sigmoid(logits)`` = its ``clipwise_output``. The package's ``__init__`` downloads a labels CSV
  at import, so the models module is imported under a bare package object instead.
* VGGish vs torchvggish 0.2's ``VGG`` with the last ReLU replaced by Identity (av-benchmark /
  audioldm_eval) and its ``waveform_to_examples`` front end.
* PaSST vs hear21passt 0.0.26's ``PasstBasicWrapper(AugmentMelSTFT, PaSST)`` in ``mode="all"``
  (a tiny PaSST for speed; the official sizes are compared key by key on the meta device).

Random weights are made non-trivial (BatchNorm statistics and LayerNorm affines randomised) so a
wrong order of operations cannot hide behind an identity layer.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from reasonaudio.metrics.backbones import AudioBackbone, load_backbone, read_checkpoint, resolve_backbone
from reasonaudio.metrics.backbones.panns import CNN14_TINY, Cnn14
from reasonaudio.metrics.backbones.passt import CLIP_SAMPLES, PASST_TINY, PaSST, PaSSTConfig
from reasonaudio.metrics.backbones.vggish import VGGISH_TINY, VGGish, vggish_mel_matrix


def _randomize_norms(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        elif isinstance(m, torch.nn.LayerNorm):
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def _wav(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    """Noise plus a few tones: a signal with structure in every band."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    tones = sum(0.2 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 1375.0, 4100.0))
    return (0.05 * torch.randn(batch, samples, generator=g) + tones * torch.rand(batch, 1, generator=g)).float()


@pytest.fixture(scope="module")
def panns_models():
    """``panns_inference.models`` without running the package's downloading ``__init__``."""
    spec = importlib.util.find_spec("panns_inference")
    saved = {k: v for k, v in sys.modules.items() if k == "panns_inference" or k.startswith("panns_inference.")}
    package = types.ModuleType("panns_inference")
    package.__path__ = [str(Path(spec.origin).parent)]
    sys.modules["panns_inference"] = package
    try:
        yield importlib.import_module("panns_inference.models")
    finally:
        for k in [k for k in sys.modules if k == "panns_inference" or k.startswith("panns_inference.")]:
            del sys.modules[k]
        sys.modules.update(saved)


# --------------------------------------------------------------------------- PANNs


def test_cnn14_matches_panns_inference(panns_models):
    torch.manual_seed(0)
    ref = panns_models.Cnn14(sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000,
                             classes_num=527).eval()
    _randomize_norms(ref, 1)
    ours = Cnn14()
    # a fresh model's frozen front end already equals torchlibrosa's (librosa window and mel bank)
    for key in ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
                "logmel_extractor.melW"):
        torch.testing.assert_close(ours.state_dict()[key], ref.state_dict()[key], atol=1e-6, rtol=0)
    ours.load_state_dict(ref.state_dict(), strict=True)
    wav = _wav(2, 8000)  # 0.5 s: 51 frames, enough for the five poolings
    with torch.no_grad():
        expected = ref(wav)
        got = ours(wav)
    assert got.embedding.shape == (2, 2048) and got.logits.shape == (2, 527)
    torch.testing.assert_close(got.embedding, expected["embedding"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.sigmoid(got.logits), expected["clipwise_output"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.logits, ref.fc_audioset(expected["embedding"]), atol=1e-4, rtol=1e-4)
    assert got.embedding.std() > 1e-3  # the comparison is not between two constant outputs


def test_cnn14_minimum_length_and_tiny_sizes():
    model = Cnn14(CNN14_TINY)
    assert model.min_samples == 31 * 160
    out = model(torch.zeros(1, model.min_samples))
    assert out.embedding.shape == (1, 32) and out.logits.shape == (1, 10)
    with pytest.raises(ValueError, match="at least 4960 samples"):
        model(torch.zeros(1, model.min_samples - 1))


# --------------------------------------------------------------------------- VGGish


def test_vggish_front_end_matches_torchvggish():
    from torchvggish import vggish_input
    from torchvggish.mel_features import spectrogram_to_mel_matrix

    np.testing.assert_allclose(vggish_mel_matrix(), spectrogram_to_mel_matrix(
        num_mel_bins=64, num_spectrogram_bins=257, audio_sample_rate=16000, lower_edge_hertz=125,
        upper_edge_hertz=7500), atol=1e-12)
    wav = _wav(1, 16000 * 3 + 1234)
    expected = vggish_input.waveform_to_examples(wav[0].double().numpy(), 16000, return_tensor=True)  # [E, 1, 96, 64]
    got = VGGish(VGGISH_TINY).examples(wav)  # [1, E, 96, 64]
    assert got.shape == (1, 3, 96, 64) and expected.shape == (3, 1, 96, 64)
    torch.testing.assert_close(got[0], expected[:, 0].detach(), atol=1e-5, rtol=1e-5)


def test_vggish_matches_torchvggish_without_last_relu():
    from torchvggish.torchvggish import VGG, make_layers

    torch.manual_seed(0)
    ref = VGG(make_layers(), postprocess=False).eval()
    ref.embeddings[5] = torch.nn.Identity()  # av-benchmark / audioldm_eval drop the last ReLU
    ours = VGGish()
    ours.load_state_dict(ref.state_dict(), strict=True)
    wav = _wav(2, 16000 * 2)
    with torch.no_grad():
        got = ours(wav)
        examples = ours.examples(wav)
        expected = ref(examples.reshape(-1, 1, 96, 64)).reshape(2, 2, 128)
    assert got.logits is None and got.embedding.shape == (2, 2, 128)
    torch.testing.assert_close(got.embedding, expected, atol=1e-5, rtol=1e-4)
    assert (got.embedding < 0).any()  # no ReLU on the output


def test_vggish_window_count_and_minimum_length():
    model = VGGish(VGGISH_TINY)
    assert model.min_samples == 400 + 95 * 160
    assert model(torch.zeros(1, 128000)).embedding.shape == (1, 8, 16)  # 8 s → 8 examples (av-benchmark)
    with pytest.raises(ValueError, match="at least 15600 samples"):
        model(torch.zeros(1, 15599))


# --------------------------------------------------------------------------- PaSST


def _hear21passt_reference(config: PaSSTConfig):
    from hear21passt.models.passt import PaSST as RefPaSST
    from hear21passt.models.preprocess import AugmentMelSTFT
    from hear21passt.wrapper import PasstBasicWrapper

    mel = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                         htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000)
    net = RefPaSST(img_size=(128, 998), patch_size=16, stride=(10, 10), in_chans=1, num_classes=config.num_classes,
                   embed_dim=config.dim, depth=config.depth, num_heads=config.heads, mlp_ratio=config.mlp_ratio,
                   distilled=True)
    return PasstBasicWrapper(mel=mel, net=net, mode="all").eval()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_passt_matches_hear21passt(capsys):
    config = PaSSTConfig(dim=64, depth=2, heads=4, num_classes=527)
    torch.manual_seed(0)
    ref = _hear21passt_reference(config)
    _randomize_norms(ref, 2)
    ours = PaSST(config)
    ours.load_state_dict(ref.net.state_dict(), strict=True)
    wav = torch.nn.functional.interpolate(_wav(2, 160000)[:, None], size=CLIP_SAMPLES)[:, 0]  # 10 s at 32 kHz
    with torch.no_grad():
        expected = ref(wav)  # [B, 527 + D]
        got = ours(wav)
    torch.testing.assert_close(got.logits, expected[:, :527], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.embedding, expected[:, 527:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.mel(wav), ref.mel(wav), atol=1e-4, rtol=1e-5)
    capsys.readouterr()  # hear21passt prints shapes on its first run


def test_passt_official_keys_and_wrapper_prefix():
    from hear21passt.models.passt import PaSST as RefPaSST

    ref = RefPaSST(img_size=(128, 998), patch_size=16, stride=(10, 10), in_chans=1, num_classes=527,
                   embed_dim=768, depth=12, num_heads=12, distilled=True)  # its init calls .item(): no meta device
    with torch.device("meta"):
        ours = PaSST()
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    tiny = PaSST(PASST_TINY)
    wrapped = {f"net.{k}": v for k, v in tiny.state_dict().items()} | {"device_proxy": torch.zeros(1)}
    assert tiny.checkpoint_state(wrapped).keys() == tiny.state_dict().keys()


def test_passt_pads_and_cuts_to_ten_seconds():
    model = PaSST(PASST_TINY)
    x = torch.ones(2, 16000)  # 1 s at 16 kHz → 2 s at 32 kHz → zero-padded to 10 s
    prepared = model.prepare(x + 0.5, 16000)
    assert prepared.shape == (2, CLIP_SAMPLES)
    assert prepared.abs().max() < 1e-5  # the DC offset is removed before resampling
    assert model.prepare(torch.randn(1, 32000 * 12), 32000).shape == (1, CLIP_SAMPLES)
    assert model.prepare(torch.randn(1, 32000 * 12), 32000, max_seconds=8).shape == (1, CLIP_SAMPLES)


# --------------------------------------------------------------------------- shared policy and checkpoints


def test_prepare_follows_av_benchmark_audio_dataset():
    """DC removal, then torchaudio's default Resample, then the cut to the clip length."""
    import torchaudio

    model = Cnn14(CNN14_TINY)
    wav = _wav(1, 44100 * 2) + 0.3
    expected = torchaudio.transforms.Resample(44100, 16000)(wav - wav.mean())[:, :24000]
    torch.testing.assert_close(model.prepare(wav, 44100, max_seconds=1.5), expected)


@pytest.mark.parametrize("cls,config", [(Cnn14, CNN14_TINY), (VGGish, VGGISH_TINY), (PaSST, PASST_TINY)])
def test_checkpoint_round_trip_and_errors(cls, config, tmp_path):
    torch.manual_seed(3)
    model: AudioBackbone = cls(config)
    path = tmp_path / cls.checkpoint_name
    if cls is Cnn14:  # the official file is a training checkpoint with numpy sampler state
        torch.save({"iteration": 1, "model": model.state_dict(),
                    "sampler": {"indexes": [np.arange(3)], "count": np.int64(4)}}, path)
    else:
        torch.save(model.state_dict(), path)
    loaded = cls(config).load_checkpoint(path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    expected = re.escape(f"checkpoint not found (expected {cls.checkpoint_name}")
    with pytest.raises(FileNotFoundError, match=expected) as err:
        cls(config).load_checkpoint(tmp_path / "missing" / cls.checkpoint_name)
    assert err.value.filename == str(tmp_path / "missing" / cls.checkpoint_name)
    wrong = {k: v for k, v in model.state_dict().items()}
    wrong.pop(next(iter(wrong)))
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="missing keys"):
        cls(config).load_checkpoint(tmp_path / "wrong.pt")


def test_read_checkpoint_refuses_pickled_code(tmp_path):
    path = tmp_path / "code.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "fn": Path}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_checkpoint(path, "test checkpoint", "model")
    torch.save({"not": "tensors"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not hold"):
        read_checkpoint(tmp_path / "bad.pt", "test checkpoint")


def test_backbones_by_name_for_yaml_configs(tmp_path):
    """``FrechetDistance(backbone="vggish", checkpoint=...)``: the official size, loaded from the file."""
    from reasonaudio.metrics.frechet import FrechetDistance
    from reasonaudio.metrics.scores import InceptionScore, KLDivergence

    missing = tmp_path / "vggish-10086976.pth"
    for build in (lambda: FrechetDistance(backbone="vggish", checkpoint=missing),
                  lambda: KLDivergence(backbone="panns", checkpoint=missing),
                  lambda: InceptionScore(backbone="passt", checkpoint=missing)):
        with pytest.raises(FileNotFoundError) as err:
            build()
        assert err.value.filename == str(missing)
    torch.save(VGGish(VGGISH_TINY).state_dict(), missing)  # a tiny file does not fit the official size
    with pytest.raises(ValueError, match="shape mismatches"):
        load_backbone("vggish", missing)
    with pytest.raises(ValueError, match="unknown backbone"):
        load_backbone("clap", missing)
    with pytest.raises(ValueError, match="needs checkpoint"):
        resolve_backbone("panns", None)
    with pytest.raises(ValueError, match="only used with a backbone name"):
        resolve_backbone(VGGish(VGGISH_TINY), missing)
