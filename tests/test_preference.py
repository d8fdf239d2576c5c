"""Preference objectives (SFT / RWR / Flow-DPO / β-DPO) and PreferencePostTrain's LoRA reference, in closed forms."""
from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from reasonaudio import flow
from reasonaudio.models.dit import dit_tiny
from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl
from reasonaudio.preference_objectives import (DPO, RWR, SFT, BetaDPO, dpo_loss, group_winner_weights,
                                               implicit_accuracy, per_sample_error, preference_pairs, rwr_weights)
from reasonaudio.systems.policy_weights import add_lora, base_key

pytestmark = pytest.mark.usefixtures("one_thread")

# --------------------------------------------------------------------------- pure functions


def test_per_sample_error_reductions():
    v, target = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    target[1] = 2.0
    assert torch.equal(per_sample_error(v, target), torch.tensor([1.0, 4.0]))
    assert torch.equal(per_sample_error(v, target, "sum"), torch.tensor([12.0, 48.0]))
    with pytest.raises(ValueError, match="reduction"):
        per_sample_error(v, target, "max")


def test_group_weights_and_pairs():
    rewards = torch.tensor([[0.1, 0.9, 0.9, 0.0], [0.5, 0.2, 0.7, 0.3]])
    assert torch.equal(group_winner_weights(rewards), torch.tensor([[0.0, 1, 1, 0], [0, 0, 1, 0]]))
    soft = rwr_weights(rewards, "softmax", temperature=0.5)
    assert torch.allclose(soft, 4 * torch.softmax(rewards / 0.5, dim=1)) and torch.allclose(soft.mean(1), torch.ones(2))
    assert torch.allclose(rwr_weights(rewards, "exp"), torch.exp(rewards))
    pairs = preference_pairs(rewards)  # arg-max (first on ties) vs arg-min
    assert pairs.group.tolist() == [0, 1] and pairs.winner.tolist() == [1, 2] and pairs.loser.tolist() == [3, 1]
    everything = preference_pairs(rewards, "all")
    gaps = rewards[everything.group, everything.winner] - rewards[everything.group, everything.loser]
    assert len(everything) == 5 + 6 and (gaps > 0).all()  # group 0 has a tie: 5 strict ordered pairs, group 1 six
    assert len(preference_pairs(rewards, "all", min_gap=0.35)) == 4 + 2
    assert len(preference_pairs(torch.full((2, 3), 0.4))) == 0  # no spread, no pair


def test_rwr_candidate_sampling_is_unbiased():
    torch.manual_seed(0)
    rewards, err = torch.rand(3, 8), torch.rand(3, 8)
    objective = RWR("softmax", 0.5, samples_per_group=2)
    w = objective.weights(rewards)
    full = (w * err).mean()
    draws = []
    for _ in range(4000):
        chosen = objective.select(w)
        assert chosen.sum(1).tolist() == [2, 2, 2]
        draws.append(objective(err[chosen], w[chosen]))
    assert torch.stack(draws).mean().item() == pytest.approx(full.item(), rel=0.02)
    assert SFT().select(SFT().weights(rewards)).sum() == 3  # SFT: the winners, no sampling


def test_dpo_loss_closed_form_and_ties():
    out = dpo_loss(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0]), torch.tensor([2.0, 2.0]),
                   torch.tensor([2.0, 2.0]), beta=5.0)
    inside = torch.tensor([-2.5 * ((1 - 2) - (3 - 2)), 0.0])  # [5, 0]
    assert torch.allclose(out.inside, inside)
    assert torch.allclose(out.loss, -F.logsigmoid(inside).mean())
    assert out.implicit_acc == pytest.approx(0.75)  # one right, one tie counted 1/2
    assert implicit_accuracy(torch.tensor([-1.0, 0.0, 0.0, 2.0])) == pytest.approx(0.5)


def test_dpo_gradient_two_sample_closed_case():
    """v_θ = θ (a constant field): ∇L = β/2 · σ(−inside) · 2(v*_l − v*_w) at θ = θ_ref (σ(0) = 1/2), and a step
    lowers the winner's error relative to the loser's."""
    torch.manual_seed(0)
    d, beta = 6, 5.0
    theta_ref = torch.randn(d)
    target_w, target_l = torch.randn(d), torch.randn(d)
    theta = theta_ref.clone().requires_grad_(True)
    objective = DPO(beta=beta, reduction="sum")
    errors = [per_sample_error(x[None], y[None], "sum") for x, y in
              ((theta, target_w), (theta, target_l), (theta_ref, target_w), (theta_ref, target_l))]
    out = objective(*errors, reward_gap=torch.ones(1))
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-7)
    out.loss.backward()
    assert torch.allclose(theta.grad, beta / 2 * (target_l - target_w), atol=1e-6)
    with torch.no_grad():
        stepped = theta - 0.01 * theta.grad
        margin = lambda x: ((x - target_w) ** 2).sum() - ((x - target_l) ** 2).sum()  # noqa: E731
        assert margin(stepped) < margin(theta_ref)  # the step moves θ along v*_w − v*_l


def test_beta_dpo_running_statistics_and_beta():
    torch.manual_seed(0)
    objective = BetaDPO(beta=5.0, a=0.6, rho=0.0, momentum=0.9, margin="reward")
    e = torch.ones(4)
    gap = torch.tensor([0.1, 0.2, 0.3, 0.6])
    out = objective(e, e, e, e, gap)
    m0 = 0.1 * gap.mean()
    assert torch.allclose(objective.margin_mean, m0) and torch.allclose(objective.margin_std, 0.1 * gap.std())
    assert out.beta == pytest.approx(5.0 * (1 + 0.6 * (gap.mean() - m0)).item(), rel=1e-6)
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-7)  # policy = reference
    keep_some = BetaDPO(beta=5.0, rho=0.5)
    assert int(keep_some(e, e, e, e, gap).kept.sum()) == 2  # ⌊4 · (1 − ρ)⌋ pairs kept
    objective.eval()
    before = objective.margin_mean.clone()
    objective(e, e, e, e, gap)
    assert torch.equal(objective.margin_mean, before)  # statistics move in training only


# --------------------------------------------------------------------------- the system


def _randomise(net: torch.nn.Module) -> torch.nn.Module:
    """The DiT's zero-initialised layers (adaLN, final projection) random, so its velocity is not 0."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return net


@pytest.fixture(scope="module")
def conditioner(tmp_path_factory):
    from reasonaudio.models.conditioners import MLLMQueryConditioner

    folder = write_tiny_qwen_vl(tmp_path_factory.mktemp("mllm"), ["a ball bounces", "a bell rings"])
    return MLLMQueryConditioner(folder, out_dim=64, num_queries=4)


def _system(conditioner, objective):
    from reasonaudio.systems.post_train import PreferencePostTrain

    torch.manual_seed(0)
    system = PreferencePostTrain(_randomise(dit_tiny(duration=2.0, query_dim=64)), copy.deepcopy(conditioner),
                                 objective, text_drop=0.0, video_drop=0.0)
    logged: dict[str, float] = {}
    system.log = lambda name, value, **kw: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    system.log_dict = lambda values, **kw: logged.update({k: float(torch.as_tensor(v).detach()) for k, v in values.items()})
    return system, logged


def _groups(g: int = 3, k: int = 4) -> dict:
    torch.manual_seed(2)
    return {"latents": torch.randn(g, k, 63, 8), "rewards": torch.rand(g, k), "sync": torch.randn(g, 40, 768),
            "caption": ["a ball bounces", "a bell rings", ""][:g], "mllm_video": [None] * g,
            "has_text": torch.tensor([True, True, False][:g]), "has_video": torch.zeros(g, dtype=torch.bool),
            "id": [f"c{i}" for i in range(g)]}


def test_lora_disabled_output_is_the_base_model_bit_for_bit():
    net = _randomise(dit_tiny(duration=2.0, query_dim=64))
    base = copy.deepcopy(net)
    wrapped = add_lora(net, rank=64)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    linears = sum(isinstance(m, torch.nn.Linear) for m in base.modules())
    assert len(trainable) == 2 * linears  # every linear layer of the DiT has an adapter
    torch.manual_seed(3)
    x, t = torch.randn(2, 63, 8), torch.rand(2)
    kw = dict(queries=torch.randn(2, 4, 64), sync=torch.randn(2, 40, 768), has_text=torch.tensor([True, False]),
              has_video=torch.tensor([True, True]))
    expected = base(x, t, **kw)
    assert torch.equal(wrapped(x, t, **kw), expected)  # B = 0 at initialisation
    with torch.no_grad():
        for n, p in wrapped.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.1)
    assert not torch.allclose(wrapped(x, t, **kw), expected)
    with wrapped.disable_adapter():
        assert torch.equal(wrapped(x, t, **kw), expected)
    assert {base_key(k) for k in wrapped.state_dict()} - {None} == set(base.state_dict())


def test_dpo_at_initialisation_is_ln2_with_accuracy_half(conditioner):
    system, logged = _system(conditioner, DPO(beta=5.0))
    loss = system.training_step(_groups(), 0)
    assert torch.equal(loss, -F.logsigmoid(torch.zeros(())))  # ln 2 in float32, exactly
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert logged["train/implicit_acc"] == 0.5 and logged["train/inside_abs"] == 0.0
    assert logged["train/err_w"] == logged["train/ref_err_w"] and logged["train/v_norm_ratio"] == 1.0
    assert logged["train/pairs"] == 3.0


def test_dpo_step_lowers_winner_error_relative_to_loser(conditioner):
    system, _ = _system(conditioner, DPO(beta=5.0))
    batch = _groups()
    cond = system._conditions(batch)
    pairs = system.objective.pairs(batch["rewards"])
    x1 = torch.cat([batch["latents"][pairs.group, pairs.winner], batch["latents"][pairs.group, pairs.loser]])
    torch.manual_seed(4)
    x0 = torch.randn_like(x1[:3]).repeat(2, 1, 1)
    t = torch.rand(3).repeat(2)
    c = {k: v[pairs.group].repeat(2, *[1] * (v.dim() - 1)) for k, v in cond.items()}

    def margin() -> torch.Tensor:
        v, v_ref, target = system._velocities(x1, x0, t, c)
        err_w, err_l = per_sample_error(v, target, "sum").chunk(2)
        ref_w, ref_l = per_sample_error(v_ref, target, "sum").chunk(2)
        return (err_w - ref_w) - (err_l - ref_l)  # Δ_w − Δ_l per pair

    opt = torch.optim.SGD([p for p in system.parameters() if p.requires_grad], lr=1e-3)
    v, v_ref, target = system._velocities(x1, x0, t, c)
    err_w, err_l = per_sample_error(v, target, "sum").chunk(2)
    ref_w, ref_l = per_sample_error(v_ref, target, "sum").chunk(2)
    before = system.objective(err_w, err_l, ref_w, ref_l, torch.ones(3)).loss
    before.backward()  # at initialisation (B = 0) only the B matrices get a gradient
    assert all(p.grad is not None for n, p in system.named_parameters() if ".lora_B." in n)
    opt.step()
    with torch.no_grad():
        assert margin().sum() < 0  # the winners' errors fell relative to the losers'
        v, v_ref, target = system._velocities(x1, x0, t, c)
        err_w, err_l = per_sample_error(v, target, "sum").chunk(2)
        after = system.objective(err_w, err_l, ref_w, ref_l, torch.ones(3)).loss
    assert after < before


def test_sft_with_equal_weights_is_the_pretraining_loss_on_winners(conditioner):
    system, logged = _system(conditioner, SFT())
    batch = _groups()
    batch["rewards"] = torch.tensor([[0.1, 0.8, 0.2, 0.0], [0.9, 0.1, 0.2, 0.3], [0.0, 0.1, 0.2, 0.3]])
    cond = system._conditions(batch)
    torch.manual_seed(5)
    loss = system._pointwise_step(batch["latents"], batch["rewards"], cond)
    torch.manual_seed(5)  # the same noise and t, drawn as FlowMatchingPretrain.training_step does
    x1 = batch["latents"][torch.arange(3), torch.tensor([1, 0, 3])]
    x0 = torch.randn_like(x1)
    t = flow.sample_t(3)
    expected = flow.loss(system.net(flow.interpolate(x0, x1, t), t, **cond), x0, x1)
    assert torch.allclose(loss, expected, rtol=1e-6, atol=0)
    assert logged["train/v_norm_ratio"] == 1.0 and logged["train/err"] == pytest.approx(logged["train/ref_err"])


def test_rwr_with_equal_rewards_is_sft_on_every_candidate(conditioner):
    batch = _groups(g=2, k=3)
    batch["rewards"] = torch.full((2, 3), 0.4)
    losses = []
    for objective in (RWR("softmax", 0.3), RWR("exp", 1.0)):
        system, _ = _system(conditioner, objective)
        cond = system._conditions(batch)
        torch.manual_seed(6)
        losses.append(system._pointwise_step(batch["latents"], batch["rewards"], cond))
    torch.manual_seed(6)
    x1 = batch["latents"].flatten(0, 1)
    x0 = torch.randn_like(x1)
    t = flow.sample_t(6)
    c = {k: v.repeat_interleave(3, 0) for k, v in cond.items()}
    plain = flow.loss(system.net(flow.interpolate(x0, x1, t), t, **c), x0, x1)
    assert torch.allclose(losses[0], plain, rtol=1e-6, atol=0)  # K · softmax of equal rewards = 1
    assert torch.allclose(losses[1], math.exp(0.4) * plain, rtol=1e-6, atol=0)


def test_condition_dropout_is_shared_within_a_group(conditioner):
    """The rows the DPO loss compares (winner i and loser i of one pair) reach the network with the same
    text / video dropout, conditions, noise and flow time: dropout is drawn once per group, not per row."""
    from reasonaudio.systems.post_train import PreferencePostTrain

    torch.manual_seed(0)
    system = PreferencePostTrain(_randomise(dit_tiny(duration=2.0, query_dim=64)), copy.deepcopy(conditioner), DPO(),
                                 text_drop=0.5, video_drop=0.5)
    system.log = system.log_dict = lambda *a, **kw: None
    batch = _groups(g=6, k=4)
    batch["has_text"], batch["has_video"] = torch.ones(6, dtype=torch.bool), torch.ones(6, dtype=torch.bool)
    frames = torch.Generator().manual_seed(3)
    batch["caption"] = ["a ball bounces", "a bell rings"] * 3
    batch["mllm_video"] = [torch.randint(0, 256, (2, 3, 56, 56), dtype=torch.uint8, generator=frames) for _ in range(6)]
    seen: list[tuple[tuple, dict]] = []
    system.net.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args, kwargs)), with_kwargs=True)
    torch.manual_seed(11)
    system.training_step(batch, 0)
    (xt, t), cond = seen[0]  # the policy's pass ([2P] rows: winners, then losers)
    p = xt.shape[0] // 2
    assert p == 6
    # the draw dropped the video of some groups and kept that of others, so sharing is tested
    kept_video = cond["has_video"][:p]
    assert 0 < int(kept_video.sum()) < p, kept_video
    for name in ("has_text", "has_video", "queries", "sync"):
        assert torch.equal(cond[name][:p], cond[name][p:]), name  # winner row i == loser row i
    assert torch.equal(t[:p], t[p:])
    # x_t = (1 − t) x0 + t x1 with one x0 per pair: winner row − loser row = t · (x1_w − x1_l)
    pairs = system.objective.pairs(batch["rewards"])
    x1 = batch["latents"]
    expected = t[:p, None, None] * (x1[pairs.group, pairs.winner] - x1[pairs.group, pairs.loser])
    torch.testing.assert_close(xt[:p] - xt[p:], expected, rtol=1e-5, atol=1e-5)


def test_beta_dpo_in_the_system_uses_the_pairs_reward_gaps(conditioner):
    system, logged = _system(conditioner, BetaDPO(beta=5.0, a=0.6, rho=0.0))
    batch = _groups()
    loss = system.training_step(batch, 0)
    gaps = batch["rewards"].max(1).values - batch["rewards"].min(1).values  # arg-max vs arg-min pairs
    assert logged["train/beta"] == pytest.approx(5.0 * (1 + 0.6 * 0.9 * gaps.mean().item()), rel=1e-5)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7) and logged["train/implicit_acc"] == 0.5


@pytest.mark.slow
def test_dpo_batch_without_pairs_under_ddp(tmp_path):
    """2 processes (gloo): rank 1's batches have no pair. Its step returns a zero loss that still reaches every
    LoRA weight, so the gradient all-reduce runs on both ranks (``None`` would skip it on rank 1 and leave rank 0
    waiting) and both ranks end with the same weights, moved by rank 0's pairs alone."""
    mllm = write_tiny_qwen_vl(tmp_path / "mllm", ["a ball bounces", "a bell rings"])
    worker = Path(__file__).with_name("dpo_ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           str(tmp_path), str(mllm)]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 2
    assert r1["returned"] == [0.0, 0.0]
    assert all(loss > 0 for loss in r0["returned"])  # rank 0 has pairs: a real DPO loss
    assert set(r0["weights"]) == set(r1["weights"]) and r0["weights"]
    for name, w in r0["weights"].items():
        assert torch.equal(w, r1["weights"][name]), name  # one all-reduce per step on both ranks
    moved = max((w - r0["init"][name]).abs().max().item() for name, w in r0["weights"].items())
    assert moved > 1e-4
