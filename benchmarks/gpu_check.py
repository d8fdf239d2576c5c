"""One-GPU check of the MM-DiT (``benchmarks/gpu_check.sh``): bf16 training throughput, MFU, sampling time, memory.

On one CUDA device, with the ``s16k`` preset and an 8 s clip (250 latents × 20, 77 query tokens,
192 Synchformer tokens; all conditions present; weights perturbed from their zero-initialised gates), for
each ``--preset`` (``dit_s`` and ``dit_l`` by default):

* **training step**: fp32 master weights, bf16 autocast (the suite's ``bf16-mixed``; no GradScaler),
  forward + backward + fused AdamW, at each batch of ``--train-batch`` (16 and 64; halved until it fits in
  memory); median of ``--repeats`` after ``--warmup``. Achieved TFLOP/s =
  the step's matmul and attention FLOPs (counted once with ``torch.utils.flop_counter``, forward +
  backward) / its median time; MFU = that / the GPU's dense bf16 peak (:data:`PEAK_BF16_TFLOPS`,
  or ``--peak-tflops``);
* **sampling an 8 s clip**: 25 Euler steps with CFG (w = 4.5, conditional and unconditional
  batched in one call, as ``FlowMatchingPretrain.generate`` does), bf16 autocast, at batch 1 and
  16 (``--sample-batches``); network only (no conditioner, VAE decoder or vocoder);
* **peak memory** of each phase (``torch.cuda.max_memory_allocated``);
* unless ``--no-compile``: the training step again with every DiT block compiled in place
  (``model.compile: true``: ``reasonaudio.models.parallel.apply_compile``, inductor), and sampling again
  through :class:`reasonaudio.compiled_sampler.CompiledEulerSampler` (each guided Euler step one graph,
  ``reduce-overhead``: CUDA graphs). The compiled sample must equal the eager one within
  :data:`SAMPLE_RTOL` (relative L2, bf16) or the script fails; the first compiled call is not timed;
* **one clip end to end** (unless ``--no-end-to-end``): an 8 s clip at batch 1 as ``reasonaudio-generate``
  makes it, at the paper's audio shape (44.1 kHz): Synchformer tokens, the MLLM conditioner with
  Qwen2.5-VL-7B's shape (random bf16 weights) on the conditional and the null prompt, 25 Euler steps with CFG
  (the compiled sampler unless ``--no-compile``), VAE decode and vocoder; each part timed alone and the whole
  chain in one go (:func:`measure_end_to_end`);
* **attention kernel**: the scaled-dot-product-attention operators one forward pass runs (torch profiler),
  i.e. which SDPA backend (flash, memory-efficient, cuDNN, math) the model's explicit order
  (:data:`reasonaudio.models.dit.ATTENTION_BACKENDS`) ends up with for these shapes, and the forward + backward
  time with that order, with torch's own choice and with each backend alone (:func:`attention_backends`; n/a
  where a backend cannot run these inputs), so that the order is backed by numbers.

The eager part took under a minute on an H200 (2026-11-26). With compilation, two presets (per preset:
2 × 13 eager and 2 × 13 compiled training steps, 13 with activation checkpointing, 8 sampling runs of 25
steps eager and 8 compiled, plus the compilations) and the end-to-end clip, the 330-second limit that
``gpu_check.sh`` gives this script is not yet checked on a GPU (no session since has had one); ``--preset
dit_s`` halves the preset part. Interrupted (SIGINT, as that limit sends), it still writes the presets it
finished (nothing, if none finished), says where it stopped and exits with status 1. Without CUDA it exits at once
(status 2) with a message. ``--dry-run`` runs the same code on the CPU with ``dit_tiny`` in fp32 to check
the script and the table (MFU and memory are then n/a); it writes nothing unless ``--doc`` names a file.

Usage::

    benchmarks/gpu_check.sh                                   # writes "## GPU check" in docs/benchmarks.md
    benchmarks/gpu_check.sh --preset dit_l --train-batch 32
    benchmarks/gpu_check.sh --no-compile                     # eager only (the first GPU run's table)
    .venv/bin/python benchmarks/gpu_check.py --dry-run        # CPU, no GPU needed

One line per preset ends the output: ``gpu_check <preset>: best train <TFLOP/s> TFLOP/s (MFU <%>, <variant>,
batch <B>), sample 8 s b1 <s> s, b16 <s> s; compiled b1 <s> s, b16 <s> s``, then ``gpu_check end-to-end: 8 s
clip b1 <s> s (DiT + VAE + vocoder <s> s)``. The exit status is 1 when a compiled sample differs from the eager
one or the end-to-end clip fails (its error goes into the section; the tables before it are kept).
``gpu_check.sh`` then runs ``benchmarks/conditioner.py`` at the 7B decoder shape (its own section).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import torch
from torch.nn.attention import SDPBackend
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from transformers import Qwen2_5_VLConfig
from transformers.utils import logging as hf_logging

from reasonaudio import flow
from reasonaudio.compiled_sampler import CompiledEulerSampler
from reasonaudio.models.bigvgan import bigvgan_paper, bigvgan_tiny
from reasonaudio.models.conditioners import MLLMQueryConditioner
from reasonaudio.models import dit as dit_module
from reasonaudio.models.dit import MMDiT, dit_l, dit_s, dit_tiny
from reasonaudio.models.parallel import apply_compile, dit_blocks
from reasonaudio.models.synchformer import SynchformerConfig, SynchformerVisualEncoder
from reasonaudio.models.vae import mel_vae_paper, mel_vae_tiny
from reasonaudio.systems.codec import AudioDecoder
from reasonaudio.systems.flow_matching import FlowMatchingPretrain

from conditioner import CAPTION, word_tokenizer  # benchmarks/ is the script folder, so these resolve
from report import DOC, write_section

SECTION = "## GPU check"
PRESETS: dict[str, Callable[..., MMDiT]] = {"dit_s": dit_s, "dit_l": dit_l, "dit_tiny": dit_tiny}
DURATION = 8.0
NUM_QUERIES = 77
CFG = 4.5
SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
SAMPLE_RTOL = 2e-2
"""Largest relative L2 difference of the compiled sample from the eager one (bf16 rounding over 25 steps)."""

PEAK_BF16_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    # Dense bf16 tensor-core peaks from NVIDIA's data sheets (their headline figures are with 2:4
    # sparsity, twice these). Matched in order against torch.cuda.get_device_name(): the first entry
    # whose words all occur in the name wins, so the more specific names come first.
    (("GH200",), 989.4),
    (("H200", "NVL"), 835.5),
    (("H200",), 989.4),
    (("H100", "PCIe"), 756.0),
    (("H100", "NVL"), 835.5),
    (("H100",), 989.4),  # SXM5 ("NVIDIA H100 80GB HBM3")
    (("B200",), 2250.0),
    (("A100",), 312.0),
    (("L40S",), 362.05),
    (("L40",), 181.05),
    (("L4",), 121.0),
    (("RTX 4090",), 165.2),
    (("RTX 3090",), 71.0),
    (("RTX A6000",), 154.8),
]


def peak_bf16_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU from its name, or None when it is not in :data:`PEAK_BF16_TFLOPS`."""
    for words, peak in PEAK_BF16_TFLOPS:
        if all(w in device_name for w in words):
            return peak
    return None


# --------------------------------------------------------------------------- FLOPs


def _linear(tokens: int, n_in: int, n_out: int) -> int:
    return 2 * tokens * n_in * n_out


def forward_flops(net: MMDiT, batch: int, num_queries: int = NUM_QUERIES) -> int:
    """Matmul + attention FLOPs (2 per multiply-add) of one forward pass at the configured lengths.

    What ``torch.utils.flop_counter`` counts: every Linear and the two batched products of each
    attention (``QKᵀ`` and ``AV``, ``2·2·B·Lq·Lk·D``); element-wise work (norms, activations, RoPE)
    is not counted.
    """
    b, t, q, s = batch, net.latent_len, num_queries, net.sync_len
    width = net.audio_in[0].out_features
    hidden = net.joint_blocks[0].streams["audio"].mlp.w1.out_features
    freq = net.time_embed.mlp[0].in_features

    def projection(tokens: int, n_in: int) -> int:  # Linear → SiLU → Linear
        return _linear(tokens, n_in, width) + _linear(tokens, width, width)

    total = projection(b * t, net.latent_channels) + projection(b * q, net.query_dim) + projection(b * s, net.sync_dim)
    total += projection(b, freq) + _linear(b, 2 * width, width) + _linear(b, width, width)  # time embed, cond MLP
    if net.sync_adaln is not None:  # project the sync tokens, then mix them onto the latent frames ([T, Ts] weights)
        total += projection(b * s, net.sync_dim) + 2 * b * t * s * width

    def stream(tokens: int, pre_only: bool, per_token_cond: bool) -> int:
        cond_tokens = b * t if per_token_cond else b
        if pre_only:  # adaLN shift/scale, k and v
            return _linear(cond_tokens, width, 2 * width) + _linear(b * tokens, width, 2 * width)
        return (_linear(cond_tokens, width, 6 * width) + _linear(b * tokens, width, 3 * width)
                + _linear(b * tokens, width, width) + 3 * _linear(b * tokens, width, hidden))

    per_token = net.sync_adaln is not None
    for i, _ in enumerate(net.joint_blocks):
        last = i == len(net.joint_blocks) - 1
        total += stream(t, False, per_token) + stream(q, last, False) + stream(s, last, False)
        total += 4 * b * (t if last else t + q + s) * (t + q + s) * width  # attention
    for _ in net.audio_blocks:
        total += stream(t, False, per_token) + 4 * b * t * t * width
    total += _linear(b * t if per_token else b, width, 2 * width) + _linear(b * t, width, net.latent_channels)
    return total


_CPU_ATTENTION = {
    # torch counts the CUDA attention kernels (flash, efficient, cuDNN) but not the CPU one; same formulas
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda grad, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad, q, k, v),
}


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs ``torch.utils.flop_counter`` counts while ``fn()`` runs (forward and backward)."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        fn()
    return counter.get_total_flops()


# --------------------------------------------------------------------------- measurements


@dataclass
class Row:
    phase: str
    batch: int
    seconds: float
    throughput: str
    flops: int
    peak_memory: int | None  # bytes; None on the CPU

    def tflops(self) -> float:
        return self.flops / self.seconds / 1e12


def inputs(net: MMDiT, batch: int, device: torch.device, g: torch.Generator) -> tuple[torch.Tensor, dict, dict]:
    """Data latents ``[B, T, C]``, the condition keywords and the null ones (all conditions present)."""
    x1 = torch.randn(batch, net.latent_len, net.latent_channels, generator=g).to(device)
    cond = dict(queries=torch.randn(batch, NUM_QUERIES, net.query_dim, generator=g).to(device),
                sync=torch.randn(batch, net.sync_len, net.sync_dim, generator=g).to(device),
                has_text=torch.ones(batch, dtype=torch.bool, device=device),
                has_video=torch.ones(batch, dtype=torch.bool, device=device))
    return x1, cond, {**cond, "has_text": ~cond["has_text"], "has_video": ~cond["has_video"]}


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on the GPU; off for the CPU dry run (CPU bf16 kernels are orders of magnitude slower)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def measure_training(net: MMDiT, batch: int, args: argparse.Namespace, device: torch.device,
                     label: str = "eager") -> Row:
    """One bf16-autocast training step, halving the batch until it fits in memory."""
    while True:
        try:
            return _training(net, batch, args, device, label)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            print(f"batch {batch} does not fit in memory; trying {batch // 2}", file=sys.stderr)
            net.zero_grad(set_to_none=True)
            batch //= 2


def _training(net: MMDiT, batch: int, args: argparse.Namespace, device: torch.device, label: str) -> Row:
    reset_memory(device)
    g = torch.Generator().manual_seed(0)
    x1, cond, _ = inputs(net, batch, device, g)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-6,
                            fused=device.type == "cuda")

    def step() -> None:
        x0 = torch.randn_like(x1)
        t = flow.sample_t(batch, device=device)
        with autocast(device):
            loss = flow.loss(net(flow.interpolate(x0, x1, t), t, **cond), x0, x1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    net.train()
    if label != "eager":
        step()  # compilation, not timed
    with torch.compiler.set_stance("force_eager"):  # count the step's operations, not the compiled graph's
        flops = counted_flops(step)  # also the first warm-up step
    seconds = median_time(step, args.warmup, args.repeats, device)
    del opt
    return Row(f"training step (fwd + bwd + AdamW), {label}", batch, seconds,
               f"{batch * net.latent_len / seconds:,.0f} latent tok/s", flops, peak_memory(device))


@torch.no_grad()
def measure_sampling(net: MMDiT, batch: int, args: argparse.Namespace, device: torch.device,
                     sampler: CompiledEulerSampler | None = None) -> tuple[Row, torch.Tensor]:
    """Time sampling an 8 s clip, eager (torchdiffeq) or through ``sampler``; returns the row and one sample."""
    reset_memory(device)
    g = torch.Generator().manual_seed(batch)
    x0, cond, uncond = inputs(net, batch, device, g)
    net.eval()

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            return flow.cfg_velocity(net, x, t, cond, uncond, CFG).float()

    def run() -> torch.Tensor:
        if sampler is None:
            return flow.sample(velocity, x0, steps=args.steps)
        with autocast(device):
            return sampler(x0, cond, uncond, steps=args.steps, w=CFG).float()

    sample = run()  # warm-up (compilation for the sampler), and the sample the two paths are compared on
    seconds = median_time(run, 0, args.sample_repeats, device)
    flops = args.steps * forward_flops(net, 2 * batch)  # CFG: one call on the doubled batch per step
    how = "eager" if sampler is None else f"compiled step ({sampler.backend}, {sampler._mode(device)})"
    return Row(f"sampling {DURATION:g} s ({args.steps} Euler steps, CFG batched), {how}", batch, seconds,
               f"RTF {seconds / (batch * DURATION):.4f}", flops, peak_memory(device)), sample


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``‖actual − expected‖ / ‖expected‖`` (L2 over every element)."""
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-12)).item()


def attention_ops(net: MMDiT, device: torch.device) -> list[str]:
    """The scaled-dot-product-attention operators one bf16 forward pass at batch 1 runs (torch profiler)."""
    g = torch.Generator().manual_seed(2)
    x, cond, _ = inputs(net, 1, device, g)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.no_grad(), torch.profiler.profile(activities=activities) as prof, autocast(device):
        net(x, torch.full((1,), 0.5, device=device), **cond)
        synchronize(device)
    return sorted({e.key for e in prof.key_averages() if "scaled_dot_product" in e.key and e.key.startswith("aten::_")})


@contextlib.contextmanager
def attention_backends(device_type: str, backends: tuple[SDPBackend, ...] | None):
    """Set the DiT's SDPA backend order for one device type (:data:`reasonaudio.models.dit.ATTENTION_BACKENDS`;
    None: torch's own choice) for the duration of the block. The model enters that order around every attention
    call, so an outer ``sdpa_kernel`` would be overridden: this is how a backend is restricted for the DiT."""
    table = dit_module.ATTENTION_BACKENDS
    saved = table.get(device_type)
    if backends is None:
        table.pop(device_type, None)
    else:
        table[device_type] = tuple(backends)
    try:
        yield
    finally:
        if saved is None:
            table.pop(device_type, None)
        else:
            table[device_type] = saved


def measure_attention_backends(net: MMDiT, batch: int, args: argparse.Namespace, device: torch.device
                               ) -> dict[str, float | None]:
    """Median forward + backward time (bf16 autocast, no optimiser step) with the model's backend order
    ("model"), torch's own choice ("torch") and each backend of :data:`SDPA_BACKENDS` alone; None where a backend
    cannot run these inputs."""
    g = torch.Generator().manual_seed(3)
    x1, cond, _ = inputs(net, batch, device, g)
    t = torch.full((batch,), 0.5, device=device)
    net.train()

    def step() -> None:
        with autocast(device):
            loss = net(x1, t, **cond).float().square().mean()
        loss.backward()
        net.zero_grad(set_to_none=True)

    times: dict[str, float | None] = {"model": median_time(step, 1, args.sample_repeats, device)}
    choices = {"torch": None, **{name: (backend,) for name, backend in SDPA_BACKENDS.items()}}
    for name, backends in choices.items():
        try:
            with attention_backends(device.type, backends):
                times[name] = median_time(step, 1, args.sample_repeats, device)
        except RuntimeError:  # "No available kernel …": not available for this device, dtype or head size
            net.zero_grad(set_to_none=True)
            times[name] = None
    return times


# --------------------------------------------------------------------------- one preset


@dataclass
class PresetResult:
    preset: str
    net: MMDiT
    rows: list[Row]
    flops_check: tuple[int, int]  # one forward at batch 1: analytic, counted
    attention: list[str]
    attention_times: dict[str, float | None]  # SDPA backend → forward + backward s (None: unavailable)
    sample_errors: dict[int, float]  # batch → relative error of the compiled sample


def run_preset(preset: str, args: argparse.Namespace, device: torch.device) -> PresetResult:
    """Eager rows, then (``--compile``) the compiled sampler and compiled blocks, and activation checkpointing."""
    torch.manual_seed(0)
    net = PRESETS[preset](audio_preset="s16k", duration=DURATION, query_dim=448).to(device)
    with torch.no_grad():  # as after training: zero-initialised gates would make every block an identity map
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(device) * 0.02)
    g = torch.Generator().manual_seed(1)
    _, cond1, _ = inputs(net, 1, device, g)
    x = torch.randn(1, net.latent_len, net.latent_channels, generator=g).to(device)
    with torch.no_grad():
        counted = counted_flops(lambda: net(x, torch.full((1,), 0.5, device=device), **cond1))
    attention = attention_ops(net, device)
    attention_times = measure_attention_backends(net, min(args.train_batches), args, device)
    print(f"{preset}: attention backends {attention_times}", file=sys.stderr)
    rows, samples, errors = [], {}, {}

    def report(row: Row) -> None:
        rows.append(row)
        print(f"{preset}: {row.phase}, batch {row.batch}: {row.seconds:.4f} s", file=sys.stderr)

    for batch in args.train_batches:
        report(measure_training(net, batch, args, device))
    for batch in args.sample_batches:
        row, samples[batch] = measure_sampling(net, batch, args, device)
        report(row)
    if args.compile:
        sampler = CompiledEulerSampler(net, backend=args.compile_backend)
        for batch in args.sample_batches:
            row, sample = measure_sampling(net, batch, args, device, sampler)
            report(row)
            errors[batch] = relative_error(sample, samples[batch])
        if args.activation_checkpointing:  # AC on (eager) at the largest batch, on a copy that is then dropped
            from reasonaudio.models.parallel import apply_activation_checkpointing

            checkpointed = copy.deepcopy(net)
            apply_activation_checkpointing(dit_blocks(checkpointed))
            row = measure_training(checkpointed, max(args.train_batches), args, device,
                                   "eager, activation checkpointing")
            del checkpointed
            # model FLOPs, as for MFU anywhere: the recomputed forward passes are work, not progress (the eager
            # row's count, or, if that batch was halved to fit, forward + backward = 3 forwards analytically)
            row.flops = next((r.flops for r in rows if r.phase.endswith(", eager") and r.batch == row.batch),
                             3 * forward_flops(net, row.batch))
            report(row)
        options = {"backend": args.compile_backend}
        apply_compile(dit_blocks(net), **options)
        for batch in args.train_batches:
            report(measure_training(net, batch, args, device, f"blocks compiled ({args.compile_backend})"))
    return PresetResult(preset, net, rows, (forward_flops(net, 1), counted), attention, attention_times, errors)


# --------------------------------------------------------------------------- one clip, end to end


def qwen25_vl_7b_shape(tiny: bool) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL-7B-Instruct's decoder (28 layers, 3584 wide, 28 heads of 128, 4 KV heads, MLP 18944) and vision
    tower (32 blocks, 1280 wide, window 112, full attention in blocks 7/15/23/31), with the word-level
    vocabulary of benchmarks/conditioner.py (1024 ids); ``tiny``: 2 layers of 64 and a 1-block tower (dry run)."""
    text = dict(vocab_size=1024, hidden_size=64 if tiny else 3584, intermediate_size=128 if tiny else 18944,
                num_hidden_layers=2 if tiny else 28, num_attention_heads=4 if tiny else 28, num_key_value_heads=2 if
                tiny else 4, bos_token_id=None, eos_token_id=901, pad_token_id=1,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                 "mrope_section": [2, 3, 3] if tiny else [16, 24, 24]})
    vision = dict(depth=1 if tiny else 32, hidden_size=32 if tiny else 1280, intermediate_size=64 if tiny else 3420,
                  num_heads=2 if tiny else 16, out_hidden_size=text["hidden_size"], patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=112, tokens_per_second=2,
                  fullatt_block_indexes=[0] if tiny else [7, 15, 23, 31])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=990, video_token_id=991,
                            vision_start_token_id=992, vision_end_token_id=993)


@dataclass
class EndToEnd:
    preset: str
    audio_preset: str
    latent_shape: tuple[int, int]  # [T, C]
    sample_rate: int
    mllm_frames: tuple[int, ...]  # [frames, 3, H, W]
    sync_frames: tuple[int, ...]
    parts: dict[str, float]  # part → median s
    total: float  # median s of the whole chain in one go
    peak_memory: int | None
    sampler: str

    @property
    def dit_and_codec_s(self) -> float:
        """DiT sampling + VAE decode + vocoder: the clip without its conditioners (the issue's first target)."""
        sampling = next(v for k, v in self.parts.items() if k.startswith("DiT sampling"))
        return sampling + self.parts["VAE decode"] + self.parts["vocoder"]


def end_to_end_models(preset: str, device: torch.device, tiny: bool
                      ) -> tuple[MMDiT, MLLMQueryConditioner, SynchformerVisualEncoder, AudioDecoder]:
    """The end-to-end clip's networks with random weights, built on ``device``: the DiT ``preset`` at the paper's
    audio shape with the 7B-shaped conditioner, the official Synchformer and the paper's VAE and vocoder; with
    ``tiny``, CPU-sized stand-ins at the ``tiny`` audio shape (dry run)."""
    audio = "tiny" if tiny else "paper"
    torch.manual_seed(0)
    with torch.device(device):  # built where it runs: random-initialising 7B parameters on the CPU takes minutes
        net = PRESETS[preset](audio_preset=audio, duration=DURATION)
        conditioner = MLLMQueryConditioner(qwen25_vl_7b_shape(tiny), out_dim=net.query_dim, num_queries=NUM_QUERIES,
                                           tokenizer=word_tokenizer(), dtype=torch.float32 if tiny else torch.bfloat16)
        sync_config = SynchformerConfig(image_size=32, dim=64, visual_depth=1, visual_heads=4, audio_depth=1,
                                        audio_heads=4, mlp_ratio=2, sync_dim=64, sync_depth=2, sync_heads=4,
                                        segments=7, token_dim=768) if tiny else SynchformerConfig()
        sync_encoder = SynchformerVisualEncoder(sync_config).eval()
        decoder = AudioDecoder(mel_vae_tiny() if tiny else mel_vae_paper(),
                               vocoder=bigvgan_tiny() if tiny else bigvgan_paper(), audio_preset=audio)
        with torch.no_grad():  # as after training: zero-initialised gates would make every block an identity
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return net, conditioner, sync_encoder, decoder


@torch.no_grad()
def measure_end_to_end(args: argparse.Namespace, device: torch.device) -> EndToEnd:
    """One 8 s clip at batch 1 as ``reasonaudio-generate`` makes it: Synchformer tokens of the 25-fps frames,
    the MLLM conditioner (7B-shaped Qwen2.5-VL, random bf16 weights) on the conditional and the null prompt,
    25 Euler steps with CFG (the compiled sampler unless ``--no-compile``), VAE decode and vocoder, at the paper's
    audio shape (44.1 kHz, 552 latents × 40; ``mel_vae_paper``, ``bigvgan_paper``). Each part is timed alone and
    the chain once more in one go; medians of ``--sample-repeats`` after one warm-up (which also compiles)."""
    tiny = device.type != "cuda"
    audio = "tiny" if tiny else "paper"
    reset_memory(device)
    hf_logging.set_verbosity_error()  # the word-level vocabulary triggers token-id warnings
    net, conditioner, sync_encoder, decoder = end_to_end_models(args.e2e_preset, device, tiny)
    sync_config = sync_encoder.config
    system = FlowMatchingPretrain(net, conditioner).to(device).eval()
    vae, vocoder = (m.eval() for m in decoder.models(device))
    if args.compile:
        system.compiled_sampler = CompiledEulerSampler(system.net, backend=args.compile_backend)
    g = torch.Generator().manual_seed(4)
    side = (56, 56) if tiny else (224, 392)  # 2 fps × 8 s = 16 frames; 224 × 392: 896 visual tokens
    mllm_frames = torch.randint(0, 256, (16, 3, *side), dtype=torch.uint8, generator=g).to(device)
    sync_frames = torch.randint(0, 256, (1, round(DURATION * 25), 3, sync_config.image_size, sync_config.image_size),
                                dtype=torch.uint8, generator=g).to(device)
    batch = {"latent": torch.zeros(1, net.latent_len, net.latent_channels, device=device), "caption": [CAPTION],
             "has_text": torch.ones(1, dtype=torch.bool, device=device),
             "has_video": torch.ones(1, dtype=torch.bool, device=device), "mllm_video": [mllm_frames]}
    off = torch.zeros(1, dtype=torch.bool, device=device)

    def conditions() -> tuple[dict, dict]:  # the conditional and the null prompt, as generate runs them
        with_sync = {**batch, "sync": sync}
        return (system.conditions(with_sync, batch["has_text"], batch["has_video"]),
                system.conditions(with_sync, off, off))

    with autocast(device):
        sync = sync_encoder(sync_frames).float()
        cond, uncond = conditions()
    x0 = torch.randn(1, net.latent_len, net.latent_channels, generator=g).to(device)

    def sample() -> torch.Tensor:
        if args.compile:
            return system.compiled_sampler(x0, cond, uncond, args.steps, CFG).float()
        return flow.sample(lambda x, t: flow.cfg_velocity(system.net, x, t, cond, uncond, CFG).float(), x0, args.steps)

    with autocast(device):  # as the timed calls below: one compiled graph, bf16
        latents = sample()
        mel = decoder.mel(latents)

    def clip() -> torch.Tensor:
        tokens = sync_encoder(sync_frames).float()
        generated = system.generate({**batch, "sync": tokens}, steps=args.steps, cfg=CFG, seed=0,
                                    compiled=args.compile)
        return decoder(generated.float())

    parts = {"Synchformer visual encoder": lambda: sync_encoder(sync_frames),
             "MLLM conditioner, conditional + null prompt": conditions,
             f"DiT sampling ({args.steps} Euler steps, CFG batched)": sample,
             "VAE decode": lambda: decoder.mel(latents),
             "vocoder": lambda: vocoder(mel)}
    times = {}
    with autocast(device):
        for name, fn in parts.items():
            times[name] = median_time(fn, 1, args.sample_repeats, device)
            print(f"end to end: {name}: {times[name]:.4f} s", file=sys.stderr)
        total = median_time(clip, 1, args.sample_repeats, device)
        audio_out = clip()
    expected = round(DURATION * decoder.sample_rate)  # generate trims the codec's whole frames to this
    if audio_out.shape[0] != 1 or audio_out.shape[1] < expected or not torch.isfinite(audio_out).all():
        raise RuntimeError(f"end to end: expected one finite waveform of at least {expected} samples, got "
                           f"{tuple(audio_out.shape)}")
    how = (f"compiled step ({system.compiled_sampler.backend}, {system.compiled_sampler._mode(device)})"
           if args.compile else "eager")
    return EndToEnd(args.e2e_preset, audio, (net.latent_len, net.latent_channels), decoder.sample_rate,
                    tuple(mllm_frames.shape), tuple(sync_frames.shape), times, total, peak_memory(device), how)


MLLM_7B = "7B-shaped Qwen2.5-VL (28 × 3584 decoder, 32-block vision tower, bf16)"


def end_to_end_markdown(e2e: EndToEnd, device: torch.device) -> list[str]:
    memory = f"{e2e.peak_memory / 2 ** 30:.2f} GiB" if e2e.peak_memory is not None else "n/a"
    lines = [
        "", f"One {DURATION:g} s clip at batch 1, end to end as `reasonaudio-generate` makes it (random weights): "
        f"`{e2e.preset}` at the `{e2e.audio_preset}` audio shape ({e2e.latent_shape[0]} latents × "
        f"{e2e.latent_shape[1]}, {e2e.sample_rate} Hz), sampler {e2e.sampler}; MLLM conditioner "
        f"{MLLM_7B if device.type == 'cuda' else 'tiny Qwen2.5-VL (dry run)'} "
        f"on {e2e.mllm_frames[0]} frames of {e2e.mllm_frames[2]}×{e2e.mllm_frames[3]} and a 90-word caption, then "
        f"the null prompt for CFG; Synchformer on {e2e.sync_frames[1]} frames of {e2e.sync_frames[3]}². Medians "
        f"as for sampling; peak memory {memory}.", "",
        "| part | median s |", "|---|---:|",
        *(f"| {name} | {seconds:.4f} |" for name, seconds in e2e.parts.items()),
        f"| DiT + VAE + vocoder (sum of their rows) | {e2e.dit_and_codec_s:.4f} |",
        f"| **whole clip in one go** (Synchformer, conditioner, sampling, VAE, vocoder) | **{e2e.total:.4f}** |",
    ]
    return lines


# --------------------------------------------------------------------------- report


def driver_version() -> str:
    """The NVIDIA driver's version (nvidia-smi), or n/a."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "n/a"
    except (OSError, subprocess.SubprocessError):
        return "n/a"


def markdown(results: list[PresetResult], args: argparse.Namespace, argv: list[str], device: torch.device,
             device_name: str, peak: float | None, e2e: EndToEnd | None = None) -> str:
    where = (f"{device_name}, dense bf16 peak {peak:g} TFLOP/s" if peak else
             f"{device_name} (bf16 peak unknown: MFU n/a; pass --peak-tflops)") if device.type == "cuda" else \
        f"CPU dry run ({device_name}; MFU and memory n/a)"
    cuda = f", CUDA {torch.version.cuda}, driver {driver_version()}" if device.type == "cuda" else ""
    precision = "bf16 autocast over fp32 weights" if device.type == "cuda" else "fp32 (dry run)"
    lines = [
        SECTION, "",
        f"`benchmarks/gpu_check.sh{' ' + ' '.join(argv) if argv else ''}` on {where}, {date.today().isoformat()}; "
        f"torch {torch.__version__}{cuda}, sdpa attention, {precision}. Input {DURATION:g} s at s16k. Times are "
        f"medians ({args.repeats} training steps after {args.warmup} warm-up; {args.sample_repeats} sampling "
        f"runs after one warm-up, which also compiles); compiled rows exclude the compilation. FLOPs = matmuls "
        f"and attention (torch.utils.flop_counter of the eager operations; with activation checkpointing the "
        f"model's FLOPs, not the recomputation); MFU = achieved / peak.",
    ]
    for r in results:
        params = sum(p.numel() for p in r.net.parameters())
        analytic, counted = r.flops_check
        net = r.net
        lines += [
            "", f"`{r.preset}`: {params / 1e6:.1f}M parameters; {net.latent_len} latents × {net.latent_channels}, "
            f"{NUM_QUERIES} query tokens × {net.query_dim}, {net.sync_len} sync tokens × {net.sync_dim}; one "
            f"forward at batch 1: {counted / 1e9:.2f} GFLOP counted, {analytic / 1e9:.2f} GFLOP by the analytic "
            f"formula in gpu_check.py. Attention operators: {', '.join(f'`{a}`' for a in r.attention) or 'none'}."
            + ("" if not r.sample_errors else " Compiled vs eager sample, relative L2 difference: " + ", ".join(
                f"batch {b}: {e:.1e}" for b, e in r.sample_errors.items()) + f" (must be < {SAMPLE_RTOL:g})."),
            "",
            "| phase | batch | median s | throughput | GFLOP | achieved TFLOP/s | MFU | peak memory GiB |",
            "|---|---:|---:|---|---:|---:|---:|---:|",
        ]
        for row in r.rows:
            mfu = f"{100 * row.tflops() / peak:.1f} %" if peak and device.type == "cuda" else "n/a"
            memory = f"{row.peak_memory / 2 ** 30:.2f}" if row.peak_memory is not None else "n/a"
            lines.append(f"| {row.phase} | {row.batch} | {row.seconds:.4f} | {row.throughput} | "
                         f"{row.flops / 1e9:,.1f} | {row.tflops():.3g} | {mfu} | {memory} |")
        model = r.attention_times["model"]
        order = dit_module.ATTENTION_BACKENDS.get(device.type)
        order = ", ".join(b.name.lower() for b in order) if order else "none set: torch's choice"
        lines += ["", f"`{r.preset}` forward + backward at batch {min(args.train_batches)} (no optimiser step) "
                  f"with the model's SDPA backend order, torch's own choice, and each backend alone; medians of "
                  f"{args.sample_repeats} after one warm-up:", "",
                  "| SDPA backends | s | / the model's order |", "|---|---:|---:|",
                  f"| the model's order ({order}) | {model:.4f} | 1.00 |"]
        names = {"torch": "torch's own choice"}
        for name, seconds in r.attention_times.items():
            if name != "model":
                label = names.get(name, name)
                lines.append(f"| {label} | {seconds:.4f} | {seconds / model:.2f} |" if seconds is not None
                             else f"| {label} | n/a (unavailable) | |")
    if e2e is not None:
        lines += end_to_end_markdown(e2e, device)
    lines += ["", "GFLOP = per training step or per sampling run (CFG doubles the batch of every network "
              "call). RTF = sampling seconds / seconds of audio generated. Peak memory is per phase (weights, "
              "AdamW state and activations for training).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", choices=sorted(PRESETS),
                        help="default dit_s dit_l (dit_tiny with --dry-run)")
    parser.add_argument("--train-batch", nargs="+", type=int, help="training batches (default 16 64; 2 with --dry-run)")
    parser.add_argument("--sample-batches", nargs="+", type=int, help="default 1 16 (1 2 with --dry-run)")
    parser.add_argument("--steps", type=int, help="Euler steps per sampling run (default 25; 4 with --dry-run)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="eager rows only (no compiled sampler, no compiled blocks, no activation checkpointing)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compiled rows")
    parser.add_argument("--no-activation-checkpointing", dest="activation_checkpointing", action="store_false")
    parser.add_argument("--no-end-to-end", dest="end_to_end", action="store_false",
                        help="skip the end-to-end clip (7B-shaped conditioner, sampling, VAE, vocoder)")
    parser.add_argument("--e2e-preset", choices=sorted(PRESETS), help="DiT of the end-to-end clip (default dit_s; "
                        "dit_tiny with --dry-run)")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of this GPU (overrides the table)")
    parser.add_argument("--dry-run", action="store_true", help="run on the CPU (dit_tiny) to check the script")
    parser.add_argument("--doc", type=Path, help=f"file to write the section into (default {DOC}; dry runs: none)")
    parser.add_argument("--no-write", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(f"gpu_check needs a CUDA GPU, and torch.cuda.is_available() is False (torch {torch.__version__}, "
              f"built for CUDA {torch.version.cuda or 'none'}). Check nvidia-smi and CUDA_VISIBLE_DEVICES, or "
              "run `benchmarks/gpu_check.py --dry-run` to check the script on the CPU.", file=sys.stderr)
        return 2
    args.preset = args.preset or (["dit_tiny"] if args.dry_run else ["dit_s", "dit_l"])
    args.train_batches = args.train_batch or ([2] if args.dry_run else [16, 64])
    args.sample_batches = args.sample_batches or ([1, 2] if args.dry_run else [1, 16])
    args.steps = args.steps or (4 if args.dry_run else 25)
    args.e2e_preset = args.e2e_preset or ("dit_tiny" if args.dry_run else "dit_s")
    if args.dry_run:
        args.warmup, args.repeats, args.sample_repeats = min(args.warmup, 1), min(args.repeats, 2), 1
    counts = (*args.train_batches, *args.sample_batches, args.steps, args.repeats, args.sample_repeats)
    if min(counts) < 1 or args.warmup < 0:
        parser.error(f"batches, steps and repeats must be positive, warmup >= 0; got {vars(args)}")
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
        peak = args.peak_tflops or peak_bf16_tflops(device_name)
    else:
        from report import cpu_name

        device_name, peak = cpu_name(), None
    results, e2e, e2e_error, stopped = [], None, None, None
    try:  # an interruption (gpu_check.sh's time limit) keeps what was finished
        for preset in args.preset:
            stopped = f"in preset {preset}"
            results.append(run_preset(preset, args, device))
            results[-1].net.cpu()  # make room for the next preset and the end-to-end clip
            torch.cuda.empty_cache() if device.type == "cuda" else None
        if args.end_to_end:
            stopped = "in the end-to-end clip"
            try:  # the preset tables above must reach the document even when this part fails on a new GPU stack
                e2e = measure_end_to_end(args, device)
            except Exception as err:  # noqa: BLE001 - reported in the table and by the exit status
                e2e_error = f"{type(err).__name__}: {err}"
                print(f"gpu_check: the end-to-end clip failed: {e2e_error}", file=sys.stderr)
        stopped = None
    except KeyboardInterrupt:
        print(f"gpu_check: interrupted {stopped}; writing what was finished", file=sys.stderr)
    text = markdown(results, args, argv, device, device_name, peak, e2e)
    # markdown() ends with the notes paragraph; failures go after it
    if e2e_error is not None:
        text = text.rstrip("\n") + f"\n\nThe end-to-end clip failed: `{e2e_error.splitlines()[0][:300]}`.\n"
    if stopped is not None:
        text = text.rstrip("\n") + (f"\n\nInterrupted {stopped} (time limit): that part and everything after it "
                                    f"are missing.\n")
    print(text)
    doc = args.doc or (None if args.dry_run else DOC)
    if not results and e2e is None:  # nothing measured: keep the section of the last run that measured something
        print(f"gpu_check: nothing finished; {doc or 'the document'} is left as it was", file=sys.stderr)
    elif doc is not None and not args.no_write:
        write_section(SECTION, text, doc)
    failed = [(r.preset, b, e) for r in results for b, e in r.sample_errors.items() if not e < SAMPLE_RTOL]
    for r in results:
        train = [row for row in r.rows if row.phase.startswith("training")]
        best = max(train, key=Row.tflops)
        mfu = f"{100 * best.tflops() / peak:.1f} %" if peak and device.type == "cuda" else "n/a"
        eager = [row for row in r.rows if row.phase.startswith("sampling") and row.phase.endswith("eager")]
        fast = [row for row in r.rows if row.phase.startswith("sampling") and not row.phase.endswith("eager")]
        samples = ", ".join(f"b{row.batch} {row.seconds:.3f} s" for row in eager)
        compiled = ", ".join(f"b{row.batch} {row.seconds:.3f} s" for row in fast)
        print(f"gpu_check {r.preset}: best train {best.tflops():.3g} TFLOP/s (MFU {mfu}, {best.phase.split(', ', 1)[1]}"
              f", batch {best.batch}), sample {DURATION:g} s {samples}" + (f"; compiled {compiled}" if fast else ""))
    if e2e is not None:
        print(f"gpu_check end-to-end: {DURATION:g} s clip b1 {e2e.total:.3f} s (DiT + VAE + vocoder "
              f"{e2e.dit_and_codec_s:.3f} s)")
    if failed:
        print(f"gpu_check: the compiled sample differs from the eager one beyond {SAMPLE_RTOL:g} (relative L2): "
              f"{failed}", file=sys.stderr)
    return 1 if failed or e2e_error is not None or stopped is not None else 0


if __name__ == "__main__":
    sys.exit(main())
