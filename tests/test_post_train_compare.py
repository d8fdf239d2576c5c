"""The comparison's own arithmetic: Fréchet distance, 95 % intervals of paired deltas, the table and docs/results.json,
the margin threshold, the docs block, the CLI lines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from reasonaudio.experiments.post_train_compare import MARKERS, _replace_block, margin_threshold, parse_variant
from reasonaudio.experiments.post_train_tables import ROWS, docs_results, mean_ci95, results_table, row_statistics
from reasonaudio.experiments.scoring import frechet_distance
from reasonaudio.experiments.stages import post_train_args
from reasonaudio.preference_objectives import reward_ranking


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (200_000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5])
    assert frechet_distance(a, a + shift) == pytest.approx(float((shift**2).sum()), rel=1e-6)  # same covariance
    # N(0, I) against N(0, 4I) in 3-d: tr(I + 4I − 2·2I) = 3
    assert frechet_distance(a, 2 * rng.normal(0, 1, (200_000, 3))) == pytest.approx(3.0, abs=0.05)


def _comparison() -> dict:
    base = {str(i): dict(onset_error=e, onset_f1=0.2 + 0.05 * i, desync=0.1, reward=0.5, fd_latent=0.4, fd_mel=5.0,
                         timbre_agreement=0.3) for i, e in enumerate([0.20, 0.24, 0.22])}
    dpo = {s: dict(m, onset_error=m["onset_error"] + d) for (s, m), d in zip(base.items(), [-0.10, -0.08, -0.09])}
    sft = {s: dict(m, onset_error=m["onset_error"] + d) for (s, m), d in zip(base.items(), [0.05, -0.05, 0.0])}
    return {"models": {"pretrained": base, "dpo_beta5": dpo, "sft": sft}, "labels": {"dpo_beta5": "DPO"},
            "reward_vs_ground_truth": {"pair_agreement": 0.7, "spearman": -0.3, "spearman_within": -0.2,
                                       "saturated_low": 0.1, "saturated_high": 0.0},
            "preference_pairs": {"dpo_pairs": 36}, "heldout_clips": 32, "machine": "cpu", "total_s": 600.0}


def test_statistics_are_student_t_intervals_of_paired_differences():
    t = 4.302652729911275  # Student t, 0.975 quantile, 2 degrees of freedom
    stats = row_statistics(_comparison())
    err = stats["pretrained"]["onset_error_ms"]  # 200, 240, 220 ms: sd 20
    assert err["mean"] == pytest.approx(220.0) and err["n"] == 3
    assert err["ci95"] == pytest.approx([220 - t * 20 / np.sqrt(3), 220 + t * 20 / np.sqrt(3)])
    delta = stats["dpo_beta5"]["delta_onset_error_ms_vs_pretrained"]  # −100, −80, −90: sd 10
    assert delta["mean"] == pytest.approx(-90.0)
    assert delta["ci95"] == pytest.approx([-90 - t * 10 / np.sqrt(3), -90 + t * 10 / np.sqrt(3)])
    assert stats["dpo_beta5"]["delta_desync_s_vs_pretrained"]["ci95"] == pytest.approx([0.0, 0.0])
    assert "delta_onset_error_ms_vs_pretrained" not in stats["pretrained"]
    assert mean_ci95([3.0])["ci95"] is None


def test_results_table_marks_differences_whose_interval_excludes_zero():
    rows = results_table(_comparison()).splitlines()
    assert rows[2].startswith("| pretrained | 220.0 ± 49.7 | — | 0.250 ± 0.124 | — | 0.100 ± 0.000 | — |")
    assert rows[3].startswith("| sft | 220.0 ± 74.5 | 0.0 ± 124.2 | ")  # Δ −50…+50 ms: not significant
    assert rows[4].startswith("| DPO | 130.0 ± 74.5 | -90.0 ± 24.8 * | ")  # the ROWS order: sft before dpo


def test_docs_results_has_the_issue_keys():
    out = docs_results(_comparison())
    assert out["reward_pair_agreement"] == 0.7 and out["reward_spearman"] == -0.3
    assert list(out["rows"]) == ["pretrained", "sft", "dpo_beta5"] and set(ROWS) >= set(out["rows"])
    assert ROWS == ("pretrained", "sft", "rwr", "dpo_beta1", "dpo_beta2", "dpo_beta5", "dpo_beta50",
                    "dpo_beta5_online2")
    row = out["rows"]["dpo_beta5"]
    for key in ("onset_error_ms", "delta_onset_error_ms_vs_pretrained", "desync_s", "delta_desync_s_vs_pretrained",
                "onset_f1", "fd_latent", "reward"):
        assert set(row[key]) == {"mean", "ci95", "n"} and len(row[key]["ci95"]) == 2, key
    json.dumps(out)  # plain JSON


def test_margin_threshold_is_a_quantile_of_the_group_spreads(tmp_path: Path):
    import torch

    from reasonaudio.data_modules.preference_groups import PreferenceStore

    store = PreferenceStore(tmp_path / "groups")
    for row, spread in enumerate([0.1, 0.2, 0.3, 0.4, 0.5]):
        store.write(row, f"c{row}", torch.arange(3), torch.tensor([0.5, 0.5 + spread, 0.5 - 0.0]),
                    torch.zeros(3, 4, 2))
    gap, spreads = margin_threshold(tmp_path / "groups", 0.25)
    assert spreads.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5]) and gap == pytest.approx(0.2)
    assert margin_threshold(tmp_path / "groups", 0.0)[0] == 0.0


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
    # the groups are the bootstrap's units: resampling two groups gives 1.0 (group 0 twice), 3.5 / 8 (one each) or
    # 0.5 / 5 (group 1 twice, probability 1/4 > 2.5 %), so the 95 % interval spans 0.1 to 1.0
    assert out["pair_agreement_ci95"] == pytest.approx([0.1, 1.0])
    assert reward_ranking(rewards, errors)["pair_agreement_ci95"] == out["pair_agreement_ci95"]  # fixed seed
    perfect = reward_ranking([np.array([1.0, 0.0])], [np.array([0.0, 1.0])])
    assert perfect["pair_agreement"] == 1.0 and perfect["spearman"] == pytest.approx(-1.0)
    assert perfect["pair_agreement_ci95"] == [1.0, 1.0]  # one group: nothing to resample
    assert np.isnan(reward_ranking([np.array([1.0, 0.0])], [np.array([0.0, 0.01])])["pair_agreement_ci95"]).all()
    assert perfect["saturated_low"] == perfect["saturated_high"] == 0.5
    assert out["reward_range_used"] == [0.0, 1.0]  # every reward in [0, 1]: judged against the bounds
    # an unbounded score (the zero-offset contrast) is judged over its own range: 2.0 … 9.0, edges 0.07 wide
    contrast = reward_ranking([np.array([2.0, 5.0, 9.0]), np.array([8.95, 3.0])], [np.zeros(3), np.zeros(2)])
    assert contrast["reward_range_used"] == [2.0, 9.0]
    assert contrast["saturated_low"] == pytest.approx(1 / 5) and contrast["saturated_high"] == pytest.approx(2 / 5)
    assert contrast["histogram"] == [1, 1, 0, 0, 1, 0, 0, 0, 0, 2]  # bins 0.7 wide: 2; 3; 5; 8.95, 9


def test_variant_rows_parse_into_objective_overrides():
    assert parse_variant("dpo_all=pairs=all,reduction=mean") == ("dpo_all", [("pairs", "all"), ("reduction", "mean")])
    assert parse_variant("x=beta=2") == ("x", [("beta", "2")])
    for bad in ("dpo_all", "dpo_all=", "dpo all=pairs=all", "dpo_beta5=pairs=all", "v=pairs"):
        with pytest.raises(SystemExit, match="--variant"):
            parse_variant(bad)
