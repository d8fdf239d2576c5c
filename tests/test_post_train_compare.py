"""The comparison's own arithmetic: Fréchet distance, the results table (paired deltas), the docs block, the CLI lines."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from reasonaudio.experiments.post_train_compare import (MARKERS, _replace_block, frechet_distance, post_train_args,
                                                        results_table)
from reasonaudio.preference import reward_ranking


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (200_000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5])
    assert frechet_distance(a, a + shift) == pytest.approx(float((shift**2).sum()), rel=1e-6)  # same covariance
    # N(0, I) against N(0, 4I) in 3-d: tr(I + 4I − 2·2I) = 3
    assert frechet_distance(a, 2 * rng.normal(0, 1, (200_000, 3))) == pytest.approx(3.0, abs=0.05)


def test_results_table_reports_mean_std_and_paired_deltas():
    base = {"0": dict(onset_error=0.20, onset_f1=0.2, fd_latent=0.4, fd_mel=5.0, timbre_agreement=0.3),
            "1": dict(onset_error=0.24, onset_f1=0.3, fd_latent=0.4, fd_mel=5.0, timbre_agreement=0.3)}
    dpo = {"0": dict(base["0"], onset_error=0.10), "1": dict(base["1"], onset_error=0.16)}
    table = results_table({"models": {"pretrained": base, "dpo": dpo}, "labels": {"dpo": "DPO"}})
    rows = table.splitlines()
    assert rows[2].startswith("| pretrained | 220.0 ± 28.3 | 0.250 ± 0.071 | — | — |")
    assert rows[3].startswith("| DPO | 130.0 ± 42.4 | 0.250 ± 0.071 | -90.0 ± 14.1 | 0.000 ± 0.000 |")  # Δ per seed: −100, −80


def test_docs_block_is_replaced_between_markers(tmp_path: Path):
    doc = tmp_path / "results.md"
    doc.write_text(f"# Results\n\nintro\n\n{MARKERS[0]}\nold table\n{MARKERS[1]}\n\nanalysis\n")
    _replace_block(doc, "new table")
    assert doc.read_text() == f"# Results\n\nintro\n\n{MARKERS[0]}\nnew table\n{MARKERS[1]}\n\nanalysis\n"
    fresh = tmp_path / "other.md"
    _replace_block(fresh, "t")
    assert fresh.read_text() == f"{MARKERS[0]}\nt\n{MARKERS[1]}\n"


def test_post_train_command_line():
    args = post_train_args("dpo", Path("out"), Path("groups"), Path("cache"), Path("pre.safetensors"), Path("mllm"),
                           steps=7, seed=3, extra=["--model.init_args.objective.init_args.beta=50"])
    assert args[:2] == ["fit", "--config"] and args[2].endswith("lightning_configs/post_train_dpo.yaml")
    assert {"--seed_everything=3", "--trainer.max_steps=7", "--model.init_args.export=out/export",
            "--data.init_args.groups=groups", "--model.init_args.objective.init_args.beta=50"} <= set(args)


def test_reward_ranking_closed_form():
    # group 0: reward orders the errors perfectly; group 1: exactly backwards, one pair below the 50 ms gap,
    # one reward tie (counted 1/2)
    rewards = [np.array([0.9, 0.5, 0.1]), np.array([0.2, 0.6, 0.6, 0.995])]
    errors = [np.array([0.01, 0.10, 0.30]), np.array([0.02, 0.20, 0.40, 0.43])]
    out = reward_ranking(rewards, errors)
    # group 0: 3 pairs, all right. group 1: pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); (2,3) differs by 30 ms → out;
    # (1,2) is a reward tie → 1/2; the other four are wrong
    assert out["pairs"] == 3 + 5
    assert out["pair_agreement"] == pytest.approx((3 + 0.5) / 8)
    assert out["spearman_within"] == pytest.approx((-1.0 + spearmanr(rewards[1], errors[1]).statistic) / 2)
    assert out["spearman_within"] > -0.1  # one right group, one wrong: no agreement on average
    assert out["saturated_low"] == 0.0 and out["saturated_high"] == pytest.approx(1 / 7)  # 0.995 ≥ 0.99
    assert sum(out["histogram"]) == 7 and out["histogram"][9] == 2 and out["histogram"][1] == 1  # 0.9, 0.995; 0.1
    perfect = reward_ranking([np.array([1.0, 0.0])], [np.array([0.0, 1.0])])
    assert perfect["pair_agreement"] == 1.0 and perfect["spearman"] == pytest.approx(-1.0)
    assert perfect["saturated_low"] == perfect["saturated_high"] == 0.5
