"""``make codec-check`` (reasonaudio.experiments.codec_check): per-clip onset scores at each point of the codec.

The codec here is real but untrained where that makes the expected outcome known: Griffin-Lim (a non-learned
inversion of the ``tiny`` mel) as the vocoder, and a randomly initialised ``mel_vae_tiny`` as the VAE.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchaudio
from torch import nn

from reasonaudio.data_modules.synthetic import synthesize_corpus
from reasonaudio.experiments import codec_check as C
from reasonaudio.metrics import synthetic as S
from reasonaudio.models.mel import MelSpectrogram
from reasonaudio.models.vae import mel_vae_tiny


class GriffinLimVocoder(nn.Module):
    """log-mel ``[1, M, F]`` → waveform ``[1, 1, F · hop]``: pseudo-inverse mel bank, 32 Griffin-Lim iterations
    from a fixed seed."""

    def __init__(self, mel: MelSpectrogram):
        super().__init__()
        self.mel = mel

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        a = self.mel.audio
        magnitude = (torch.linalg.pinv(self.mel.mel_basis) @ log_mel[0].exp()).clamp(min=0)  # [K, F]
        torch.manual_seed(0)
        wav = torchaudio.functional.griffinlim(magnitude[None], torch.hann_window(a.win_length), a.n_fft,
                                               a.hop_length, a.win_length, 1.0, 32, 0.99, None, False)
        return wav[:, None, : log_mel.shape[-1] * a.hop_length]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("codec_check") / "clips"
    synthesize_corpus(corpus, 3, seed=7, progress=False)
    mel = MelSpectrogram("tiny")
    torch.manual_seed(0)
    rows = C.check_clips(corpus, GriffinLimVocoder(mel), mel_vae_tiny().eval(), mel, progress=False)
    return corpus, mel, rows


def test_each_stage_is_scored_with_the_benchmark_metrics(scored):
    import soundfile as sf

    corpus, mel, rows = scored
    assert [r["id"] for r in rows] == [f"synth_{i:06d}" for i in range(3)]
    for row in rows:
        gt = json.loads((corpus / "gt" / f"{row['id']}.json").read_text())
        wav, sr = sf.read(corpus / "audio" / f"{row['id']}.wav", dtype="float32")
        assert row["raw"]["onset_f1"] == 1.0 and row["raw"]["onset_error_ms"] < 2.0  # the metric's ceiling
        assert row["raw"]["min_impact_flux"] > S.ONSET_THRESHOLD  # every impact detected: above the threshold
        # the vocoder stage is the vocoder on the clip's true mel, scored by the benchmark's own functions
        log_mel = mel(torch.from_numpy(wav)[None])
        log_mel = log_mel[..., : log_mel.shape[-1] // 2 * 2]
        with torch.no_grad():
            out = GriffinLimVocoder(mel)(log_mel).flatten().clamp(-1, 1).numpy()
        assert row["vocoder"]["onset_f1"] == pytest.approx(S.onset_f1(out, sr, gt))
        assert row["vocoder"]["onset_error_ms"] == pytest.approx(1000 * S.onset_sync_error(out, sr, gt))
        assert row["rain"] == any(s["type"] == "rain" for s in gt["sources"])


def test_min_impact_flux_is_the_weakest_detected_impact(scored):
    """The clip's own weakest impact is the figure its raw row holds; a rendering without the impacts (silence) has
    none above 0, far below the detector's threshold."""
    import soundfile as sf

    corpus, _, rows = scored
    gt = json.loads((corpus / "gt" / f"{rows[0]['id']}.json").read_text())
    wav, sr = sf.read(corpus / "audio" / f"{rows[0]['id']}.wav", dtype="float64")
    assert C.min_impact_flux(wav, sr, gt) == pytest.approx(rows[0]["raw"]["min_impact_flux"])
    assert C.min_impact_flux(np.zeros_like(wav), sr, gt) == 0.0


def test_an_untrained_vae_is_where_the_impacts_are_lost(scored):
    _, _, rows = scored
    summary = C.summarize(rows)
    assert summary["raw"]["misses"] == 0 and summary["raw"]["onset_f1_mean"] == 1.0
    # Griffin-Lim of the true mel keeps the impacts, with artefacts of its own (measured: F1 1.0, 1.0 and 0.67 from
    # extra onsets; errors 8.7-12 ms)
    assert summary["vocoder"]["onset_f1_mean"] >= 0.85 and summary["vocoder"]["onset_error_ms_mean"] <= 15.0
    # a random VAE's reconstruction carries no impact: every clip misses, and the miss is placed at the VAE
    assert summary["codec"]["misses"] == 3 and summary["codec"]["miss_ids"] == [r["id"] for r in rows]
    assert summary["codec"]["onset_f1_mean"] < 0.5 * summary["vocoder"]["onset_f1_mean"]
    assert all(s["clips"] == 3 and s["rain_clips"] == sum(r["rain"] for r in rows) for s in summary.values())
    assert C.misses({"onset_f1": 0.95, "onset_error_ms": 15.0}) is False  # the target's bounds are inclusive
    assert C.misses({"onset_f1": 0.949, "onset_error_ms": 1.0}) and C.misses({"onset_f1": 1.0, "onset_error_ms": 15.1})


def test_missing_checkpoint_is_named(tmp_path, capsys):
    missing = tmp_path / "no_such_vocoder.ckpt"
    assert C.main(["--vocoder", str(missing), "--vae", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing rendered or written
