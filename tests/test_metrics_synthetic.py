"""The synthetic-benchmark metrics as torchmetrics: equal to the pure functions, mergeable, DDP-reducible."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reasonaudio.data_modules.synthetic import render_audio, sample_scene
from reasonaudio.metrics import synthetic
from reasonaudio.metrics.synthetic import OffscreenPresence, OnsetError, OnsetF1, TimbreAgreement, score_synthetic


@pytest.fixture(scope="module")
def clips() -> tuple[torch.Tensor, list[dict]]:
    """Six 2 s clips: the ground-truth mix of three, noisy or shifted versions of the others."""
    rng = np.random.default_rng(0)
    scenes = [sample_scene(3, i, duration=2.0) for i in range(6)]
    wavs = []
    for i, scene in enumerate(scenes):
        wav = render_audio(scene)
        if i % 3 == 1:
            wav = np.roll(wav, 1600)  # 100 ms late
        elif i % 3 == 2:
            wav = wav + 0.05 * rng.standard_normal(wav.size)
        wavs.append(torch.from_numpy(wav.astype(np.float32)))
    return torch.stack(wavs), scenes


def _reference(wavs: torch.Tensor, scenes: list[dict]) -> dict[str, float]:
    """The per-clip means, straight from the pure functions."""
    sr = scenes[0]["sample_rate"]
    x = [w.double().numpy() for w in wavs]
    presence = [np.mean(list(found.values())) for found in
                (synthetic.offscreen_presence(w, sr, gt) for w, gt in zip(x, scenes)) if found]
    return {"onset_error": np.mean([synthetic.onset_sync_error(w, sr, gt) for w, gt in zip(x, scenes)]),
            "onset_f1": np.mean([synthetic.onset_f1(w, sr, gt) for w, gt in zip(x, scenes)]),
            "offscreen_presence": np.mean(presence),
            "timbre_agreement": np.mean([synthetic.timbre_agreement(w, sr, gt) for w, gt in zip(x, scenes)])}


METRICS = {"onset_error": OnsetError, "onset_f1": OnsetF1, "offscreen_presence": OffscreenPresence,
           "timbre_agreement": TimbreAgreement}


def test_metrics_equal_the_pure_functions(clips, tmp_path):
    wavs, scenes = clips
    sr = scenes[0]["sample_rate"]
    expected = _reference(wavs, scenes)
    assert 0 < expected["onset_f1"] < 1 and expected["onset_error"] > 0  # the perturbations matter
    paths = []
    for scene in scenes:
        paths.append(tmp_path / f"{scene['id']}.json")
        paths[-1].write_text(json.dumps(scene))
    from_files = score_synthetic(wavs, sr, paths)
    for name, cls in METRICS.items():
        metric = cls()
        metric.update(wavs[:4], sr, scenes[:4])
        metric.update(list(wavs[4:]), sr, paths[4:])  # a list of waveforms, ground truth from files
        value = float(metric.compute())
        assert value == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name
        assert value == pytest.approx(from_files[name], rel=1e-12, abs=1e-12), name


def test_merged_states_equal_one_pass(clips):
    wavs, scenes = clips
    sr = scenes[0]["sample_rate"]
    for name, cls in METRICS.items():
        whole, first, second = cls(), cls(), cls()
        whole.update(wavs, sr, scenes)
        first.update(wavs[:2], sr, scenes[:2])
        second.update(wavs[2:], sr, scenes[2:])
        first.merge_state(second)
        assert torch.equal(first.total, whole.total) or float(first.total) == pytest.approx(float(whole.total))
        assert int(first.count) == int(whole.count)
        assert float(first.compute()) == pytest.approx(float(whole.compute()), rel=1e-12), name


def test_offscreen_presence_counts_only_clips_with_offscreen_sources(clips):
    wavs, scenes = clips
    sr = scenes[0]["sample_rate"]
    metric = OffscreenPresence()
    metric.update(wavs, sr, scenes)
    assert int(metric.count) == sum(any(s["screen"] == "off_screen" for s in sc["sources"]) for sc in scenes)
    empty = OffscreenPresence()
    assert torch.isnan(empty.compute())


def test_states_reduce_by_sum_for_ddp():
    metric = OnsetF1(tolerance=0.02)
    assert metric._reductions["total"] is metric._reductions["count"]  # both sum-reduced
    assert metric.full_state_update is False and OnsetError.higher_is_better is False
    with pytest.raises(ValueError, match="tolerance"):
        OnsetF1(tolerance=0.0)


def test_bad_inputs_name_the_problem(clips, tmp_path):
    wavs, scenes = clips
    with pytest.raises(ValueError, match="2 waveforms but 1 ground truths"):
        OnsetError().update(wavs[:2], 16000, scenes[:1])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        OnsetError().update(wavs[:1], 16000, [tmp_path / "missing.json"])


def test_chance_onset_scores_match_the_closed_form():
    """One impact at 2 s of a 4 s clip, one uniform onset per draw: E[F1] = P(|u − 2| ≤ τ) = 2τ/4 and
    E[error] = E|u − 2| = 1 s; the time-based cores agree with the waveform scores they serve."""
    gt = {"id": "x", "duration": 4.0, "sources": [{"type": "object", "screen": "on_screen", "impact_times": [2.0]}]}
    error, f1 = synthetic.chance_onset_scores(gt, draws=20_000, seed=0, tolerance=0.05)
    assert abs(f1 - 0.025) < 0.004  # binomial std over 20k draws: 0.0011
    assert abs(error - 1.0) < 0.015  # std of |u − 2|: 0.58 / sqrt(20k) = 0.004
    assert synthetic.chance_onset_scores(gt, draws=50, seed=3) == synthetic.chance_onset_scores(gt, draws=50, seed=3)
    truth = np.array([0.5, 1.0, 3.0])
    assert synthetic.onset_f1_of_times(truth, np.array([0.52, 2.0, 2.98])) == 2 * 2 / 6
    assert synthetic.onset_error_of_times(truth, np.array([1.1]), 4.0) == pytest.approx((0.6 + 0.1 + 1.9) / 3)
    assert synthetic.onset_error_of_times(truth, np.array([]), 4.0) == 4.0
