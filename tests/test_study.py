"""`make study` bookkeeping: mean ± std over seeds in the summary's shape, the report's target lines, the tiny CLIP."""
from __future__ import annotations

import argparse
import math

import pytest
import torch

from reasonaudio.experiments.study import (INFERENCE_ROWS, ROW_NAMES, aggregate, mean_std, probe_breakdown, split_seeds,
                                           write_report)


def test_mean_std_is_the_population_statistic_of_the_values_present():
    assert mean_std([1.0, 2.0, 4.0]) == pytest.approx({"mean": 7 / 3, "std": math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                                                                          + (4 - 7 / 3) ** 2) / 3)})
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0}
    assert mean_std([None, float("nan"), 3.0]) == {"mean": 3.0, "std": 0.0}
    assert mean_std([None]) == {"mean": None, "std": None}


def _per_seed() -> dict:
    row = lambda f1, err: {"onset_f1": f1, "onset_error_ms": err, "desync_s": 0.1, "offscreen_presence": None,  # noqa: E731
                           "offscreen_probe": 0.6, "offscreen_probe_hum": 0.7, "timbre_agreement": 0.5,
                           "fd_latent": 0.2}
    return {"untrained": [row(0.3, 300.0)], "pretrained": [row(0.8, 40.0), row(0.9, 30.0), row(0.85, 50.0)],
            "video_dropped": [row(0.2, 250.0)] * 3, "text_dropped": [row(0.8, 40.0)] * 3,
            "sync_random": [row(0.3, 200.0)], "no_queries": [row(0.7, 60.0)], "joint_attention_only": [row(0.6, 80.0)],
            "vocoded_gt": [{**row(1.0, 5.0), "fd_latent": 0.0}],
            "chance": [{"onset_f1": 0.22, "onset_error_ms": 210.0, "offscreen_presence": None,
                        "timbre_agreement": None}]}


def test_summary_rows_have_the_issue_shape():
    rows = aggregate(_per_seed())
    assert set(rows) == set(ROW_NAMES) and set(INFERENCE_ROWS) <= set(rows)
    assert rows["pretrained"]["seeds"] == 3 and rows["sync_random"]["seeds"] == 1
    assert rows["pretrained"]["onset_f1"] == pytest.approx({"mean": 0.85, "std": math.sqrt(0.05 ** 2 * 2 / 3)})
    for name, row in rows.items():
        for key, value in row.items():
            assert key == "seeds" or set(value) == {"mean", "std"}, (name, key)
    assert "desync_s" not in rows["chance"] and rows["chance"]["offscreen_presence"] == {"mean": None, "std": None}
    # Per-type probe scores stay in per_seed.json; the summary holds the issue's metrics and the probe's mean.
    assert "offscreen_probe_hum" not in rows["pretrained"] and rows["pretrained"]["offscreen_probe"]["mean"] == 0.6
    summary = split_seeds({"sync_offset_acc": mean_std([0.98]), "sync_offset_top1": mean_std([0.97]), "rows": rows,
                           "offscreen_probe_ceiling": {"hum": 0.9}})
    assert set(summary) == {"sync_offset_acc", "sync_offset_top1", "rows", "seeds"}
    assert summary["seeds"]["pretrained"] == 3 and all(set(v) == {"mean", "std"} for r in summary["rows"].values()
                                                        for v in r.values())


def _report(tmp_path, steps: dict, seconds: float) -> str:
    """docs/study.md as written from ``_per_seed()`` and ``steps``."""
    summary = split_seeds({"sync_offset_acc": mean_std([0.98]), "sync_offset_top1": mean_std([0.97]),
                           "rows": aggregate(_per_seed())})
    args = argparse.Namespace(duration=4.0, sample_steps=25, cfg=4.5, pretrain_steps=3000, seeds=3, vocoder_steps=400,
                              vae_steps=300)
    write_report(summary, steps, args, tmp_path / "study.md", seconds=seconds)
    return (tmp_path / "study.md").read_text()


def test_report_states_each_target_from_the_summary(tmp_path):
    steps = {"corpus": {"clips": 96, "seconds": 10.0}, "heldout": {"clips": 16, "seed": 10000, "seconds": 1.0},
             "sync": {"steps": 150, "seconds": 80.0},
             "score": {"offscreen_probe_ceiling": {"hum": 0.84, "rain": 1.0}, "seconds": 60.0}}
    text = _report(tmp_path, steps, seconds=91.0)
    assert "- pretrained onset F1 ≥ 0.8: 0.850 — met" in text
    assert "- pretrained onset error ≤ 50 ms: 40.0 ms — met" in text
    assert "| pretrained (full model) (`pretrained`) | 3 | 0.850 ± 0.041 |" in text
    assert "within one step 0.980 ± 0.000" in text and "1.5 min of steps" in text
    assert "| – | 0.600 ± 0.000 | 0.500 ± 0.000 | 0.200 ± 0.000 |" in text  # off-screen audio, probe; timbre, FD
    assert "ground-truth latents: hum 0.840, rain 1.000." in text


def test_tiny_clip_folder_loads_in_the_clip_conditioner(tmp_path):
    from reasonaudio.models.conditioners import CLIPConditioner
    from reasonaudio.models.tiny_clip import write_tiny_clip

    folder = write_tiny_clip(tmp_path / "clip", ["a ball bouncing", "rain on a roof"])
    cond = CLIPConditioner(folder, out_dim=16, num_frames=8)
    ids = cond.tokenizer(["rain on a ball"])["input_ids"][0]
    assert 0 not in ids  # every word is in the vocabulary (0 is [UNK])
    frames = torch.randint(0, 256, (8, 3, 84, 112), dtype=torch.uint8)
    out = cond([frames, None], ["a ball bouncing", "rain"])
    assert out.shape == (2, 77, 16)
    assert torch.allclose(out[1, :8], cond.null_video) and not torch.allclose(out[0, :8], cond.null_video)


def test_probe_breakdown_pairs_the_caption_effect_by_seed_and_reports_each_type(tmp_path):
    per_seed = {"pretrained": [{"offscreen_probe": 0.6, "offscreen_probe_hum": 0.7, "offscreen_probe_rain": 0.5},
                               {"offscreen_probe": 0.8, "offscreen_probe_hum": 0.9, "offscreen_probe_rain": 0.7}],
                "text_dropped": [{"offscreen_probe": 0.5, "offscreen_probe_hum": 0.5, "offscreen_probe_rain": 0.5},
                                 {"offscreen_probe": 0.5, "offscreen_probe_hum": 0.5, "offscreen_probe_rain": 0.5}],
                "chance": [{"onset_f1": 0.2}]}
    breakdown = probe_breakdown(per_seed)
    assert set(breakdown["by_type"]) == {"pretrained", "text_dropped"}
    assert breakdown["by_type"]["pretrained"]["hum"] == pytest.approx({"mean": 0.8, "std": 0.1})
    delta = breakdown["text_dropped_minus_pretrained"]
    assert delta["per_seed"] == pytest.approx([-0.1, -0.3]) and delta["mean"] == pytest.approx(-0.2)
    assert delta["std"] == pytest.approx(0.1)
    steps = {"corpus": {"clips": 96}, "heldout": {"clips": 16, "seed": 10000}, "sync": {"steps": 150},
             "score": {"offscreen_probe_breakdown": breakdown}}
    text = _report(tmp_path, steps, seconds=60.0)
    assert "| pretrained (full model) (`pretrained`) | 0.800 ± 0.100 | 0.600 ± 0.100 |" in text
    assert "paired by training seed: -0.200 ± 0.100 (per seed -0.100, -0.300)." in text
