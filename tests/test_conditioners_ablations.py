"""Table 5's ablation conditioners as the paper defines them: the text-only row is the same MLLM with its
visual stream removed, and CLIP gives as many tokens (77) as the learnable queries."""
from __future__ import annotations

import pytest
import torch
from test_conditioners import CAPTIONS, tiny_clip, tiny_mllm, tiny_qwen_vl_config, tiny_tokenizer, videos
from transformers import CLIPConfig

from reasonaudio.models.conditioners import (CLIPConditioner, CLIPLLMConditioner, MLLMQueryConditioner,
                                             MLLMTextOnlyQueryConditioner)


def test_text_only_mllm_is_the_same_mllm_without_its_visual_stream():
    full = tiny_mllm()
    torch.manual_seed(0)
    text_only = MLLMTextOnlyQueryConditioner(tiny_qwen_vl_config(), out_dim=48, num_queries=5,
                                             tokenizer=tiny_tokenizer())
    assert not hasattr(text_only.backbone, "visual") and hasattr(full.backbone, "visual")
    text_only.load_state_dict(full.state_dict(), strict=False)  # trainables: queries + connector
    text_only.backbone.language_model.load_state_dict(full.backbone.language_model.state_dict())
    # Equal to the full MLLM with every video dropped, whatever videos it is given
    expected = full(videos(), CAPTIONS, torch.tensor([False, False, False]))
    torch.testing.assert_close(text_only(videos(), CAPTIONS), expected)
    torch.testing.assert_close(text_only(None, CAPTIONS), expected)
    with_video = full(videos(), CAPTIONS)
    assert (with_video[0] - expected[0]).abs().max() > 1e-4  # the video did matter to the full model
    n_vis = sum(p.numel() for p in full.backbone.visual.parameters())
    assert sum(p.numel() for p in text_only.backbone.parameters()) == \
        sum(p.numel() for p in full.backbone.parameters()) - n_vis
    assert set(text_only.state_dict()) == set(full.state_dict())


def test_clip_gives_77_tokens_like_the_queries():
    cfg = CLIPConfig(text_config=dict(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=77, eos_token_id=181,
                                      pad_token_id=1, bos_token_id=180),
                     vision_config=dict(image_size=28, patch_size=14, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2), projection_dim=16)
    cond = CLIPConditioner(cfg, out_dim=48, tokenizer=tiny_tokenizer())  # defaults: 16 frames, 77 tokens
    assert cond.num_tokens == 77 == MLLMQueryConditioner.__init__.__defaults__[0]  # num_queries default
    assert cond.text_len == 61
    assert cond(videos(), CAPTIONS).shape == (3, 77, 48)
    with pytest.raises(ValueError, match="exceed CLIP's context of 77"):
        CLIPConditioner(cfg, out_dim=48, num_frames=16, num_tokens=100, tokenizer=tiny_tokenizer())
    with pytest.raises(ValueError, match="num_frames < num_tokens"):
        CLIPConditioner(cfg, out_dim=48, num_frames=77, tokenizer=tiny_tokenizer())


def test_clip_plus_the_text_only_mllm():
    torch.manual_seed(0)
    llm = MLLMTextOnlyQueryConditioner(tiny_qwen_vl_config(), out_dim=48, num_queries=5, tokenizer=tiny_tokenizer())
    cond = CLIPLLMConditioner(tiny_clip(), llm)
    assert cond(videos(), CAPTIONS).shape == (3, 16 + 5, 48)
