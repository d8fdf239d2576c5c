"""Training-step and sampling time of the MM-DiT on CPU, and batched vs two-call CFG.

For each batch size (default 4 and 1), on an 8 s clip of the ``s16k`` preset (250 latents of 20
channels, 77 query tokens of width 448, 192 Synchformer tokens):

* training step: flow-matching forward + backward + AdamW step (MMAudio's betas and weight
  decay), logit-normal t, all conditions present; median of ``--repeats`` after ``--warmup``;
* one guided velocity evaluation (NFE) with CFG batched (one call on 2B items,
  :func:`reasonaudio.flow.cfg_velocity`) and with two separate calls of B items; the two
  alternate, medians of ``--repeats``;
* sampling: :func:`reasonaudio.flow.sample`, Euler, CFG batched, under ``torch.no_grad()``. Every
  Euler step costs the same network call, so when a run of ``--steps`` steps would exceed
  ``--sample-budget`` seconds (judged from the NFE time above), a k-step run (k ≥ 2, as many as fit
  the budget) is timed instead and scaled by steps / k; the table says which.

With ``--compile``, a second table compares eager and compiled execution at each batch size, paired (the
two alternate, medians of ``--repeats``): the training step with every DiT block compiled in place by
inductor (``reasonaudio.models.parallel.apply_compile``, what ``model.compile: true`` does), a guided
velocity through those blocks, and one step of :class:`reasonaudio.compiled_sampler.CompiledEulerSampler`
(the whole guided Euler step one graph) against the eager step. The first compiled call of each kind
(the compilation) is reported apart and not in the medians.

One intra-op thread by default: the 2-core machine is shared, and a 2-thread pool stalls whenever
another process holds a core. Tokens/s counts latent tokens (B · 250 per step or per clip).

Usage::

    .venv/bin/python benchmarks/dit.py                    # dit_s, writes docs/benchmarks.md
    .venv/bin/python benchmarks/dit.py --preset dit_tiny --no-write
    .venv/bin/python benchmarks/dit.py --compile --batches 4  # + eager vs torch.compile

Replaces the section "## MM-DiT (CPU)" of ``docs/benchmarks.md`` (other sections are kept) unless
``--no-write``, and ends with the line ``<preset> sampling 8s: <seconds> s`` (batch 1, 25 Euler steps,
CFG batched; extrapolated as above when the budget says so).
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from reasonaudio import flow
from reasonaudio.compiled_sampler import CompiledEulerSampler
from reasonaudio.models.dit import MMDiT, dit_s, dit_tiny
from reasonaudio.models.parallel import apply_compile, dit_blocks

from report import DOC, cpu_name, write_section  # benchmarks/ is the script folder, so this resolves

SECTION = "## MM-DiT (CPU)"
PRESETS: dict[str, Callable[..., MMDiT]] = {"dit_s": dit_s, "dit_tiny": dit_tiny}
DURATION = 8.0
NUM_QUERIES = 77


@dataclass
class Row:
    """Medians for one batch size."""

    batch: int
    train_s: float
    nfe_batched_s: float
    nfe_two_calls_s: float
    sample_s: float
    timed_steps: int
    steps: int

    @property
    def cfg_ratio(self) -> float:
        return self.nfe_two_calls_s / self.nfe_batched_s


@dataclass
class CompiledRow:
    """Paired medians, eager and compiled, for one batch size; ``*_compile_s``: the first compiled call."""

    batch: int
    train_eager_s: float
    train_compiled_s: float
    train_compile_s: float
    nfe_eager_s: float
    nfe_compiled_s: float
    nfe_compile_s: float
    step_eager_s: float
    step_graph_s: float
    step_compile_s: float
    max_abs_diff: float
    gemm_share: float  # of the eager train step's operator time (profiler): matrix multiplies
    attention_share: float  # and scaled-dot-product attention, forward and backward


GEMM_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"})


def operator_shares(step: Callable[[], object]) -> tuple[float, float]:
    """Shares of one ``step()``'s operator time (self CPU time, torch profiler) spent in matrix multiplies and
    in scaled-dot-product attention (forward and backward kernels)."""
    from torch.profiler import profile

    with profile() as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS)
    attention = sum(e.self_cpu_time_total for e in events
                    if e.key.startswith("aten::_scaled_dot_product") and e.key != "aten::scaled_dot_product_attention")
    return gemm / total, attention / total


def conditions(net: MMDiT, batch: int, g: torch.Generator) -> tuple[dict, dict]:
    """Random conditional keywords of ``batch`` items and the null (unconditional) ones."""
    cond = dict(queries=torch.randn(batch, NUM_QUERIES, net.query_dim, generator=g),
                sync=torch.randn(batch, net.sync_len, net.sync_dim, generator=g),
                has_text=torch.ones(batch, dtype=torch.bool), has_video=torch.ones(batch, dtype=torch.bool))
    return cond, {**cond, "has_text": ~cond["has_text"], "has_video": ~cond["has_video"]}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(net: MMDiT, batch: int, args: argparse.Namespace) -> Row:
    g = torch.Generator().manual_seed(batch)
    cond, uncond = conditions(net, batch, g)
    x1 = torch.randn(batch, net.latent_len, net.latent_channels, generator=g)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-6)

    def train_step() -> None:
        x0, t = torch.randn(x1.shape, generator=g), flow.sample_t(batch, generator=g)
        flow.loss(net(flow.interpolate(x0, x1, t), t, **cond), x0, x1).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    net.train()
    train = [timed(train_step) for _ in range(args.warmup + args.repeats)][args.warmup:]
    del opt

    net.eval()
    x0, t = torch.randn(x1.shape, generator=g), torch.full((batch,), 0.5)
    with torch.no_grad():
        batched, two_calls = [], []
        runs = {"batched": lambda: flow.cfg_velocity(net, x0, t, cond, uncond, args.cfg),
                "two": lambda: (net(x0, t, **cond), net(x0, t, **uncond))}
        runs["batched"]()  # warm-up of the eval path
        for rep in range(args.repeats):
            for name in (("batched", "two") if rep % 2 == 0 else ("two", "batched")):  # alternate against drift
                (batched if name == "batched" else two_calls).append(timed(runs[name]))
        nfe = statistics.median(batched)
        k = min(args.steps, max(2, math.floor(args.sample_budget / nfe)))
        sample = timed(lambda: flow.sample(lambda x, tt: flow.cfg_velocity(net, x, tt, cond, uncond, args.cfg),
                                           x0, steps=k))
    return Row(batch, statistics.median(train), nfe, statistics.median(two_calls), sample * args.steps / k, k,
               args.steps)




def paired(first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Medians of ``repeats`` timings of each, alternating which goes first (against drift)."""
    a, b = [], []
    for rep in range(repeats):
        if rep % 2 == 0:
            a.append(timed(first)), b.append(timed(second))
        else:
            b.append(timed(second)), a.append(timed(first))
    return statistics.median(a), statistics.median(b)


def measure_compiled(net: MMDiT, compiled: MMDiT, batch: int, args: argparse.Namespace) -> CompiledRow:
    """Eager ``net`` vs ``compiled`` (its copy with inductor-compiled blocks) at one batch size."""
    g = torch.Generator().manual_seed(batch)
    cond, uncond = conditions(net, batch, g)
    x1 = torch.randn(batch, net.latent_len, net.latent_channels, generator=g)
    noise = torch.randn(x1.shape, generator=g)
    t = flow.sample_t(batch, generator=g)

    def train_step(model: MMDiT, opt: torch.optim.Optimizer) -> Callable[[], None]:
        def step() -> None:
            flow.loss(model(flow.interpolate(noise, x1, t), t, **cond), noise, x1).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    def adamw(model: MMDiT) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-6)

    net.train(), compiled.train()
    eager_step, compiled_step = train_step(net, adamw(net)), train_step(compiled, adamw(compiled))
    compile_train = timed(compiled_step)
    for _ in range(args.warmup):
        eager_step(), compiled_step()
    train_eager, train_compiled = paired(eager_step, compiled_step, args.repeats)
    gemm_share, attention_share = operator_shares(eager_step)

    net.eval(), compiled.eval()
    x0, half = torch.randn(x1.shape, generator=g), torch.full((batch,), 0.5)
    sampler = CompiledEulerSampler(net)
    with torch.no_grad():
        eager_v = lambda: flow.cfg_velocity(net, x0, half, cond, uncond, args.cfg)  # noqa: E731
        compiled_v = lambda: flow.cfg_velocity(compiled, x0, half, cond, uncond, args.cfg)  # noqa: E731
        compile_nfe = timed(compiled_v)
        eager_v()
        nfe_eager, nfe_compiled = paired(eager_v, compiled_v, args.repeats)
        # one Euler step (t 0 → 1/steps): eager network + update vs the sampler's single compiled graph
        t0, dt, w = torch.zeros(batch), torch.tensor(1.0 / args.steps), torch.tensor(args.cfg)
        graph = sampler.step_fn(x0.device)
        eager_euler = lambda: x0 + dt * flow.cfg_velocity(net, x0, t0, cond, uncond, w)  # noqa: E731
        graph_euler = lambda: graph(x0, t0, dt, cond, uncond, w)  # noqa: E731
        compile_step = timed(graph_euler)
        step_eager, step_graph = paired(eager_euler, graph_euler, args.repeats)
        diff = (graph_euler() - eager_euler()).abs().max().item()
    return CompiledRow(batch, train_eager, train_compiled, compile_train, nfe_eager, nfe_compiled, compile_nfe,
                       step_eager, step_graph, compile_step, diff, gemm_share, attention_share)


def compiled_markdown(rows: list[CompiledRow]) -> str:
    lines = [
        "Eager vs `torch.compile` (inductor, default mode), paired: the two alternate, medians as above. The "
        "compiled network is a copy of the eager one whose blocks are compiled in place (`model.compile: true`); "
        "both start from the same weights and see the same inputs, then each trains its own copy during the "
        "train-step timings, so the NFE columns time the same work on slightly different weights. The Euler step "
        "compares the eager network with `CompiledEulerSampler`'s single graph of the whole guided step over that "
        "same network. Compile s = the first compiled call (compilation included), not in the medians; max abs "
        "diff = largest difference of that graph's output against the eager step (fp32).",
        "",
        "| batch | train step eager s | compiled s | compiled / eager | compile s | NFE eager s | compiled s | "
        "compiled / eager | compile s | Euler step eager s | one graph s | graph / eager | compile s | max abs diff |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.batch} | {r.train_eager_s:.2f} | {r.train_compiled_s:.2f} | "
            f"**{r.train_compiled_s / r.train_eager_s:.2f}** | {r.train_compile_s:.0f} | {r.nfe_eager_s:.3f} | "
            f"{r.nfe_compiled_s:.3f} | {r.nfe_compiled_s / r.nfe_eager_s:.2f} | {r.nfe_compile_s:.0f} | "
            f"{r.step_eager_s:.3f} | {r.step_graph_s:.3f} | {r.step_graph_s / r.step_eager_s:.2f} | "
            f"{r.step_compile_s:.0f} | {r.max_abs_diff:.1e} |")
    floors = {r.batch: r.gemm_share + r.attention_share for r in rows}
    best = min(rows, key=lambda r: r.train_compiled_s / r.train_eager_s)
    best_ratio = best.train_compiled_s / best.train_eager_s
    lines += ["", "Where the eager train step's operator time goes (torch profiler, one step): " + "; ".join(
        f"batch {r.batch}: matrix multiplies {100 * r.gemm_share:.1f} %, attention {100 * r.attention_share:.1f} %, "
        f"everything else {100 * (1 - floors[r.batch]):.1f} %" for r in rows) + ". Inductor's default mode hands "
        "matrix multiplies and attention to the same CPU kernels as eager (extern kernels) and fuses the rest of "
        "each block (adaLN modulation, SwiGLU, RMSNorm, RoPE), so compiled / eager cannot drop below the GEMM + "
        "attention share: " + ", ".join(
            f"{floors[r.batch]:.2f} at batch {r.batch} (measured {r.train_compiled_s / r.train_eager_s:.2f}: "
            f"{100 * (r.train_eager_s - r.train_compiled_s) / (r.train_eager_s * (1 - floors[r.batch])):.0f} % of "
            f"the rest removed)" for r in rows)
        + ". These floors are lower than the true ones: the profiler's per-operator overhead inflates the many "
        "small operators' share, and the rest includes work that stays eager (the AdamW step, the input and output "
        "layers outside the blocks). The issue's CPU target (compiled train step ≤ 0.8× eager): "
        + (f"met at batch {best.batch} ({best_ratio:.2f})." if best_ratio <= 0.8 else
           f"not met; best {best_ratio:.2f} at batch {best.batch}.")]
    return "\n".join(lines + [""])


def markdown(rows: list[Row], net: MMDiT, args: argparse.Namespace, argv: list[str], load: float) -> str:
    params = sum(p.numel() for p in net.parameters())
    joint, audio = len(net.joint_blocks), len(net.audio_blocks)
    tokens = net.latent_len + NUM_QUERIES + net.sync_len
    lines = [
        SECTION, "",
        f"`.venv/bin/python benchmarks/dit.py{' ' + ' '.join(argv) if argv else ''}` on {cpu_name()} "
        f"({os.cpu_count()} cores, shared with other work; 1-min load average {load:.2f} at the start), "
        f"{torch.get_num_threads()} intra-op thread, torch {torch.__version__}, fp32, sdpa attention. "
        f"`{args.preset}`: {params / 1e6:.1f}M parameters, {joint} joint + {audio} audio-only blocks. "
        f"Input: {DURATION:g} s at s16k = {net.latent_len} latents × {net.latent_channels}, {NUM_QUERIES} query "
        f"tokens × {net.query_dim}, {net.sync_len} sync tokens × {net.sync_dim} ({tokens} tokens in the joint "
        f"attention). Train step = forward + backward + AdamW step, medians of {args.repeats} after "
        f"{args.warmup} warm-up; NFE = one guided velocity (CFG w = {args.cfg:g}), medians of {args.repeats}, "
        f"batched and two-call runs alternating; sampling = {args.steps} Euler steps with CFG batched, "
        f"one run; where {args.steps} steps would exceed {args.sample_budget:g} s, a k-step run is timed and "
        f"scaled by {args.steps}/k (every step is the same network call).",
        "",
        "| batch | train step s | train latent tok/s | NFE, CFG batched s | NFE, CFG two calls s | two calls / "
        "batched | sampling s | steps timed | sampling latent tok/s | RTF |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.batch} | {r.train_s:.2f} | {r.batch * net.latent_len / r.train_s:.0f} | {r.nfe_batched_s:.3f} | "
            f"{r.nfe_two_calls_s:.3f} | {r.cfg_ratio:.2f} | {r.sample_s:.1f} | "
            f"{r.timed_steps} of {r.steps}{'' if r.timed_steps == r.steps else ' (extrapolated)'} | "
            f"{r.batch * net.latent_len / r.sample_s:.0f} | {r.sample_s / (r.batch * DURATION):.2f} |")
    lines += [
        "",
        "RTF = sampling seconds / seconds of audio generated (network only: no conditioner, VAE decoder or "
        "vocoder). On one CPU thread the arithmetic of batched and two-call CFG is the same, so batching "
        "only saves per-call overhead and gains from larger GEMMs (the ratio above); its main purpose, "
        "keeping an accelerator busy at batch 1, is not measured here.",
        "",
    ]
    return "\n".join(lines)




def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="dit_s")
    parser.add_argument("--batches", nargs="+", type=int, default=[4, 1])
    parser.add_argument("--steps", type=int, default=25, help="Euler steps of a sampling run")
    parser.add_argument("--cfg", type=float, default=4.5)
    parser.add_argument("--sample-budget", type=float, default=30.0,
                        help="seconds one sampling run may take before it is shortened and extrapolated")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: the machine is shared)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time eager vs torch.compile (paired)")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC}")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if (min(args.batches) < 1 or args.steps < 1 or args.sample_budget <= 0 or args.threads < 1
            or args.warmup < 0 or args.repeats < 1):
        parser.error(f"need positive batches, steps, budget, threads and repeats, warmup >= 0; got {vars(args)}")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    torch.manual_seed(0)
    net = PRESETS[args.preset](audio_preset="s16k", duration=DURATION, query_dim=448)
    rows = []
    for batch in args.batches:
        rows.append(measure(net, batch, args))
        print(f"measured batch {batch}: train {rows[-1].train_s:.2f} s, sampling {rows[-1].sample_s:.1f} s",
              file=sys.stderr)
    text = markdown(rows, net, args, argv, load)
    if args.compile:
        with torch.no_grad():  # as after training: zero-initialised gates would make every block an identity map
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.02)
        compiled = copy.deepcopy(net)
        apply_compile(dit_blocks(compiled))
        compiled_rows = []
        for batch in args.batches:
            compiled_rows.append(measure_compiled(net, compiled, batch, args))
            r = compiled_rows[-1]
            print(f"compiled batch {batch}: train {r.train_compiled_s:.2f} s vs eager {r.train_eager_s:.2f} s",
                  file=sys.stderr)
        text += "\n" + compiled_markdown(compiled_rows)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    single = next((r for r in rows if r.batch == 1), rows[-1])
    print(f"{args.preset} sampling 8s: {single.sample_s:.2f} s")


if __name__ == "__main__":
    main()
