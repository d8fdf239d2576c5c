"""Stored prefix KV caches: training from a prompt's keys/values computed once equals the live pass.

Conditioner level (tiny random backbones): every combination of dropped caption / video, captions
other than the stored one, the minimal template, the text LLM and the omni thinker; the decoder
sees no prompt token it could reuse; store files round-trip bit for bit; a store of another
backbone, frame rate or a corrupt file is refused with its name.
"""
from __future__ import annotations

import pytest
import torch
from test_conditioners import CAPTIONS, rel_err, step, tiny_mllm, tiny_text_llm, tiny_tokenizer, videos
from test_conditioners_omni import tiny_omni

from reasonaudio.models.prefix_kv import StoredPrefix, load_prefix, save_prefix

# Five items: video + caption, video + caption, video only, caption only (T2A), nothing given.
VIDEOS = [videos()[0], videos()[2], videos()[0], None, None]
ITEM_CAPTIONS = ["a dog barks on the roof", "rain falls", "", "bird sings", ""]
# Every drop combination on the items that have both.
HAS_VIDEO = torch.tensor([True, False, True, False, False])
HAS_TEXT = torch.tensor([False, True, False, True, False])


def assert_same_step(cond, live_args, stored_args, tol=1e-5):
    out_l, grad_l = step(cond, *live_args)
    out_s, grad_s = step(cond, *stored_args)
    assert rel_err(out_s, out_l) <= tol
    for name in grad_l:
        assert grad_l[name].abs().max() > 0, name
        assert rel_err(grad_s[name], grad_l[name]) <= tol, name
    return out_s


@pytest.mark.parametrize("flags", ["as stored", "dropped"])
def test_mllm_stored_prefix_equals_live_pass_with_gradients(flags):
    cond = tiny_mllm()
    stored = cond.store_prefix(VIDEOS, ITEM_CAPTIONS)
    assert [s.grid for s in stored] == [(2, 4, 4), (2, 2, 4), (2, 4, 4), None, None]
    flags = (HAS_VIDEO, HAS_TEXT) if flags == "dropped" else (None, None)
    out = assert_same_step(cond, (VIDEOS, ITEM_CAPTIONS, *flags), (None, ITEM_CAPTIONS, *flags, stored))
    assert out.shape == (5, 5, 48)


def test_dropped_conditions_equal_the_live_prompts_without_them():
    cond = tiny_mllm()
    stored = cond.store_prefix(VIDEOS[:1], ITEM_CAPTIONS[:1])
    caption = ITEM_CAPTIONS[0]
    for has_video, has_text, video, text in [(True, False, VIDEOS[0], ""), (False, True, None, caption),
                                             (False, False, None, "")]:
        got = cond(None, [caption], torch.tensor([has_video]), torch.tensor([has_text]), prefix_kv=stored)
        assert rel_err(got, cond([video], [text])) <= 1e-5


def test_only_the_queries_and_the_unshared_tail_reach_the_decoder():
    """Count the tokens the first decoder layer processes: with everything stored, only the queries."""
    cond = tiny_mllm()
    stored = cond.store_prefix(VIDEOS[:2], ITEM_CAPTIONS[:2])
    seen: list[int] = []
    hook = cond.decoder.layers[0].register_forward_pre_hook(lambda m, args, kw: seen.append(args[0].shape[1]),
                                                            with_kwargs=True)
    cond(None, ITEM_CAPTIONS[:2], prefix_kv=stored)
    assert seen == [cond.num_tokens]
    seen.clear()
    cond(None, ITEM_CAPTIONS[:2], torch.tensor([True, True]), torch.tensor([False, False]), prefix_kv=stored)
    tail = cond.tokenizer("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert seen == [len(tail) + cond.num_tokens]  # one call: the template's closing tokens and the queries
    seen.clear()
    cond(None, ITEM_CAPTIONS[:2], torch.tensor([False, False]), torch.tensor([True, True]), prefix_kv=stored)
    assert seen == [cond.num_tokens]  # a dropped video: the stored caption-only prompt serves it whole
    assert [s.alt.ids.tolist() for s in stored] == [cond.prompt_ids(c, 0) for c in ITEM_CAPTIONS[:2]]
    seen.clear()
    cond(VIDEOS[:2], ITEM_CAPTIONS[:2])  # the live pass: the whole prompt, then the queries
    assert seen[0] == max(len(s.ids) for s in stored) and seen[1] == cond.num_tokens
    hook.remove()


def test_another_caption_reuses_the_video_and_equals_live():
    """A caption other than the stored one (e.g. a negative prompt) shares the head up to the video's end."""
    cond = tiny_mllm()
    stored = cond.store_prefix(VIDEOS[:2], ITEM_CAPTIONS[:2])
    other = ["loud music plays", "the cat meows"]
    assert rel_err(cond(None, other, prefix_kv=stored), cond(VIDEOS[:2], other)) <= 1e-5


def test_minimal_template_and_text_llm_and_omni():
    cond = tiny_mllm(tokenizer=tiny_tokenizer(chat=False))  # no template: a dropped video is served by the alt prompt
    stored = cond.store_prefix(VIDEOS, ITEM_CAPTIONS)
    assert stored[4].ids.numel() == 0 and stored[4].kv.shape[3] == 0  # nothing given, no template: empty prompt
    assert_same_step(cond, (VIDEOS, ITEM_CAPTIONS, HAS_VIDEO, HAS_TEXT), (None, ITEM_CAPTIONS, HAS_VIDEO, HAS_TEXT, stored))

    llm = tiny_text_llm()
    stored = llm.store_prefix(None, CAPTIONS)
    assert stored[0].positions.shape[0] == 1 and stored[0].grid is None  # 1-D positions
    assert_same_step(llm, (None, CAPTIONS), (None, CAPTIONS, None, None, stored))
    flags = torch.tensor([False, True, True])
    assert_same_step(llm, (None, CAPTIONS, None, flags), (None, CAPTIONS, None, flags, stored))
    with_video = torch.tensor([True, False, True])  # training passes the clips' video flags: the text LLM ignores them
    assert_same_step(llm, (videos(), CAPTIONS, with_video, flags), (None, CAPTIONS, with_video, flags, stored))

    omni = tiny_omni()
    stored = omni.store_prefix(VIDEOS, ITEM_CAPTIONS)
    assert_same_step(omni, (VIDEOS, ITEM_CAPTIONS, HAS_VIDEO, HAS_TEXT),
                     (None, ITEM_CAPTIONS, HAS_VIDEO, HAS_TEXT, stored))


def test_store_files_round_trip_and_refuse_what_they_cannot_serve(tmp_path):
    cond = tiny_mllm()
    stored = cond.store_prefix(VIDEOS[:1], ITEM_CAPTIONS[:1])[0]
    layers, heads, head_dim = cond.kv_shape()
    assert stored.kv.shape == (layers, 2, heads, stored.ids.numel(), head_dim) == (2, 2, 1, 21, 32)
    save_prefix(tmp_path / "0.safetensors", stored)
    back = load_prefix(tmp_path / "0.safetensors")
    assert back.grid == stored.grid and all(torch.equal(getattr(back, k), getattr(stored, k))
                                            for k in ("ids", "positions", "kv"))
    assert back.alt is not None and all(torch.equal(getattr(back.alt, k), getattr(stored.alt, k))
                                        for k in ("ids", "positions", "kv"))
    assert not list(tmp_path.glob("*.tmp"))

    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 50)
    with pytest.raises(ValueError, match="bad.safetensors: not a stored prefix file"):
        load_prefix(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_prefix(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="inconsistent stored prefix"):
        StoredPrefix(stored.ids[:-1], stored.positions, stored.kv, stored.grid)

    # A store made at another frame rate has other temporal positions: its video cannot be reused, and the
    # error names the file.
    save_prefix(tmp_path / "4fps.safetensors", tiny_mllm(fps=4.0).store_prefix(VIDEOS[:1], ITEM_CAPTIONS[:1])[0])
    with pytest.raises(ValueError, match="4fps.safetensors: the prompt's video tokens differ from the stored ones"):
        cond(None, ITEM_CAPTIONS[:1], prefix_kv=[load_prefix(tmp_path / "4fps.safetensors")])

    # Fingerprints: the same weights and settings agree; a one-value weight edit, another dtype or frame rate
    # are named as the difference.
    meta = {"fingerprint": cond.prefix_fingerprint()}
    tiny_mllm().check_store(meta, "store")
    other = tiny_mllm()
    with torch.no_grad():
        other.decoder.layers[1].mlp.down_proj.weight[3, 17] += 1e-3
    with pytest.raises(ValueError, match=r"store: prefix KV store made by another backbone or setting \(backbone differ"):
        other.check_store(meta, "store")
    with pytest.raises(ValueError, match=r"\(dtype, backbone differ: store \{'dtype': 'float32'"):
        tiny_mllm(dtype=torch.bfloat16).check_store(meta, "store")
    with pytest.raises(ValueError, match=r"\(prompt differ"):
        tiny_mllm(fps=4.0).check_store(meta, "store")
