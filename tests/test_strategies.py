"""Tiny pretraining under DDP and FSDP2 with 2 CPU processes (gloo) against one process on the same global batch.

Each run is ``python -m torch.distributed.run --standalone --nproc_per_node N -m reasonaudio fit`` with
``lightning_configs/pretrain.yaml``, ``debug/cpu.yaml`` and the strategy overlay under test, so the
committed YAML files, the CLI and the launcher documented in ``docs/scaling.md`` are what runs.

Making the runs comparable:

* the global batch is the whole 4-clip cache every step (one process: batch 4; two processes:
  batch 2 each, from the same seeded sampler), latents are the cached posterior means (std 0);
* :class:`SeededNoisePretrain` draws each item's noise and flow time from its clip id and the step
  instead of the process's random stream (a process holding 2 items cannot draw what one process
  holding 4 drew), and logs the mean loss over ranks; condition dropout is off;
* FSDP2 runs in fp32 here (``param_dtype: float32``): bf16 would make the comparison a test of
  bf16 rounding. A separate run checks the bf16 policy (bf16 compute, fp32 gradients and master
  weights) against the fp32 losses with a bf16-sized tolerance.

What is left is floating-point reduction order (gradients summed across ranks in a different order,
the sharded gradient-norm for clipping), so losses and weights agree to ``RTOL`` / ``ATOL``.
Gradient clipping is set low enough that it is active, so the sharded norm is exercised.

Every run keeps ``pretrain.yaml``'s callbacks, so the EMA callback runs under each strategy (with FSDP2
it averages DTensor shards), with decay ``EMA_DECAY`` (low enough that 3 steps move the average
visibly) and an ``export`` folder next to the run: its ``model.safetensors`` and the ``shadow`` in
``last.ckpt`` (gathered full tensors) are compared like the weights.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributed._composable.contract import _get_registry
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from reasonaudio import flow
from reasonaudio.cli import CONFIG_DIR
from reasonaudio.compiled_sampler import CompiledEulerSampler
from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl
from reasonaudio.systems.flow_matching import FlowMatchingPretrain

REPO = Path(__file__).resolve().parents[1]
STEPS = 3
RTOL, ATOL = 1e-4, 1e-5
"""Losses and weights of a 2-process run vs one process (fp32; reduction order only)."""
BF16_RTOL = 2e-2
"""Loss of the bf16 FSDP2 policy vs fp32 (bf16 keeps 8 bits of mantissa)."""
CAPTIONS = ["a dog barks twice", "rain on a tin roof", "a bell rings once", "a drum hit then silence"]
LOSS_LOG = "REASONAUDIO_TEST_LOSS_LOG"
EMA_DECAY = 0.5


class SeededNoisePretrain(FlowMatchingPretrain):
    """FlowMatchingPretrain whose per-item noise and flow time depend on (clip id, step) only.

    Everything else (conditions, network, loss, optimiser, clipping, strategy) is the system's own.
    Appends the loss averaged over ranks to ``$REASONAUDIO_TEST_LOSS_LOG`` (rank 0).
    """

    def on_train_start(self) -> None:
        """Record how the model is sharded and whether AdamW is fused (rank 0, FSDP2 runs) in
        ``$REASONAUDIO_TEST_LOSS_LOG.plan.json``."""
        if self.trainer.is_global_zero and isinstance(self.net, FSDPModule):
            plan = {**describe_sharding(self), "fused_adamw": [o.defaults["fused"] for o in self.trainer.optimizers]}
            Path(os.environ[LOSS_LOG] + ".plan.json").write_text(json.dumps(plan))

    def training_step(self, batch, batch_idx):
        x1 = batch["latent"]  # [B, T, C]
        cond = self.conditions(batch, batch["has_text"], batch["has_video"])
        gens = [torch.Generator().manual_seed(_seed(i, self.global_step)) for i in batch["id"]]
        x0 = torch.stack([torch.randn(x1.shape[1:], generator=g) for g in gens]).to(x1)
        t = torch.cat([flow.sample_t(1, generator=g) for g in gens]).to(x1)
        loss = flow.loss(self.net(flow.interpolate(x0, x1, t), t, **cond), x0, x1)
        mean = self.all_gather(loss.detach()).float().mean()  # equal local batches: the global-batch loss
        if self.trainer.is_global_zero:
            with open(os.environ[LOSS_LOG], "a") as f:
                f.write(f"{float(mean)!r}\n")
        return loss


def describe_sharding(system: torch.nn.Module) -> dict:
    """Every FSDP2 unit (qualified name, class, whether its own parameters are frozen / trainable / DTensors)
    and the modules with activation checkpointing."""
    units = {name: m for name, m in system.named_modules() if isinstance(m, FSDPModule)}
    described = []
    for name, unit in units.items():
        nested = [n for n in units if n != name and n.startswith(f"{name}.")]
        own = [p for n, p in unit.named_parameters(prefix=name)
               if not any(n.startswith(f"{sub}.") for sub in nested)]
        described.append({"name": name, "class": type(unit).__name__.removeprefix("FSDP"),
                          "frozen": all(not p.requires_grad for p in own),
                          "trainable": any(p.requires_grad for p in own),
                          "dtensor": all(isinstance(p, DTensor) for p in own), "params": len(own)})
    return {"units": described,
            "checkpointed": [n for n, m in system.named_modules() if "checkpoint" in (_get_registry(m) or {})],
            "compiled": [n for n, m in system.named_modules() if getattr(m, "_compiled_call_impl", None) is not None]}


def _seed(clip_id: str, step: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{clip_id}/{step}".encode()).digest()[:7], "little")


def write_cache(root: Path, num_clips: int = 4, latent_len: int = 63, channels: int = 8, sync_len: int = 40) -> Path:
    """A finished feature cache written directly (format: ``reasonaudio.data_modules.features``), posterior std 0."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "mllm").mkdir()
    arrays = {"latent_mean": (latent_len, channels), "latent_std": (latent_len, channels), "sync": (sync_len, 768)}
    data = {"latent_mean": rng.standard_normal((num_clips, latent_len, channels)),
            "latent_std": np.zeros((num_clips, latent_len, channels)),
            "sync": rng.standard_normal((num_clips, sync_len, 768))}
    for name, value in data.items():
        value.astype(np.float32).tofile(root / f"{name}.f32")
    np.ones(num_clips, np.uint8).tofile(root / "done.u8")
    rows = [{"id": f"clip{i}", "caption": CAPTIONS[i % len(CAPTIONS)], "label": "", "has_video": True,
             "corpus": "test"} for i in range(num_clips)]
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for i in range(num_clips):
        np.save(root / "mllm" / f"{i}.npy", rng.integers(0, 256, (4, 3, 56, 56), dtype=np.uint8))
    meta = {"num_clips": num_clips, "arrays": {k: list(v) for k, v in arrays.items()}, "source": "test",
            "latent_stats": {"mean": [0.0] * channels, "std": [1.0] * channels}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


# --------------------------------------------------------------------------- running the CLI


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A 4-clip and a 1-clip cache and a tiny Qwen2.5-VL folder covering their captions."""
    root = tmp_path_factory.mktemp("strategies")
    return {"root": root, "cache4": write_cache(root / "cache4"), "cache1": write_cache(root / "cache1", num_clips=1),
            "mllm": write_tiny_qwen_vl(root / "mllm", CAPTIONS)}


def fit(assets: dict[str, Path], name: str, *, processes: int, strategy: str | None, cache: str = "cache4",
        steps: int = STEPS, extra: tuple[str, ...] = ()) -> tuple[list[float], Path]:
    """Run ``reasonaudio fit`` (under torchrun for 2 processes) on a global batch of 4; returns losses and last.ckpt.

    The EMA callback of ``pretrain.yaml`` exports to ``<run>/export`` (see :func:`export`)."""
    root = assets["root"] / name
    root.mkdir()
    log = root / "losses.txt"
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    overlay = ["--config", str(CONFIG_DIR / "strategy" / f"{strategy}.yaml")] if strategy else []
    cmd = [*launcher, "-m", "reasonaudio", "fit", "--config", str(CONFIG_DIR / "pretrain.yaml"),
           "--config", str(CONFIG_DIR / "debug" / "cpu.yaml"), *overlay,
           f"--model.class_path={__name__}.SeededNoisePretrain",
           f"--model.init_args.conditioner.init_args.model={assets['mllm']}",
           "--audio.duration=2.0", "--model.init_args.text_drop=0",
           "--model.init_args.video_drop=0", "--model.init_args.optimizer.init_args.lr=0.003",
           "--model.init_args.lr_scheduler=null",
           f"--data.init_args.train=[{assets[cache]}]", f"--data.init_args.val=[{assets[cache]}]",
           f"--data.init_args.batch_size={4 // processes}", "--data.init_args.samples_per_epoch=4",
           "--trainer.accelerator=cpu", f"--trainer.devices={processes}", f"--trainer.max_steps={steps}",
           "--trainer.limit_train_batches=null", "--trainer.limit_val_batches=0", "--trainer.gradient_clip_val=0.05",
           f"--trainer.callbacks.init_args.decay={EMA_DECAY}", f"--trainer.callbacks.init_args.export={root / 'export'}",
           f"--trainer.logger.init_args.save_dir={root / 'runs'}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", LOSS_LOG: str(log),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    ckpt = root / "runs" / "pretrain" / "version_0" / "checkpoints" / "last.ckpt"
    return [float(x) for x in log.read_text().split()], ckpt


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def ema_shadow(ckpt: Path) -> dict[str, torch.Tensor]:
    """The EMA callback's averages as saved in ``ckpt``."""
    states = torch.load(ckpt, map_location="cpu", weights_only=False)["callbacks"]
    (state,) = [v for k, v in states.items() if k.startswith("EMA")]
    assert state["decay"] == EMA_DECAY
    return state["shadow"]


def export(ckpt: Path) -> dict[str, torch.Tensor]:
    """``model.safetensors`` exported by the EMA callback of the run that wrote ``ckpt``."""
    from safetensors.torch import load_file
    folder = ckpt.parents[4] / "export"
    assert (folder / "config.yaml").is_file()
    return load_file(str(folder / "model.safetensors"))


def check_ema(ckpt: Path) -> None:
    """One run's EMA: full-size plain tensors for every trainable parameter in the checkpoint (not shards), equal to
    the export, which also holds the network's buffers; the average lags the raw weights."""
    stored, shadow, exported = weights(ckpt), ema_shadow(ckpt), export(ckpt)
    assert shadow and not any(".backbone." in k for k in shadow)  # trainable parameters only
    assert set(shadow) <= set(stored)
    for k, v in shadow.items():
        assert type(v) is torch.Tensor and v.dtype == torch.float32, (k, type(v), v.dtype)
        assert v.shape == stored[k].shape, (k, v.shape, stored[k].shape)  # gathered, not this rank's shard
        assert type(exported[k]) is torch.Tensor and torch.equal(exported[k], v), k
    assert set(exported) == set(shadow) | {k for k in stored if k.startswith("net.")}
    assert any(not torch.equal(v, stored[k]) for k, v in shadow.items())  # EMA lags the raw weights


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = RTOL,
                        atol: float = ATOL) -> None:
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=lambda m: f"{k}: {m}")


def check_sharding_plan(plan: dict) -> None:
    """The plan of ``reasonaudio.models.parallel`` as it ran: frozen MLLM units apart, one unit per DiT block, AC on
    blocks."""
    units = {u["name"]: u for u in plan["units"]}
    assert all(u["dtensor"] for u in units.values())
    assert not any(u["frozen"] and u["trainable"] for u in units.values() if u["params"])  # never mixed
    backbone = {n: u for n, u in units.items() if n.startswith("conditioner.backbone.")}
    classes = sorted(u["class"] for u in backbone.values())
    assert classes == sorted(["Qwen2_5_VLDecoderLayer"] * 2 + ["Qwen2_5_VLVisionBlock", "Embedding",
                                                               "Qwen2_5_VisionTransformerPretrainedModel",
                                                               "Qwen2_5_VLTextModel"]), classes
    assert all(u["frozen"] for u in backbone.values())
    blocks = [n for n, u in units.items() if u["class"] == "MMDiTBlock"]
    assert len(blocks) == 3 and all(units[n]["trainable"] for n in blocks)  # dit_tiny: 2 joint + 1 audio-only
    assert sorted(plan["checkpointed"]) == sorted(blocks)
    assert units["net"]["trainable"] and units["conditioner"]["trainable"]  # queries + connector


@pytest.fixture(scope="module")
def single(assets) -> tuple[list[float], Path]:
    """The reference: one process, batch 4."""
    return fit(assets, "single", processes=1, strategy=None)


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process(assets, single, strategy):
    ref_losses, ref_ckpt = single
    losses, ckpt = fit(assets, strategy, processes=2, strategy=strategy,
                       extra=("--trainer.precision=32-true", "--trainer.strategy.init_args.param_dtype=float32")
                       if strategy == "fsdp" else ("--trainer.precision=32-true",))
    assert len(losses) == len(ref_losses) == STEPS
    np.testing.assert_allclose(losses, ref_losses, rtol=RTOL)
    stored = weights(ckpt)
    # The weights moved enough for the comparison to mean something: the zero-initialised output layer is now
    # far from 0 on the scale of the tolerances (the losses of single steps differ by their draws, not training).
    assert stored["net.final.linear.weight"].abs().max() > 100 * ATOL
    assert not any(".backbone." in k for k in stored)  # the frozen MLLM stays out of the checkpoint
    assert all(v.dtype == torch.float32 and type(v) is torch.Tensor for v in stored.values())  # gathered, not shards
    assert_same_weights(stored, weights(ref_ckpt))
    check_ema(ref_ckpt)
    check_ema(ckpt)
    assert_same_weights(ema_shadow(ckpt), ema_shadow(ref_ckpt))
    assert_same_weights(export(ckpt), export(ref_ckpt))
    if strategy == "fsdp":
        check_sharding_plan(json.loads((ckpt.parents[4] / "losses.txt.plan.json").read_text()))

    # the checkpoint reloads in one process (the MLLM rebuilt from its folder) and samples like the reference
    system = SeededNoisePretrain.load_from_checkpoint(ckpt).eval()
    reference = SeededNoisePretrain.load_from_checkpoint(ref_ckpt).eval()
    from reasonaudio.data_modules.features import CachedFeatureDataModule
    dm = CachedFeatureDataModule(train=[str(assets["cache4"])], val=[str(assets["cache4"])], batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(system.generate(batch, steps=3, seed=1), reference.generate(batch, steps=3, seed=1),
                               rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_fsdp_bf16_policy(assets, single):
    """The committed policy: bf16 autocast and bf16 all-gathers, fp32 gradient reduction into fp32 master weights."""
    ref_losses, _ = single
    losses, ckpt = fit(assets, "fsdp_bf16", processes=2, strategy="fsdp")
    # The zero-initialised output layer predicts 0 exactly in any precision: step 0 differs only by the order of
    # the ranks' loss reduction (float32 rounding), far below bf16's effect on the later steps.
    assert losses[0] == pytest.approx(ref_losses[0], rel=1e-6)
    assert losses[1:] != ref_losses[1:]  # bf16 did change the computation
    np.testing.assert_allclose(losses, ref_losses, rtol=BF16_RTOL)
    assert all(v.dtype == torch.float32 for v in weights(ckpt).values())
    check_ema(ckpt)  # averaged in fp32 from the fp32 master weights


@pytest.mark.slow
def test_fsdp_resume_is_exact(assets):
    """2 FSDP2 steps, then resume from last.ckpt for 2 more == 4 steps in one process (1-clip cache: every
    epoch's draw is the same, so the sampler restarting on resume does not matter); the EMA too (restored
    from the checkpoint's full tensors and sharded again)."""
    ref_losses, ref_ckpt = fit(assets, "single_1clip", processes=1, strategy=None, cache="cache1", steps=4)
    first, ckpt = fit(assets, "fsdp_first", processes=2, strategy="fsdp", cache="cache1", steps=2,
                      extra=("--trainer.precision=32-true", "--trainer.strategy.init_args.param_dtype=float32"))
    resumed, ckpt = fit(assets, "fsdp_resumed", processes=2, strategy="fsdp", cache="cache1", steps=4,
                        extra=("--trainer.precision=32-true", "--trainer.strategy.init_args.param_dtype=float32",
                               f"--ckpt_path={ckpt}"))
    np.testing.assert_allclose(first + resumed, ref_losses, rtol=RTOL)
    assert_same_weights(weights(ckpt), weights(ref_ckpt))
    check_ema(ckpt)
    assert_same_weights(ema_shadow(ckpt), ema_shadow(ref_ckpt))
    assert_same_weights(export(ckpt), export(ref_ckpt))


@pytest.mark.slow
def test_fsdp_with_compiled_blocks_and_fused_adamw_trains_like_eager_one_process(assets, single):
    """``model.compile: true`` under FSDP2 (inductor, activation checkpointing on): every DiT block compiled in
    place before it is sharded; with the fused AdamW of the paper configs stepping the sharded (DTensor) weights,
    losses, weights, the EMA and its export match the eager one-process run (default AdamW) key for key, and the
    checkpoint samples like it through the compiled sampler."""
    ref_losses, ref_ckpt = single
    losses, ckpt = fit(assets, "fsdp_compiled", processes=2, strategy="fsdp",
                       extra=("--trainer.precision=32-true", "--trainer.strategy.init_args.param_dtype=float32",
                              "--model.init_args.compile=true", "--model.init_args.optimizer.init_args.fused=true"))
    np.testing.assert_allclose(losses, ref_losses, rtol=RTOL)
    plan = json.loads((ckpt.parents[4] / "losses.txt.plan.json").read_text())
    check_sharding_plan(plan)
    assert sorted(plan["compiled"]) == sorted(plan["checkpointed"])  # the 3 blocks, nothing else
    assert plan["fused_adamw"] == [True]
    assert_same_weights(weights(ckpt), weights(ref_ckpt))
    check_ema(ckpt)
    assert_same_weights(ema_shadow(ckpt), ema_shadow(ref_ckpt))
    assert_same_weights(export(ckpt), export(ref_ckpt))

    system = SeededNoisePretrain.load_from_checkpoint(ckpt).eval()
    assert system.compile_options == {}  # saved with the run: compiled again when a trainer configures it
    reference = SeededNoisePretrain.load_from_checkpoint(ref_ckpt).eval()
    from reasonaudio.data_modules.features import CachedFeatureDataModule
    dm = CachedFeatureDataModule(train=[str(assets["cache4"])], val=[str(assets["cache4"])], batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    system.compiled_sampler = CompiledEulerSampler(system.net, backend="aot_eager")  # the sampler's logic
    torch.testing.assert_close(system.generate(batch, steps=3, seed=1, compiled=True),
                               reference.generate(batch, steps=3, seed=1), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_prefix_kv_stage_and_training_under_ddp(assets, single):
    """Two processes write the prefix KV store (rank 0 its meta, each rank its own rows); DDP training from the
    store then matches the one-process run that reads frames and captions live."""
    from reasonaudio.models.conditioners import MLLMQueryConditioner
    from reasonaudio.models.prefix_kv import load_prefix

    cache, root = assets["cache4"], assets["root"] / "prefix_kv"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "reasonaudio",
           "predict", "--config", str(CONFIG_DIR / "prefix_kv.yaml"),
           f"--model.init_args.conditioner.init_args.model={assets['mllm']}", f"--data.init_args.cache={cache}",
           "--data.init_args.batch_size=1", "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
           f"--trainer.logger.init_args.save_dir={root}"]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    store = cache / "prefix_kv" / "tiny_mllm"
    assert sorted(p.name for p in store.iterdir()) == ["0.safetensors", "1.safetensors", "2.safetensors",
                                                       "3.safetensors", "meta.json"]
    torch.manual_seed(0)
    cond = MLLMQueryConditioner(assets["mllm"], out_dim=64, num_queries=16)
    frames = [torch.from_numpy(np.load(cache / "mllm" / f"{i}.npy")) for i in range(4)]
    for i, expected in enumerate(cond.store_prefix(frames, [CAPTIONS[i] for i in range(4)])):
        got = load_prefix(store / f"{i}.safetensors")
        assert torch.equal(got.ids, expected.ids) and got.grid == expected.grid
        torch.testing.assert_close(got.kv, expected.kv, rtol=1e-5, atol=1e-6)

    ref_losses, ref_ckpt = single
    losses, ckpt = fit(assets, "ddp_prefix_kv", processes=2, strategy="ddp",
                       extra=("--trainer.precision=32-true", "--data.init_args.prefix_kv=tiny_mllm"))
    np.testing.assert_allclose(losses, ref_losses, rtol=RTOL)
    assert_same_weights(weights(ckpt), weights(ref_ckpt))
