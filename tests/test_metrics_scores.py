"""KL divergence and Inception Score: closed forms, av-benchmark's formulas, and distributed states.

The last test runs two real processes (torch.distributed, gloo on CPU) and checks that FD, KL and
IS synchronised by torchmetrics equal the single-process values.
"""
from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from reasonaudio.metrics.backbones.panns import CNN14_TINY, Cnn14
from reasonaudio.metrics.frechet import FrechetDistance
from reasonaudio.metrics.scores import InceptionScore, KLDivergence, inception_score, kl_divergence

# --------------------------------------------------------------------------- KL


def test_kl_of_identical_logits_is_zero():
    logits = torch.randn(6, 527, generator=torch.Generator().manual_seed(0)) * 3
    torch.testing.assert_close(kl_divergence(logits, logits.clone()), torch.zeros(6, dtype=torch.float64))


def test_kl_hand_computation_and_direction():
    gt = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)  # p = (1/4, 3/4)
    pred = torch.tensor([[0.0, 0.0]], dtype=torch.float64)  # q = (1/2, 1/2)
    kl_pq = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    kl_qp = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(kl_divergence(gt, pred)[0]) == pytest.approx(kl_pq, rel=1e-12)
    assert float(kl_divergence(pred, gt)[0]) == pytest.approx(kl_qp, rel=1e-12)
    assert kl_pq != pytest.approx(kl_qp)  # KL(gt ‖ generated), not the reverse


def test_kl_matches_av_benchmark_formula():
    g = torch.Generator().manual_seed(1)
    gt, pred = torch.randn(9, 527, generator=g) * 2, torch.randn(9, 527, generator=g) * 2
    # av-benchmark: F.kl_div(log_softmax(pred), log_softmax(gt), reduction='sum', log_target=True) / N
    expected = F.kl_div(F.log_softmax(pred.double(), 1), F.log_softmax(gt.double(), 1), reduction="sum",
                        log_target=True) / 9
    metric = KLDivergence()
    metric.update(pred[:4], gt[:4])
    metric.update(pred[4:], gt[4:])
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-12)
    rank0, rank1 = KLDivergence(), KLDivergence()
    rank0.update(pred[:2], gt[:2])
    rank1.update(pred[2:], gt[2:])
    rank0.merge_state(rank1)
    assert float(rank0.compute()) == pytest.approx(float(expected), rel=1e-12)


def test_kl_through_a_backbone_and_errors():
    torch.manual_seed(0)
    model = Cnn14(CNN14_TINY)
    gt, pred = 0.1 * torch.randn(2, 16000), 0.1 * torch.randn(2, 16000)
    metric = KLDivergence(model)
    metric.update(pred, gt, sample_rate=16000)
    expected = kl_divergence(model.embed(gt, 16000).logits, model.embed(pred, 16000).logits).mean()
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-9)
    with pytest.raises(ValueError, match="paired logits"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="no paired clips"), pytest.warns(UserWarning, match="before the"):
        KLDivergence().compute()


# --------------------------------------------------------------------------- IS


def test_is_of_uniform_predictions_is_one():
    mean, std = inception_score(torch.zeros(50, 527))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_is_of_one_hot_predictions_with_k_equally_used_classes_is_k(k):
    onehot = 60.0 * F.one_hot(torch.arange(10 * k * 2) % k, 527).double()  # softmax ≈ one-hot (e^-60)
    mean, std = inception_score(onehot, splits=1)
    assert mean == pytest.approx(k, rel=1e-9)
    # unshuffled, every one of the 10 splits uses the k classes equally
    mean, std = inception_score(onehot, splits=10, seed=None)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_is_hand_computation_and_seeded_shuffle():
    # two clips, p1 = (0.8, 0.2), p2 = (0.2, 0.8): marginal (0.5, 0.5), KL = 0.8 ln 1.6 + 0.2 ln 0.4 each
    logits = torch.log(torch.tensor([[0.8, 0.2], [0.2, 0.8]], dtype=torch.float64))
    expected = math.exp(0.8 * math.log(1.6) + 0.2 * math.log(0.4))
    assert inception_score(logits, splits=1)[0] == pytest.approx(expected, rel=1e-12)
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(37, 20, generator=g) * 3
    perm = torch.from_numpy(np.random.RandomState(2020).permutation(37))
    assert inception_score(logits) == pytest.approx(inception_score(logits[perm], seed=None), rel=1e-12)
    # splits i·N//10 … (i+1)·N//10 of the shuffled clips, each with its own marginal
    shuffled = F.softmax(logits[perm].double(), 1)
    scores = []
    for i in range(10):
        p = shuffled[i * 37 // 10:(i + 1) * 37 // 10]
        scores.append(math.exp(float((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean())))
    assert inception_score(logits) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-12)


def test_is_metric_states_and_errors():
    logits = torch.randn(30, 12, generator=torch.Generator().manual_seed(3))
    rank0, rank1 = InceptionScore(), InceptionScore()
    rank0.update(logits[:13])
    rank1.update(logits[13:])
    rank1.merge_state(rank0)  # torchmetrics puts the incoming state first: rank 0's clips, then rank 1's
    mean, std = rank1.compute()
    assert (float(mean), float(std)) == pytest.approx(inception_score(logits), rel=1e-12)
    with pytest.raises(ValueError, match="at least 10 clips"):
        inception_score(logits[:9])
    with pytest.raises(ValueError, match="no clips"), pytest.warns(UserWarning, match="before the"):
        InceptionScore().compute()


# --------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(4)
    return (torch.randn(40, 6, generator=g), torch.randn(30, 6, generator=g) + 0.5,  # FD real / fake
            torch.randn(20, 16, generator=g), torch.randn(20, 16, generator=g),  # KL gt / pred
            torch.randn(26, 16, generator=g) * 2)  # IS


def _rank(rank: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    real, fake, gt, pred, logits = _data()
    fd, kl, isc = FrechetDistance(num_features=6), KLDivergence(), InceptionScore()
    fd.update(real[rank::2], real=True)
    fd.update(fake[rank * 15:(rank + 1) * 15], real=False)
    kl.update(pred[rank::2], gt[rank::2])
    isc.update(logits[rank * 13:(rank + 1) * 13])  # rank order = the single-process order
    values = (float(fd.compute()), float(kl.compute()), tuple(float(v) for v in isc.compute()))
    if rank == 0:
        queue.put(values)
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned interpreters import torch + torchmetrics: ~35 s on 2 shared cores
@pytest.mark.timeout(180)
def test_metrics_synchronise_across_two_processes():
    real, fake, gt, pred, logits = _data()
    fd, kl = FrechetDistance(num_features=6), KLDivergence()
    fd.update(real, real=True)
    fd.update(fake, real=False)
    kl.update(pred, gt)
    expected = (float(fd.compute()), float(kl.compute()), inception_score(logits))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = queue.get(timeout=100)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert got[0] == pytest.approx(expected[0], rel=1e-10)
    assert got[1] == pytest.approx(expected[1], rel=1e-10)
    assert got[2] == pytest.approx(expected[2], rel=1e-10)
