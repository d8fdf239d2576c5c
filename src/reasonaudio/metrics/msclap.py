"""MSCLAPScore: text–audio cosine similarity with MS-CLAP 2023 (Elizalde et al., 2023), the CLAP the paper cites.

The network is the ``msclap`` package's own ``CLAP`` module (HTSAT audio encoder at 44.1 kHz, GPT-2 text
encoder, 1024-d projections; ``configs/config_2023.yml``), built from those constants and loaded from local
files only: ``CLAP_weights_2023.pth`` (HF ``microsoft/msclap``; ``{"model": state_dict}``) and a local GPT-2
folder (HF ``gpt2`` saved with ``save_pretrained``: config, weights and tokenizer). Nothing is downloaded
(``CLAPWrapper`` would fetch both from the Hub), and a missing file fails with its name.

``msclap`` 1.3.4 declares ``numpy<2``, ``transformers<5`` and ``librosa<0.11``, which the pinned stack
(numpy 2.4, transformers 5.24, librosa 0.11) cannot satisfy, so ``make setup`` installs it with
``--no-deps``; the modules used here (``msclap.models``: torch, torchlibrosa, transformers' ``AutoModel``)
run unchanged on the pinned stack, and ``tests/test_metrics_msclap.py`` checks our scores against
``CLAPWrapper``'s own embeddings on shared random weights.

Per clip, as ``CLAPWrapper`` does: resample to 44.1 kHz (torchaudio's default windowed sinc, as its
``torchaudio.transforms.Resample``), then a 7 s window: shorter clips are repeated and cut to 7 s exactly
as the package does; longer clips (8 s generations) keep their *first* 7 s, where the package takes a
random 7 s crop, so our score is deterministic. Captions get GPT-2's ``" <|endoftext|>"`` appended and are
padded with ``"!"`` (id 0) to 77 tokens; the text embedding is the GPT-2 state at the last non-pad token,
as in the package. Captions longer than 77 tokens are truncated to 76 + ``<|endoftext|>`` (the package
has no truncation and fails on them). The score is the cosine of the two 1024-d embeddings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from transformers import AutoTokenizer

from reasonaudio.metrics.means import MeanCosine

MSCLAP_2023 = dict(audioenc_name="HTSAT", sample_rate=44100, window_size=1024, hop_size=320, mel_bins=64, fmin=50,
                   fmax=8000, classes_num=527, out_emb=768, transformer_embed_dim=768, d_proj=1024)
"""``msclap/configs/config_2023.yml``: the ``CLAP`` constructor's arguments besides ``text_model``."""
DURATION_S = 7
"""Audio window of MS-CLAP 2023 in seconds."""
TEXT_LEN = 77
"""Caption tokens (``text_len``)."""
WEIGHTS_NAME = "CLAP_weights_2023.pth"
"""The released checkpoint's file name (HF ``microsoft/msclap``)."""


def load_msclap(weights: str | Path, text_model: str | Path) -> tuple[Any, Any]:
    """``(CLAP, tokenizer)`` from ``CLAP_weights_2023.pth`` and a local GPT-2 folder, in eval mode.

    Raises:
        FileNotFoundError: naming the missing file or folder.
        ValueError: when the checkpoint's keys do not match MS-CLAP 2023.
    """
    # lazy: msclap is optional (`make setup` installs it --no-deps, pip's resolver cannot); only MS-CLAP needs it
    from msclap.models.clap import CLAP

    weights, text_model = Path(weights), Path(text_model)
    if not weights.is_file():
        raise FileNotFoundError(2, f"MS-CLAP checkpoint not found (HF microsoft/msclap {WEIGHTS_NAME})", str(weights))
    if not (text_model / "config.json").is_file():
        raise FileNotFoundError(2, "GPT-2 folder (HF gpt2, save_pretrained) is missing config.json",
                                str(text_model / "config.json"))
    if "clip" in str(text_model):  # the package's TextEncoder would treat the folder as a CLIP model
        raise ValueError(f"the GPT-2 folder's path may not contain 'clip': {text_model}")
    clap = CLAP(text_model=str(text_model), **MSCLAP_2023)
    checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    state = checkpoint["model"] if isinstance(checkpoint, dict) and "model" in checkpoint else checkpoint
    # The package loads with strict=False; we accept only buffers the release may lack (GPT-2's causal masks).
    result = clap.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or result.unexpected_keys:
        raise ValueError(f"{weights} is not an MS-CLAP 2023 checkpoint: {len(missing)} missing keys {missing[:3]}, "
                         f"{len(result.unexpected_keys)} unexpected {result.unexpected_keys[:3]}")
    tokenizer = AutoTokenizer.from_pretrained(text_model, local_files_only=True)
    tokenizer.add_special_tokens({"pad_token": "!"})  # as CLAPWrapper: "!" is GPT-2's id 0
    return clap.eval().requires_grad_(False), tokenizer


class MSCLAPScore(MeanCosine):
    """Mean cosine similarity between generated audio and its caption in MS-CLAP 2023 space.

    Args:
        weights: ``CLAP_weights_2023.pth``.
        text_model: local GPT-2 folder (config, weights, tokenizer).
        batch_size: clips per forward pass.
    """

    checkpoint_name = "MS-CLAP 2023 (microsoft/msclap CLAP_weights_2023.pth)"

    def __init__(self, weights: str, text_model: str, batch_size: int = 16, **kwargs: Any):
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.weights, self.text_model, self.batch_size = str(weights), str(text_model), batch_size
        self.clap, self.tokenizer = load_msclap(weights, text_model)
        self.sample_rate = MSCLAP_2023["sample_rate"]
        self.window = DURATION_S * self.sample_rate

    def prepare_audio(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """One waveform ``[S]`` → 7 s at 44.1 kHz (repeated when shorter, the first 7 s when longer). # [7·44100]"""
        x = audio.detach().float().cpu().reshape(-1)
        if x.numel() == 0:
            raise ValueError("empty waveform")
        if sample_rate != self.sample_rate:
            x = AF.resample(x, sample_rate, self.sample_rate)
        if x.numel() <= self.window:
            x = x.repeat(-(-self.window // x.numel()))
        return x[: self.window]

    def tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """GPT-2 ids and mask ``[B, 77]``: caption + ``" <|endoftext|>"``, padded with id 0."""
        eos = self.tokenizer.eos_token_id
        rows = []
        for text in texts:
            ids = self.tokenizer(text + " <|endoftext|>", add_special_tokens=True)["input_ids"]
            rows.append(ids if len(ids) <= TEXT_LEN else ids[: TEXT_LEN - 1] + [eos])
        input_ids = torch.tensor([r + [self.tokenizer.pad_token_id] * (TEXT_LEN - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (TEXT_LEN - len(r)) for r in rows])
        return {"input_ids": input_ids, "attention_mask": mask}

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Projected caption embeddings: GPT-2's state at the last caption token, projected. # [B, 1024]

        The package's ``caption_encoder.forward`` picks its GPT-2 branch by the substring "gpt" in the folder
        path and finds the last token as the last non-zero id; we run the same modules with the attention
        mask's length, so any folder name works and a "!" (id 0) inside a caption does not shift the token.
        """
        encoder = self.clap.caption_encoder
        device = next(self.clap.parameters()).device
        x = {k: v.to(device) for k, v in self.tokens(texts).items()}
        hidden = encoder.base(**x)[0]  # [B, 77, 768]
        last = x["attention_mask"].sum(-1) - 1  # [B]
        return encoder.projection(hidden[torch.arange(hidden.shape[0], device=device), last])

    @torch.no_grad()
    def audio_embeddings(self, audio: Sequence[torch.Tensor], sample_rate: int) -> torch.Tensor:
        """Projected audio embeddings. # [B, 1024]"""
        device = next(self.clap.parameters()).device
        x = torch.stack([self.prepare_audio(a, sample_rate) for a in audio]).to(device)  # [B, 7·44100]
        return self.clap.audio_encoder(x)[0]

    def similarities(self, audio: torch.Tensor | Sequence[torch.Tensor], sample_rate: int,
                     texts: Sequence[str]) -> torch.Tensor:
        """Per-clip cosine similarities. # [B]"""
        if len(audio) != len(texts):
            raise ValueError(f"{len(audio)} waveforms but {len(texts)} captions")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        out = []
        for i in range(0, len(texts), self.batch_size):
            a = F.normalize(self.audio_embeddings(audio[i:i + self.batch_size], sample_rate).float(), dim=-1)
            t = F.normalize(self.text_embeddings(texts[i:i + self.batch_size]).float(), dim=-1)
            out.append((a * t).sum(-1).double().cpu())
        return torch.cat(out)
