"""The off-screen latent probe: closed forms on planted latents, and real renders of the synthetic world."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reasonaudio.data_modules.synthetic import render_audio, sample_scene
from reasonaudio.metrics.latent_probe import LatentSourceProbe, latent_features, source_labels
from reasonaudio.models.mel import MelSpectrogram


def _scene(i: int, kinds: list[str]) -> dict:
    return {"id": f"clip{i}", "sources": [{"type": "ball", "screen": "on_screen"}]
            + [{"type": k, "screen": "off_screen"} for k in kinds]}


def _planted(scenes: list[dict], seed: int = 0) -> torch.Tensor:
    """Latents [B, 20, 4] whose channel 0 level says hum and channel 1 spread says rain, plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(len(scenes), 20, 4, generator=g)
    for b, scene in enumerate(scenes):
        kinds = {s["type"] for s in scene["sources"]}
        x[b, :, 0] += 1.0 if "hum" in kinds else -1.0
        x[b, :, 1] *= 10.0 if "rain" in kinds else 1.0
    return x


def _balanced_scenes(n: int) -> list[dict]:
    return [_scene(i, [k for k, on in (("hum", i % 2), ("rain", (i // 2) % 2)) if on]) for i in range(n)]


def test_features_are_channel_means_and_stds() -> None:
    x = torch.tensor([[[1.0, 0.0], [3.0, 2.0]]])  # [1, 2, 2]
    np.testing.assert_allclose(latent_features(x), [[2.0, 1.0, np.sqrt(2.0), np.sqrt(2.0)]])


def test_planted_sources_are_read_exactly_and_an_empty_generator_scores_one_half() -> None:
    scenes = _balanced_scenes(16)
    probe = LatentSourceProbe.fit(_planted(scenes), scenes)
    assert set(probe.weights) == {"hum", "rain"}
    test = _balanced_scenes(8)
    assert probe.balanced_accuracy(_planted(test, seed=1), test) == {"hum": 1.0, "rain": 1.0}
    # Latents that never carry a source: every hit missed, every rejection right → exactly 0.5 per type.
    silent = [_scene(i, []) for i in range(8)]
    assert probe.balanced_accuracy(_planted(silent, seed=2), test) == {"hum": 0.5, "rain": 0.5}
    # Latents with the opposite sources: everything wrong → 0.
    flipped = [_scene(i, [k for k in ("hum", "rain") if k not in {s["type"] for s in t["sources"]}])
               for i, t in enumerate(test)]
    assert probe.score(_planted(flipped, seed=3), test) == 0.0
    assert LatentSourceProbe.cross_validated(_planted(scenes), scenes) == {"hum": 1.0, "rain": 1.0}


def test_a_type_without_both_classes_is_not_scored() -> None:
    scenes = _balanced_scenes(8)
    probe = LatentSourceProbe.fit(_planted(scenes), scenes)
    all_hum = [_scene(i, ["hum"]) for i in range(4)]
    assert probe.balanced_accuracy(_planted(all_hum), all_hum) == {}
    assert probe.score(_planted(all_hum), all_hum) is None
    assert source_labels(all_hum)["hum"].all()


def test_on_real_renders_the_probe_tells_a_clip_from_its_render_without_the_offscreen_sources() -> None:
    # Log-mel frames of the synthetic world's audio stand in for latents (a codec-free representation).
    mel = MelSpectrogram("tiny")

    def frames(scenes: list[dict], offscreen: bool = True) -> torch.Tensor:
        kept = [s if offscreen else {**s, "sources": [x for x in s["sources"] if x["screen"] == "on_screen"]}
                for s in scenes]
        return mel(torch.stack([torch.from_numpy(render_audio(s)).float() for s in kept])).transpose(1, 2)

    fitting = [sample_scene(11, i, duration=2.0) for i in range(32)]
    held_out = [sample_scene(12, i, duration=2.0) for i in range(16)]
    probe = LatentSourceProbe.fit(frames(fitting), fitting)
    full = probe.balanced_accuracy(frames(held_out), held_out)
    without = probe.balanced_accuracy(frames(held_out, offscreen=False), held_out)
    # Stationary sources are read perfectly; the same clips rendered without them score exactly chance.
    assert full["hum"] == 1.0 and full["rain"] == 1.0, full
    assert without["hum"] == 0.5 and without["rain"] == 0.5, without
    assert probe.score(frames(held_out), held_out) - probe.score(frames(held_out, offscreen=False), held_out) > 0.3


def test_bad_input_names_the_problem() -> None:
    scenes = _balanced_scenes(8)
    x = _planted(scenes)
    with pytest.raises(ValueError, match="latents for"):
        LatentSourceProbe.fit(x[:4], scenes)
    with pytest.raises(ValueError, match="ridge"):
        LatentSourceProbe.fit(x, scenes, ridge=-1.0)
    with pytest.raises(ValueError, match="some clips have and some do not"):
        LatentSourceProbe.fit(x, [_scene(i, []) for i in range(8)])
    with pytest.raises(ValueError, match=r"\[B, T >= 2, C\]"):
        latent_features(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        latent_features(torch.full((2, 3, 4), float("nan")))
    probe = LatentSourceProbe.fit(x, scenes)
    with pytest.raises(ValueError, match="channels"):
        probe.detect(torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="latents for"):
        probe.balanced_accuracy(x[:3], scenes)
    with pytest.raises(ValueError, match="folds"):
        LatentSourceProbe.cross_validated(x, scenes, folds=1)
