"""CLAPScore: text–audio cosine similarity with LAION-CLAP, through transformers' ``ClapModel``.

The model, its feature extractor and its tokenizer load from one local folder (a ``from_pretrained``
folder such as ``laion/larger_clap_general`` or ``laion/clap-htsat-unfused`` saved to disk), with
``local_files_only``: nothing is downloaded, and a missing folder or file fails with its name.

Per clip, as av-benchmark feeds LAION-CLAP: the waveform is resampled to the feature extractor's
rate (48 kHz; torchaudio's default windowed-sinc resampler, which is av-benchmark's
``torchaudio.transforms.Resample``), its mean (DC) removed, and cut to the extractor's window
(``max_length_s``, 10 s), so the extractor never takes a random crop and the score is deterministic;
shorter clips are filled by the extractor's own ``repeatpad``. The caption is tokenised with
truncation at 77 tokens (laion_clap's text length). The score of a clip is the cosine of the
normalised audio and text embeddings; :meth:`CLAPScore.compute` returns the mean over clips (sum and
count states, so it is correct under DDP).

transformers' mel front end is not bit-identical to the ``laion_clap`` package that av-benchmark
uses (notes/pretrained-components.md §5.2), so numbers are close to, not equal to, av-benchmark's.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel, PreTrainedTokenizerFast

from reasonaudio.metrics.means import MeanCosine

TEXT_MAX_TOKENS = 77
"""Caption length of laion_clap's tokenizer."""


def _required_files(folder: Path) -> list[Path]:
    return [folder / "config.json", folder / "preprocessor_config.json"]


def load_clap(folder: str | Path) -> tuple[Any, Any, Any]:
    """Load ``(ClapModel, ClapFeatureExtractor, tokenizer)`` from a local folder, in eval mode.

    Raises:
        FileNotFoundError: naming the folder or the missing file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(2, "CLAP model folder not found", str(folder))
    for path in _required_files(folder):
        if not path.is_file():
            raise FileNotFoundError(2, "CLAP model folder is missing a file", str(path))
    weights = [folder / "model.safetensors", folder / "pytorch_model.bin", folder / "model.safetensors.index.json"]
    if not any(p.is_file() for p in weights):
        raise FileNotFoundError(2, "CLAP model folder has no weights", str(weights[0]))
    model = ClapModel.from_pretrained(folder, local_files_only=True).eval()
    extractor = ClapFeatureExtractor.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, extractor, tokenizer


def _embedding(output: Any) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` is the projection; older ones a tensor."""
    x = output if isinstance(output, torch.Tensor) else output.pooler_output
    return F.normalize(x.float(), dim=-1)


class CLAPScore(MeanCosine):
    """Mean cosine similarity between generated audio and its caption in LAION-CLAP space.

    Args:
        model: local folder of a transformers CLAP model (``config.json``, weights,
            ``preprocessor_config.json`` and the tokenizer files).
        batch_size: clips per CLAP forward pass.
    """

    def __init__(self, model: str, batch_size: int = 16, **kwargs: Any):
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model_path = str(model)
        self.batch_size = batch_size
        self.clap, self.extractor, self.tokenizer = load_clap(model)
        self.clap.requires_grad_(False)
        self.sample_rate = int(self.extractor.sampling_rate)
        self.max_samples = int(self.extractor.nb_max_samples)

    def prepare_audio(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """One waveform ``[S]`` → the model's input waveform: 48 kHz, DC removed, at most 10 s. # [S']"""
        x = audio.detach().float().cpu().reshape(-1)
        if sample_rate != self.sample_rate:
            x = AF.resample(x, sample_rate, self.sample_rate)
        x = x[: self.max_samples]
        return x - x.mean()

    @torch.no_grad()
    def similarities(self, audio: torch.Tensor | Sequence[torch.Tensor], sample_rate: int,
                     texts: Sequence[str]) -> torch.Tensor:
        """Per-clip cosine similarities. # [B]"""
        if len(audio) != len(texts):
            raise ValueError(f"{len(audio)} waveforms but {len(texts)} captions")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        device = next(self.clap.parameters()).device
        out = []
        for i in range(0, len(texts), self.batch_size):
            wavs = [self.prepare_audio(a, sample_rate).numpy() for a in audio[i:i + self.batch_size]]
            feats = self.extractor(wavs, sampling_rate=self.sample_rate, return_tensors="pt")
            a = _embedding(self.clap.get_audio_features(**{k: v.to(device) for k, v in feats.items()}))
            tokens = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                    max_length=TEXT_MAX_TOKENS, return_tensors="pt")
            t = _embedding(self.clap.get_text_features(input_ids=tokens["input_ids"].to(device),
                                                       attention_mask=tokens["attention_mask"].to(device)))
            out.append((a * t).sum(-1).double().cpu())
        return torch.cat(out)


def write_tiny_clap(folder: str | Path, texts: Sequence[str], seed: int = 0) -> Path:
    """Write a tiny random CLAP folder (model, feature extractor, word-level tokenizer covering ``texts``).

    It exercises the real local-folder loading path on a CPU in seconds; its scores are random functions
    of text and audio, not CLAP scores. The audio tower keeps HTSAT's input geometry (64 mels, a 256² Swin
    input, so 10 s at 48 kHz fit) with widths of 32.
    """
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t)})
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    config = ClapConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=TEXT_MAX_TOKENS + 3, pad_token_id=1,
                         projection_dim=16),
        audio_config=dict(hidden_size=32, depths=[1, 1], num_attention_heads=[2, 2], window_size=8, spec_size=256,
                          patch_embeds_hidden_size=16, num_mel_bins=64, projection_dim=16, patch_size=4,
                          patch_stride=[4, 4]),
        projection_dim=16)
    torch.manual_seed(seed)
    folder = Path(folder)
    ClapModel(config).save_pretrained(folder)
    ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(folder)  # as laion/clap-htsat-unfused
    tokenizer.save_pretrained(folder)
    return folder
