"""The benchmark scripts' own logic: FLOP counting, the GPU check without a GPU, the ffmpeg comparison, run_all.

Timings are not asserted (the CI machine is shared); what is asserted is that the numbers the scripts
report are computed right: the analytic FLOP formula equals torch's counter, the dry run's table
carries those FLOPs, ours and the ffmpeg CLI decode the same frames and samples, and the machine
section lands at the top of the page.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the scripts import their neighbour `report` as a top-level module

import conditioner as conditioner_bench  # noqa: E402
import dit as dit_bench  # noqa: E402
import gpu_check  # noqa: E402
import media as media_bench  # noqa: E402
import run_all  # noqa: E402
from reasonaudio.models.dit import dit_tiny  # noqa: E402


@pytest.mark.parametrize("sync_adaln", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_flops_formula_equals_flop_counter(batch, sync_adaln):
    torch.manual_seed(0)
    net = dit_tiny(audio_preset="s16k", duration=8.0, query_dim=448, sync_adaln=sync_adaln)
    x1, cond, _ = gpu_check.inputs(net, batch, torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        counted = gpu_check.counted_flops(lambda: net(x1, torch.full((batch,), 0.5), **cond))
    assert counted == gpu_check.forward_flops(net, batch)
    # attention is part of it: 4·B·Lq·Lk·D per block (2 joint blocks, the last one querying with audio only;
    # 1 audio-only block)
    width, t, s = 64, net.latent_len, net.latent_len + 77 + net.sync_len
    attention = 4 * batch * width * (s * s + t * s + t * t)
    assert counted > attention > 0.3 * counted


def test_training_step_flops_are_forward_plus_backward():
    """Backward = 2× the forward's Linear FLOPs (input and weight gradients) minus the input gradients of the
    data (noisy latents, timestep features: no grad), plus 2.5× the attention's (5 products: scores recomputed)."""
    torch.manual_seed(0)
    batch, width, freq = 2, 64, 256
    net = dit_tiny(audio_preset="s16k", duration=8.0, query_dim=448, sync_adaln=False)  # the paper's design
    x1, cond, _ = gpu_check.inputs(net, batch, torch.device("cpu"), torch.Generator().manual_seed(0))
    forward = gpu_check.forward_flops(net, batch)
    step = gpu_check.counted_flops(lambda: net(x1, torch.full((batch,), 0.5), **cond).square().mean().backward())
    t, s = net.latent_len, net.latent_len + 77 + net.sync_len
    attention = 4 * batch * width * (s * s + t * s + t * t)
    unused_input_grads = 2 * batch * width * (t * net.latent_channels + freq)
    assert step == 3 * forward - unused_input_grads + attention // 2


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
                                       ("NVIDIA H100 NVL", 835.5), ("NVIDIA GH200 480GB", 989.4),
                                       ("NVIDIA H200", 989.4), ("NVIDIA A100-SXM4-80GB", 312.0),
                                       ("NVIDIA L40S", 362.05), ("NVIDIA L4", 121.0),
                                       ("NVIDIA GeForce RTX 4090", 165.2), ("Tesla V100-SXM2-16GB", None)])
def test_peak_table(name, peak):
    assert gpu_check.peak_bf16_tflops(name) == peak


def test_gpu_check_fails_fast_without_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    proc = subprocess.run([str(BENCH / "gpu_check.sh")], env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device is usable" in proc.stderr


def test_gpu_check_dry_run_writes_the_table(tmp_path, capsys):
    """Eager, compiled-sampler, activation-checkpointing and compiled-block rows (``aot_eager``: the script's logic,
    not inductor's code, is under test here), the attention operator, the compiled-vs-eager sample check and the
    end-to-end clip (tiny conditioner, Synchformer, DiT, VAE and vocoder of the dry run)."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    args = ["--dry-run", "--doc", str(doc), "--train-batch", "1", "--sample-batches", "1", "2", "--steps", "2",
            "--warmup", "0", "--repeats", "1", "--compile-backend", "aot_eager"]
    assert gpu_check.main(args) == 0
    preset_line, last = capsys.readouterr().out.strip().splitlines()[-2:]
    assert re.fullmatch(r"gpu_check dit_tiny: best train \S+ TFLOP/s \(MFU n/a, .+, batch 1\), sample 8 s b1 \S+ s, "
                        r"b2 \S+ s; compiled b1 \S+ s, b2 \S+ s", preset_line), preset_line
    total, without_conditioner = map(float, re.fullmatch(
        r"gpu_check end-to-end: 8 s clip b1 (\S+) s \(DiT \+ VAE \+ vocoder (\S+) s\)", last).groups())
    text = doc.read_text()
    assert "## Other\n\nkept" in text and text.count("## GPU check") == 1
    assert "Attention operators: `aten::_scaled_dot_product_flash_attention_for_cpu`." in text
    backends = re.findall(r"^\| (the model's order \(none set: torch's choice\)|torch's own choice|flash|efficient|"
                          r"cudnn|math) \| ([^|]+) \|", text, re.MULTILINE)
    available = {name: value.strip() for name, value in backends}
    assert list(available) == ["the model's order (none set: torch's choice)", "torch's own choice", "flash",
                               "efficient", "cudnn", "math"]
    assert available["efficient"] == available["cudnn"] == "n/a (unavailable)"  # CUDA-only backends
    assert all(float(available[name]) > 0 for name in ("torch's own choice", "flash", "math"))
    assert re.search(r"relative L2 difference: batch 1: \S+, batch 2: \S+ \(must be < 0.02\)", text)
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| training", "| sampling"))]
    assert [(r[0], r[1]) for r in rows] == [
        ("| training step (fwd + bwd + AdamW), eager", "1"),
        ("| sampling 8 s (2 Euler steps, CFG batched), eager", "1"),
        ("| sampling 8 s (2 Euler steps, CFG batched), eager", "2"),
        ("| sampling 8 s (2 Euler steps, CFG batched), compiled step (aot_eager, default)", "1"),
        ("| sampling 8 s (2 Euler steps, CFG batched), compiled step (aot_eager, default)", "2"),
        ("| training step (fwd + bwd + AdamW), eager, activation checkpointing", "1"),
        ("| training step (fwd + bwd + AdamW), blocks compiled (aot_eager)", "1")]
    net = dit_tiny(audio_preset="s16k", duration=8.0, query_dim=448)
    for row, batch in zip(rows[1:5], (1, 2, 1, 2)):  # sampling: 2 steps of one call on the CFG-doubled batch
        assert row[4] == f"{2 * gpu_check.forward_flops(net, 2 * batch) / 1e9:,.1f}"
    assert rows[0][4] == rows[5][4] == rows[6][4]  # model FLOPs: compiled or recomputed, the step does the same work
    for row in rows:
        gflop, seconds, tflops = float(row[4].replace(",", "")), float(row[2]), float(row[5])
        assert tflops == pytest.approx(gflop / seconds / 1e3, rel=0.06)  # rounding of the printed values
        assert row[6] == "n/a" and row[7] == "n/a |"
    assert "sampler compiled step (aot_eager, default)" in text and "`dit_tiny` at the `tiny` audio shape" in text
    e2e_text = text.split("One 8 s clip at batch 1")[1]
    parts = dict(re.findall(r"^\| ([^|]+?) \| \**([0-9.]+)\** \|$", e2e_text, re.MULTILINE))
    assert list(parts) == ["Synchformer visual encoder", "MLLM conditioner, conditional + null prompt",
                           "DiT sampling (2 Euler steps, CFG batched)", "VAE decode", "vocoder",
                           "DiT + VAE + vocoder (sum of their rows)",
                           "**whole clip in one go** (Synchformer, conditioner, sampling, VAE, vocoder)"]
    seconds = [float(v) for v in parts.values()]
    assert all(v > 0 for v in seconds)
    assert seconds[5] == pytest.approx(sum(seconds[2:5]), abs=2e-4) == pytest.approx(without_conditioner, abs=1e-3)
    assert seconds[6] == pytest.approx(total, abs=1e-3)


def test_conditioner_benchmark_counts_what_each_step_dispatches(capsys):
    """A 2-layer run: the three steps agree, and the per-step operator counts that explain the batch-1 GPU times
    are reported; reading the prefix through the KV cache dispatches more operators than the full pass."""
    conditioner_bench.main(["--no-write", "--layers", "2", "--hidden", "64", "--heads", "4", "--repeats", "1",
                            "--warmup", "0", "--mixed-batch", "0"])
    out = capsys.readouterr().out
    assert re.search(r"prefix-cache speedup: \S+x$", out.strip())
    counts = re.search(r"full ([0-9,]+) operators, live cache ([0-9,]+) operators, stored ([0-9,]+) operators\. ",
                       out)
    full, cached, stored = (int(c.replace(",", "")) for c in counts.groups())
    assert full < stored < cached  # the stored step skips the prompt's forward, but not the cache's extra work
    agree = float(re.search(r"Outputs of all three agree to (\S+) \(max rel", out).group(1))
    assert agree < 1e-4


def test_media_benchmark_decodes_what_ffmpeg_decodes(fixtures_dir, tmp_path):
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("the ffmpeg command-line tool is not installed (Debian: apt-get install ffmpeg)")
    clip = fixtures_dir / "media" / "vggsound" / "-Qowmc0P9ic_000034.mp4"  # 640x360 stereo
    args = argparse.Namespace(start=1.0, duration=8.0, repeats=1)
    row = media_bench.measure(clip, ffmpeg, args, tmp_path)
    assert row.frames == 200
    assert row.psnr_db > 40  # same frames; only the two bicubic kernels' rounding differs
    assert row.audio_snr_db > 35  # same samples; two sinc resamplers at the same settings
    assert row.ours.wall > 0 and row.ffmpeg.wall > 0


def test_media_benchmark_reports_a_missing_ffmpeg(tmp_path, capsys):
    assert media_bench.main(["--ffmpeg", str(tmp_path / "no-ffmpeg"), "--no-write"]) == 2
    assert "ffmpeg not found" in capsys.readouterr().err


def test_machine_section_goes_first_and_is_replaced(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Vocoder\n\nrtf\n")
    first = run_all.markdown({"CPU": "A"}, [("media", 0, 60.0)])
    run_all.write_machine_section(first, doc)
    second = run_all.markdown({"CPU": "B"}, [("media", 1, 30.0), ("dit", 0, 120.0)])
    run_all.write_machine_section(second, doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\n## Machine\n") and text.count("## Machine") == 1
    assert "| CPU | B |" in text and "| CPU | A |" not in text and text.rstrip().endswith("rtf")
    assert "| media | `benchmarks/media.py` | 1 | 0.5 |" in text and "| dit | `benchmarks/dit.py` | 0 | 2.0 |" in text


def _dry_run_whose_end_to_end_clip_raises(error: BaseException, tmp_path, monkeypatch) -> str:
    """A minimal eager dry run whose last part raises ``error``: asserts exit status 1 and that the preset measured
    before it reached the document; returns the document."""
    def raising(args, device):
        raise error

    monkeypatch.setattr(gpu_check, "measure_end_to_end", raising)
    doc = tmp_path / "benchmarks.md"
    args = ["--dry-run", "--doc", str(doc), "--train-batch", "1", "--sample-batches", "1", "--steps", "1",
            "--warmup", "0", "--repeats", "1", "--no-compile"]
    assert gpu_check.main(args) == 1
    text = doc.read_text()
    assert "| training step (fwd + bwd + AdamW), eager | 1 |" in text
    return text


def test_gpu_check_keeps_its_tables_when_the_end_to_end_clip_fails(tmp_path, monkeypatch, capsys):
    """A failure in the last part (a new GPU stack, a missing kernel) must not lose the preset tables measured
    before it: the error is written into the section and the exit status is 1."""
    error = RuntimeError("no kernel image is available for execution on the device")
    text = _dry_run_whose_end_to_end_clip_raises(error, tmp_path, monkeypatch)
    assert text.rstrip().endswith("The end-to-end clip failed: `RuntimeError: no kernel image is available for "
                                  "execution on the device`.")
    assert "the end-to-end clip failed" in capsys.readouterr().err


def test_dit_benchmark_splits_operator_time_into_gemm_attention_and_the_rest():
    """The shares behind the CPU compile ratio's floor: a lone matrix multiply is all GEMM, a lone attention all
    attention, and an element-wise step neither."""
    g = torch.Generator().manual_seed(0)
    a, q = torch.randn(384, 384, generator=g), torch.randn(1, 8, 512, 64, generator=g)
    gemm, attention = dit_bench.operator_shares(lambda: a @ a)
    assert gemm > 0.8 and attention == 0
    gemm, attention = dit_bench.operator_shares(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert gemm == 0 and attention > 0.8
    assert dit_bench.operator_shares(lambda: (a * 2 + 1).exp()) == (0, 0)


def test_gpu_check_writes_what_it_finished_when_interrupted(tmp_path, monkeypatch, capsys):
    """gpu_check.sh interrupts the script (SIGINT) at its time limit: the presets measured by then reach the
    document, the section says where it stopped, and the exit status is 1."""
    text = _dry_run_whose_end_to_end_clip_raises(KeyboardInterrupt(), tmp_path, monkeypatch)
    assert text.rstrip().endswith("Interrupted in the end-to-end clip (time limit): that part and everything after "
                                  "it are missing.")
    assert "interrupted in the end-to-end clip" in capsys.readouterr().err


def test_attention_backends_restricts_the_dit_and_restores_its_order():
    """The DiT enters its own backend order around every attention call, so gpu_check restricts a backend through
    that order; leaving the block restores it, also after an error."""
    from torch.nn.attention import SDPBackend

    from reasonaudio.models import dit

    before = dict(dit.ATTENTION_BACKENDS)
    with gpu_check.attention_backends("cpu", (SDPBackend.MATH,)):
        assert dit.ATTENTION_BACKENDS["cpu"] == (SDPBackend.MATH,)
    with pytest.raises(RuntimeError):
        with gpu_check.attention_backends("cuda", None):
            assert "cuda" not in dit.ATTENTION_BACKENDS
            raise RuntimeError("No available kernel")
    assert dit.ATTENTION_BACKENDS == before


def test_dit_benchmark_states_the_compile_floor_and_the_target_from_its_numbers():
    row = dict(compile_s=1.0, nfe=(1.0, 0.9), step=(1.0, 0.9), diff=1e-7)

    def compiled_row(batch: int, eager: float, compiled: float, gemm: float, attention: float):
        return dit_bench.CompiledRow(batch, eager, compiled, row["compile_s"], *row["nfe"], row["compile_s"],
                                     *row["step"], row["compile_s"], row["diff"], gemm, attention)

    text = dit_bench.compiled_markdown([compiled_row(4, 7.0, 5.95, 0.6, 0.1), compiled_row(1, 2.0, 1.9, 0.7, 0.1)])
    assert "0.70 at batch 4 (measured 0.85: 50 % of the rest removed)" in text
    assert "0.80 at batch 1 (measured 0.95: 25 % of the rest removed)" in text
    assert text.rstrip().endswith("not met; best 0.85 at batch 4.")
    text = dit_bench.compiled_markdown([compiled_row(4, 7.0, 5.25, 0.6, 0.1)])
    assert text.rstrip().endswith("met at batch 4 (0.75).")


def test_gpu_check_end_to_end_models_fit_together_at_the_paper_shape():
    """The GPU-only configuration of the end-to-end clip, built on the meta device (no memory, no GPU): the DiT
    at 44.1 kHz takes the 7B-shaped conditioner's output width and the Synchformer's tokens, and the VAE and
    vocoder agree on the mel, so a GPU session does not spend its minutes on a shape error."""
    net, conditioner, sync_encoder, decoder = gpu_check.end_to_end_models("dit_s", torch.device("meta"), tiny=False)
    vae, vocoder = decoder.models("meta")
    assert (net.latent_len, net.latent_channels, net.sync_len, net.sync_dim) == (552, 40, 192, 768)
    assert conditioner.out_dim == net.query_dim == 448 and conditioner.queries.shape == (77, 3584)
    assert len(conditioner.decoder.layers) == 28 and conditioner.backbone.config.vision_config.depth == 32
    assert sync_encoder.config.image_size == 224 and sync_encoder.config.visual_depth == 12
    assert decoder.sample_rate == 44100
    mel = vae.decode(torch.zeros(1, 40, 552, device="meta"))
    assert mel.shape[:2] == (1, 128)
    assert vocoder(mel).shape[-1] == 552 * 640 >= 8 * 44100  # hop 320 × 2 per latent; generate trims to 8 s
    tokens = sync_encoder(torch.zeros(1, 200, 3, 224, 224, dtype=torch.uint8, device="meta"))
    assert tokens.shape == (1, 192, 768)


def test_gpu_check_interrupted_before_any_result_keeps_the_last_section(tmp_path, monkeypatch):
    """An interrupt before the first preset finished measured nothing: the section of the last run that did
    measure something (the only GPU numbers there may be) stays as it was."""
    def interrupted(preset, args, device):
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu_check, "run_preset", interrupted)
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## GPU check\n\nH200 rows\n")
    assert gpu_check.main(["--dry-run", "--doc", str(doc), "--no-compile"]) == 1
    assert doc.read_text() == "# Benchmarks\n\n## GPU check\n\nH200 rows\n"
