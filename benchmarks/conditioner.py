"""Training-step time of the MLLM query conditioner with prefix caching vs one full pass, on CPU.

A training step is what the conditioner costs the pretraining loop: the decoder reads the
video+caption prefix and the learnable queries, the connector projects the query states, and a
loss on the condition tokens back-propagates into the queries and the connector. The full pass
runs prefix and queries together with autograd; the cached path runs the prefix without autograd
into a KV cache and only the queries with it (:class:`MLLMQueryConditioner`, ``prefix_cache``).
Both give the same outputs and gradients (tests/test_conditioners.py).

The model is a scaled-down Qwen2.5-VL (random weights, built from a config): by default a 6-layer,
384-wide decoder (6 heads of 64, 2 KV heads, mRoPE sections [8, 12, 12]) and a 1-block vision
tower. The prefix is a real one: 16 frames of 224×392 at 2 fps (8 × 8 × 14 = 896 visual tokens),
the chat template and a ~90-word caption, about 1,000 tokens; 77 queries. Timed: the decoder and
connector step on that prefix; separately, the prefix's forward pass alone without autograd (the
floor of any cached step) and the shared work before the step (video patchify, vision tower,
embedding), which caching does not change. One intra-op thread (the machine is shared); the runs
alternate; medians of ``--repeats`` after ``--warmup``. Also reported: the activation memory autograd
holds for backward (distinct storages of the saved tensors, parameters excluded).

Usage::

    .venv/bin/python benchmarks/conditioner.py            # writes docs/benchmarks.md
    .venv/bin/python benchmarks/conditioner.py --no-write --layers 4 --hidden 256

Replaces the section "## MLLM conditioner: prefix caching (CPU)" of ``docs/benchmarks.md``
(other sections are kept) unless ``--no-write``, and ends with the line
``prefix-cache speedup: <x>x``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig
from transformers.utils import logging as hf_logging

from reasonaudio.models.conditioners import MLLMQueryConditioner

from report import DOC, cpu_name, write_section  # benchmarks/ is the script folder, so this resolves

SECTION = "## MLLM conditioner: prefix caching (CPU)"
WORDS = ("a dog barks twice while a car engine idles in the rain and people talk softly near a busy road "
         "then a door slams a bird sings on the roof music plays from a radio the wind blows "
         "user assistant system").split()
CAPTION = " ".join((WORDS[:-3] * 4)[:90])
SPECIAL = {"<|im_start|>": 900, "<|im_end|>": 901, "<|image_pad|>": 990, "<|video_pad|>": 991,
           "<|vision_start|>": 992, "<|vision_end|>": 993}
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% for c in m.content %}{% if c.type == 'video' %}"
                 "<|vision_start|><|video_pad|><|vision_end|>{% else %}{{ c.text }}{% endif %}{% endfor %}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass
class Result:
    """Medians of one measurement."""

    prefix_tokens: int
    shared_s: float
    full_s: float
    cached_s: float
    prefix_forward_s: float
    full_saved_mb: float
    cached_saved_mb: float
    max_rel_diff: float

    @property
    def speedup(self) -> float:
        return self.full_s / self.cached_s


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A local word-level tokenizer with Qwen's special tokens and a Qwen-like chat template."""
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(dict.fromkeys(WORDS))}, **SPECIAL}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   chat_template=CHAT_TEMPLATE)


def build(layers: int, hidden: int, heads: int, num_queries: int) -> MLLMQueryConditioner:
    head_dim = hidden // heads
    unit = head_dim // 16  # mRoPE sections [t, h, w] split head_dim / 2 as 2:3:3, as Qwen's [16, 24, 24] do 64
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=1024, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=2,
                         bos_token_id=None, eos_token_id=901, pad_token_id=1,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                          "mrope_section": [2 * unit, 3 * unit, 3 * unit]}),
        vision_config=dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=hidden,
                           fullatt_block_indexes=[0], tokens_per_second=2),
        image_token_id=990, video_token_id=991, vision_start_token_id=992, vision_end_token_id=993)
    torch.manual_seed(0)
    return MLLMQueryConditioner(config, out_dim=448, num_queries=num_queries, tokenizer=word_tokenizer(),
                                dtype=torch.float32)


def saved_megabytes(fn, module: torch.nn.Module) -> float:
    """Activation memory (MB) autograd holds for backward while ``fn`` runs: the distinct storages of
    the tensors it saves, not counting ``module``'s parameters (saved by reference, no extra memory)."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()) / 2 ** 20


def measure(args: argparse.Namespace) -> Result:
    cond = build(args.layers, args.hidden, args.heads, args.queries)
    cond.train()
    frames = torch.randint(0, 256, (args.frames, 3, args.height, args.width), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    weights = torch.randn(args.batch, args.queries, cond.out_dim, generator=torch.Generator().manual_seed(1))
    videos, captions = [frames] * args.batch, [CAPTION] * args.batch

    def shared():
        return cond.prefix(videos, captions, [True] * args.batch, [True] * args.batch)

    prefix = shared()

    def step(cache: bool) -> torch.Tensor:
        cond.prefix_cache = cache
        cond.zero_grad()
        out = cond.connector(cond.query_states(prefix))  # [B, Nq, D]
        (out * weights).sum().backward()
        return out.detach()

    def prefix_forward() -> None:
        with torch.no_grad():
            cond.decoder(inputs_embeds=prefix.embeds, attention_mask=prefix.mask, position_ids=prefix.positions,
                         use_cache=False)

    runs = {"full": lambda: step(False), "cached": lambda: step(True), "prefix": prefix_forward, "shared": shared}
    for _ in range(args.warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(args.repeats):
        for name in (runs if rep % 2 == 0 else reversed(runs)):  # alternate the order against load drifts
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    full, cached = step(False), step(True)
    return Result(prefix_tokens=int(prefix.mask.sum(1).max()), shared_s=med["shared"], full_s=med["full"],
                  cached_s=med["cached"], prefix_forward_s=med["prefix"],
                  full_saved_mb=saved_megabytes(lambda: step(False), cond),
                  cached_saved_mb=saved_megabytes(lambda: step(True), cond),
                  max_rel_diff=float((full - cached).abs().max() / full.abs().max()))




def markdown(result: Result, args: argparse.Namespace, argv: list[str]) -> str:
    decoder = f"{args.layers} layers, {args.hidden} wide, {args.heads} heads of {args.hidden // args.heads}, 2 KV heads"
    return "\n".join([
        SECTION, "",
        f"`.venv/bin/python benchmarks/conditioner.py{' ' + ' '.join(argv) if argv else ''}` on "
        f"{cpu_name()}, {torch.get_num_threads()} intra-op thread (the 2-core machine is shared, so absolute "
        f"times drift with its load; the paths alternate), torch {torch.__version__}, transformers "
        f"{version('transformers')}, fp32, sdpa attention. Scaled-down Qwen2.5-VL ({decoder}; random weights); "
        f"batch {args.batch}; prefix = {args.frames} frames of {args.height}×{args.width} at 2 fps + chat template + "
        f"a 90-word caption = {result.prefix_tokens} tokens; {args.queries} queries; connector to 448. A step = "
        f"decoder + connector forward and backward into the queries and the connector (decoder frozen); "
        f"medians of {args.repeats} after {args.warmup} warm-up rounds.",
        "",
        "| run | s | activations saved for backward, MB |",
        "|---|---:|---:|",
        f"| step, full pass (prefix + queries with autograd) | {result.full_s:.3f} | {result.full_saved_mb:.1f} |",
        f"| step, prefix cache (prefix without autograd → KV cache; queries with autograd) | {result.cached_s:.3f} | "
        f"{result.cached_saved_mb:.1f} |",
        f"| prefix forward alone, without autograd | {result.prefix_forward_s:.3f} | 0 |",
        f"| shared input work (patchify, 1-block vision tower, embedding) | {result.shared_s:.3f} | 0 |",
        "",
        f"Speedup {result.speedup:.2f}×, outputs equal to {result.max_rel_diff:.1e} (max rel.). Caching removes "
        f"the backward pass over the prefix and most saved activations; the prefix's forward pass still runs, "
        f"without autograd, every step, so a cached step can never be faster than that forward alone: the "
        f"speedup is bounded by full / prefix forward = {result.full_s / result.prefix_forward_s:.2f}× here, "
        f"for any prefix much longer than the queries (with frozen weights the backward costs only about "
        f"one to two forward passes). Larger gains need the prefix's KV cache reused across steps "
        f"(precomputed features), not recomputed.",
        "",
    ])




def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--queries", type=int, default=77)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=392)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: the machine is shared)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC}")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if (args.hidden % args.heads or (args.hidden // args.heads) % 16 or args.heads % 2 or args.repeats < 1
            or args.warmup < 0 or args.threads < 1 or min(args.layers, args.queries, args.batch, args.frames) < 1):
        parser.error(f"need heads dividing hidden with head_dim a multiple of 16, even heads, positive sizes; "
                     f"got {vars(args)}")
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # the tiny config's vocabulary triggers token-id warnings
    result = measure(args)
    text = markdown(result, args, argv)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    print(f"prefix-cache speedup: {result.speedup:.2f}x")


if __name__ == "__main__":
    main()
