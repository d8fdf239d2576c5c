"""MM-DiT: shapes, zero init, RoPE on one time axis, null conditions, preset sizes, durations, gradients."""
from __future__ import annotations

import json

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn

from reasonaudio import flow
from reasonaudio.config import SequenceConfig, audio_preset
from reasonaudio.models.dit import MMDiT, dit_l, dit_s, dit_tiny, rope_table, sync_latent_weights, sync_token_times


def inputs(net: MMDiT, batch: int, seed: int = 0, num_queries: int = 77) -> dict[str, torch.Tensor]:
    """Random keyword inputs of ``net``'s lengths, every condition present."""
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(batch, net.latent_len, net.latent_channels, generator=g),
                t=torch.rand(batch, generator=g),
                queries=torch.randn(batch, num_queries, net.query_dim, generator=g),
                sync=torch.randn(batch, net.sync_len, net.sync_dim, generator=g),
                has_text=torch.ones(batch, dtype=torch.bool), has_video=torch.ones(batch, dtype=torch.bool))


@torch.no_grad()
def activate(net: MMDiT, seed: int = 0) -> MMDiT:
    """Perturb every parameter, so that zero-initialised gates and the final projection pass signal."""
    g = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net


@pytest.fixture(scope="module")
def net_8s() -> MMDiT:
    """dit_tiny on 8 s at s16k: T = 250 latents of C = 20, Ts = 192 sync tokens."""
    torch.manual_seed(0)
    return activate(dit_tiny(audio_preset="s16k", duration=8.0)).eval()


def small(**kw) -> MMDiT:
    """dit_tiny on 1 s of the tiny preset (32 latents of 8 channels, 16 sync tokens)."""
    torch.manual_seed(0)
    return dit_tiny(duration=1.0, **kw)


def test_shapes_8s_s16k_and_zero_init():
    torch.manual_seed(0)
    net = dit_tiny(audio_preset="s16k", duration=8.0)
    assert (net.latent_len, net.sync_len, net.latent_channels, net.query_dim) == (250, 192, 20, 64)
    kw = inputs(net, 2)
    kw["has_text"][1] = kw["has_video"][0] = False
    v = net(**kw)
    assert v.shape == (2, 250, 20)
    assert torch.equal(v, torch.zeros_like(v))  # zero final projection: the initial velocity is exactly 0
    with pytest.raises(ValueError, match="widths"):
        net(**{**kw, "sync": kw["sync"][..., :512]})


def test_sync_token_times_follow_the_windows():
    times = sync_token_times(192)  # 8 s: 24 windows of 16 frames every 8, 8 tokens (2 frames) each
    assert times[0] == pytest.approx(0.5 / 25) and times[7] == pytest.approx(14.5 / 25)  # window 0: frames 0 … 15
    assert times[8] == pytest.approx(8.5 / 25)  # window 1 starts at frame 8: back 0.24 s from token 7
    assert times[-1] == pytest.approx(198.5 / 25)  # last window: frames 184 … 199
    uniform = torch.arange(192) * 8 / 192  # MMAudio's spread
    assert (times - uniform).abs().max() > 0.28  # read as uniform, a token is up to 0.29 s off
    with pytest.raises(ValueError, match="multiple of 8"):
        sync_token_times(12)


def test_rope_equal_times_get_equal_angles(net_8s):
    T, Ts = net_8s.latent_len, net_8s.sync_len
    audio, sync = net_8s.rope_audio, net_8s.rope_sync  # [L, K/2, (cos, sin)]
    assert audio.shape == (T, net_8s.head_dim // 2, 2) and sync.shape == (Ts, net_8s.head_dim // 2, 2)
    # every sync token sits at the time it shows, in latents (31.25 per second at s16k)
    positions = sync_token_times(Ts) * 31.25
    torch.testing.assert_close(sync, rope_table(positions, net_8s.head_dim))
    angle = torch.atan2(sync[1, 0, 1], sync[1, 0, 0])  # lowest pair rotates 1 rad per latent
    assert float(angle) == pytest.approx(2.5 / 25 * 31.25, abs=1e-6)
    # a sync token and a latent at the same moment rotate alike: token 40 (1.62 s) and a latent there
    torch.testing.assert_close(sync[40], rope_table(torch.tensor([1.62 * 31.25], dtype=torch.float64),
                                                    net_8s.head_dim)[0])
    # MMAudio's layout (latent_rate=None): token i at latent i · T / Ts, bit-identical to latent 125 at i = 96
    torch.manual_seed(0)
    uniform = MMDiT(20, 64, latent_len=T, sync_len=Ts, width=64, depth=2, joint_depth=1, num_heads=2)
    assert torch.equal(uniform.rope_sync[96], uniform.rope_audio[125])
    torch.testing.assert_close(uniform.rope_sync, rope_table(torch.arange(Ts, dtype=torch.float64) * T / Ts, 32))


def test_sync_latent_weights_closed_form():
    w = sync_latent_weights(88, 125, 31.25)  # 4 s at 31.25 latents / s: 11 windows end at frame 95
    assert w.shape == (125, 88) and (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(125))
    # latent 50 (1.584 … 1.616 s) lies inside frames 40-41 (1.58 … 1.66 s): window 5 token 0 and window 4 token 4
    expected = torch.zeros(88)
    expected[[40, 36]] = 0.5
    torch.testing.assert_close(w[50], expected)
    # every latent reads tokens within a token of its own time; past the last window, the nearest token
    times = sync_token_times(88).float()
    covered = torch.arange(125) / 31.25 < 3.8  # the last token shows frames 94-95 (3.74 … 3.82 s)
    assert ((w @ times - torch.arange(125) / 31.25)[covered].abs() <= 0.04 + 1e-6).all()
    assert torch.equal(w[124], torch.nn.functional.one_hot(torch.tensor(87), 88).float())


@torch.no_grad()
def test_audio_output_ignores_query_order(net_8s):
    """No RoPE on queries and a mean-pooled condition: the queries are a set for the audio stream."""
    kw = inputs(net_8s, 2, seed=1)
    perm = torch.randperm(77, generator=torch.Generator().manual_seed(0))
    v = net_8s(**kw)
    torch.testing.assert_close(net_8s(**{**kw, "queries": kw["queries"][:, perm]}), v, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(net_8s(**{**kw, "queries": kw["queries"].flip(2)}), v, atol=1e-3)  # queries matter
    # sync tokens are rotated: reordering them in time changes the output
    assert not torch.allclose(net_8s(**{**kw, "sync": kw["sync"].flip(1)}), v, atol=1e-3)


@torch.no_grad()
@pytest.mark.parametrize("flag, key", [("has_text", "queries"), ("has_video", "sync")])
def test_dropped_condition_uses_the_learned_null(net_8s, flag, key):
    kw, other = inputs(net_8s, 2, seed=2), inputs(net_8s, 2, seed=3)
    kw[flag][0] = False
    a, b = net_8s(**kw), net_8s(**{**kw, key: other[key]})
    assert torch.equal(a[0], b[0])  # the dropped item does not read its tokens
    assert not torch.allclose(a[1], b[1], atol=1e-3)  # the kept item does
    nulls = net_8s(**{**kw, key: torch.zeros_like(kw[key])})
    kw[flag][0] = True
    assert not torch.allclose(net_8s(**{**kw, key: torch.zeros_like(kw[key])})[0], nulls[0], atol=1e-3)  # ≠ zeros


@pytest.mark.parametrize("factory, target", [(dit_s, 160e6), (dit_l, 750e6)])
def test_preset_parameter_counts(factory, target):
    with torch.device("meta"):
        net = factory()
    count = sum(p.numel() for p in net.parameters())
    assert abs(count / target - 1) <= 0.10, f"{factory.__name__}: {count / 1e6:.1f}M vs {target / 1e6:.0f}M"
    assert net.latent_len == 250 and net.sync_len == 192 and net.latent_channels == 20


def test_other_duration_rebuilds_rotations():
    torch.manual_seed(0)
    net = activate(dit_tiny(audio_preset="s16k", duration=8.0)).eval()
    rope_8s = net.rope_audio.clone()
    seq = SequenceConfig(4.0, audio_preset("s16k"))
    assert (seq.latent_len, seq.sync_len) == (125, 88)
    kw = inputs(net, 1)
    kw = {**kw, "x": kw["x"][:, :125], "sync": kw["sync"][:, :88]}
    with torch.no_grad():
        v = net(**kw)  # tables for 4 s built from the input shapes and cached
    audio, sync = net.rotations(125, 88)
    assert net.rotations(125, 88)[0] is audio and (net.latent_len, net.sync_len) == (250, 192)
    assert torch.equal(audio, rope_8s[:125])  # the audio positions are the same 0 … 124
    torch.testing.assert_close(sync, rope_table(sync_token_times(88) * 31.25, 32))
    net.set_lengths(seq.latent_len, seq.sync_len)
    assert net.rope_audio.shape[0] == 125 and torch.equal(net.rope_sync, sync)
    with torch.no_grad():
        assert torch.equal(net(**kw), v) and v.shape == (1, 125, 20) and v.abs().sum() > 0
    assert not any(k.startswith("rope") for k in net.state_dict())  # checkpoints do not depend on the duration


@pytest.mark.parametrize("sync_adaln", [False, True])
def test_gradients_reach_every_parameter(sync_adaln):
    """From the adaLN-Zero init (final layer made non-zero), training opens every path to the loss.

    A zero gate blocks the gradient of everything behind it; each AdamW step opens the gates one hop
    further from the output (audio gates → first-block query/sync gates → their MLPs), so in the
    tiny net's 2 joint blocks every parameter has a gradient from the third backward pass on. An
    activated net has it on the first: no parameter is unused (DDP needs no ``find_unused_parameters``).
    """
    net = small(sync_adaln=sync_adaln)
    with torch.no_grad():
        net.final.linear.weight.normal_(std=0.02)
    kw = inputs(net, 3, seed=4, num_queries=5)
    kw["has_text"][1] = kw["has_video"][2] = False  # the null embeddings and the real tokens both in use
    target = torch.randn_like(kw["x"])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def silent(model: MMDiT) -> list[str]:
        model.zero_grad()
        flow.loss(model(**kw), torch.zeros_like(target), target).backward()
        return [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]

    assert "time_embed.mlp.0.weight" in silent(net)  # closed gates: the condition path is still cut
    opt.step()
    assert any(".streams.queries." in name for name in silent(net))  # behind the first-block query gates
    opt.step()
    assert silent(net) == []
    assert silent(activate(small(sync_adaln=sync_adaln))) == []


def test_sync_adaln_switch():
    plain, injected = small(sync_adaln=False), small()  # dit_tiny has the module by default
    extra = set(dict(injected.named_parameters())) - set(dict(plain.named_parameters()))
    assert extra == {"sync_adaln.segment_pos", "sync_adaln.proj.0.weight", "sync_adaln.proj.0.bias",
                     "sync_adaln.proj.2.weight", "sync_adaln.proj.2.bias"}
    assert set(dict(plain.named_parameters())) <= set(dict(injected.named_parameters()))
    activate(injected)
    kw, other = inputs(injected, 2, seed=5), inputs(injected, 2, seed=6)
    kw["has_video"][0] = False
    with torch.no_grad():
        a, b = injected(**kw), injected(**{**kw, "sync": other["sync"]})
        c_audio = injected.sync_adaln(kw["sync"], injected.sync_weights)
        tokens = injected.sync_adaln.proj(kw["sync"] + injected.sync_adaln.segment_pos.repeat(2, 1))
    assert a.shape == (2, 32, 8) and torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1], atol=1e-3)
    assert c_audio.shape == (2, 32, 64)  # per-latent modulation
    # each latent averages the tokens showing its moment
    torch.testing.assert_close(injected.sync_weights, sync_latent_weights(16, 32, 31.25))
    torch.testing.assert_close(c_audio, injected.sync_weights @ tokens)
    # MMAudio's layout: nearest-exact upsampling, latent j reads sync token floor((j + 0.5) · Ts / T)
    uniform = MMDiT(8, 64, latent_len=32, sync_len=16, width=64, depth=2, joint_depth=1, num_heads=2,
                    sync_adaln=True)
    idx = ((torch.arange(32) + 0.5) * 16 / 32).floor().long()
    torch.testing.assert_close(uniform.sync_weights, torch.nn.functional.one_hot(idx, 16).float())
    with pytest.raises(ValueError, match="multiple of 8"):
        injected(**{**kw, "sync": kw["sync"][:, :12]})


@torch.no_grad()
def test_cfg_with_the_network_batched_equals_two_calls():
    net = activate(small()).double().eval()  # float64: float32 GEMMs round differently for batch 2 and 4
    kw = {k: v.double() if v.is_floating_point() else v for k, v in inputs(net, 2, seed=7, num_queries=5).items()}
    x, t = kw.pop("x"), kw.pop("t")
    uncond = {**kw, "has_text": torch.zeros(2, dtype=torch.bool), "has_video": torch.zeros(2, dtype=torch.bool)}
    guided = flow.cfg_velocity(net, x, t, kw, uncond, w=4.5)
    v_c, v_u = net(x, t, **kw), net(x, t, **uncond)
    assert (guided - (v_u + 4.5 * (v_c - v_u))).abs().max() <= 1e-6
    sample = flow.sample(lambda x_, t_: flow.cfg_velocity(net, x_, t_, kw, uncond), x, steps=3)
    assert sample.shape == x.shape and torch.isfinite(sample).all()


@pytest.mark.parametrize("spec", [
    {"class_path": "reasonaudio.models.dit.dit_tiny", "init_args": {"duration": 1.0, "sync_adaln": True}},
    {"class_path": "reasonaudio.models.dit.MMDiT",
     "init_args": {"latent_channels": 8, "query_dim": 16, "latent_len": 32, "sync_len": 16, "width": 32,
                   "depth": 2, "joint_depth": 1, "num_heads": 2}},
])
def test_usable_as_class_path(spec: dict):
    parser = ArgumentParser()
    parser.add_argument("--net", type=nn.Module)
    net = parser.instantiate(parser.parse_args(["--net", json.dumps(spec)])).net
    assert isinstance(net, MMDiT) and net.latent_len == 32


def sdpa_ops(fn) -> set[str]:
    """Names of the scaled-dot-product-attention kernels ``fn()`` runs (torch profiler)."""
    from torch.profiler import profile
    with profile() as prof:
        fn()
    return {e.name for e in prof.events() if e.name.startswith("aten::_scaled_dot_product")}


@torch.no_grad()
def test_joint_attention_runs_on_the_listed_backends(monkeypatch, net_8s):
    """The backend list of a device type is what the attention runs: the CPU keeps torch's own choice (its
    flash kernel) unless listed; listing the math reference switches every block to it, same output."""
    from torch.nn.attention import SDPBackend

    from reasonaudio.models import dit
    kw = inputs(net_8s, 1)
    assert "cpu" not in dit.ATTENTION_BACKENDS
    assert dit.ATTENTION_BACKENDS["cuda"][:2] == (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION)
    default = net_8s(**kw)
    assert sdpa_ops(lambda: net_8s(**kw)) == {"aten::_scaled_dot_product_flash_attention_for_cpu"}
    monkeypatch.setitem(dit.ATTENTION_BACKENDS, "cpu", (SDPBackend.MATH,))
    assert sdpa_ops(lambda: net_8s(**kw)) == {"aten::_scaled_dot_product_attention_math"}
    torch.testing.assert_close(net_8s(**kw), default, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: which GPU kernel runs")
@torch.no_grad()
def test_joint_attention_takes_flash_on_cuda():
    """On a GPU the attention runs FlashAttention under bf16 autocast and the memory-efficient kernel in fp32."""
    torch.manual_seed(0)
    net = activate(dit_tiny(audio_preset="s16k", duration=8.0)).cuda().eval()
    kw = {k: v.cuda() for k, v in inputs(net, 2).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert sdpa_ops(lambda: net(**kw)) == {"aten::_scaled_dot_product_flash_attention"}
    assert sdpa_ops(lambda: net(**kw)) == {"aten::_scaled_dot_product_efficient_attention"}


@torch.no_grad()
def test_bf16_autocast_keeps_rope_and_timestep_features_fp32(monkeypatch, net_8s):
    """Under bf16 autocast the matmuls run in bf16 but the sinusoidal timestep features and the RoPE rotation
    stay float32 (bf16 angles at t · 1000 or position 250 are off by up to a radian); the output stays close
    to fp32."""
    from reasonaudio.models import dit
    kw = inputs(net_8s, 2)
    rotations = []

    def recording_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        out = apply_rope(x, table)
        rotations.append((x, table, out))
        return out

    apply_rope = dit.apply_rope
    monkeypatch.setattr(dit, "apply_rope", recording_rope)
    features = []
    hook = net_8s.time_embed.mlp[0].register_forward_pre_hook(lambda _, args: features.append(args[0]))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net_8s(**kw)
    finally:
        hook.remove()
    t = kw["t"].double()[:, None] * 1000 * torch.exp(-torch.arange(128, dtype=torch.float64) * torch.log(
        torch.tensor(1e4, dtype=torch.float64)) / 128)
    assert features[0].dtype == torch.float32
    torch.testing.assert_close(features[0].double(), torch.cat([t.cos(), t.sin()], -1), rtol=0, atol=1e-3)
    assert rotations and all(x.dtype == torch.bfloat16 and table.dtype == torch.float32 for x, table, _ in rotations)
    for x, table, out in rotations:  # rotated in float32, rounded to bf16 once
        assert torch.equal(out, apply_rope(x.float(), table).bfloat16())
    reference = net_8s(**kw)
    error = ((mixed.float() - reference).norm() / reference.norm()).item()
    assert error < 3e-2, error
