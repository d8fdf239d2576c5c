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
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import torch
from tokenizers import AddedToken, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig
from transformers.utils import logging as hf_logging

from reasonaudio.models.conditioners import MLLMQueryConditioner
from reasonaudio.models.prefix_kv import load_prefix, save_prefix

from report import DOC, cpu_name, write_section  # benchmarks/ is the script folder, so this resolves

SECTION = "## MLLM conditioner: prefix caching"


def section_title(args: argparse.Namespace) -> str:
    """The docs/benchmarks.md section this run replaces: one per device kind."""
    return f"{SECTION} ({'GPU' if args.device.startswith('cuda') else 'CPU'})"
WORDS = ("a dog barks twice while a car engine idles in the rain and people talk softly near a busy road "
         "then a door slams a bird sings on the roof music plays from a radio the wind blows "
         "user assistant system").split()
CAPTION = " ".join((WORDS[:-3] * 4)[:90])
SPECIAL = {"<|im_start|>": 900, "<|im_end|>": 901, "<|image_pad|>": 990, "<|video_pad|>": 991,
           "<|vision_start|>": 992, "<|vision_end|>": 993}
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% for c in m.content %}{% if c.type == 'video' %}"
                 "<|vision_start|><|video_pad|><|vision_end|>{% else %}{{ c.text }}{% endif %}{% endfor %}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


CONDITIONS = (("video + caption", True, True), ("video, caption dropped", True, False),
              ("caption, video dropped", False, True), ("neither (both dropped)", False, False))
"""The four prompts a training step sees, as (name, video kept, caption kept)."""


def drop_shares(text_drop: float, video_drop: float) -> list[float]:
    """Share of training items in each of :data:`CONDITIONS` under independent drops."""
    return [(1 - video_drop) * (1 - text_drop), (1 - video_drop) * text_drop, video_drop * (1 - text_drop),
            video_drop * text_drop]


@dataclass
class Result:
    """Medians of one measurement; per-condition lists follow :data:`CONDITIONS`."""

    prefix_tokens: list[int]
    full_s: list[float]
    cached_s: list[float]
    stored_s: list[float]
    shared_s: float
    prefix_forward_s: float
    load_s: float
    store_mb: float
    saved_mb: dict[str, float]
    max_rel_diff: float
    shares: list[float]
    mixed: dict[str, float] | None = None  # per-item seconds in mixed batches (:func:`measure_mixed`)
    dispatch: dict[str, tuple[int, int | None]] | None = None  # mode → (aten operators, CUDA kernels) per step

    def expected(self, times: list[float]) -> float:
        """Mean step time per item under the drop shares."""
        return sum(w * t for w, t in zip(self.shares, times))

    @property
    def live_speedup(self) -> float:
        return self.full_s[0] / self.cached_s[0]

    @property
    def speedup(self) -> float:
        """Stored prefix vs full pass, the decoder + connector step under the training drop mix."""
        return self.expected(self.full_s) / self.expected(self.stored_s)

    @property
    def end_to_end_speedup(self) -> float:
        """As :attr:`speedup`, counting the per-step input work the full pass needs (patchify, vision tower,
        embedding: only where a video is kept) and the stored path's file read."""
        video = self.shares[0] + self.shares[1]
        return (self.expected(self.full_s) + video * self.shared_s) / (self.expected(self.stored_s) + self.load_s)


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A local word-level tokenizer with Qwen's special tokens and a Qwen-like chat template."""
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(dict.fromkeys(WORDS))}, **SPECIAL}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   chat_template=CHAT_TEMPLATE)


def build(args: argparse.Namespace) -> MLLMQueryConditioner:
    layers, hidden, heads = args.layers, args.hidden, args.heads
    head_dim = hidden // heads
    unit = head_dim // 16  # mRoPE sections [t, h, w] split head_dim / 2 as 2:3:3, as Qwen's [16, 24, 24] do 64
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=1024, hidden_size=hidden, intermediate_size=args.intermediate or hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=args.kv_heads,
                         bos_token_id=None, eos_token_id=901, pad_token_id=1,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                          "mrope_section": [2 * unit, 3 * unit, 3 * unit]}),
        vision_config=dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=hidden,
                           fullatt_block_indexes=[0], tokens_per_second=2),
        image_token_id=990, video_token_id=991, vision_start_token_id=992, vision_end_token_id=993)
    torch.manual_seed(0)
    with torch.device(args.device):  # built where it runs: random-initialising 7B parameters on a CPU takes minutes
        return MLLMQueryConditioner(config, out_dim=448, num_queries=args.queries, tokenizer=word_tokenizer(),
                                    dtype=getattr(torch, args.dtype))


def time_runs(runs: dict[str, Callable[[], Any]], warmup: int, repeats: int,
              device: torch.device) -> dict[str, list[float]]:
    """Wall times of each run (the GPU synchronised around each), after ``warmup`` rounds; the order of
    the runs alternates between rounds against load drifts."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(repeats):
        for name in (runs if rep % 2 == 0 else reversed(runs)):
            sync()
            start = time.perf_counter()
            runs[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


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


def conditioner_step(cond: MLLMQueryConditioner, mode: str, prefix: Any, stored: list, captions: list[str],
                     flags: tuple[list[bool], list[bool]], weights: torch.Tensor) -> torch.Tensor:
    """One training step of the conditioner: ``full`` pass, live prefix ``cached`` or ``stored`` prefix."""
    cond.zero_grad()
    if mode == "stored":
        hidden = cond.query_states_stored(stored, captions, *flags)
    else:
        cond.prefix_cache = mode == "cached"
        hidden = cond.query_states(prefix)
    out = cond.connector(hidden.to(cond.queries.dtype))  # [B, Nq, D]; as the conditioner's forward casts
    (out * weights).sum().backward()
    return out.detach()


def dispatch_counts(fn: Callable[[], Any], device: torch.device) -> tuple[int, int | None]:
    """Operators ``fn()`` dispatches (aten operators, views and autograd's included: what the host runs per step)
    and, on a GPU, the CUDA kernels it launches (torch profiler). Where a step is launch-bound, as a batch-1
    decoder pass on a GPU is, its time follows these counts rather than its FLOPs."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize(device)
    events = prof.events()
    operators = sum(1 for e in events if e.device_type == DeviceType.CPU and e.name.startswith("aten::"))
    kernels = sum(1 for e in events if e.device_type == DeviceType.CUDA
                  and not e.name.startswith(("Memcpy", "Memset"))) if cuda else None  # copies are not kernels
    return operators, kernels


def measure(args: argparse.Namespace, tmp: Path) -> Result:
    cond = build(args)
    cond.train()
    frames = torch.randint(0, 256, (args.frames, 3, args.height, args.width), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    weights = torch.randn(args.batch, args.queries, cond.out_dim, generator=torch.Generator().manual_seed(1))
    weights = weights.to(args.device)
    videos, captions = [frames] * args.batch, [CAPTION] * args.batch
    flags = [([video] * args.batch, [text] * args.batch) for _, video, text in CONDITIONS]

    def shared():
        return cond.prefix(videos, captions, *flags[0])

    # The prefix_kv stage, once per clip: store the full prompt, read it back as a training item would.
    for i, stored in enumerate(cond.store_prefix(videos, captions)):
        save_prefix(tmp / f"{i}.safetensors", stored)
    store_mb = (tmp / "0.safetensors").stat().st_size / 2 ** 20

    def load():
        return [load_prefix(tmp / f"{i}.safetensors") for i in range(args.batch)]

    stored = load()
    prefixes = [cond.prefix(videos, captions, *f) for f in flags]

    def step(mode: str, c: int) -> torch.Tensor:
        return conditioner_step(cond, mode, prefixes[c], stored, captions, flags[c], weights)

    def prefix_forward() -> None:
        with torch.no_grad():
            p = prefixes[0]
            cond.decoder(inputs_embeds=p.embeds, attention_mask=p.mask, position_ids=p.positions, use_cache=False)

    runs = {f"{mode}{c}": (lambda mode=mode, c=c: step(mode, c)) for mode in ("full", "cached", "stored")
            for c in range(len(CONDITIONS))}
    runs.update(prefix=prefix_forward, shared=shared, load=load)
    times = time_runs(runs, args.warmup, args.repeats, torch.device(args.device))
    med = {name: statistics.median(t) for name, t in times.items()}
    diffs = []
    for c in range(len(CONDITIONS)):
        full = step("full", c)
        diffs += [float((full - step(m, c)).abs().max() / full.abs().max()) for m in ("cached", "stored")]
    per = {mode: [med[f"{mode}{c}"] for c in range(len(CONDITIONS))] for mode in ("full", "cached", "stored")}
    mixed = measure_mixed(cond, frames, stored[0], args) if args.mixed_batch else None
    return Result(prefix_tokens=[int(p.mask.sum(1).max()) for p in prefixes], full_s=per["full"], mixed=mixed,
                  cached_s=per["cached"], stored_s=per["stored"], shared_s=med["shared"],
                  prefix_forward_s=med["prefix"], load_s=med["load"], store_mb=store_mb,
                  saved_mb={m: saved_megabytes(lambda m=m: step(m, 0), cond) for m in ("full", "cached", "stored")},
                  max_rel_diff=max(diffs), shares=drop_shares(args.text_drop, args.video_drop),
                  dispatch={m: dispatch_counts(lambda m=m: step(m, 0), torch.device(args.device))
                            for m in ("full", "cached", "stored")})


def measure_mixed(cond: MLLMQueryConditioner, frames: torch.Tensor, stored: Any,
                  args: argparse.Namespace) -> dict[str, float]:
    """Per-item step time in batches of ``--mixed-batch`` whose drop flags are drawn at the training rates
    (``--mixed-draws`` fixed draws): prompts of different lengths padded together, as in training."""
    b = args.mixed_batch
    g = torch.Generator().manual_seed(2)
    draws = [((torch.rand(b, generator=g) >= args.video_drop).tolist(), (torch.rand(b, generator=g) >= args.text_drop).tolist())
             for _ in range(args.mixed_draws)]
    videos, captions, stored_batch = [frames] * b, [CAPTION] * b, [stored] * b
    weights = torch.randn(b, args.queries, cond.out_dim, generator=torch.Generator().manual_seed(1)).to(args.device)
    prefixes = [cond.prefix(videos, captions, v, t) for v, t in draws]

    def step(mode: str, d: int) -> torch.Tensor:
        return conditioner_step(cond, mode, prefixes[d], stored_batch, captions, draws[d], weights)

    runs = {f"{mode}{d}": (lambda mode=mode, d=d: step(mode, d)) for mode in ("full", "cached", "stored")
            for d in range(len(draws))}
    times = time_runs(runs, 1, args.mixed_repeats, torch.device(args.device))
    per_item = {mode: sum(statistics.median(times[f"{mode}{d}"]) for d in range(len(draws))) / (len(draws) * b)
                for mode in ("full", "cached", "stored")}
    per_item["dropped"] = sum(not (v and t) for vs, ts in draws for v, t in zip(vs, ts)) / (len(draws) * b)
    return per_item


def qwen7b_store_mb(tokens: int) -> float:
    """Stored prefix of a ``tokens``-long prompt for Qwen2.5-VL-7B in bf16 (28 layers, 4 KV heads of 128)."""
    return 28 * 2 * 4 * 128 * 2 * tokens / 1e6


def dispatch_text(result: Result, args: argparse.Namespace) -> str:
    """The operator (and kernel) counts of one video + caption step per mode."""
    names = {"full": "full", "cached": "live cache", "stored": "stored"}
    counts = ", ".join(f"{names[m]} {ops:,} operators" + ("" if kernels is None else f" / {kernels:,} CUDA kernels")
                       for m, (ops, kernels) in result.dispatch.items())
    return (f"Dispatched per step (video + caption; torch profiler, aten operators including views and autograd's): "
            f"{counts}. Where a step is launch-bound (batch 1 on a GPU) its time follows these counts, not its "
            f"FLOPs. The live-cache and stored steps run the queries against the decoder's KV cache: transformers "
            f"then concatenates each layer's cache, builds an explicit causal mask (the queries no longer align "
            f"with the keys) and, because of the mask, repeats each layer's KV heads instead of taking SDPA's "
            f"grouped-query path (forward and backward); the full pass does none of this.")


def markdown(result: Result, args: argparse.Namespace, argv: list[str]) -> str:
    decoder = (f"{args.layers} layers, {args.hidden} wide, {args.heads} heads of {args.hidden // args.heads}, "
               f"{args.kv_heads} KV heads, MLP {args.intermediate or args.hidden * 8 // 3}")
    where = (f"{torch.cuda.get_device_name(args.device)} ({args.dtype})" if args.device.startswith("cuda") else
             f"{cpu_name()}, {torch.get_num_threads()} intra-op thread (the 2-core machine is shared, so absolute "
             f"times drift with its load; the runs alternate), {args.dtype}")
    rows = [f"| {name} ({share:.2f}) | {n} | {f:.3f} | {c:.3f} | {s:.3f} | {f / c:.2f}× | {f / s:.1f}× |"
            for (name, _, _), share, n, f, c, s in zip(CONDITIONS, result.shares, result.prefix_tokens, result.full_s,
                                                       result.cached_s, result.stored_s)]
    e = result.expected
    tokens, alt = result.prefix_tokens[0], result.prefix_tokens[2]
    return "\n".join([
        section_title(args), "",
        f"`.venv/bin/python benchmarks/conditioner.py{' ' + ' '.join(argv) if argv else ''}` on "
        f"{where}, torch {torch.__version__}, transformers "
        f"{version('transformers')}, sdpa attention. Scaled-down Qwen2.5-VL ({decoder}; random weights); "
        f"batch {args.batch}; full prompt = {args.frames} frames of {args.height}×{args.width} at 2 fps + chat "
        f"template + a 90-word caption = {tokens} tokens; {args.queries} queries; connector to 448. A step = "
        f"decoder + connector forward and backward into the queries and the connector (decoder frozen); "
        f"medians of {args.repeats} after {args.warmup} warm-up rounds. Three ways to run it: the **full** "
        f"pass (prompt and queries with autograd); the **live prefix cache** (prompt without autograd into a KV "
        f"cache every step, then the queries); the **stored prefix** (the `prefix_kv` stage ran the full prompt "
        f"once, and each clip's caption-only prompt; a step runs only the queries and, for a dropped caption, the "
        f"template's closing tokens).",
        "",
        f"| prompt (share of items at text/video drop {args.text_drop:g}/{args.video_drop:g}) | tokens | full s | "
        f"live prefix cache s | stored prefix s | live speedup | stored speedup |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        f"| **per item, weighted by the shares** | | {e(result.full_s):.3f} | {e(result.cached_s):.3f} | "
        f"{e(result.stored_s):.3f} | {e(result.full_s) / e(result.cached_s):.2f}× | **{result.speedup:.1f}×** |",
        *([] if result.mixed is None else [
            f"| **mixed batches of {args.mixed_batch}** (flags drawn at the rates above, {args.mixed_draws} draws, "
            f"{100 * result.mixed['dropped']:.0f} % of items dropped something; medians of {args.mixed_repeats}), "
            f"per item | | {result.mixed['full']:.3f} | {result.mixed['cached']:.3f} | {result.mixed['stored']:.3f} | "
            f"{result.mixed['full'] / result.mixed['cached']:.2f}× | **{result.mixed['full'] / result.mixed['stored']:.1f}×** |"]),
        "",
        "| other work | s |",
        "|---|---:|",
        f"| prompt forward alone, without autograd (the floor of a live-cache step) | {result.prefix_forward_s:.3f} |",
        f"| input work of a live step with video (patchify, 1-block vision tower, embedding) | {result.shared_s:.3f} |",
        f"| reading one stored prefix ({result.store_mb:.1f} MiB, {args.dtype}, page cache warm, timed in the main process; "
        f"training reads in DataLoader workers) | {result.load_s:.4f} |",
        "",
        f"Activations saved for backward (video + caption): full {result.saved_mb['full']:.1f} MB, live cache "
        f"{result.saved_mb['cached']:.1f} MB, stored {result.saved_mb['stored']:.1f} MB. Outputs of all three "
        f"agree to {result.max_rel_diff:.1e} (max rel., every prompt).",
        *([] if result.dispatch is None else ["", dispatch_text(result, args)]),
        "",
        f"Stored prefix: **{result.speedup:.1f}×** faster than the full pass per training item under the drop mix "
        f"(decoder + connector step; {result.end_to_end_speedup:.1f}× counting the full pass's per-step input work "
        f"and the stored file's read). The live prefix cache gives {e(result.full_s) / e(result.cached_s):.2f}× "
        f"({result.live_speedup:.2f}× on full prompts): its prompt forward "
        f"still runs every step, which bounds it at full / prompt forward = "
        f"{result.full_s[0] / result.prefix_forward_s:.2f}× here. The stored prefix pays that forward once per "
        f"clip, in the `prefix_kv` stage, and costs disk: layers · 2 · KV heads · head dim values per prompt token "
        f"— for Qwen2.5-VL-7B in bf16 {qwen7b_store_mb(tokens + alt):.0f} MB for this {tokens}-token prompt and its "
        f"{alt}-token caption-only prompt, i.e. about "
        f"{qwen7b_store_mb(tokens + alt) * 180e3 / 1e6:.0f} TB for VGGSound's ~180k training clips (docs/decisions.md). "
        f"The rows above run one prompt kind at a time at batch {args.batch}; "
        + (f"the mixed-batch row pads prompts of different lengths together, as training does (the full pass "
           f"pads every prompt to the longest; the stored path's unshared rest is at most the template's closing "
           f"tokens). "
           if result.mixed is not None else "in a mixed batch prompts are padded to the longest (not measured here). ")
        + ("Random weights; timed with the GPU synchronised around each run." if args.device.startswith("cuda")
           else "A scaled-down model on a CPU; nothing here ran on a GPU."),
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
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, help="decoder MLP width (default 8/3 · hidden)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="backbone dtype")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: the machine is shared)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--text-drop", type=float, default=0.1, help="training's caption drop probability")
    parser.add_argument("--video-drop", type=float, default=0.1, help="training's video drop probability")
    parser.add_argument("--mixed-batch", type=int, default=8, help="batch of the mixed-flags run (0: skip it)")
    parser.add_argument("--mixed-draws", type=int, default=4, help="drop-flag draws of the mixed-flags run")
    parser.add_argument("--mixed-repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC}")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if (args.hidden % args.heads or (args.hidden // args.heads) % 16 or args.heads % 2 or args.repeats < 1
            or args.warmup < 0 or args.threads < 1 or min(args.layers, args.queries, args.batch, args.frames) < 1):
        parser.error(f"need heads dividing hidden with head_dim a multiple of 16, even heads, positive sizes; "
                     f"got {vars(args)}")
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # the tiny config's vocabulary triggers token-id warnings
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, Path(tmp))
    text = markdown(result, args, argv)
    print(text)
    if not args.no_write:
        write_section(section_title(args), text)
    print(f"prefix-cache speedup: {result.speedup:.2f}x")


if __name__ == "__main__":
    main()
