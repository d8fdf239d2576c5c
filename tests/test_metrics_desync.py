"""DeSync on synthetic clips: aligned vs 0.6 s late audio, with a random-weight Synchformer whose offset
head is replaced by a known function.

The clips are 8 s of flat grey video with four white flash frames and silent audio with a click at
each flash (aligned) or 0.6 s after it (shifted). The tiny random-weight Synchformer encodes both
streams; its windows without an event are identical, so a window's "activity" (distance of its
tokens from the median window) marks where events are. The stand-in head scores each of the 21
offset classes o by how well the video activity matches the audio activity moved by o (0.32 s per
window, linear interpolation; Synchformer's sign: o > 0 means the audio comes early), which makes
the true answer known: 0 s for the aligned clip and −0.6 s → |0.6| for the shifted one. Everything
else — frame and audio windowing, the first / last 14 windows, the class grid, the arg-max, the
mean of |offset| — is the code under test.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reasonaudio.config import SYNC_FPS
from reasonaudio.metrics.desync import DeSync, audio_tokens, desync_seconds, video_tokens
from reasonaudio.models.synchformer import SYNCHFORMER_TINY, Synchformer, offset_grid

EVENTS = (0.8, 2.4, 4.0, 5.6)
"""Flash times: frame 8k + 4 (k = 2, 7, 12, 17), mid-way into a 0.32 s window hop."""
WINDOW_HOP_S = 0.32


def make_clip(shift: float, seconds: float = 8.0, rate: int = 16000) -> tuple[torch.Tensor, torch.Tensor]:
    """``[1, T, 32, 32, 3]`` uint8 frames at 25 fps and ``[1, N]`` audio with clicks ``shift`` s after the flashes."""
    frames = np.full((round(seconds * SYNC_FPS), 32, 32, 3), 90, np.uint8)
    wav = np.zeros(round(seconds * rate), np.float32)
    click = (0.8 * np.sin(2 * np.pi * 2500 * np.arange(160) / rate) * np.hanning(160)).astype(np.float32)
    for t in EVENTS:
        frames[round(t * SYNC_FPS)] = 255
        start = round((t + shift) * rate)
        if start + click.size <= wav.size:
            wav[start:start + click.size] = click
    return torch.from_numpy(frames)[None], torch.from_numpy(wav)[None]


def _activity(tokens: torch.Tensor, per_window: int) -> torch.Tensor:
    """``[B, S·k, D]`` → ``[B, S]``: distance of each window's tokens from the median window."""
    windows = tokens.unflatten(1, (-1, per_window))  # [B, S, k, D]
    act = (windows - windows.median(dim=1, keepdim=True).values).norm(dim=-1).sum(dim=-1)
    return act / act.amax(dim=1, keepdim=True).clamp_min(1e-12)


def known_head(calls: list):
    """Offset logits [B, 21] from activity cross-correlation (see the module docstring)."""

    def head(video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        calls.append((video, audio))
        v, a = _activity(video, 8), _activity(audio, 6)  # [B, 14]
        s = torch.arange(v.shape[1], dtype=torch.float64)
        logits = []
        for offset in offset_grid().double():
            pos = s - offset / WINDOW_HOP_S  # audio window matching video window s
            lo = pos.floor().long()
            frac = pos - lo
            def at(i):
                inside = (i >= 0) & (i < a.shape[1])
                return torch.where(inside, a.double()[:, i.clamp(0, a.shape[1] - 1)], torch.zeros(()))
            shifted = (1 - frac) * at(lo) + frac * at(lo + 1)
            logits.append((v.double() * shifted).sum(dim=1) - 1e-6 * abs(float(offset)))
        return torch.stack(logits, dim=1).float()

    return head


@pytest.fixture(scope="module")
def model() -> Synchformer:
    torch.manual_seed(0)
    return Synchformer(SYNCHFORMER_TINY).eval()


@pytest.fixture
def calls(model, monkeypatch) -> list:
    recorded: list = []
    monkeypatch.setattr(model, "offset_logits", known_head(recorded))
    return recorded


def test_aligned_vs_shifted_clip(model, calls):
    aligned, shifted = DeSync(model), DeSync(model)
    aligned.update(*make_clip(0.0))
    shifted.update(*make_clip(0.6))
    assert float(aligned.compute()) == pytest.approx(0.0, abs=1e-9)
    assert float(shifted.compute()) == pytest.approx(0.6, abs=1e-6)
    assert float(aligned.compute()) < float(shifted.compute())
    # the head saw the first and the last 14 of the 24 windows
    frames, wav = make_clip(0.6)
    v, a = video_tokens(model, frames), audio_tokens(model, wav)
    assert v.shape[1] == 24 * 8 and a.shape[1] == 24 * 6
    (v_first, a_first), (v_last, a_last) = calls[-2:]
    torch.testing.assert_close(v_first, v[:, :14 * 8])
    torch.testing.assert_close(a_last, a[:, -14 * 6:])
    torch.testing.assert_close(v_last, v[:, 10 * 8:])
    torch.testing.assert_close(a_first, a[:, :14 * 6])


def test_batch_mean_layouts_rates_and_tokens(model, calls):
    f0, w0 = make_clip(0.0)
    f6, w6 = make_clip(0.6)
    metric = DeSync(model)
    metric.update(torch.cat([f0, f6]), torch.cat([w0, w6]))  # [B, T, H, W, 3]
    assert float(metric.compute()) == pytest.approx(0.3, abs=1e-6)
    # channels-first frames, audio at 44.1 kHz (resampled to 16 kHz inside), and precomputed tokens
    f44, w44 = make_clip(0.6, rate=44100)
    per_clip = desync_seconds(model, f44.permute(0, 1, 4, 2, 3), w44, sample_rate=44100)
    assert per_clip.tolist() == pytest.approx([0.6], abs=1e-6)
    tokens = desync_seconds(model, video_tokens(model, f6), audio_tokens(model, w6))
    assert tokens.tolist() == pytest.approx([0.6], abs=1e-6)


def test_unequal_lengths_are_cut_to_common_windows_and_short_clips_rejected(model, calls):
    frames, wav = make_clip(0.6)
    per_clip = desync_seconds(model, frames[:, :round(7.0 * SYNC_FPS)], wav)  # 7 s video, 8 s audio
    assert per_clip.tolist() == pytest.approx([0.6], abs=1e-6)
    v, a = calls[-1]
    assert v.shape[1] == 14 * 8 and a.shape[1] == 14 * 6
    assert len(calls) == 2
    with pytest.raises(ValueError, match="at least 14 windows"):
        desync_seconds(model, frames[:, :round(4.5 * SYNC_FPS)], wav)
    cut = DeSync(model, max_seconds=4.0)
    with pytest.raises(ValueError, match="at least 14 windows"):
        cut.update(frames, wav)


def test_states_merge(model, calls):
    rank0, rank1 = DeSync(model), DeSync(model)
    rank0.update(*make_clip(0.0))
    rank1.update(*make_clip(0.6))
    rank1.update(*make_clip(0.6))
    rank0.merge_state(rank1)
    assert float(rank0.count) == 3
    assert float(rank0.compute()) == pytest.approx(0.4, abs=1e-6)


def test_checkpoint_path_argument(tmp_path):
    missing = tmp_path / "synchformer_state_dict.pth"
    with pytest.raises(FileNotFoundError) as err:
        DeSync(missing)
    assert err.value.filename == str(missing)
    torch.save(Synchformer(SYNCHFORMER_TINY).state_dict(), missing)  # the path builds the official size
    with pytest.raises(ValueError, match="shape mismatches"):
        DeSync(str(missing))
