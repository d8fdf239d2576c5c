"""Table 5's omni backbone: a tiny random Qwen2.5-Omni thinker read out by queries, video and text only.

Pins what differs from Qwen2.5-VL: the temporal mRoPE step (``position_id_per_seconds`` = 25), the
position ids against Omni's own ``get_rope_index`` (transformers 5.24.0, video without audio), loading
from a thinker folder and from a whole-model folder (``thinker.*`` keys only), and that no audio tower
exists to leak the target audio.
"""
from __future__ import annotations

import json

import pytest
import torch
from test_conditioners import (CAPTIONS, VEND, VIDEO_ID, VSTART, rel_err, step, tiny_qwen_vl_config, tiny_tokenizer,
                               videos)
from transformers import (Qwen2_5_VLForConditionalGeneration, Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration,
                          Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration)

from reasonaudio.models.conditioners import OmniThinkerQueryConditioner, video_patches


def tiny_thinker_config() -> Qwen2_5OmniThinkerConfig:
    return Qwen2_5OmniThinkerConfig(
        text_config=dict(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=None, eos_token_id=181,
                         pad_token_id=1, rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6],
                                                          "rope_theta": 10000.0}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        audio_config=dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, output_dim=64,
                          num_mel_bins=16, max_source_positions=100, n_window=10),
        video_token_index=VIDEO_ID, image_token_index=190, vision_start_token_id=VSTART, vision_end_token_id=VEND)


def tiny_omni(**kwargs) -> OmniThinkerQueryConditioner:
    torch.manual_seed(0)
    return OmniThinkerQueryConditioner(tiny_thinker_config(), out_dim=48, num_queries=kwargs.pop("num_queries", 5),
                                       tokenizer=tiny_tokenizer(), **kwargs)


def test_no_audio_tower_and_25_per_second_temporal_step():
    cond = tiny_omni()
    assert not hasattr(cond.backbone, "audio_tower")
    assert not any("audio" in n for n, _ in cond.backbone.named_parameters())
    prefix = cond.prefix(videos()[:1], ["a dog barks"], [True], [True])  # 4 frames at 2 fps: 2 temporal patches
    temporal = prefix.positions[0, 0][prefix.mask[0].bool()]
    video = torch.tensor(cond.prompt_ids("a dog barks", 8)) == VIDEO_ID
    start = int(temporal[video][0])
    assert sorted(set(temporal[video].tolist())) == [start, start + 25]  # 1 s per patch × 25 ids per second


@pytest.mark.parametrize("fps", [2.0, 4.0, 1.0])
def test_position_ids_equal_omni_get_rope_index(fps):
    """Chat-templated video + caption + queries: every id equals the thinker's own ``get_rope_index``."""
    cond = tiny_omni(fps=fps)
    prefix = cond.prefix(videos()[:1], ["a dog barks"], [True], [True])
    ids = torch.tensor([cond.prompt_ids("a dog barks", 8) + [5] * cond.num_tokens])  # queries stand as text
    reference = Qwen2_5OmniThinkerForConditionalGeneration(tiny_thinker_config()).model
    theirs, _ = reference.get_rope_index(ids, video_grid_thw=torch.tensor([[2, 4, 4]]),
                                         attention_mask=torch.ones_like(ids), use_audio_in_video=False,
                                         second_per_grids=torch.tensor([2 / fps]))
    ours = torch.cat([prefix.positions, prefix.query_positions], dim=-1)[:, 0]
    assert torch.equal(ours, theirs[:, 0])


def test_inputs_embeds_path_equals_the_thinker_pixel_path():
    cond = tiny_omni()
    video = videos()[0]
    prefix = cond.prefix([video], ["a dog barks"], [True], [True])
    ours = cond.decoder(inputs_embeds=prefix.embeds, position_ids=prefix.positions,
                        attention_mask=prefix.mask).last_hidden_state
    pixels, grid = video_patches(video)
    ids = torch.tensor([cond.prompt_ids("a dog barks", 8)])
    embeds = cond.backbone.get_input_embeddings()(ids)
    visual = cond.backbone.get_video_features(pixels, torch.tensor([grid])).pooler_output[0]
    embeds[ids == VIDEO_ID] = visual  # transformers' own vision path, scattered as its forward does
    theirs = cond.decoder(inputs_embeds=embeds, position_ids=prefix.positions).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_prefix_cache_equals_full_pass_and_dropping():
    cond = tiny_omni()
    args = (videos(), CAPTIONS, torch.tensor([True, False, True]), torch.tensor([True, True, False]))
    cond.prefix_cache = True
    out_c, grad_c = step(cond, *args)
    cond.prefix_cache = False
    out_f, grad_f = step(cond, *args)
    assert out_c.shape == (3, 5, 48) and rel_err(out_c, out_f) <= 1e-5
    for name in grad_c:
        assert grad_c[name].abs().max() > 0 and rel_err(grad_c[name], grad_f[name]) <= 1e-5, name
    # dropping the video of item 0 equals giving it no video at all
    dropped = cond(videos(), CAPTIONS, torch.tensor([False, False, True]), torch.tensor([True, True, False]))
    alone = cond([None], CAPTIONS[:1])
    assert rel_err(dropped[:1], alone) <= 1e-5


def test_loads_thinker_and_whole_model_folders(tmp_path):
    torch.manual_seed(1)
    thinker = Qwen2_5OmniThinkerForConditionalGeneration(tiny_thinker_config())
    thinker.save_pretrained(tmp_path / "thinker")
    whole = Qwen2_5OmniForConditionalGeneration(Qwen2_5OmniConfig(thinker_config=tiny_thinker_config().to_dict(),
                                                                   enable_audio_output=False))
    whole.save_pretrained(tmp_path / "omni")
    for name, source in (("thinker", thinker), ("omni", whole.thinker)):
        tiny_tokenizer().save_pretrained(tmp_path / name)
        cond = OmniThinkerQueryConditioner(tmp_path / name, out_dim=48, num_queries=3)
        expected = source.model.language_model.state_dict()
        assert all(torch.equal(v, cond.backbone.language_model.state_dict()[k]) for k, v in expected.items()), name
        assert json.loads((tmp_path / name / "config.json").read_text())["model_type"] in cond.SUPPORTED


def test_clear_errors(tmp_path):
    Qwen2_5_VLForConditionalGeneration(tiny_qwen_vl_config()).save_pretrained(tmp_path / "vl")
    with pytest.raises(ValueError, match="qwen2_5_vl.*not supported"):
        OmniThinkerQueryConditioner(tmp_path / "vl", out_dim=8)
    with pytest.raises(FileNotFoundError, match="missing"):
        OmniThinkerQueryConditioner(tmp_path / "missing", out_dim=8)
    whole = Qwen2_5OmniForConditionalGeneration(Qwen2_5OmniConfig(thinker_config=tiny_thinker_config().to_dict(),
                                                                   enable_audio_output=False))
    whole.save_pretrained(tmp_path / "broken")
    config = json.loads((tmp_path / "broken" / "config.json").read_text())
    config["thinker_config"]["text_config"]["intermediate_size"] = 96  # the MLP weights no longer fit
    (tmp_path / "broken" / "config.json").write_text(json.dumps(config))
    tiny_tokenizer().save_pretrained(tmp_path / "broken")
    with pytest.raises(ValueError, match="(?s)broken: the thinker.* weights do not match the config.*size mismatch"):
        OmniThinkerQueryConditioner(tmp_path / "broken", out_dim=8)
