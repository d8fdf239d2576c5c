"""Synchrony rewards: the alignment classifier (time grid, negatives, learning), the Synchformer-offset and
ground-truth onset rewards, and weight loading."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reasonaudio.metrics.synthetic import GroundTruthOnsetReward
from reasonaudio.models.reward import (AlignmentClassifier, ClassifierReward, SynchformerOffsetReward,
                                       load_classifier_state, sync_to_audio_frames, sync_token_spans)
from reasonaudio.systems.reward import RewardTrain, shift_range, swap_partners

REPO = Path(__file__).resolve().parents[1]
RATE = 31.25  # tiny preset latents per second
T, TS = 125, 88  # 4 s: latents, Synchformer tokens (11 windows)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_sync_tokens_sit_at_their_true_times():
    spans = sync_token_spans(TS)
    assert spans[0].tolist() == [0.0, 0.08] and spans[7].tolist() == pytest.approx([0.56, 0.64])
    assert spans[8].tolist() == pytest.approx([0.32, 0.40])  # window 1 starts 8 frames after window 0
    grid = sync_to_audio_frames(TS, T, RATE)
    assert grid.shape == (T, TS) and torch.allclose(grid.sum(1), torch.ones(T))
    assert grid[0, 0] == 1.0  # centre 0.016 s: token 0 only
    row = grid[10]  # centre 0.336 s: frames 8–9, covered by token 4 of window 0 and token 0 of window 1
    assert row[4] == row[8] == 0.5 and row.sum() == 1.0
    assert grid[124, 87] == 1.0  # past the last window (3.84 s): the nearest token
    with pytest.raises(ValueError, match="whole windows"):
        sync_token_spans(10)


def test_shift_range_and_swap_partners():
    assert shift_range(T, RATE, 0.2, 2.0) == (7, 62)  # 0.224 s … 1.984 s
    with pytest.raises(ValueError, match="do not fit"):
        shift_range(40, RATE, 0.2, 2.0)
    assert swap_partners(["a", "b", "c"]).tolist() == [1, 2, 0]
    assert swap_partners(["a", "a", "b"]).tolist() == [2, 2, 0]  # never the same clip
    with pytest.raises(ValueError, match="two different clips"):
        swap_partners(["a", "a"])


def test_negatives_are_plain_windows_of_the_clip():
    """Frame indices as audio values: aligned windows match the video window, shifted ones are offset by
    0.2…2 s inside the clip, swapped ones come from another clip at the same frames."""
    system = RewardTrain(AlignmentClassifier(width=8))
    b = 64
    audio = torch.arange(T, dtype=torch.float32)[None, :, None].expand(b, T, 8) + 1000 * torch.arange(b)[:, None, None]
    batch = {"latent": audio, "sync": torch.randn(b, TS, 768), "id": [str(i) for i in range(b)]}
    crops, video = system.examples(batch, torch.Generator().manual_seed(0))
    length = T - 62
    assert video.shape == (b, length, 8) and all(c.shape == (b, length, 8) for c in crops.values())
    start = crops["aligned"][:, 0, 0] - 1000 * torch.arange(b)
    shift = crops["shifted"][:, 0, 0] - crops["aligned"][:, 0, 0]
    assert ((shift.abs() >= 7) & (shift.abs() <= 62)).all() and (shift > 0).any() and (shift < 0).any()
    first = torch.minimum(start, start + shift)
    assert (first >= 0).all() and (torch.maximum(start, start + shift) + length <= T).all()
    assert torch.equal(crops["swapped"][:, 0, 0] % 1000, start % 1000)  # same frames …
    assert ((crops["swapped"][:, 0, 0] // 1000) != torch.arange(b)).all()  # … of another clip


def _write_cache(root: Path, n: int, seed: int) -> Path:
    """A feature cache of clips with 4 impacts each: latent bumps at the impact frames, a visual pattern at
    the sync tokens whose tubelets contain the impact times (the format of data_modules/features.py)."""
    rng = np.random.default_rng(seed)
    spans = sync_token_spans(TS).numpy()
    latents = rng.normal(0, 0.3, (n, T, 8)).astype(np.float32)
    sync = rng.normal(0, 0.3, (n, TS, 768)).astype(np.float32)
    pattern = np.random.default_rng(99).normal(0, 1, 768).astype(np.float32)  # what an impact looks like
    signature = np.random.default_rng(98).normal(0, 1, 8)  # and sounds like
    for i in range(n):
        for time in rng.uniform(0.2, 3.8, 4):
            j = int(time * RATE)
            decay = np.exp(-np.arange(T - j) / 4.0)[:, None]
            latents[i, j:] += (1.5 * decay * signature).astype(np.float32)
            hit = (spans[:, 0] <= time) & (time < spans[:, 1] + 0.04)
            sync[i, hit] += pattern
    root.mkdir(parents=True)
    arrays = {"latent_mean": latents, "latent_std": np.full_like(latents, 0.05), "sync": sync}
    for name, value in arrays.items():
        np.memmap(root / f"{name}.f32", dtype=np.float32, mode="w+", shape=value.shape)[:] = value
    np.memmap(root / "done.u8", dtype=np.uint8, mode="w+", shape=(n,))[:] = 1
    (root / "meta.json").write_text(json.dumps({
        "num_clips": n, "arrays": {k: list(v.shape[1:]) for k, v in arrays.items()},
        "latent_stats": {"mean": [0.0] * 8, "std": [1.0] * 8}}))
    (root / "index.jsonl").write_text("".join(json.dumps({"id": f"clip{seed}_{i}", "caption": "", "label": "",
                                                          "has_video": True, "corpus": "toy"}) + "\n"
                                              for i in range(n)))
    return root


@pytest.mark.slow
def test_classifier_learns_alignment_per_negative_type(tmp_path, monkeypatch):
    """RewardTrain through its stage YAML on a toy cache: after 200 steps every example type is judged
    right at least 80 % of the time on held-out clips (chance: 50 %)."""
    from reasonaudio.cli import CONFIG_DIR, build_cli

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["reasonaudio"])
    train, val = _write_cache(tmp_path / "train", 32, 0), _write_cache(tmp_path / "val", 16, 1)
    export = tmp_path / "export"
    build_cli(["fit", "--config", str(CONFIG_DIR / "reward.yaml"), f"--data.init_args.train=[{train}]",
               f"--data.init_args.val=[{val}]", "--data.init_args.batch_size=8", "--trainer.max_steps=200",
               "--trainer.val_check_interval=200", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
               f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", f"--model.init_args.export={export}"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((tmp_path / "runs" / "reward" / "version_0").glob("events.*"))))
    acc.Reload()
    assert {"val/acc_aligned", "val/acc_shifted", "val/acc_swapped", "val/acc", "train/loss"} <= set(acc.Tags()["scalars"])

    classifier = AlignmentClassifier(width=32, kernel=3)
    classifier.load_state_dict(load_classifier_state(export / "reward.safetensors"))
    system = RewardTrain(classifier.eval())
    from reasonaudio.data_modules.features import CachedFeatureDataModule

    dm = CachedFeatureDataModule(train=[str(train)], val=[str(val)], batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    scores = {k: [] for k in ("aligned", "shifted", "swapped")}
    with torch.no_grad():
        for seed in range(5):  # five draws of windows and shifts
            _, accuracy = system._losses(*system.examples(batch, torch.Generator().manual_seed(seed)))
            for k, v in accuracy.items():
                scores[k].append(float(v))
    assert {k: np.mean(v) >= 0.8 for k, v in scores.items()} == dict.fromkeys(scores, True), scores
    reward = ClassifierReward(AlignmentClassifier(width=32, kernel=3), str(export / "reward.safetensors")).prepare()
    with torch.no_grad():  # as a reward on whole clips: the clip's own audio scores above a 1 s shifted copy
        own = reward(batch["latent"], batch["sync"])
        shifted = reward(torch.roll(batch["latent"], 31, dims=1), batch["sync"])
    assert (own > shifted).float().mean() >= 0.8


def test_classifier_reward_loads_export_and_checkpoint(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    trained = AlignmentClassifier(width=8)
    save_file(trained.state_dict(), str(tmp_path / "reward.safetensors"))
    torch.save({"state_dict": {f"classifier.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "r.ckpt")
    audio, sync = torch.randn(3, 40, 8), torch.randn(3, 24, 768)
    expected = torch.sigmoid(trained(audio, sync))
    for path in (tmp_path / "reward.safetensors", tmp_path / "r.ckpt"):
        reward = ClassifierReward(AlignmentClassifier(width=8), str(path)).prepare()
        assert reward.audio_input == "latent" and not any(p.requires_grad for p in reward.parameters())
        assert torch.equal(reward(audio, reward.video_inputs({"sync": sync})), expected)
    with pytest.raises(FileNotFoundError, match="not found"):
        ClassifierReward(AlignmentClassifier(width=8), str(tmp_path / "none.safetensors")).prepare()
    torch.save({"state_dict": {"net.w": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="no 'classifier"):
        ClassifierReward(AlignmentClassifier(width=8), str(tmp_path / "other.ckpt")).prepare()


class _StandInHead(torch.nn.Module):
    """Replaces the offset transformer: returns the queued one-hot logits, one ``[B, 21]`` per call."""

    def __init__(self, classes: list[list[int]]):
        super().__init__()
        self.queue = [torch.nn.functional.one_hot(torch.tensor(c), 21).float() for c in classes]

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.queue.pop(0)


def test_synchformer_offset_reward_closed_form():
    from reasonaudio.models.synchformer import SYNCHFORMER_TINY, Synchformer, SynchformerConfig, offset_grid

    torch.manual_seed(0)
    model = Synchformer(SynchformerConfig(**{**SYNCHFORMER_TINY.to_dict(), "segments": 2}))
    first, last = [10, 0, 15], [12, 20, 5]  # classes of the first and of the last 2 windows per item
    model.transformer = _StandInHead([first, last])
    reward = SynchformerOffsetReward(model).prepare()
    video = torch.randn(3, 3 * 8, 64)  # 3 windows of tokens
    wav = torch.randn(3, 10240 + 2 * 5120) * 0.1  # 3 audio windows at 16 kHz
    grid = offset_grid()
    desync = (grid[first].abs() + grid[last].abs()) / 2  # [0.2, 2.0, 1.0]
    assert torch.allclose(reward(wav, reward.video_inputs({"sync": video})), (2 - desync) / 4)
    model.transformer = _StandInHead([[10, 10, 10]] * 2)  # 44.1 kHz input is resampled to 16 kHz first
    wav44 = torch.randn(3, round(20480 * 44100 / 16000)) * 0.1
    assert torch.allclose(SynchformerOffsetReward(model, sample_rate=44100)(wav44, video), torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="windows"):
        model.transformer = _StandInHead([[10, 10, 10]] * 2)
        reward(wav[:, :10240], video)  # 1 audio window against 3 video windows


class _LogitHead(torch.nn.Module):
    """Replaces the offset head: returns the queued logits, one ``[B, C]`` per call."""

    def __init__(self, logits: list[torch.Tensor]):
        super().__init__()
        self.queue = list(logits)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.queue.pop(0)


def test_expected_offset_reward_closed_form():
    """score="expected": 1 − (E|o|_first + E|o|_last) / 2 / max_offset with E|o| = Σ softmax(logits)·|grid|."""
    from reasonaudio.models.synchformer import (SYNCHFORMER_TINY, Synchformer, SynchformerConfig, expected_abs_offset,
                                                offset_grid)

    torch.manual_seed(0)
    model = Synchformer(SynchformerConfig(**{**SYNCHFORMER_TINY.to_dict(), "segments": 2}))
    grid = offset_grid()  # 21 classes, ±2 s
    sure = torch.full((1, 21), -1e4)
    sure[0, 10] = 0.0  # all mass on offset 0
    assert expected_abs_offset(sure, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert expected_abs_offset(torch.zeros(1, 21), 2.0).item() == pytest.approx(float(grid.abs().mean()))
    first, last = torch.randn(3, 21), torch.randn(3, 21)
    model.transformer = _LogitHead([first, last])
    reward = SynchformerOffsetReward(model, score="expected").prepare()
    video = torch.randn(3, 3 * 8, 64)
    wav = torch.randn(3, 10240 + 2 * 5120) * 0.1
    expect = lambda logits: (logits.softmax(-1) * grid.abs()).sum(-1)  # noqa: E731
    want = 1 - (expect(first) + expect(last)) / 2 / 2.0
    got = reward(wav, reward.video_inputs({"sync": video}))
    assert torch.allclose(got, want, atol=1e-6) and ((got >= 0) & (got <= 1)).all()
    with pytest.raises(ValueError, match="score"):
        SynchformerOffsetReward(model, score="mean")


def test_contrast_reward_closed_form_over_every_span():
    """score="contrast": mean over the spans of logit(0) − mean_c logit(c); span_logits cuts spans one window apart,
    exactly as offset_logits of each span cut by hand."""
    from reasonaudio.models.synchformer import SYNCHFORMER_TINY, Synchformer, SynchformerConfig, zero_offset_contrast

    torch.manual_seed(0)
    config = SynchformerConfig(**{**SYNCHFORMER_TINY.to_dict(), "segments": 2, "head": "correlation",
                                  "num_offsets": 5, "max_offset": 0.4})
    model = Synchformer(config).eval()
    video, audio = torch.randn(3, 4 * 8, 64), torch.randn(3, 4 * 6, 64)  # 4 windows: 3 spans of 2
    with torch.no_grad():
        spans = model.span_logits(video, audio)
        by_hand = torch.stack([model.offset_logits(video[:, 8 * i:8 * (i + 2)], audio[:, 6 * i:6 * (i + 2)])
                               for i in range(3)], dim=1)
    assert spans.shape == (3, 3, 5) and torch.allclose(spans, by_hand, atol=1e-5)
    with pytest.raises(ValueError, match="windows"):
        model.span_logits(video, audio[:, :18])

    logits = torch.randn(3 * 3, 5)  # [B·spans, C] as the head sees the spans
    model.correlation = _LogitHead([logits])
    reward = SynchformerOffsetReward(model, score="contrast").prepare()
    wav = torch.randn(3, 10240 + 3 * 5120) * 0.1  # 4 audio windows
    per_span = (logits[:, 2] - logits.mean(-1)).view(3, 3)
    assert torch.allclose(reward(wav, reward.video_inputs({"sync": video})), per_span.mean(1), atol=1e-6)
    even = Synchformer(SynchformerConfig(**{**config.to_dict(), "num_offsets": 4}))
    with pytest.raises(ValueError, match="zero-offset"):
        SynchformerOffsetReward(even, score="contrast")
    with pytest.raises(ValueError, match="zero-offset"):
        zero_offset_contrast(torch.zeros(2, 4))
    sure = torch.tensor([[0.0, 0.0, 5.0, 0.0, 0.0]])  # log P(0) − mean log P = 5 − 1 = 4
    assert zero_offset_contrast(sure).item() == pytest.approx(4.0)


def test_synchrony_reward_refuses_an_export_trained_with_another_config(tmp_path):
    """A make-sync export records its config: a reward whose Synchformer differs (here: 3 windows, not 2 — the same
    weight shapes, so strict loading alone would accept it) is refused by name; the export's own config loads."""
    from reasonaudio.models.synchformer import SYNCHFORMER_TINY, Synchformer, SynchformerConfig, save_synchformer

    config = SynchformerConfig(**{**SYNCHFORMER_TINY.to_dict(), "segments": 2, "head": "correlation",
                                  "num_offsets": 5, "max_offset": 0.4})
    path = save_synchformer(Synchformer(config), tmp_path / "synchformer.safetensors")
    assert SynchformerOffsetReward(Synchformer(config), str(path), score="contrast").prepare()._loaded
    other = Synchformer(SynchformerConfig(**{**config.to_dict(), "segments": 3}))
    with pytest.raises(ValueError, match="trained with"):
        SynchformerOffsetReward(other, str(path), score="contrast").prepare()


def test_synchrony_reward_reads_the_clip_video_with_its_own_visual_branch(tmp_path):
    """video_root: the reward encodes <root>/videos/<id>.mp4 itself and scores exactly as with those tokens given;
    a clip without a video is named in the error."""
    from reasonaudio.media import load_video, write_video
    from reasonaudio.models.synchformer import SYNCHFORMER_TINY, Synchformer, SynchformerConfig

    torch.manual_seed(0)
    model = Synchformer(SynchformerConfig(**{**SYNCHFORMER_TINY.to_dict(), "segments": 2}))
    (tmp_path / "videos").mkdir()
    frames = (torch.rand(2, 40, 32, 32, 3) * 255).to(torch.uint8)  # 1.6 s at 25 fps: 3 windows
    for i in range(2):
        write_video(tmp_path / "videos" / f"clip{i}.mp4", frames[i], 25)
    reward = SynchformerOffsetReward(model, score="expected", video_root=[str(tmp_path / "none"), str(tmp_path)])
    reward.prepare()
    tokens = reward.video_inputs({"id": ["clip0", "clip1"]})
    decoded = torch.stack([load_video(tmp_path / "videos" / f"clip{i}.mp4", 25, size=model.config.image_size).frames
                           for i in range(2)])
    with torch.no_grad():
        assert torch.allclose(tokens, model.encode_video(decoded), atol=1e-5)
        wav = torch.randn(2, 10240 + 2 * 5120) * 0.1
        direct = SynchformerOffsetReward(model, score="expected").prepare()
        assert torch.allclose(reward(wav, tokens), direct(wav, model.encode_video(decoded)), atol=1e-6)
    assert sorted(reward._visual) == [str(tmp_path / "videos" / f"clip{i}.mp4") for i in range(2)]  # once per file
    small = SynchformerOffsetReward(model, score="expected", video_root=str(tmp_path), cached_videos=1).prepare()
    assert torch.allclose(small.video_inputs({"id": ["clip0", "clip1"]}), tokens)  # clip0 left the cache for clip1
    assert list(small._visual) == [str(tmp_path / "videos" / "clip1.mp4")]
    assert torch.allclose(small.video_inputs({"id": ["clip0"]}), tokens[:1])  # encoded again, the same
    with pytest.raises(FileNotFoundError, match="clip9"):
        reward.video_inputs({"id": ["clip9"]})


def test_ground_truth_onset_reward(tmp_path):
    from reasonaudio.data_modules.synthetic import render_audio, sample_scene
    from reasonaudio.metrics import synthetic

    scene = sample_scene(seed=3, index=0, duration=2.0)
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / f"{scene['id']}.json").write_text(json.dumps(scene))
    wav = torch.from_numpy(render_audio(scene)).float()
    shifted = torch.roll(wav, 8000)  # 0.5 s late
    reward = GroundTruthOnsetReward([str(tmp_path)], sample_rate=16000, tau=0.1)
    gts = reward.video_inputs({"id": [scene["id"], scene["id"]]})
    values = reward(torch.stack([wav, shifted]), gts)
    for value, audio in zip(values, (wav, shifted)):
        f1 = synthetic.onset_f1(audio.numpy(), 16000, scene)
        err = synthetic.onset_sync_error(audio.numpy(), 16000, scene)
        assert value.item() == pytest.approx(0.5 * (f1 + np.exp(-err / 0.1)), rel=1e-6)
    assert values[0] > 0.9 and values[0] > values[1]
    with pytest.raises(FileNotFoundError, match="no ground truth"):
        reward.video_inputs({"id": ["missing"]})
