"""``make reward-check``: does the synchrony reward rank candidates of clips it never saw like the ground truth?

The demo measures its reward on the candidates of its own training clips, the clips the reward's Synchformer was
trained on. This check asks the same question on conditions nobody trained on, as issue 20 puts it:

1. ``--num-clips`` fresh synthetic clips (corpus seed ``--seed``, apart from every demo, study and codec-check
   seed), cached with the demo's VAE and Synchformer weights (``features.yaml``);
2. K = ``--candidates`` candidates per clip from the demo's pretrained model, sampled and scored by the reward
   exactly as ``make preference-data`` does, each also judged against the clip's ground truth;
3. the reward's ranking against the ground truth
   (:func:`~reasonaudio.experiments.post_train_eval.reward_vs_ground_truth`: pair agreement on pairs ≥ 50 ms
   apart with its 95 % group-bootstrap interval, Spearman ρ, the share of candidates in the lowest and highest
   1 % of the reward's range, winners against losers), and the same candidates ranked by every reading of the
   reward's offset head (:data:`~reasonaudio.models.reward.SCORES`), decoded once.

Writes ``<out>/summary.json``; a rerun reuses the clips, caches and candidates it finds. About 8 min on a 2-core
AMD EPYC for 48 clips × 8 candidates.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from reasonaudio.data_modules.features import META, SYNC_WEIGHTS
from reasonaudio.experiments.layout import DemoLayout
from reasonaudio.experiments.pipeline import machine_name, run_cli
from reasonaudio.experiments.post_train_eval import reward_vs_ground_truth, sync_reading_scores
from reasonaudio.experiments.stages import build_preference_data, features_args, sync_reward_overrides
from reasonaudio.models.reward import SCORES
from reasonaudio.models.vae import mel_vae_tiny
from reasonaudio.preference_objectives import percent_interval
from reasonaudio.systems.preference_builder import make_decoder

REWARD_CHECK_SEED = 70_000
"""Corpus seed of the check's clips (the demo uses 0 and 10 000, codec-check 30 000)."""


def decoded_once(decode: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], torch.Tensor]:
    """``decode`` of a stored group's latents, computed once per group (its row) and then kept."""
    kept: dict[int, torch.Tensor] = {}

    def of(group: dict) -> torch.Tensor:
        row = int(group["row"])
        if row not in kept:
            with torch.no_grad():
                kept[row] = decode(group["latents"].float())
        return kept[row]
    return of


def check(out: Path, demo: DemoLayout, num_clips: int, seed: int, candidates: int,
          reward: Path | None = None) -> dict[str, Any]:
    """Steps 1–3 of the module docstring; returns the summary (also written to ``<out>/summary.json``)."""
    start = time.time()
    reward = reward or demo.reward_sync
    for what, path in (("reward", reward), ("pretrained model", demo.pretrained), ("VAE", demo.vae),
                       ("vocoder", demo.vocoder), ("sync weights", demo.features_corpus / SYNC_WEIGHTS)):
        if not path.exists():
            raise FileNotFoundError(f"reward-check: the demo's {what} is missing: {path} (run `make demo`)")
    corpus, cache, groups = out / "corpus", out / "features", out / "candidates" / "groups"
    if not (cache / META).is_file():
        run_cli(features_args(corpus, cache, demo.vae, demo.features_corpus / SYNC_WEIGHTS, out / "logs",
                              num_clips, seed=seed))
    scorer = sync_reward_overrides(reward, [corpus], demo.vae, demo.vocoder)
    store = build_preference_data(groups, cache, demo.pretrained, demo.mllm, scorer, candidates,
                                  ground_truth=(corpus, demo.vae, demo.vocoder))
    decode = decoded_once(make_decoder(mel_vae_tiny(), str(demo.vae), str(demo.vocoder)))
    readings = {name: sync_reading_scores(reward, [corpus], decode, name) for name in SCORES}
    ranking = reward_vs_ground_truth(groups, readings)
    summary = {"settings": {"num_clips": num_clips, "seed": seed, "candidates": candidates, "reward": str(reward),
                            "pretrained": str(demo.pretrained)},
               "machine": machine_name(), "seconds": round(time.time() - start, 1),
               "groups": store.get("kept"), "reward_vs_ground_truth": ranking}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reasonaudio-reward-check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/reward_check"), help="folder of clips and summary.json")
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"), help="the demo whose models are checked")
    parser.add_argument("--reward", type=Path, default=None, help="reward Synchformer export (default: the demo's)")
    parser.add_argument("--num-clips", type=int, default=48, help="fresh synthetic clips")
    parser.add_argument("--seed", type=int, default=REWARD_CHECK_SEED, help="their corpus seed")
    parser.add_argument("--candidates", type=int, default=8, help="K, candidates per clip")
    args = parser.parse_args(argv)
    try:
        s = check(args.out, DemoLayout(args.demo), args.num_clips, args.seed, args.candidates, args.reward)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    r = s["reward_vs_ground_truth"]
    print(f"\nreward-check: {s['groups']} fresh clips (seed {args.seed}) x {args.candidates} candidates of "
          f"{s['settings']['pretrained']}; pairs whose onset errors differ by >= 50 ms: {r['pairs']}")
    print(f"the reward (its configured reading) orders {100 * r['pair_agreement']:.1f} % like the ground truth "
          f"({percent_interval(r.get('pair_agreement_ci95'))}), "
          f"within-group rho {r['spearman_within']:.2f}; lowest / highest 1 % of its range: "
          f"{100 * r['saturated_low']:.0f} / {100 * r['saturated_high']:.0f} % of candidates; winners vs losers "
          f"{1000 * r['winner_error']:.1f} vs {1000 * r['loser_error']:.1f} ms")
    for name, alt in r["alternatives"].items():
        print(f"  reading {name:9s}: {100 * alt['pair_agreement']:.1f} % "
              f"({percent_interval(alt.get('pair_agreement_ci95'))}), "
              f"within-group rho {alt['spearman_within']:.2f}")
    print(f"-> {args.out / 'summary.json'} ({s['machine']}, {s['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
