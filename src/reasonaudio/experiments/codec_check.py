"""``make codec-check``: where a trained codec loses impacts, clip by clip, on synthetic clips it never saw.

Issue 17's codec target is per clip (vocoded ground truth: onset F1 ≥ 0.95 and onset error ≤ 15 ms on *every*
held-out clip), and the demo's 8 held-out clips are too few to tell codecs apart or to locate a loss. This check
renders a fresh corpus (seed 30 000 by default: neither the demo's nor the study's training seed 0 or held-out seed
10 000, so tuning against it never touches the held-out clips) and scores every clip at three points of the signal
path:

* ``raw``: the clip itself (the metric's own ceiling; 1.0 and ~0 ms on the synthetic corpus);
* ``vocoder``: the vocoder on the clip's true log-mel;
* ``codec``: the vocoder on the VAE's reconstruction of it (posterior mean → decode), the demo's ``vocoded_gt``.

A loss between ``vocoder`` and ``codec`` is the VAE's; between ``raw`` and ``vocoder`` the vocoder's (or the
mel's). Each clip also gets the smallest onset strength at a true impact (``min_impact_flux``; the detector's
threshold is :data:`~reasonaudio.metrics.synthetic.ONSET_THRESHOLD`), which shows how far a missed impact fell.
Clips with off-screen rain are counted apart: they are the kind the demo codec loses.

Writes ``<out>/summary.json``::

    {"settings": {...}, "machine": "...", "target": {"onset_f1": 0.95, "onset_error_ms": 15.0},
     "stages": {"raw" | "vocoder" | "codec": {"clips", "misses", "miss_ids", "onset_f1_mean", "onset_error_ms_mean",
                                             "rain_clips", "rain_misses"}},
     "clips": [{"id", "kinds", "rain", "<stage>": {"onset_f1", "onset_error_ms", "min_impact_flux"}}, ...]}
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import nn

from reasonaudio.data_modules.synthetic import synthesize_corpus
from reasonaudio.experiments.layout import DemoLayout, corpus_manifest
from reasonaudio.experiments.pipeline import machine_name
from reasonaudio.metrics import synthetic as S
from reasonaudio.models.mel import MelSpectrogram
from reasonaudio.synthetic_world import ground_truth_file, impact_times, read_ground_truth
from reasonaudio.systems.vae import trained_vae
from reasonaudio.systems.vocoder import trained_generator

TARGET_F1, TARGET_ERROR_MS = 0.95, 15.0
"""Issue 17's every-clip target for vocoded ground truth."""
STAGES = ("raw", "vocoder", "codec")
_IMPACT_WINDOW = 0.03  # s: an impact's onset strength is the largest within this distance of its true time


def min_impact_flux(wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> float:
    """The smallest onset strength (:func:`~reasonaudio.metrics.synthetic.onset_strength`, beep bands excluded as
    the onset metrics do) within 30 ms of a true on-screen impact."""
    truth = impact_times(gt)
    times, flux = S.onset_strength(wav[: round(gt["duration"] * sample_rate)], sample_rate, S.beep_bands(gt))
    return float(min(flux[np.abs(times - t) <= _IMPACT_WINDOW].max() for t in truth))


def score(wav: np.ndarray, sample_rate: int, gt: dict[str, Any]) -> dict[str, float]:
    """Onset F1, onset error (ms) and :func:`min_impact_flux` of one rendering of a clip."""
    return {"onset_f1": float(S.onset_f1(wav, sample_rate, gt)),
            "onset_error_ms": 1000.0 * float(S.onset_sync_error(wav, sample_rate, gt)),
            "min_impact_flux": min_impact_flux(wav, sample_rate, gt)}


def misses(row: dict[str, float]) -> bool:
    """Whether one clip's rendering misses the every-clip target."""
    return row["onset_f1"] < TARGET_F1 or row["onset_error_ms"] > TARGET_ERROR_MS


@torch.no_grad()
def check_clips(corpus: Path, vocoder: nn.Module, vae: nn.Module, mel: MelSpectrogram,
                progress: bool = True) -> list[dict[str, Any]]:
    """Every clip of ``corpus`` (a synthetic corpus folder) scored at each of :data:`STAGES`."""
    ids = [json.loads(line)["id"] for line in corpus_manifest(corpus).read_text().splitlines() if line.strip()]
    rows = []
    for i, clip_id in enumerate(ids, 1):
        gt = read_ground_truth(ground_truth_file(corpus, clip_id))
        audio_file = corpus / "audio" / f"{clip_id}.wav"
        wav, sr = sf.read(audio_file, dtype="float32", always_2d=False)
        if sr != mel.audio.sample_rate:
            raise ValueError(f"{audio_file}: {sr} Hz, the codec's mel expects "
                             f"{mel.audio.sample_rate} Hz")
        log_mel = mel(torch.from_numpy(wav)[None])  # [1, M, F]
        d = getattr(vae, "downsample", 1)
        log_mel = log_mel[..., : log_mel.shape[-1] // d * d]  # whole latent frames
        mean, _ = vae.encode(log_mel)
        renders = {"raw": wav,
                   "vocoder": vocoder(log_mel).flatten().clamp(-1, 1).numpy(),
                   "codec": vocoder(vae.decode(mean)).flatten().clamp(-1, 1).numpy()}
        rows.append({"id": clip_id, "kinds": "+".join(s["type"] for s in gt["sources"]),
                     "rain": any(s["type"] == "rain" for s in gt["sources"]),
                     **{stage: score(x, sr, gt) for stage, x in renders.items()}})
        if progress and (i % 20 == 0 or i == len(ids)):
            print(f"[codec-check] {i}/{len(ids)} clips scored", flush=True)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage: clip and miss counts (all clips, rain clips), the missed ids, mean F1 and error."""
    out = {}
    for stage in STAGES:
        missed = [r for r in rows if misses(r[stage])]
        out[stage] = {"clips": len(rows), "misses": len(missed), "miss_ids": [r["id"] for r in missed],
                      "onset_f1_mean": float(np.mean([r[stage]["onset_f1"] for r in rows])),
                      "onset_error_ms_mean": float(np.mean([r[stage]["onset_error_ms"] for r in rows])),
                      "rain_clips": sum(r["rain"] for r in rows),
                      "rain_misses": sum(r["rain"] for r in missed)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reasonaudio-codec-check", description=__doc__.splitlines()[0])
    demo = DemoLayout(Path("runs/demo"))
    parser.add_argument("--out", default="runs/codec_check", help="folder of the clips and summary.json")
    parser.add_argument("--vocoder", default=None, help="VocoderTrain .ckpt or BigVGAN folder (default: the demo's)")
    parser.add_argument("--vae", default=None, help="VAETrain .ckpt (default: the demo's)")
    parser.add_argument("--num-clips", type=int, default=160, help="fresh synthetic clips")
    parser.add_argument("--seed", type=int, default=30_000, help="their corpus seed (not a demo or study seed)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per clip")
    args = parser.parse_args(argv)
    vocoder_path = Path(args.vocoder) if args.vocoder else demo.vocoder
    vae_path = Path(args.vae) if args.vae else demo.vae_fit
    for what, path in (("vocoder", vocoder_path), ("VAE", vae_path)):
        if not path.exists():
            print(f"codec-check: {what} not found: {path} (run `make demo`, or pass --{what.lower()})",
                  file=sys.stderr)
            return 2
    out = Path(args.out)
    corpus = out / f"clips_seed{args.seed}_n{args.num_clips}"
    if not corpus_manifest(corpus).is_file():
        synthesize_corpus(corpus, args.num_clips, args.seed, duration=args.duration, preset="tiny", progress=False)
    start = time.time()
    rows = check_clips(corpus, trained_generator(str(vocoder_path)), trained_vae(str(vae_path)),
                       MelSpectrogram("tiny"))
    stages = summarize(rows)
    summary = {"settings": {"vocoder": str(vocoder_path), "vae": str(vae_path), "num_clips": args.num_clips,
                            "seed": args.seed, "duration": args.duration, "corpus": str(corpus)},
               "machine": machine_name(), "seconds": round(time.time() - start, 1),
               "target": {"onset_f1": TARGET_F1, "onset_error_ms": TARGET_ERROR_MS},
               "stages": stages, "clips": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\ncodec-check: {args.num_clips} clips (seed {args.seed}); a miss is F1 < {TARGET_F1} or error > "
          f"{TARGET_ERROR_MS:g} ms")
    print(f"{'stage':8s} {'misses':>7s} {'rain misses':>12s} {'mean F1':>8s} {'mean error':>11s}")
    for stage, s in stages.items():
        print(f"{stage:8s} {s['misses']:7d} {s['rain_misses']:5d} of {s['rain_clips']:<4d} {s['onset_f1_mean']:8.3f} "
              f"{s['onset_error_ms_mean']:8.1f} ms")
    print(f"→ {out / 'summary.json'} ({summary['machine']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
