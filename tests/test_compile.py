"""Compiled DiT blocks and the compiled sampler compute what the eager network computes (CPU, fp32).

These tests are about what dynamo captures and when it reuses a graph (keys and gradients of every block
structure, the adapters switched off for the reference, one graph per shape bucket, the Euler grid), which
does not depend on the code generator, so they use the ``aot_eager`` backend (dynamo + AOTAutograd, no
kernel generation): a cold inductor compile of ``dit_tiny``'s blocks costs about a minute on the 2-core
machine. Inductor itself, the default backend, is checked end to end in ``test_strategies.py``: 2-process
FSDP2 training with inductor-compiled blocks against eager training (losses, weights, EMA). ``make
gpu-check`` runs the inductor and CUDA-graph paths on a GPU with its own equality checks.

Tolerances: compiled kernels fuse and reorder float32 arithmetic, so single outputs differ from eager by
a few float32 ulps of their scale (measured: ≤ 6e-7 on velocities of magnitude ~1); the checks allow
1e-5 relative to each tensor's largest entry, 20× that, and far below any difference a wrong graph gives
(the LoRA adapter's effect here is ~0.1–1).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from reasonaudio import flow
from reasonaudio.compiled_sampler import CompiledEulerSampler
from reasonaudio.models import parallel
from reasonaudio.models.dit import MMDiT, dit_tiny
from reasonaudio.systems.policy_weights import add_lora

REL = 1e-5
"""Largest |compiled − eager| allowed, relative to the eager tensor's largest |entry|."""


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error <= REL * max(scale, 1e-6), f"{what}: |compiled − eager| = {error:.3g} at scale {scale:.3g}"


@pytest.fixture(autouse=True)
def no_silent_fallback():
    """Hitting the recompile limit would run the blocks eagerly and pass every equality check: make it an error."""
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield


def trained_like(net: MMDiT) -> MMDiT:
    """Perturb every parameter, as after training (the zero-initialised gates would make the blocks identity maps)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def inputs(net: MMDiT, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    cond = dict(queries=torch.randn(batch, 16, net.query_dim, generator=g),
                sync=torch.randn(batch, net.sync_len, net.sync_dim, generator=g),
                has_text=torch.tensor([True, False, True][:batch]), has_video=torch.tensor([True, True, False][:batch]))
    return torch.randn(batch, net.latent_len, net.latent_channels, generator=g), torch.rand(batch, generator=g), cond


def forward_backward(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, cond: dict
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    net.zero_grad()
    out = net(x, t, **cond)
    out.square().mean().backward()
    return out.detach(), {n: p.grad for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.usefixtures("one_thread")
def test_compiled_blocks_train_like_eager_blocks_and_keep_every_key():
    eager = trained_like(dit_tiny(duration=2.0))
    compiled = copy.deepcopy(eager)
    counter = CompileCounterWithBackend("aot_eager")
    parallel.apply_compile(parallel.dit_blocks(compiled), backend=counter)
    parallel.apply_compile(parallel.dit_blocks(compiled))  # configure_model may run twice: nothing changes
    assert parallel.is_compiled(compiled) and not parallel.is_compiled(eager)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no "_orig_mod." anywhere
    x, t, cond = inputs(eager, 3)
    out, grads = forward_backward(compiled, x, t, cond)
    ref, ref_grads = forward_backward(eager, x, t, cond)
    assert_close_rel(out, ref, "velocity")
    assert grads.keys() == ref_grads.keys() and len(grads) == sum(1 for _ in eager.parameters())
    for name in grads:
        assert_close_rel(grads[name], ref_grads[name], f"gradient of {name}")
    assert counter.frame_count == 3  # one graph per block structure: joint, joint with pre-only context, audio-only


@pytest.mark.usefixtures("one_thread")
def test_compiled_lora_policy_and_reference_match_eager():
    """Post-training reads the policy (adapters on, with gradients) and the reference (adapters off, no gradients)
    from one compiled network; both match eager, and the adapter keys are the eager wrapper's."""
    base = trained_like(dit_tiny(duration=2.0))
    eager = add_lora(base, rank=4)
    with torch.no_grad():
        for name, p in eager.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    compiled = copy.deepcopy(eager)
    parallel.apply_compile(parallel.dit_blocks(compiled), backend="aot_eager")
    assert parallel.is_compiled(compiled) and list(compiled.state_dict()) == list(eager.state_dict())
    x, t, cond = inputs(base, 2)
    for _ in range(2):  # a second training step reuses the graphs
        policy, grads = forward_backward(compiled, x, t, cond)
        ref_policy, ref_grads = forward_backward(eager, x, t, cond)
        assert_close_rel(policy, ref_policy, "policy velocity")
        assert grads.keys() == ref_grads.keys() and all(".lora_" in n for n in grads)
        for name in grads:
            assert_close_rel(grads[name], ref_grads[name], f"gradient of {name}")
        with torch.no_grad(), compiled.disable_adapter():
            reference = compiled(x, t, **cond)
        with torch.no_grad(), eager.disable_adapter():
            ref_reference = eager(x, t, **cond)
        assert_close_rel(reference, ref_reference, "reference velocity")
        assert (policy - reference).abs().max() > 0.05  # the adapters do change the velocity


@pytest.mark.usefixtures("one_thread")
def test_compiled_sampler_matches_the_eager_euler_integral_per_shape_bucket():
    net = trained_like(dit_tiny(duration=2.0)).eval()
    counter = CompileCounterWithBackend("aot_eager")
    sampler = CompiledEulerSampler(net, backend=counter)
    for batch in (1, 2, 1):  # two buckets, the first one reused
        x0, _, cond = inputs(net, batch, seed=10 + batch)
        uncond = {**cond, "has_text": torch.zeros(batch, dtype=torch.bool),
                  "has_video": torch.zeros(batch, dtype=torch.bool)}
        fast = sampler(x0, cond, uncond, steps=4, w=4.5)
        with torch.no_grad():
            eager = flow.sample(lambda x, t: flow.cfg_velocity(net, x, t, cond, uncond, 4.5), x0, steps=4)
        assert_close_rel(fast, eager, f"sample at batch {batch}")
        assert (eager - x0).abs().max() > 1.0  # the integral moved far from the noise
    assert counter.frame_count == 2  # one graph per bucket, each reused for every step
    with pytest.raises(ValueError, match="steps must be positive"):
        sampler(x0, cond, uncond, steps=0)


def test_the_compile_option_compiles_the_blocks_when_the_model_is_configured():
    from reasonaudio.systems.flow_matching import FlowMatchingPretrain

    net = dit_tiny(duration=2.0)
    eager = FlowMatchingPretrain(net, torch.nn.Identity())
    eager.configure_model()
    assert not parallel.is_compiled(net) and eager.compile_options is None
    system = FlowMatchingPretrain(net, torch.nn.Identity(), compile={"backend": "aot_eager"})
    assert system.hparams.compile == {"backend": "aot_eager"}  # saved with the checkpoint's hyperparameters
    system.configure_model()  # no trainer: one device, no sharding, compilation only
    assert parallel.is_compiled(net) and system.compile_options == {"backend": "aot_eager"}
    with pytest.raises(TypeError, match="compile must be a bool or a dict"):
        FlowMatchingPretrain(net, torch.nn.Identity(), compile="max-autotune")
    assert FlowMatchingPretrain(net, torch.nn.Identity(), compile={}).compile_options == {}  # {}: the defaults


def test_fine_tuning_takes_the_compile_option_with_its_lora_adapters():
    from reasonaudio.systems.finetune import FlowMatchingFinetune

    net = dit_tiny(duration=2.0)
    system = FlowMatchingFinetune(net, torch.nn.Identity(), lora_rank=4, compile={"backend": "aot_eager"})
    assert system.hparams.compile == {"backend": "aot_eager"}
    system.configure_model()
    assert parallel.is_compiled(system.net)
    lora = [name for name, _ in system.net.named_parameters() if "lora" in name]
    assert lora and all("_orig_mod" not in name for name in lora)  # compiled in place: every name kept
