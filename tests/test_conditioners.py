"""Query conditioners on tiny random backbones: mRoPE ids, prefix caching, dropping, checkpoints, ablations.

Everything is built from configs and a local word-level tokenizer (no hub). The tokenizer's chat
template mimics Qwen's (``<|im_start|>role\\n…<|im_end|>``, a video item renders
``<|vision_start|><|video_pad|><|vision_end|>``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import AddedToken, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import (CLIPConfig, PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                          Qwen2Config)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from reasonaudio.models.conditioners import (CLIPConditioner, CLIPLLMConditioner, MLLMQueryConditioner, QueryConnector,
                                             TextLLMQueryConditioner, mrope_position_ids, video_patches)

WORDS = ("a the dog barks cat meows car engine rain falls on roof loud soft quiet bird sings people talk music "
         "plays user assistant system").split()
SPECIAL = {"<|im_start|>": 180, "<|im_end|>": 181, "<|image_pad|>": 190, "<|video_pad|>": 191,
           "<|vision_start|>": 192, "<|vision_end|>": 193}
VIDEO_ID, VSTART, VEND = 191, 192, 193
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}"
                 "{% else %}{% for c in m.content %}{% if c.type == 'video' %}<|vision_start|><|video_pad|>"
                 "<|vision_end|>{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}{% endif %}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CAPTIONS = ["a dog barks on the roof", "rain falls", ""]


def tiny_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}, **SPECIAL}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   chat_template=CHAT_TEMPLATE if chat else None)


def tiny_qwen_vl_config() -> Qwen2_5_VLConfig:
    # head_dim 32 → mrope_section sums to 16; tokens_per_second 2 as in the released checkpoints
    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=None, eos_token_id=181,
                         pad_token_id=1, rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6],
                                                          "rope_theta": 10000.0}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0], tokens_per_second=2),
        image_token_id=190, video_token_id=VIDEO_ID, vision_start_token_id=VSTART, vision_end_token_id=VEND)


def tiny_mllm(**kwargs) -> MLLMQueryConditioner:
    torch.manual_seed(0)
    kwargs.setdefault("tokenizer", tiny_tokenizer())
    return MLLMQueryConditioner(tiny_qwen_vl_config(), out_dim=48, num_queries=kwargs.pop("num_queries", 5), **kwargs)


def tiny_text_llm(**kwargs) -> TextLLMQueryConditioner:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, bos_token_id=None, eos_token_id=181, pad_token_id=1)
    return TextLLMQueryConditioner(cfg, out_dim=48, num_queries=4, tokenizer=tiny_tokenizer(), **kwargs)


def tiny_clip(**kwargs) -> CLIPConditioner:
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=12, eos_token_id=181,
                                      pad_token_id=1, bos_token_id=180),
                     vision_config=dict(image_size=28, patch_size=14, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2),
                     projection_dim=16)
    kwargs.setdefault("num_tokens", 16)  # 4 frames + CLIP's whole (tiny) context of 12 text tokens
    return CLIPConditioner(cfg, out_dim=48, num_frames=4, tokenizer=tiny_tokenizer(), **kwargs)


def videos() -> list[torch.Tensor | None]:
    """Three items with prefixes of different lengths: 4 frames 56², none, 3 frames 28×56."""
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (4, 3, 56, 56), dtype=torch.uint8, generator=g), None,
            torch.randint(0, 256, (3, 3, 28, 56), dtype=torch.uint8, generator=g)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


def step(cond: torch.nn.Module, *args) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training step's forward and backward; outputs and the trainable parameters' gradients.

    The loss weighs the outputs by fixed random numbers: a loss of the outputs' norm alone would be
    constant under the connector's RMSNorm and leave only rounding noise as gradient.
    """
    cond.zero_grad()
    out = cond(*args)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in cond.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------- mRoPE position ids


def test_mrope_ids_hand_computed():
    """2 temporal grids × 2×2 merged patches (grid_thw (2, 4, 4)), 3 text tokens, 2 queries.

    second_per_grid_t = 2 frames / 2 fps = 1 s, tokens_per_second 2 → temporal step 2. The video
    spans ids 0..2, so text continues at 3 on all axes, and the queries after it.
    """
    types = [2] * 8 + [0] * 3 + [0] * 2
    ids = mrope_position_ids(types, [(2, 4, 4)], [1.0], tokens_per_second=2, spatial_merge_size=2)
    assert ids.tolist() == [[0, 0, 0, 0, 2, 2, 2, 2, 3, 4, 5, 6, 7],
                            [0, 0, 1, 1, 0, 0, 1, 1, 3, 4, 5, 6, 7],
                            [0, 1, 0, 1, 0, 1, 0, 1, 3, 4, 5, 6, 7]]


@pytest.mark.parametrize("second_per_grid_t, temporal", [(4.0, [2, 2, 2, 2, 10, 10, 10, 10]),  # fps 0.5: step 8
                                                         (0.5, [2, 2, 2, 2, 3, 3, 3, 3]),  # fps 4: step 1
                                                         (0.25, [2, 2, 2, 2, 2, 2, 2, 2])])  # fps 8: ⌊0.5⌋ = 0
def test_mrope_ids_temporal_scaling_and_text_around_the_video(second_per_grid_t, temporal):
    """text, <vision_start>, video (2, 4, 4), <vision_end>, text: the video starts at id 2."""
    types = [0, 0] + [2] * 8 + [0, 0]
    ids = mrope_position_ids(types, [(2, 4, 4)], [second_per_grid_t], tokens_per_second=2, spatial_merge_size=2)
    after = max(temporal[-1], 3) + 1  # h / w reach 2 + 1 = 3
    assert ids[0].tolist() == [0, 1] + temporal + [after, after + 1]
    assert ids[1].tolist() == [0, 1] + [2, 2, 3, 3] * 2 + [after, after + 1]
    assert ids[2].tolist() == [0, 1] + [2, 3, 2, 3] * 2 + [after, after + 1]


def test_mrope_ids_agree_with_transformers_up_to_the_end_of_the_video():
    """transformers 5.24.0's ``get_rope_index`` matches ours on text before and inside a video.

    After a video it diverges (5.24 restarts text at ``start + max(h, w) / merge``, colliding with
    the video's temporal ids; Qwen's original code and transformers ≤ 4.5x continue at max + 1,
    as we do), so only the applicable part is compared; text-only sequences agree entirely.
    """
    model = tiny_mllm().backbone
    ids = torch.tensor([[5, VSTART] + [VIDEO_ID] * 8 + [VEND, 7, 8, 9]])
    types = (ids == VIDEO_ID).long() * 2
    for spg in (1.0, 0.5, 4.0):
        theirs, _ = model.get_rope_index(ids, types, video_grid_thw=torch.tensor([[2, 4, 4]]),
                                         second_per_grid_ts=torch.tensor([spg]))
        ours = mrope_position_ids(types[0].tolist(), [(2, 4, 4)], [spg], 2, 2)
        assert torch.equal(ours[:, :10], theirs[:, 0, :10])
        assert ours[:, 10:].tolist() == [list(range(int(ours[:, :10].max()) + 1, int(ours[:, :10].max()) + 5))] * 3
    text = torch.tensor([[5, 6, 7, 8]])
    theirs, _ = model.get_rope_index(text, torch.zeros_like(text), video_grid_thw=torch.tensor([[2, 4, 4]]))
    assert torch.equal(mrope_position_ids([0] * 4, [], [], 2, 2), theirs[:, 0])


def test_mrope_ids_reject_inconsistent_layouts():
    with pytest.raises(ValueError, match="consecutive video tokens"):
        mrope_position_ids([2] * 7, [(2, 4, 4)], [1.0], 2, 2)
    with pytest.raises(ValueError, match="grids"):
        mrope_position_ids([0, 0], [(2, 4, 4)], [1.0], 2, 2)


# --------------------------------------------------------------------------- video input


def test_video_patches_equal_qwen_image_processor():
    """A one-frame video is patchified as Qwen2-VL's processor does an image (repeated in time)."""
    frame = np.random.default_rng(0).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    ref = Qwen2VLImageProcessorPil(do_resize=False)(images=[frame], return_tensors="pt")
    ours, grid = video_patches(torch.from_numpy(frame).permute(2, 0, 1)[None])
    assert grid == tuple(ref["image_grid_thw"][0].tolist()) == (1, 4, 6)
    torch.testing.assert_close(ours, ref["pixel_values"], rtol=0, atol=1e-6)


def test_inputs_embeds_path_equals_transformers_pixel_path():
    """Our embedded prefix (visual tokens scattered into the video slots) equals transformers' own
    ``input_ids + pixel_values_videos`` forward given the same explicit position ids."""
    cond = tiny_mllm()
    video = videos()[0]
    prefix = cond.prefix([video], ["a dog barks"], [True], [True])
    ours = cond.decoder(inputs_embeds=prefix.embeds, position_ids=prefix.positions,
                        attention_mask=prefix.mask).last_hidden_state
    ids = torch.tensor([cond.prompt_ids("a dog barks", 8)])
    pixels, grid = video_patches(video)
    theirs = cond.backbone(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=torch.tensor([grid]),
                           position_ids=prefix.positions).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_explicit_3axis_position_ids_always_passed_and_they_matter():
    cond = tiny_mllm()
    seen = []
    hook = cond.decoder.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["position_ids"]), with_kwargs=True)
    for cache in (True, False):
        cond.prefix_cache = cache
        cond(videos(), CAPTIONS)
    hook.remove()
    assert len(seen) == 3  # cached: prefix + queries; full: one pass
    assert all(p is not None and p.ndim == 3 and p.shape[0] == 3 for p in seen)
    assert torch.equal(seen[2], torch.cat([seen[0], seen[1]], dim=-1))
    # the video item's temporal / height / width ids differ, so mRoPE is in use
    assert not torch.equal(seen[2][0, 0], seen[2][1, 0])
    # dropping them (what inputs_embeds without position_ids does) changes the video item's states
    prefix = cond.prefix(videos()[:1], ["a dog barks"], [True], [True])
    explicit = cond.decoder(inputs_embeds=prefix.embeds, position_ids=prefix.positions).last_hidden_state
    implicit = cond.decoder(inputs_embeds=prefix.embeds).last_hidden_state
    assert (explicit - implicit).abs().max() > 1e-2


# --------------------------------------------------------------------------- prefix caching


@pytest.mark.parametrize("num_queries", [1, 5])
def test_prefix_cache_equals_full_pass_with_gradients(num_queries):
    """Prefixes of 21, 7 and 11 tokens (left-padded): outputs and query / connector gradients agree."""
    cond = tiny_mllm(num_queries=num_queries)
    args = (videos(), CAPTIONS, torch.tensor([True, False, True]), torch.tensor([True, True, False]))
    prefix = cond.prefix(videos(), CAPTIONS, [True, False, True], [True, True, False])
    assert prefix.mask.sum(1).tolist() == [21, 7, 11] and prefix.mask[:, 0].tolist() == [1, 0, 0]
    cond.prefix_cache = True
    out_c, grad_c = step(cond, *args)
    cond.prefix_cache = False
    out_f, grad_f = step(cond, *args)
    assert out_c.shape == (3, num_queries, 48)
    assert rel_err(out_c, out_f) <= 1e-5
    assert set(grad_c) == {"queries"} | {f"connector.{n}" for n, _ in cond.connector.named_parameters()}
    for name in grad_c:
        assert grad_c[name].abs().max() > 0, name
        assert rel_err(grad_c[name], grad_f[name]) <= 1e-5, name


def test_without_autograd_one_pass_replaces_the_prefix_cache():
    """Generation and validation run without autograd: the cache would save nothing, so one decoder pass over
    prompt and queries runs instead of two, with the same output as the cached pair of passes in training."""
    cond = tiny_mllm()
    args = (videos(), CAPTIONS, torch.tensor([True, False, True]), torch.tensor([True, True, False]))
    calls = []
    hook = cond.decoder.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["inputs_embeds"].shape[1]),
                                                  with_kwargs=True)
    cond.prefix_cache = True
    cached = cond(*args)
    assert calls == [21, 5]  # autograd on: the prefix (21 tokens, left-padded), then the 5 queries
    calls.clear()
    with torch.no_grad():
        single = cond(*args)
    hook.remove()
    assert calls == [26]  # one pass: prefix and queries together
    assert rel_err(single, cached) <= 1e-5


def test_left_padding_leaves_each_item_unchanged():
    cond = tiny_mllm()
    batch = cond(videos(), CAPTIONS)
    for i, (video, caption) in enumerate(zip(videos(), CAPTIONS)):
        assert rel_err(batch[i], cond([video], [caption])[0]) <= 1e-5


# --------------------------------------------------------------------------- condition dropping


def test_condition_dropping_follows_the_flags():
    cond = tiny_mllm()
    video, caption = videos()[0], "a dog barks"
    full = cond([video], [caption])
    no_text = cond([video], [caption], torch.tensor([True]), torch.tensor([False]))
    no_video = cond([video], [caption], torch.tensor([False]), torch.tensor([True]))
    neither = cond([video], [caption], torch.tensor([False]), torch.tensor([False]))
    torch.testing.assert_close(no_text, cond([video], [""]))
    torch.testing.assert_close(no_video, cond([None], [caption]))
    torch.testing.assert_close(neither, cond(None, [""]))
    for a, b in [(full, no_text), (full, no_video), (no_text, neither), (no_video, neither)]:
        assert (a - b).abs().max() > 1e-3
    # prompt level: a dropped video leaves no video tokens, a dropped caption no caption tokens
    tok = cond.tokenizer
    assert cond.prompt_ids("", 0) == tok("<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n",
                                        add_special_tokens=False)["input_ids"]
    with_video = cond.prompt_ids("", 8)
    assert with_video.count(VIDEO_ID) == 8 and with_video[with_video.index(VSTART) + 9] == VEND
    with pytest.raises(ValueError, match="has_video=True but no video"):
        cond([None], [caption], torch.tensor([True]), torch.tensor([True]))


def test_minimal_template_without_chat_template():
    cond = tiny_mllm(tokenizer=tiny_tokenizer(chat=False))
    caption_ids = cond.tokenizer("a dog barks", add_special_tokens=False)["input_ids"]
    assert cond.prompt_ids("a dog barks", 3) == [VSTART, VIDEO_ID, VIDEO_ID, VIDEO_ID, VEND, *caption_ids]
    assert cond.prompt_ids("", 0) == []
    out = cond([videos()[0], None], ["a dog barks", ""])  # the second prefix is empty: queries only
    assert out.shape == (2, 5, 48) and torch.isfinite(out).all()
    # A batch of empty prompts runs through one masked slot (the same calls as any batch): still queries only.
    positions = torch.arange(5).expand(3, 1, -1)
    alone = cond.connector(cond.decoder(inputs_embeds=cond.queries[None], position_ids=positions).last_hidden_state)
    for cache in (True, False):
        cond.prefix_cache = cache
        assert rel_err(cond(None, [""]), alone) <= 1e-6
        assert rel_err(out[1:], alone) <= 1e-5
    with pytest.raises(ValueError, match="video tokens"):
        cond.prompt_ids("<|video_pad|>", 0)


# --------------------------------------------------------------------------- frozen backbone, checkpoints


def test_backbone_frozen_in_eval_mode_and_out_of_checkpoints():
    cond = tiny_mllm()
    cond.train()
    assert not cond.backbone.training and cond.connector.training
    assert not any(p.requires_grad for p in cond.backbone.parameters())
    trainable = {n for n, p in cond.named_parameters() if p.requires_grad}
    assert all(n == "queries" or n.startswith("connector.") for n in trainable)
    assert set(cond.state_dict()) == trainable
    # nested (as in a LightningModule), saved and loaded strictly into a fresh conditioner
    torch.manual_seed(5)
    other = MLLMQueryConditioner(tiny_qwen_vl_config(), out_dim=48, num_queries=5, tokenizer=tiny_tokenizer())
    other.backbone.load_state_dict(cond.backbone.state_dict())
    saved = torch.nn.ModuleDict({"cond": cond}).state_dict()
    assert all(k.startswith("cond.") and "backbone" not in k for k in saved)
    torch.nn.ModuleDict({"cond": other}).load_state_dict(saved, strict=True)
    torch.testing.assert_close(other(videos(), CAPTIONS), cond(videos(), CAPTIONS))
    cond.save_frozen = True
    assert any(k.startswith("backbone.") for k in cond.state_dict())


def test_load_from_local_folder(tmp_path):
    ref = tiny_mllm()
    released = Qwen2_5_VLForConditionalGeneration(tiny_qwen_vl_config())  # a folder as released: with LM head
    released.model.load_state_dict(ref.backbone.state_dict())
    released.save_pretrained(tmp_path)
    ref.tokenizer.save_pretrained(tmp_path)
    cond = MLLMQueryConditioner(tmp_path, out_dim=48, num_queries=5)
    assert next(cond.backbone.parameters()).dtype == torch.float32  # no CUDA here: fp32
    cond.load_state_dict(ref.state_dict())
    torch.testing.assert_close(cond(videos(), CAPTIONS), ref(videos(), CAPTIONS))


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing-model"):
        MLLMQueryConditioner(tmp_path / "missing-model", out_dim=8)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert'"):
        MLLMQueryConditioner(tmp_path / "bert", out_dim=8)
    with pytest.raises(ValueError, match="'bert'"):
        CLIPConditioner(tmp_path / "bert", out_dim=8)
    (tmp_path / "vl").mkdir()  # a Qwen2.5-VL folder is no causal-LM folder
    (tmp_path / "vl" / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    with pytest.raises(ValueError, match="'qwen2_5_vl'"):
        TextLLMQueryConditioner(tmp_path / "vl", out_dim=8)
    cond = tiny_mllm(max_video_tokens=8)
    long_video = torch.zeros(6, 3, 56, 56, dtype=torch.uint8)  # 3 temporal grids × 4 = 12 tokens
    with pytest.raises(ValueError, match=r"6 frames of 56x56\) gives 12 visual tokens, more than max_video_tokens=8"):
        cond([long_video], ["a dog"])
    with pytest.raises(ValueError, match="not a multiple of 28"):
        cond([torch.zeros(2, 3, 30, 56, dtype=torch.uint8)], ["a dog"])


def test_connector_with_bidirectional_encoder():
    connector = QueryConnector(64, 48, num_layers=1, num_heads=4)
    x = torch.randn(2, 5, 64)
    out = connector(x)
    assert out.shape == (2, 5, 48)
    torch.testing.assert_close(out.square().mean(-1), torch.ones(2, 5), rtol=1e-4, atol=1e-4)  # RMSNorm, weight 1
    # bidirectional: the first token sees the last one
    y = x.clone()
    y[:, -1] += 1
    assert (connector(y)[:, 0] - out[:, 0]).abs().max() > 1e-4
    cond = tiny_mllm(connector_layers=1, connector_heads=4)
    assert cond(videos(), CAPTIONS).shape == (3, 5, 48)


# --------------------------------------------------------------------------- ablations (Table 5)


def test_text_llm_prefix_cache_padding_and_dropping():
    cond = tiny_text_llm()
    captions = ["a dog barks on the roof", "rain", ""]
    cond.prefix_cache = True
    out_c, grad_c = step(cond, None, captions)
    cond.prefix_cache = False
    out_f, grad_f = step(cond, None, captions)
    assert out_c.shape == (3, 4, 48) and rel_err(out_c, out_f) <= 1e-5
    for name in grad_c:
        assert rel_err(grad_c[name], grad_f[name]) <= 1e-5, name
    cond.prefix_cache = True
    for i, caption in enumerate(captions):
        assert rel_err(out_c[i], cond(None, [caption])[0]) <= 1e-5
    # videos are ignored; a dropped caption is the empty one
    torch.testing.assert_close(cond(videos()[:1], ["rain"], None, torch.tensor([False])), cond(None, [""]))
    assert set(cond.state_dict()) == {n for n, p in cond.named_parameters() if p.requires_grad}


def test_clip_conditioner_tokens_nulls_and_gradients():
    cond = tiny_clip()
    cond.train()
    assert cond.num_tokens == 4 + 12 and not cond.backbone.training
    out, grads = step(cond, videos(), CAPTIONS)
    assert out.shape == (3, 16, 48)
    torch.testing.assert_close(out[1, :4], cond.null_video.detach())  # item 1 has no video
    assert (out[0, :4] - cond.null_video.detach()).abs().max() > 1e-3
    assert all(g.abs().max() > 0 for g in grads.values())
    assert set(cond.state_dict()) == set(grads)
    dropped = cond(videos(), CAPTIONS, torch.tensor([False, False, False]), torch.tensor([False, False, False]))
    torch.testing.assert_close(dropped, cond(None, ["", "", ""]))


def test_clip_llm_concatenates_and_keeps_both_backbones_out_of_checkpoints():
    cond = CLIPLLMConditioner(tiny_clip(), tiny_text_llm())
    out = cond(videos(), CAPTIONS)
    assert out.shape == (3, 16 + 4, 48) and cond.num_tokens == 20
    keys = set(cond.state_dict())
    assert keys and not any(".backbone." in k for k in keys)
    fresh = CLIPLLMConditioner(tiny_clip(), tiny_text_llm())
    fresh.load_state_dict(cond.state_dict(), strict=True)
    with pytest.raises(ValueError, match="same out_dim"):
        CLIPLLMConditioner(tiny_clip(), TextLLMQueryConditioner(tiny_text_llm().backbone.config, out_dim=8,
                                                                tokenizer=tiny_tokenizer()))


def test_ranks_without_video_still_run_the_vision_tower_when_sharded(monkeypatch):
    """Under FSDP2 every rank must call the (sharded) vision tower; a rank whose batch keeps no video runs a
    one-token dummy through it, which changes nothing in the output."""
    import reasonaudio.models.conditioners.mllm as conditioners_mllm  # where the vision tower's caller looks it up

    cond = tiny_mllm()
    calls: list[int] = []
    cond.backbone.visual.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    alone = cond(None, ["rain falls"])
    assert calls == []
    monkeypatch.setattr(conditioners_mllm, "_sharded_collectives", lambda: True)
    torch.testing.assert_close(cond(None, ["rain falls"]), alone, rtol=0, atol=0)
    assert calls == [4]  # 2 × 2 patches of one temporal step: one merged token
