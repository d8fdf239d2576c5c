"""``reasonaudio.models.parallel`` in one process: which modules become FSDP2 units, activation checkpointing, the
strategy's arguments, and the strategy overlays as LightningCLI reads them. The sharded runs themselves
(2 processes, gloo) are in test_strategies.py."""
from __future__ import annotations

import copy
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import AutoTokenizer, Qwen2Config

from reasonaudio import flow, parallel
from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.models.conditioners import MLLMQueryConditioner, TextLLMQueryConditioner
from reasonaudio.models.dit import MMDiTBlock, dit_tiny
from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl

CAPTIONS = ["a dog barks", "rain falls"]


@pytest.fixture(scope="module")
def mllm(tmp_path_factory):
    return write_tiny_qwen_vl(tmp_path_factory.mktemp("mllm") / "qwen", CAPTIONS)


def test_frozen_units_follow_the_modules_the_conditioner_calls(mllm):
    backbone = MLLMQueryConditioner(str(mllm), out_dim=64, num_queries=4).backbone
    units = parallel.frozen_units(backbone)
    text, visual = backbone.language_model, backbone.visual
    # no-split layers first (inner units before the towers that contain them), then embeddings, then towers
    assert units == [*visual.blocks, *text.layers, text.embed_tokens, visual, text]
    assert all(not p.requires_grad for u in units for p in u.parameters())


def test_frozen_units_of_a_text_llm_skip_containers_and_keep_the_final_norm(mllm):
    tokenizer = AutoTokenizer.from_pretrained(mllm)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    backbone = TextLLMQueryConditioner(config, out_dim=16, num_queries=4, tokenizer=tokenizer).backbone
    assert parallel.frozen_units(backbone) == [*backbone.layers, backbone.embed_tokens, backbone.norm]


@pytest.fixture
def one_rank(tmp_path):
    """A gloo process group of one rank and its 1-D mesh (FSDP2 needs a group even for one process)."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["mllm", "text_llm"])
def test_shard_system_on_one_rank_computes_what_the_plain_model_computes(mllm, one_rank, kind):
    torch.manual_seed(0)
    if kind == "mllm":
        conditioner = MLLMQueryConditioner(str(mllm), out_dim=16, num_queries=4)
    else:
        tokenizer = AutoTokenizer.from_pretrained(mllm)
        config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1)
        conditioner = TextLLMQueryConditioner(config, out_dim=16, num_queries=4, tokenizer=tokenizer)
    net = dit_tiny(audio_preset="tiny", duration=2.0, query_dim=16)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref_net, ref_conditioner = copy.deepcopy(net), copy.deepcopy(conditioner)
    parallel.shard_system(net, conditioner, one_rank, parallel.ShardingPlan(param_dtype=None, reduce_dtype=None))
    assert isinstance(net, FSDPModule) and isinstance(conditioner, FSDPModule)
    assert all(isinstance(p, DTensor) for p in [*net.parameters(), *conditioner.parameters()])

    g = torch.Generator().manual_seed(1)
    videos = [torch.randint(0, 256, (4, 3, 56, 56), generator=g, dtype=torch.uint8), None]
    x1 = torch.randn(2, net.latent_len, net.latent_channels, generator=g)
    sync = torch.randn(2, net.sync_len, 768, generator=g)
    x0, t = torch.randn(x1.shape, generator=g), torch.tensor([0.3, 0.8])
    has_video = torch.tensor([kind == "mllm", False])

    def loss(dit, cond):
        queries = cond(videos if kind == "mllm" else None, CAPTIONS, has_video=has_video)
        out = dit(flow.interpolate(x0, x1, t), t, queries=queries, sync=sync, has_text=torch.ones(2, dtype=torch.bool),
                  has_video=has_video)
        value = flow.loss(out, x0, x1)
        value.backward()
        return value.detach()

    torch.testing.assert_close(loss(net, conditioner), loss(ref_net, ref_conditioner), rtol=1e-6, atol=0)
    for module, ref in ((net, ref_net), (conditioner, ref_conditioner)):
        for (name, p), q in zip(module.named_parameters(), ref.parameters()):
            assert (p.grad is None) == (q.grad is None) == (not q.requires_grad), name
            if q.grad is not None:
                torch.testing.assert_close(p.grad.full_tensor(), q.grad, rtol=1e-5, atol=1e-8,
                                           msg=lambda m: f"{name}: {m}")


def _step(net, x1, cond, x0, t):
    loss = flow.loss(net(flow.interpolate(x0, x1, t), t, **cond), x0, x1)
    loss.backward()
    return loss.detach()


def test_activation_checkpointing_recomputes_blocks_and_changes_nothing_else():
    torch.manual_seed(0)
    net = dit_tiny(audio_preset="tiny", duration=2.0, query_dim=16)
    with torch.no_grad():  # leave the zero init, so that every block gets a gradient
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref = copy.deepcopy(net)
    blocks = parallel.dit_blocks(net)
    assert [type(b) for b in blocks] == [MMDiTBlock] * 3 and blocks[0] is net.joint_blocks[0]
    parallel.apply_activation_checkpointing(blocks)
    assert list(net.state_dict()) == list(ref.state_dict())  # checkpoint keys unchanged

    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(2, net.latent_len, net.latent_channels, generator=g)
    cond = dict(queries=torch.randn(2, 5, 16, generator=g), sync=torch.randn(2, net.sync_len, 768, generator=g),
                has_text=torch.tensor([True, False]), has_video=torch.tensor([True, True]))
    x0, t = torch.randn(x1.shape, generator=g), torch.tensor([0.3, 0.8])
    calls = []
    blocks[1].register_forward_pre_hook(lambda *_: calls.append(1))
    loss = _step(net, x1, cond, x0, t)
    assert len(calls) == 2  # forward, then again in backward
    assert torch.equal(loss, _step(ref, x1, cond, x0, t))
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=lambda m: f"{name}: {m}")
    assert all(p.grad.abs().sum() > 0 for p in blocks[1].parameters())


def test_parallelize_leaves_other_strategies_alone(mllm):
    system = SimpleNamespace(net=dit_tiny(), conditioner=None, _trainer=SimpleNamespace(strategy=DDPStrategy()))
    parallel.parallelize(system)
    assert not isinstance(system.net, FSDPModule)
    system._trainer = None  # a system used outside a trainer (generation, tests)
    parallel.parallelize(system)
    assert not isinstance(system.net, FSDPModule)


def test_fsdp2_strategy_arguments():
    strategy = parallel.FSDP2Strategy()
    assert strategy.plan == parallel.ShardingPlan(torch.bfloat16, torch.float32, True)
    policy = strategy.plan.mp_policy()
    assert policy.param_dtype == torch.bfloat16 and policy.reduce_dtype == torch.float32
    assert not policy.cast_forward_inputs
    assert parallel.FSDP2Strategy(param_dtype=None, activation_checkpointing=False).plan.param_dtype is None
    with pytest.raises(ValueError, match="param_dtype must be one of"):
        parallel.FSDP2Strategy(param_dtype="fp8")


@pytest.mark.parametrize("overlay,strategy_type", [("ddp", DDPStrategy), ("fsdp", parallel.FSDP2Strategy)])
def test_strategy_overlays_parse_and_instantiate(mllm, monkeypatch, tmp_path, overlay, strategy_type):
    monkeypatch.setattr(sys, "argv", ["reasonaudio"])
    cli = build_cli(["--config", str(CONFIG_DIR / "pretrain.yaml"), "--config",
                     str(CONFIG_DIR / "strategy" / f"{overlay}.yaml"), "--trainer.accelerator=cpu",
                     f"--trainer.logger.init_args.save_dir={tmp_path}",
                     f"--model.init_args.conditioner.init_args.model={mllm}"], run=False)
    strategy = cli.trainer.strategy
    assert type(strategy) is strategy_type
    assert cli.trainer.precision == "bf16-mixed"
    if overlay == "fsdp":
        assert strategy.plan == parallel.ShardingPlan(torch.bfloat16, torch.float32, True)
        assert strategy._save_distributed_checkpoint is False
    else:
        chosen = {k: strategy._ddp_kwargs[k] for k in ("find_unused_parameters", "broadcast_buffers",
                                                        "gradient_as_bucket_view")}
        assert chosen == {"find_unused_parameters": False, "broadcast_buffers": False, "gradient_as_bucket_view": True}
