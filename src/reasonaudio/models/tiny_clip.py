"""A tiny random CLIP folder, for the study's ``no_queries`` row (the paper's CLIP conditioning) on a CPU.

``write_tiny_clip(folder, texts)`` saves what ``CLIPConditioner(folder)`` loads from a released CLIP
folder — ``config.json`` (model type ``clip``), weights and a tokenizer — with one layer of width 64
per tower, 77 text positions (CLIP's context) and a word-level vocabulary built from ``texts``, like
:func:`~reasonaudio.models.tiny_mllm.write_tiny_qwen_vl`. Nothing is downloaded. Frozen and random, it
is a fixed projection of frames and captions: the comparison it allows is "learnable queries read
through an MLLM" against "fixed frame and caption embeddings", both at toy scale.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast


def write_tiny_clip(folder: str | Path, texts: Iterable[str], seed: int = 0, image_size: int = 56) -> Path:
    """Write a tiny random CLIP model folder whose vocabulary covers ``texts``.

    Args:
        folder: output folder (created).
        texts: captions whose words (and punctuation) become the vocabulary.
        seed: weight initialisation seed.
        image_size: the vision tower's input side (patch 14).

    Returns:
        The folder.
    """
    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text)})
    vocab = {"[UNK]": 0, "[PAD]": 1, "<|startoftext|>": 2, "<|endoftext|>": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, pad_token_id=1, bos_token_id=2,
                         eos_token_id=3),
        vision_config=dict(image_size=image_size, patch_size=14, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=64)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
