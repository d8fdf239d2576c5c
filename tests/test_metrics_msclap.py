"""MSCLAPScore equals the `msclap` package's own CLAPWrapper (MS-CLAP 2023) on shared random weights.

A full-size HTSAT audio encoder (random weights) and a one-layer GPT-2 of the released width (768) with a
byte-level tokenizer in GPT-2's id order ("!" = 0, as CLAPWrapper's padding assumes) are saved in the
released formats; the wrapper reads them through its own code (audio loading, resampling, repeat padding,
``<|endoftext|>`` + padding to 77), with only the Hub download replaced by the local folders.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

msclap_wrapper = pytest.importorskip("msclap.CLAPWrapper", reason="msclap (make setup installs it --no-deps)")

from reasonaudio.metrics.msclap import MSCLAP_2023, WEIGHTS_NAME, MSCLAPScore  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # ~20 s: two full-size (random) HTSATs


def gpt2_byte_level_folder(folder: Path) -> Path:
    """A one-layer GPT-2 (width 768) with a byte-level BPE over GPT-2's 256 byte symbols, no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {chr(c): i for i, c in enumerate(cs)}  # GPT-2's bytes_to_unicode order: "!" → 0
    vocab["<|endoftext|>"] = 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>").save_pretrained(folder)
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=257, n_positions=80, n_embd=768, n_layer=1, n_head=12,
                         bos_token_id=256, eos_token_id=256)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> tuple[Path, Path]:
    """``CLAP_weights_2023.pth`` (random, every tensor perturbed) and the GPT-2 folder."""
    from msclap.models.clap import CLAP

    root = tmp_path_factory.mktemp("msclap")
    text = gpt2_byte_level_folder(root / "gpt2")
    torch.manual_seed(1)
    clap = CLAP(text_model=str(text), **MSCLAP_2023)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in clap.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    torch.save({"model": clap.state_dict()}, root / WEIGHTS_NAME)
    return root / WEIGHTS_NAME, text


@pytest.fixture(scope="module")
def wrapper(released):
    """The package's CLAPWrapper on the same files (its config's "gpt2" Hub name → the local folder)."""
    weights, text = released
    read = msclap_wrapper.CLAPWrapper.read_config_as_args

    def local_text_model(self, *args, **kwargs):
        args = read(self, *args, **kwargs)
        args.text_model = str(text)
        return args

    msclap_wrapper.CLAPWrapper.read_config_as_args = local_text_model
    try:
        wrapper = msclap_wrapper.CLAPWrapper(model_fp=str(weights), version="2023", use_cuda=False)
    finally:
        msclap_wrapper.CLAPWrapper.read_config_as_args = read
    # transformers 5 removed `encode_plus`, the transformers-4 name of a tokenizer's one-text `__call__`,
    # which the wrapper's preprocess_text still calls (our module does not use the wrapper).
    tokenizer = wrapper.tokenizer
    object.__setattr__(tokenizer, "encode_plus", lambda **kwargs: tokenizer(**kwargs))
    return wrapper


@pytest.fixture(scope="module")
def ours(released) -> MSCLAPScore:
    return MSCLAPScore(*map(str, released))


def tone(seconds: float, rate: int, freq: float) -> torch.Tensor:
    t = torch.arange(round(seconds * rate)) / rate
    return 0.4 * torch.sin(2 * math.pi * freq * t) + 0.05 * torch.randn(t.shape, generator=torch.Generator().manual_seed(3))


def test_text_embeddings_equal_the_package(ours, wrapper):
    captions = ["a dog barks twice", "rain on a tin roof, then thunder"]
    theirs = wrapper.get_text_embeddings(captions)
    assert theirs.shape == (2, 1024)
    torch.testing.assert_close(ours.text_embeddings(captions), theirs, rtol=1e-5, atol=1e-5)
    assert ours.tokens(["x" * 200])["input_ids"].shape == (1, 77)  # the package cannot take this caption


def test_audio_embeddings_and_scores_equal_the_package(ours, wrapper, monkeypatch):
    wav = tone(3.0, 16000, 440.0)  # shorter than 7 s: repeated; 16 kHz: resampled to 44.1 kHz
    monkeypatch.setattr(msclap_wrapper.torchaudio, "load", lambda path: (wav[None], 16000))
    theirs = wrapper.get_audio_embeddings(["clip.wav"], resample=True)
    assert theirs.shape == (1, 1024)
    torch.testing.assert_close(ours.audio_embeddings([wav], 16000), theirs, rtol=1e-4, atol=1e-4)
    text = wrapper.get_text_embeddings(["a sine tone"])
    expected = torch.nn.functional.cosine_similarity(theirs, text).double()
    ours.update(wav[None], 16000, ["a sine tone"])
    assert abs(float(ours.compute()) - float(expected)) < 1e-4
    assert ours.count == 1


def test_longer_clips_keep_their_first_seven_seconds(ours):
    wav = tone(8.0, 44100, 220.0)
    assert torch.equal(ours.prepare_audio(wav, 44100), wav[: 7 * 44100])
    short = tone(3.0, 44100, 220.0)
    got = ours.prepare_audio(short, 44100)
    assert got.shape == (7 * 44100,) and torch.equal(got[short.numel():2 * short.numel()], short)


def test_missing_files_are_named(tmp_path, released):
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        MSCLAPScore(str(tmp_path / WEIGHTS_NAME), str(released[1]))
    with pytest.raises(FileNotFoundError, match="config.json"):
        MSCLAPScore(str(released[0]), str(tmp_path))


def test_reasonaudio_metrics_scores_clap_with_msclap_2023_by_default(tmp_path, released, capsys):
    """``reasonaudio-metrics --captions …`` without ``--clap`` scores CLAP with MS-CLAP 2023 from ``--weights``
    (``CLAP_weights_2023.pth`` + ``msclap_gpt2/``), equal to MSCLAPScore run directly, and names the checkpoint in
    the JSON and the printed table; without those files the metric reports the missing path."""
    import shutil

    from conftest import write_audio_file

    from reasonaudio.metrics import evaluate

    weights, pred = tmp_path / "weights", tmp_path / "pred"
    pred.mkdir()
    weights.mkdir()
    shutil.copy(released[0], weights / evaluate.MSCLAP_FILE)
    shutil.copytree(released[1], weights / evaluate.MSCLAP_TEXT_FOLDER)
    captions = {"clip_00": "a dog barks", "clip_01": "rain on a roof"}
    wavs = {stem: tone(2.0, 16000, 300.0 + 200 * i) for i, stem in enumerate(captions)}
    for stem, wav in wavs.items():
        write_audio_file(pred / f"{stem}.wav", wav.numpy(), 16000)
    csv = tmp_path / "captions.csv"
    csv.write_text("name,caption\n" + "".join(f"{k},{v}\n" for k, v in captions.items()))
    args = ["--pred", str(pred), "--captions", str(csv), "--metrics", "clap", "--duration", "2", "--no-cache"]
    assert evaluate.main([*args, "--weights", str(weights), "--out", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    clap = json.loads((tmp_path / "r.json").read_text())["metrics"]["clap"]
    direct = MSCLAPScore(str(weights / evaluate.MSCLAP_FILE), str(weights / evaluate.MSCLAP_TEXT_FOLDER))
    for stem, wav in wavs.items():
        got, rate = evaluate.read_audio(pred / f"{stem}.wav")
        direct.update(got[None, :2 * rate], rate, [captions[stem]])
    assert clap["value"] == pytest.approx(float(direct.compute()), abs=1e-6) and clap["clips"] == 2
    assert clap["details"]["checkpoint"].startswith("MS-CLAP 2023") and evaluate.MSCLAP_FILE in printed
    assert evaluate.main([*args, "--weights", str(tmp_path), "--out", str(tmp_path / "m.json")]) == 3
    missing = json.loads((tmp_path / "m.json").read_text())["metrics"]["clap"]
    assert missing["value"] is None and missing["status"] == f"weights not found: {tmp_path / evaluate.MSCLAP_FILE}"
