"""Synthetic audio-visual corpus and its exact metrics: determinism, visual/audio sync, metric sanity."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from reasonaudio.captions.format import parse_caption
from reasonaudio.data_modules.synthetic import (EDGE, MAX_INTERVAL, MIN_INTERVAL, OBJECT_TYPES, OFFSCREEN_TYPES,
                                                render_audio, render_frames, sample_scene, synthesize_corpus)
from reasonaudio.data_modules.synthetic_captions import make_caption, make_label
from reasonaudio.metrics.synthetic import (classify_impacts, detect_onsets, offscreen_presence, onset_f1,
                                           onset_sync_error, timbre_agreement)

SR = 16000  # the tiny preset's rate


def _full_scenes(count: int, duration: float = 2.0) -> list[dict]:
    """Clips with every object and every off-screen source: the hardest case for the metrics."""
    return [sample_scene(11, i, duration=duration, objects=OBJECT_TYPES, offscreen=OFFSCREEN_TYPES)
            for i in range(count)]


def _without(scene: dict, name: str) -> dict:
    return {**scene, "sources": [s for s in scene["sources"] if s["name"] != name]}


def _shift(wav: np.ndarray, seconds: float) -> np.ndarray:
    """Delays the audio, keeping its length."""
    return np.concatenate([np.zeros(round(seconds * SR), wav.dtype), wav])[: wav.size]


# --- scenes and rendering --------------------------------------------------------------------------


def test_same_seed_is_byte_identical_and_another_seed_differs() -> None:
    a, b, other = sample_scene(5, 2, duration=2.0), sample_scene(5, 2, duration=2.0), sample_scene(6, 2, duration=2.0)
    assert json.dumps(a) == json.dumps(b)
    assert render_frames(a).tobytes() == render_frames(b).tobytes()
    assert render_audio(a).tobytes() == render_audio(b).tobytes()
    assert json.dumps(a) != json.dumps(other)
    assert render_audio(a).tobytes() != render_audio(other).tobytes()
    assert render_frames(a).tobytes() != render_frames(other).tobytes()
    # A clip depends on (seed, index) only; the ground truth survives a JSON round trip unchanged.
    assert json.loads(json.dumps(a)) == a
    assert sample_scene(5, 3, duration=2.0) != a


def test_rendered_shapes_levels_and_timing_rules() -> None:
    for scene in [sample_scene(0, i, duration=3.0) for i in range(12)]:
        frames, wav = render_frames(scene), render_audio(scene)
        assert frames.shape == (75, 96, 96, 3) and frames.dtype == np.uint8  # [T, H, W, 3]
        assert wav.shape == (48000,) and wav.dtype == np.float32
        assert np.max(np.abs(wav)) == pytest.approx(0.7, abs=1e-6)
        on = [s for s in scene["sources"] if s["screen"] == "on_screen"]
        off = [s for s in scene["sources"] if s["screen"] == "off_screen"]
        assert 1 <= len(on) <= 3 and len(off) <= 2
        every = []
        for source in on:
            times = np.asarray(source["impact_times"])
            assert np.allclose(times * 25, np.round(times * 25))  # on the video frame grid
            assert times.min() > EDGE and times.max() < 3.0 - EDGE
            assert np.all(np.diff(times) >= MIN_INTERVAL - 1e-9)
            assert np.all(np.diff(times) <= MAX_INTERVAL + 0.2)  # + a few frames moved off other objects
            every += list(times)
        assert np.min(np.diff(sorted(every)), initial=1.0) >= 0.12 - 1e-9


def test_bigger_objects_sound_lower() -> None:
    for kind in OBJECT_TYPES:
        objects = [next(s for s in sample_scene(1, i, duration=2.0, objects=[kind], offscreen=[])["sources"])
                   for i in range(8)]
        by_size = sorted(objects, key=lambda s: s["size"])
        pitches = [s["pitch"] for s in by_size]
        assert pitches == sorted(pitches, reverse=True), kind
        assert by_size[0]["decay"] < by_size[-1]["decay"]


def test_impacts_coincide_with_visual_contact() -> None:
    """At an impact frame the object touches its surface (gap 0 px); at every other frame it does not."""
    for scene in _full_scenes(4):
        frames, layout = render_frames(scene), scene["layout"]
        for source in (s for s in scene["sources"] if s["screen"] == "on_screen"):
            painted = np.all(frames == np.array(source["colour"], np.uint8), axis=-1)  # [T, H, W]
            gaps = []
            for mask in painted:
                rows, cols = np.nonzero(mask)
                if source["type"] == "ball":
                    gaps.append(layout["floor_y"] - 1 - rows.max())
                elif source["type"] == "block":
                    gaps.append(layout["wall_x"] - 1 - cols.max())
                else:
                    gaps.append(source["geometry"]["post_x"] - 1 - cols.max())
            gaps = np.asarray(gaps)
            contact = np.zeros(gaps.size, bool)
            contact[source["impact_frames"]] = True
            assert np.all(gaps[contact] == 0), source["name"]
            assert np.all(gaps[~contact] >= 1), source["name"]


def test_caption_follows_the_think_format_and_the_ground_truth() -> None:
    scene = _full_scenes(1)[0]
    caption = parse_caption(make_caption(scene))
    assert [(t.name, t.screen) for t in caption.tracks] == [(s["name"], s["screen"]) for s in scene["sources"]]
    assert {t.name for t in caption.off_screen} == {"electric_hum", "rain", "beeping_device"}
    assert not any(word in caption.hint.lower() for word in ("ball", "block", "bell", "rain", "hum"))
    assert make_label(scene) == "ball bouncing, block knocking, bell ringing, electric hum, rain, beeping"


@pytest.mark.parametrize("kwargs", [
    {"duration": 0.5}, {"duration": 2.01}, {"size": 95}, {"size": 16}, {"fps": 2},
    {"objects": ["ball", "ball"]}, {"objects": ["dog"]}, {"objects": []}, {"offscreen": ["siren"]},
    {"preset": "nope"}, {"seed": -1},
])
def test_bad_scene_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        sample_scene(**{"seed": 0, **kwargs})


# --- metrics ---------------------------------------------------------------------------------------


def test_ground_truth_audio_scores_perfect_onsets() -> None:
    f1s, errors = [], []
    for scene in _full_scenes(4) + [sample_scene(2, i, duration=4.0) for i in range(3)]:
        wav = render_audio(scene)
        f1s.append(onset_f1(wav, SR, scene))
        errors.append(onset_sync_error(wav, SR, scene))
    assert min(f1s) >= 0.95, f1s
    assert max(errors) < 0.010, errors
    # Torch input and a leading channel give the same answer.
    wav = render_audio(scene)
    assert onset_sync_error(torch.from_numpy(wav)[None], SR, scene) == errors[-1]


def test_shifted_audio_is_measured_as_shifted() -> None:
    # One object, impacts >= 0.4 s apart: the nearest onset to each impact is its own shifted copy.
    scene = sample_scene(4, 0, duration=4.0, objects=["ball"], offscreen=["hum", "rain"])
    wav = render_audio(scene)
    error = onset_sync_error(_shift(wav, 0.2), SR, scene)
    assert abs(error - 0.2) < 0.02, error
    assert onset_f1(_shift(wav, 0.2), SR, scene) < 0.5
    assert onset_f1(wav, SR, scene) == 1.0


def test_silence_costs_the_clip_duration_and_matches_no_timbre() -> None:
    scene = sample_scene(0, 0, duration=2.0)
    silence = np.zeros(2 * SR, np.float32)
    assert detect_onsets(silence, SR).size == 0
    assert onset_sync_error(silence, SR, scene) == 2.0
    assert onset_f1(silence, SR, scene) == 0.0
    assert timbre_agreement(silence, SR, scene) == 0.0
    assert all(set(found) == {"none"} for found in classify_impacts(silence, SR, scene).values())


def test_beeps_are_excluded_from_onset_scoring() -> None:
    scene = sample_scene(3, 1, duration=4.0, objects=["bell"], offscreen=["beeps"])
    wav = render_audio(scene)
    beep = next(s for s in scene["sources"] if s["type"] == "beeps")
    impacts = np.asarray(scene["sources"][0]["impact_times"])
    everything = detect_onsets(wav, SR)
    # Unfiltered, beep onsets that are not impacts are detected; scored, they are not.
    far_beeps = [t for t in beep["onsets"] if 0.05 < t < 3.95 and np.abs(impacts - t).min() > 0.05]
    assert far_beeps and all(np.abs(everything - t).min() < 0.02 for t in far_beeps)
    assert onset_f1(wav, SR, scene) == 1.0


def test_offscreen_presence_follows_the_rendered_sources() -> None:
    for scene in _full_scenes(3):
        assert offscreen_presence(render_audio(scene), SR, scene) == {
            "electric_hum": True, "rain": True, "beeping_device": True}
        for name in ("electric_hum", "rain", "beeping_device"):
            # Scored against the full ground truth, audio rendered without one source misses exactly it.
            found = offscreen_presence(render_audio(_without(scene, name)), SR, scene)
            assert found == {n: n != name for n in found}, (scene["id"], name, found)


def test_timbre_agreement_is_high_on_ground_truth_and_low_when_timbres_are_swapped() -> None:
    swap = {"ball": "block", "block": "bell", "bell": "ball"}
    for scene in _full_scenes(3):
        assert timbre_agreement(render_audio(scene), SR, scene) >= 0.9
        swapped = copy.deepcopy(scene)
        for source in swapped["sources"]:
            if source["screen"] == "on_screen":
                source["type"] = swap[source["type"]]
        assert timbre_agreement(render_audio(swapped), SR, scene) <= 0.2
        types = {s["name"]: s["type"] for s in scene["sources"]}
        labels = classify_impacts(render_audio(swapped), SR, scene)
        assert all(set(found) == {swap[types[name]]} for name, found in labels.items()), labels


def test_metrics_reject_bad_input() -> None:
    scene = sample_scene(0, 0, duration=2.0)
    with pytest.raises(ValueError):
        onset_f1(np.zeros((2, 2 * SR)), SR, scene)
    with pytest.raises(ValueError):
        onset_f1(np.zeros(2 * SR), SR, scene, tolerance=0.0)
    with pytest.raises(ValueError):
        detect_onsets(np.full(SR, np.nan), SR)
    with pytest.raises(ValueError):
        detect_onsets(np.zeros(SR), SR, exclude_bands=[(2000.0, 1000.0)])


# --- corpus on disk --------------------------------------------------------------------------------


def test_corpus_writes_playable_mp4s_with_exact_ground_truth(tmp_path: Path, capsys) -> None:
    manifest = synthesize_corpus(tmp_path / "synth", num_clips=3, seed=0, duration=2.0)
    assert capsys.readouterr().out.count("synth ") == 3  # one progress line per clip
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["synth_000000", "synth_000001", "synth_000002"]
    for index, row in enumerate(rows):
        gt = json.loads((manifest.parent / row["ground_truth"]).read_text())
        assert gt == sample_scene(0, index, duration=2.0)
        assert row["caption"] == make_caption(gt) and row["duration"] == 2.0
        with av.open(str(manifest.parent / row["video"])) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
            assert video.average_rate == 25 and (video.width, video.height) == (96, 96)
            assert float(video.duration * video.time_base) == pytest.approx(2.0, abs=0.04)
            assert float(audio.duration * audio.time_base) == pytest.approx(2.0, abs=0.1)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 50
        # The decoded picture is the rendered one up to H.264 loss.
        assert np.abs(np.asarray(frames, np.float64) - render_frames(gt)).mean() < 4.0
        with av.open(str(manifest.parent / row["video"])) as container:
            decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)[0]
        # The AAC track keeps the impacts in sync with the picture.
        assert onset_sync_error(decoded, SR, gt) < 0.005
        with av.open(str(manifest.parent / row["audio"])) as container:
            wav = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)[0] / 32768.0
        assert np.abs(wav - render_audio(gt)).max() < 1e-4  # 16-bit copy of the exact mix


def test_corpus_rejects_bad_arguments_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        synthesize_corpus(tmp_path / "a", num_clips=0, seed=0)
    with pytest.raises(ValueError):
        synthesize_corpus(tmp_path / "b", num_clips=2, seed=0, duration=0.3)
    assert not (tmp_path / "b").exists()
