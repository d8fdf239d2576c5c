"""A tiny random Qwen2.5-VL folder, for CPU demos and tests of the real local-folder loading path.

``write_tiny_qwen_vl(folder, texts)`` saves what ``MLLMQueryConditioner(folder)`` loads from a released
model folder — ``config.json``, weights and a tokenizer carrying a chat template — but with two
decoder layers of width 64 and a word-level vocabulary built from ``texts``. Nothing is downloaded.
Its outputs are random functions of video and text: enough for every stage to run and for the
learnable queries to learn, not a language model.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import AddedToken, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import (PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                          Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration)

SPECIAL = ("<|im_start|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}"
                 "{% else %}{% for c in m.content %}{% if c.type == 'video' %}<|vision_start|><|video_pad|>"
                 "<|vision_end|>{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}{% endif %}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _word_tokenizer(texts: Iterable[str]) -> tuple[PreTrainedTokenizerFast, dict[str, int]]:
    """A word-level tokenizer whose vocabulary covers ``texts``, with the chat template; and its special ids."""
    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text)} | {"user", "assistant"})
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    vocab.update({tok: len(vocab) + i for i, tok in enumerate(SPECIAL)})
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        chat_template=CHAT_TEMPLATE)
    return tokenizer, {"vocab_size": len(vocab), **{t: vocab[t] for t in SPECIAL}}


def _text_config(ids: dict[str, int]) -> dict:
    return dict(vocab_size=ids["vocab_size"], hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, bos_token_id=None, eos_token_id=ids["<|im_end|>"],
                pad_token_id=1,
                rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 10000.0})


VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
              spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[0])


def _save(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> Path:
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_qwen_vl(folder: str | Path, texts: Iterable[str], seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-VL model folder whose vocabulary covers ``texts``.

    Args:
        folder: output folder (created).
        texts: captions whose words (and punctuation) become the vocabulary.
        seed: weight initialisation seed.

    Returns:
        The folder.
    """
    tokenizer, ids = _word_tokenizer(texts)
    config = Qwen2_5_VLConfig(
        text_config=_text_config(ids), vision_config=dict(VISION, tokens_per_second=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    return _save(Qwen2_5_VLForConditionalGeneration(config), tokenizer, folder)


def write_tiny_qwen_omni_thinker(folder: str | Path, texts: Iterable[str], seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-Omni *thinker* folder (``model_type`` ``qwen2_5_omni_thinker``), the same
    sizes and tokenizer as :func:`write_tiny_qwen_vl`, with a one-layer audio tower that
    ``OmniThinkerQueryConditioner`` deletes on load (Table 5's Omni row at toy scale)."""
    tokenizer, ids = _word_tokenizer(texts)
    config = Qwen2_5OmniThinkerConfig(
        text_config=_text_config(ids), vision_config=VISION,
        audio_config=dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, output_dim=64,
                          num_mel_bins=16, max_source_positions=100, n_window=10),
        video_token_index=ids["<|video_pad|>"], image_token_index=ids["<|image_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    return _save(Qwen2_5OmniThinkerForConditionalGeneration(config), tokenizer, folder)
