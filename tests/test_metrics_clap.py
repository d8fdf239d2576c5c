"""CLAPScore on a tiny random transformers CLAP folder: equal to a hand computation with the model."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from reasonaudio.metrics.clap import CLAPScore, load_clap, write_tiny_clap

CAPTIONS = ["a dog barks", "rain falls on a roof", "a bell rings twice"]


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory) -> Path:
    """A tiny random ClapModel + feature extractor + word-level tokenizer saved like a hub folder."""
    return write_tiny_clap(tmp_path_factory.mktemp("clap"), CAPTIONS)


def _audio(seconds: float, sample_rate: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * sample_rate)) / sample_rate
    tones = torch.stack([torch.sin(2 * math.pi * (300 + 250 * i) * t) for i in range(n)])
    return 0.3 * tones + 0.05 * torch.randn(n, t.numel(), generator=g) + 0.1  # with a DC offset to remove


def _by_hand(folder: Path, audio: torch.Tensor, sample_rate: int, texts: list[str]) -> torch.Tensor:
    """Cosine of the normalised transformers embeddings, computed step by step."""
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    model = ClapModel.from_pretrained(folder).eval()
    extractor = ClapFeatureExtractor.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    wavs = AF.resample(audio.float(), sample_rate, 48000)[:, :480000]
    wavs = [(w - w.mean()).numpy() for w in wavs]
    with torch.no_grad():
        a = model.get_audio_features(**extractor(wavs, sampling_rate=48000, return_tensors="pt")).pooler_output
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        t = model.get_text_features(input_ids=tokens["input_ids"],
                                    attention_mask=tokens["attention_mask"]).pooler_output
    return (F.normalize(a, dim=-1) * F.normalize(t, dim=-1)).sum(-1).double()


def test_score_equals_hand_computation(clap_folder):
    audio = _audio(2.0, 16000, 3)
    expected = _by_hand(clap_folder, audio, 16000, CAPTIONS)
    metric = CLAPScore(str(clap_folder), batch_size=2)
    sims = metric.similarities(audio, 16000, CAPTIONS)
    assert torch.allclose(sims, expected, atol=1e-6)
    metric.update(audio[:2], 16000, CAPTIONS[:2])
    metric.update(audio[2:], 16000, CAPTIONS[2:])
    assert float(metric.compute()) == pytest.approx(float(expected.mean()), abs=1e-6)
    assert metric.sample_rate == 48000
    shuffled = metric.similarities(audio, 16000, CAPTIONS[1:] + CAPTIONS[:1])
    assert not torch.allclose(shuffled, sims, atol=1e-4)  # the caption matters


def test_long_audio_is_cut_to_the_window_deterministically(clap_folder):
    metric = CLAPScore(str(clap_folder))
    audio = _audio(11.0, 48000, 1, seed=1)
    first = metric.similarities(audio, 48000, CAPTIONS[:1])
    assert torch.equal(first, metric.similarities(audio, 48000, CAPTIONS[:1]))  # no random crop
    assert torch.allclose(first, _by_hand(clap_folder, audio[:, :480000], 48000, CAPTIONS[:1]), atol=1e-6)


def test_merge_equals_one_pass(clap_folder):
    audio = _audio(1.0, 16000, 3, seed=2)
    whole, a, b = (CLAPScore(str(clap_folder)) for _ in range(3))
    whole.update(audio, 16000, CAPTIONS)
    a.update(audio[:1], 16000, CAPTIONS[:1])
    b.update(audio[1:], 16000, CAPTIONS[1:])
    a.merge_state(b)
    assert float(a.compute()) == pytest.approx(float(whole.compute()), abs=1e-6)  # float32 batching


def test_missing_folder_and_files_are_named(clap_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CLAPScore(str(tmp_path / "nowhere"))
    partial = tmp_path / "partial"
    shutil.copytree(clap_folder, partial)
    (partial / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json") as info:
        load_clap(partial)
    assert info.value.filename == str(partial / "preprocessor_config.json")
    with pytest.raises(ValueError, match="2 waveforms but 1 captions"):
        CLAPScore(str(clap_folder)).update(_audio(1.0, 16000, 2), 16000, CAPTIONS[:1])
