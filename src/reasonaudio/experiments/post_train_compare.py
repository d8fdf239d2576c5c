"""`make post-train-compare`: SFT vs RWR vs Flow-DPO from one tiny pretrained model, on the synthetic corpus
(the paper's Figure 4 and its β sweep at toy scale).

    python -m reasonaudio.experiments.post_train_compare [--demo runs/demo] [--out runs/post_train_compare]
        [--seeds 0 1 2] [--steps 100] [--betas 1 2 50] [--online-rounds 2] [--docs docs/results.md]
        [--results-json docs/results.json] [--figure docs/figure4.png]

Reads the artifacts of a finished ``make demo`` (training and held-out feature caches, VAE, vocoder, tiny
MLLM, trained Synchformer, the pretrained EMA export) and never writes there. Every step runs a committed
stage config through the ``reasonaudio`` CLI (in this process) and is skipped when its output exists, so an
interrupted comparison resumes where it stopped:

1. **held-out clips** — the demo's held-out set plus ``--extra-heldout`` new synthetic clips (their own
   seed), whose features come from the demo's VAE and Synchformer weights (``features.yaml``);
2. **rewards** — ``--reward sync`` (the default): the synchrony reward's own Synchformer (``sync.yaml`` +
   ``sync/reward.yaml``, another seed than DeSync's), scoring the zero-offset contrast ``logit(0) − mean logit``
   (``preference_data/synchrony_reward.yaml``);
   the paper's alignment classifier (``reward.yaml``) is trained too, its held-out accuracy per negative type
   measured (10 draws of windows and shifts) and its ranking of the same candidates reported beside;
3. **preference data** — ``preference_data.yaml``: K candidates per training condition from the
   pretrained EMA model, scored with the reward; every candidate is also decoded and scored against
   the ground truth, to measure how often the reward orders candidates like the ground truth
   (``reward_vs_ground_truth.json``). DPO pairs need a reward margin above the ``--margin-quantile`` of the
   groups' spreads;
4. **post-training** — ``post_train_{sft,rwr,dpo}.yaml`` (and DPO at the ``--betas``) for every seed,
   with the same steps, learning rate and batch of groups, plus DPO β 5 in ``--online-rounds`` rounds (the
   offline groups, then groups sampled from the current policy every ``steps / rounds`` steps; each run
   samples into its own copy of the store). Every run writes a snapshot every ``--snapshot-every`` steps;
5. **evaluation** — every model samples every held-out clip from the same noises; the audio is scored
   against the synthetic ground truth (``metrics/synthetic.py``: onset error, onset F1, timbre
   agreement), with DeSync (the demo's trained Synchformer) and the mean reward beside them.
   Quality proxies: the Fréchet distance between Gaussian fits of the generated and the real held-out
   latent frames (FD-latent, the generator alone) and of log-mel frames of the decoded audio against the
   vocoded ground truth (FD-mel). Seed s of every method is evaluated with noise set s, and the pretrained
   model with every noise set, so ``Δ`` columns are paired differences at equal noise. The snapshots are
   scored on the first ``--curve-clips`` held-out clips (reward, DeSync, onset error against the step);
6. **table** — mean ± 95 % Student-t interval over seeds into ``<out>/results.md`` and ``results.json``
   (every number); ``--results-json`` gets the summary scripts read (``docs_results``), ``--figure`` the
   curves (``figure4``); with ``--docs`` the block between ``<!-- post_train_compare:begin -->`` and
   ``<!-- post_train_compare:end -->`` of that file is replaced by the table.

Choosing between variants (``--variant NAME=KEY=VALUE[,…]``: extra DPO rows with objective overrides;
``--conditions M``: preference data on M new synthetic clips, seed :data:`CONDITIONS_SEED`, instead of the
demo's training clips) is done with ``--validation N`` into another ``--out``: every model is then scored on N
new synthetic clips (seed :data:`VALIDATION_SEED`) instead of the held-out sets, so a choice never looks at the
held-out results.

This module is the runner (:func:`main`); the stages as command lines and functions are in
:mod:`reasonaudio.experiments.stages` (shared with ``make demo``), the evaluation in
:mod:`reasonaudio.experiments.post_train_eval`, the statistics, tables and figure in
:mod:`reasonaudio.experiments.post_train_tables`.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from reasonaudio.data_modules.features import META, SYNC_WEIGHTS
from reasonaudio.data_modules.preference_groups import PreferenceStore
from reasonaudio.experiments.layout import DemoLayout
from reasonaudio.experiments.pipeline import machine_name, run_cli
from reasonaudio.experiments.post_train_eval import (HeldOut, classifier_scores, evaluate, load_model, load_reward,
                                                     load_sync_reward, reward_accuracy, reward_vs_ground_truth)
from reasonaudio.experiments.post_train_tables import ROWS, docs_results, figure4, results_table, row_statistics
from reasonaudio.experiments.stages import (build_preference_data, features_args, model_args, online_args, post_train,
                                            sync_reward_overrides, train_reward, train_sync_reward)
from reasonaudio.metrics.desync import load_sync_model
from reasonaudio.models.vae import mel_vae_tiny
from reasonaudio.preference_objectives import percent_interval
from reasonaudio.systems.codec import AudioDecoder

VALIDATION_SEED = 30_000
"""Synthesis seed of ``--validation`` clips (the extra held-out clips use 20,000, the demo's sets their own)."""
CONDITIONS_SEED = 40_000
"""Synthesis seed of ``--conditions`` clips (preference conditions other than the demo's training clips)."""
MARKERS = ("<!-- post_train_compare:begin -->", "<!-- post_train_compare:end -->")
"""The lines around the table in the ``--docs`` file."""
TIMINGS: dict[str, float] = {}
"""Seconds of every step run so far (``<out>/timings.json`` keeps them across invocations)."""


def _timed(label: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with progress lines, its seconds kept in :data:`TIMINGS` under ``label``."""
    t0 = time.perf_counter()
    print(f"[post_train_compare] {label} ...", flush=True)
    result = fn(*args, **kwargs)
    seconds = round(time.perf_counter() - t0, 1)
    TIMINGS[label] = max(TIMINGS.get(label, 0.0), seconds)  # a step found finished keeps the time it took to run
    print(f"[post_train_compare] {label}: {seconds:.0f} s", flush=True)
    return result


def margin_threshold(groups: Path, quantile: float) -> tuple[float, np.ndarray]:
    """The reward margin a DPO pair must exceed, and the groups' reward spreads (the margins of their arg-max /
    arg-min pairs): the ``quantile`` of the spreads, so about that fraction of the least informative pairs is
    left out (0: none)."""
    spreads = np.array([float(g["rewards"].max() - g["rewards"].min())
                        for g in map(PreferenceStore.load, PreferenceStore(groups).kept())])
    return (float(np.quantile(spreads, quantile)) if quantile > 0 else 0.0), spreads


def parse_variant(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """``"dpo_all=pairs=all,beta=2"`` → ``("dpo_all", [("pairs", "all"), ("beta", "2")])`` (``--variant``)."""
    name, _, rest = spec.partition("=")
    overrides = [tuple(item.split("=", 1)) for item in rest.split(",") if item]
    if not re.fullmatch(r"[A-Za-z0-9_]+", name) or name in ROWS or not overrides or any(len(o) != 2 for o in overrides):
        raise SystemExit(f"post_train_compare: --variant {spec!r}: expected NAME=KEY=VALUE[,KEY=VALUE] with a new "
                         f"NAME of letters, digits and '_' (not one of {', '.join(ROWS)})")
    return name, overrides  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="post_train_compare", description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"),
                        help="a finished `make demo` folder (read only)")
    parser.add_argument("--out", type=Path, default=Path("runs/post_train_compare"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100, help="post-training steps of every run")
    parser.add_argument("--lr", type=float, default=1e-4, help="post-training learning rate (LoRA weights)")
    parser.add_argument("--objectives", nargs="+", default=["sft", "rwr", "dpo"])
    parser.add_argument("--betas", type=float, nargs="*", default=[], help="extra DPO β values (β = 5 is 'dpo')")
    parser.add_argument("--online-rounds", type=int, default=2,
                        help="also run DPO β 5 online in this many rounds of groups sampled from the current policy "
                             "(the first round is the offline groups; 0: no online row)")
    parser.add_argument("--reward", choices=("sync", "classifier"), default="sync",
                        help="the preference reward: the synchrony reward (a separately trained Synchformer's "
                             "zero-offset contrast) or the paper's alignment classifier (docs/post_training.md)")
    parser.add_argument("--reward-steps", type=int, default=300, help="alignment classifier steps")
    parser.add_argument("--reward-sync-steps", type=int, default=100, help="the synchrony reward's Synchformer steps")
    parser.add_argument("--candidates", type=int, default=8, help="K candidates per training condition")
    parser.add_argument("--min-spread", type=float, default=0.0, help="groups with reward spread <= this are dropped")
    parser.add_argument("--margin-quantile", type=float, default=0.25,
                        help="DPO pairs need a reward margin above this quantile of the groups' spreads (0: all)")
    parser.add_argument("--extra-heldout", type=int, default=24, help="new synthetic held-out clips besides the demo's")
    parser.add_argument("--validation", type=int, default=0,
                        help="evaluate on this many new synthetic validation clips (their own seed) INSTEAD of the "
                             "held-out clips: to choose between variants without looking at the held-out set")
    parser.add_argument("--conditions", type=int, default=0,
                        help="preference conditions: this many new synthetic clips (their own seed) instead of the "
                             "demo's training clips (0)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                        help="an extra DPO row NAME with objective overrides, e.g. dpo_all=pairs=all (repeatable)")
    parser.add_argument("--eval-samples", type=int, default=2, help="generations per held-out clip")
    parser.add_argument("--sample-steps", type=int, default=25, help="Euler steps of every sampler")
    parser.add_argument("--snapshot-every", type=int, default=25,
                        help="curves (Figure 4): evaluate the policy every this many steps (0: no curves)")
    parser.add_argument("--curve-clips", type=int, default=32,
                        help="held-out clips of the curves, the first of the evaluation's (one generation each)")
    parser.add_argument("--docs", type=Path, default=None, help="markdown file whose marked block gets the table")
    parser.add_argument("--results-json", type=Path, default=None,
                        help="also write the scripts' summary (docs/results.json shape) here")
    parser.add_argument("--figure", type=Path, default=None, help="Figure 4 PNG (default <out>/figure4.png)")
    parser.add_argument("--no-cfg1-diagnostic", dest="cfg1_diagnostic", action="store_false",
                        help="skip sampling the first seed of every objective without guidance")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared machine more threads busy-wait each other)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    demo, out = DemoLayout(args.demo), args.out
    pretrained, mllm, train_cache = demo.pretrained, demo.mllm, demo.features_corpus
    vae_ckpt, vocoder, sync_weights = demo.vae, demo.vocoder, demo.sync_weights
    for path in (pretrained, mllm, train_cache, demo.features_heldout, vae_ckpt, vocoder, sync_weights):
        if not path.exists():
            raise SystemExit(f"post_train_compare: {path} not found: run `make demo` first (or pass --demo)")
    out.mkdir(parents=True, exist_ok=True)
    # Settings that change finished outputs must not change on a rerun; seeds, objectives and betas only add runs.
    fixed = ("demo", "steps", "lr", "reward", "reward_steps", "reward_sync_steps", "candidates", "min_spread",
             "margin_quantile", "extra_heldout", "eval_samples", "sample_steps", "snapshot_every")
    # (--curve-clips is not fixed: curves made on other clips are redone)
    settings = {k: str(getattr(args, k)) if isinstance(getattr(args, k), Path) else getattr(args, k) for k in fixed}
    for key in ("validation", "conditions"):  # selection runs: other clips, other outputs
        if getattr(args, key):
            settings[key] = getattr(args, key)
    settings_file = out / "settings.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        raise SystemExit(f"post_train_compare: {out} was made with {settings_file.read_text()}; use another --out")
    settings_file.write_text(json.dumps(settings, indent=2))
    timings_file = out / "timings.json"
    TIMINGS.update(json.loads(timings_file.read_text()) if timings_file.is_file() else {})

    # 1. held-out clips (or, for a selection run, validation clips that the held-out results never see)
    heldout_sets = [(demo.features_heldout, demo.heldout)]

    def new_clips(name: str, label: str, num_clips: int, seed: int) -> tuple[Path, Path]:
        """``(cache, corpus)`` of ``num_clips`` new synthetic clips under ``out``, synthesised and cached once (with
        the demo's VAE and Synchformer visual weights)."""
        cache, corpus = out / f"features_{name}", out / name
        meta = cache / META
        if not meta.is_file() or "latent_stats" not in json.loads(meta.read_text()):
            _timed(label, run_cli, features_args(
                corpus, cache, vae_ckpt, train_cache / SYNC_WEIGHTS, out / "logs", num_clips, seed=seed))
        return cache, corpus

    if args.validation:
        heldout_sets = [new_clips("validation", "validation clips", args.validation, VALIDATION_SEED)]
    elif args.extra_heldout:
        heldout_sets.append(new_clips("heldout_extra", "extra held-out clips", args.extra_heldout, 20_000))

    # 2. rewards: the paper's alignment classifier (always trained: its ranking is reported beside the chosen one)
    # and the synchrony reward's own Synchformer
    classifier = _timed("reward classifier", train_reward, out / "reward", train_cache, demo.features_heldout,
                        args.reward_steps)
    accuracy = reward_accuracy(classifier, [c for c, _ in heldout_sets])
    # the preference conditions: the demo's training clips, or --conditions new ones
    cond_cache, cond_corpus = train_cache, demo.corpus
    if args.conditions:
        cond_cache, cond_corpus = new_clips("conditions", "condition clips", args.conditions, CONDITIONS_SEED)
    if args.reward == "sync":
        reward_weights = _timed("synchrony reward", train_sync_reward, out / "reward_sync", demo.corpus,
                                demo.heldout, args.reward_sync_steps)
        # the conditions' videos only: every synthetic set names its clips synth_000000, ...
        scorer: Path | list[str] = sync_reward_overrides(reward_weights, [cond_corpus], vae_ckpt, vocoder)
    else:
        reward_weights = scorer = classifier

    # 3. preference data, every candidate judged against the ground truth
    groups = out / "preference_data" / "groups"
    summary = _timed("preference data", build_preference_data, groups, cond_cache, pretrained, mllm, scorer,
                     args.candidates, args.sample_steps, args.min_spread,
                     ground_truth=(cond_corpus, vae_ckpt, vocoder))
    agreement_file = out / "preference_data" / "reward_vs_ground_truth.json"
    if not agreement_file.is_file() or "alternatives" not in json.loads(agreement_file.read_text()):
        alternatives = ({"alignment_classifier": classifier_scores(classifier, cond_cache)} if args.reward == "sync"
                        else {})
        agreement = _timed("reward vs ground truth", reward_vs_ground_truth, groups, alternatives)
        agreement_file.write_text(json.dumps(agreement, indent=2))
    agreement = json.loads(agreement_file.read_text())

    decode = AudioDecoder(mel_vae_tiny(), vae_ckpt, vocoder)
    min_gap, spreads = margin_threshold(groups, args.margin_quantile)
    pairs = {"groups": summary["kept"], "margin_quantile": args.margin_quantile, "min_margin": min_gap,
             "dpo_pairs": int((spreads > min_gap).sum()),
             "margin_quantiles": {str(q): float(np.quantile(spreads, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)}}

    # 4. post-training
    runs: dict[str, tuple[str, list[str], bool]] = {}
    labels = {"pretrained": "pretrained (no post-training)", "sft": "SFT", "rwr": "RWR (softmax, τ = 1)"}
    dpo_gap = [f"--model.init_args.objective.init_args.min_gap={min_gap}"]
    for objective in args.objectives:
        name = "dpo_beta5" if objective == "dpo" else objective
        runs[name] = (objective, dpo_gap if objective == "dpo" else [], False)
    for beta in args.betas:
        name = f"dpo_beta{beta:g}"
        runs.setdefault(name, ("dpo", [f"--model.init_args.objective.init_args.beta={beta}", *dpo_gap], False))
    for spec in args.variant:
        name, overrides = parse_variant(spec)
        runs[name] = ("dpo", [*(f"--model.init_args.objective.init_args.{k}={v}" for k, v in overrides), *dpo_gap],
                      False)
        labels[name] = "DPO (" + ", ".join(f"{k} = {v}" for k, v in overrides) + ")"
    if args.online_rounds > 1:
        name = f"dpo_beta5_online{args.online_rounds}"
        runs[name] = ("dpo", dpo_gap, True)
        labels[name] = f"DPO (β = 5), online, {args.online_rounds} rounds"
    for name in runs:
        if name.startswith("dpo_beta") and name not in labels:
            labels[name] = f"DPO (β = {name[8:]})"
    snapshots = [f"--model.init_args.snapshot_every={args.snapshot_every}"] if args.snapshot_every else []
    exports: dict[str, dict[int, Path]] = {}
    for name, (objective, extra, online) in runs.items():
        for seed in args.seeds:
            run_dir = out / "runs" / f"{name}_seed{seed}"
            run_groups, run_extra = groups, [*extra, *snapshots]
            if online:  # each run samples its own rounds: a copy of the offline groups to start from
                run_groups = run_dir / "groups"
                if not run_groups.is_dir():
                    shutil.copytree(groups, run_groups)
                every = -(-args.steps // args.online_rounds)
                run_extra += online_args(scorer, every, args.candidates, args.sample_steps)
            exports.setdefault(name, {})[seed] = _timed(
                f"post-train {name} seed {seed}", post_train, objective, run_dir, run_groups, cond_cache,
                pretrained, mllm, args.steps, seed, args.lr, run_extra)

    # 5. evaluation
    heldout = HeldOut(heldout_sets)
    reference_wavs = decode(heldout.latents)
    reward_model = load_sync_reward(reward_weights) if args.reward == "sync" else load_reward(classifier)
    sync_model = load_sync_model(sync_weights)
    overrides = model_args(mllm, 4.0)
    system = load_model(overrides, pretrained)
    policy = lambda weights: load_model(overrides, weights, system)  # noqa: E731  one system, weights swapped
    evals_dir = out / "eval"
    evals_dir.mkdir(exist_ok=True)
    models: dict[str, dict[str, dict[str, float]]] = {"pretrained": {}}
    todo = [("pretrained", seed, pretrained) for seed in args.seeds]
    todo += [(name, seed, path) for name, per_seed in exports.items() for seed, path in per_seed.items()]
    for name, seed, weights in todo:
        file = evals_dir / f"{name}_seed{seed}.json"
        if not file.is_file():
            scores = _timed(f"evaluate {name} seed {seed}", evaluate, policy(weights), heldout, decode,
                            noise_set=seed, samples=args.eval_samples, steps=args.sample_steps,
                            reference_wavs=reference_wavs, reward=reward_model, sync_model=sync_model)
            file.write_text(json.dumps(scores, indent=2))
        models.setdefault(name, {})[str(seed)] = json.loads(file.read_text())

    # curves: every snapshot of every run on the first --curve-clips held-out clips (step 0: the pretrained model)
    curves: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    if args.snapshot_every:
        clips = heldout if args.curve_clips >= len(heldout) else HeldOut(heldout_sets, limit=args.curve_clips)
        point = lambda system, seed: evaluate(system, clips, decode, noise_set=seed, samples=1,  # noqa: E731
                                              steps=args.sample_steps, reward=reward_model, sync_model=sync_model)
        for name, per_seed in exports.items():
            for seed, export in per_seed.items():
                file = evals_dir / f"{name}_seed{seed}_curve.json"
                if not file.is_file() or json.loads(file.read_text()).get("clips") != clips.ids:
                    start = evals_dir / f"pretrained_seed{seed}_curve.json"  # step 0 of every run of this seed
                    if not start.is_file() or json.loads(start.read_text()).get("clips") != clips.ids:
                        scores = _timed(f"curve pretrained seed {seed}", point, policy(pretrained), seed)
                        start.write_text(json.dumps(scores | {"clips": clips.ids}, indent=2))
                    points = {int(p.name[5:]): p for p in sorted((export / "snapshots").glob("step_*"))}
                    first = {k: v for k, v in json.loads(start.read_text()).items() if k != "clips"}
                    curve = {"clips": clips.ids, "0": first,
                             **{str(step): _timed(f"curve {name} seed {seed} step {step}", point, policy(weights), seed)
                                for step, weights in {**points, args.steps: export}.items()}}
                    file.write_text(json.dumps(curve, indent=2))
                curve = json.loads(file.read_text())
                curves.setdefault(name, {})[str(seed)] = {k: v for k, v in curve.items() if k != "clips"}

    # diagnostic: the first seed of every objective sampled without guidance (cfg = 1)
    unguided: dict[str, dict[str, float]] = {}
    if args.cfg1_diagnostic:
        seed = args.seeds[0]
        plain = [("dpo_beta5" if o == "dpo" else o) for o in args.objectives]
        for name, weights in [("pretrained", pretrained)] + [(n, exports[n][seed]) for n in plain]:
            file = evals_dir / f"{name}_seed{seed}_cfg1.json"
            if not file.is_file():
                scores = _timed(f"evaluate {name} seed {seed} at cfg 1", evaluate, policy(weights),
                                heldout, decode, noise_set=seed, samples=1, steps=args.sample_steps, cfg=1.0)
                file.write_text(json.dumps(scores, indent=2))
            unguided[name] = json.loads(file.read_text())

    # 6. table, summary, figure
    results = {"settings": {**settings, "seeds": args.seeds, "objectives": args.objectives, "betas": args.betas,
                            "online_rounds": args.online_rounds},
               "machine": machine_name(), "unguided": unguided, "reward_accuracy": accuracy,
               "preference_data": summary, "preference_pairs": pairs, "reward_vs_ground_truth": agreement,
               "heldout_clips": len(heldout), "models": models, "curves": curves, "labels": labels,
               "timings_s": dict(TIMINGS), "total_s": round(sum(TIMINGS.values()), 1)}
    results["statistics"] = row_statistics(results)
    timings_file.write_text(json.dumps(TIMINGS, indent=2))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if args.results_json:
        args.results_json.parent.mkdir(parents=True, exist_ok=True)
        args.results_json.write_text(json.dumps(docs_results(results), indent=2) + "\n")
    figure = args.figure or out / "figure4.png"
    if curves:
        figure4(curves, labels, figure)
    table = results_table(results)
    reward_name = ("the synchrony reward (zero-offset contrast of its own Synchformer)" if args.reward == "sync"
                   else "the alignment classifier's P(aligned)")
    eval_set = (f"Validation clips (new synthetic clips, seed {VALIDATION_SEED}, not the held-out set)"
                if args.validation else "Held-out clips")
    notes = (f"\n\nMean ± 95 % CI half-width (Student t) over seeds {args.seeds}; Δ: paired difference to the "
             f"pretrained model at the same noise, * where its CI excludes 0. {eval_set}: {len(heldout)} "
             f"({args.eval_samples} generations each); {args.steps} post-training steps, lr {args.lr:g}, LoRA rank 64; "
             f"reward: {reward_name}; {summary['kept']} preference groups (K = {args.candidates}); DPO pairs need a "
             f"reward margin above {min_gap:.3g} (the {args.margin_quantile:g} quantile of the groups' spreads): "
             f"{pairs['dpo_pairs']} of {summary['kept']}. Reward winners vs losers on the training conditions (ground "
             f"truth): onset error {1000 * agreement['winner_error']:.0f} vs {1000 * agreement['loser_error']:.0f} ms, "
             f"F1 {agreement['winner_f1']:.3f} vs {agreement['loser_f1']:.3f}; over every candidate, the reward orders "
             f"{100 * agreement['pair_agreement']:.0f} % "
             f"({percent_interval(agreement.get('pair_agreement_ci95'))}) of the "
             f"{agreement['pairs']} pairs whose errors differ by "
             f"≥ 50 ms like the ground truth (Spearman ρ reward vs error {agreement['spearman']:.2f}, within groups "
             f"{agreement['spearman_within']:.2f}); {100 * agreement['saturated_low']:.0f} % of candidates in the "
             f"lowest 1 % of its range, {100 * agreement['saturated_high']:.0f} % in the highest.")
    for name, alt in agreement.get("alternatives", {}).items():
        notes += (f" The {name.replace('_', ' ')} (held-out accuracy: aligned {accuracy['aligned']:.2f}, shifted "
                  f"{accuracy['shifted']:.2f}, swapped {accuracy['swapped']:.2f}) orders "
                  f"{100 * alt['pair_agreement']:.0f} % of the same pairs like the ground truth (within-group ρ "
                  f"{alt['spearman_within']:.2f}; "
                  f"{100 * alt['saturated_high']:.0f} % of candidates at P(aligned) ≥ 0.99).")
    threads = "one thread" if args.threads == 1 else f"{args.threads} threads"
    notes += f" Time of all steps: {results['total_s'] / 60:.1f} min ({results['machine']}, {threads})."
    if unguided:
        notes += ("\n\nWithout guidance (cfg = 1; seed " + str(args.seeds[0]) + ", one generation per clip):\n\n"
                  "| model | onset error (ms) | onset F1 | FD-latent |\n|---|---|---|---|\n"
                  + "\n".join(f"| {labels.get(n, n)} | {1000 * m['onset_error']:.1f} | {m['onset_f1']:.3f} | "
                               f"{m['fd_latent']:.3f} |" for n, m in unguided.items()))
    (out / "results.md").write_text(table + notes + "\n")
    print("\n" + table + notes, flush=True)
    if args.docs:
        _replace_block(args.docs, table + notes)
    return 0


def _replace_block(path: Path, text: str) -> None:
    """Put ``text`` between the comparison's markers in ``path`` (appended with markers if absent)."""
    doc = path.read_text() if path.is_file() else ""
    block = f"{MARKERS[0]}\n{text}\n{MARKERS[1]}"
    if MARKERS[0] in doc and MARKERS[1] in doc:
        doc = re.sub(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip() + ("\n\n" if doc else "") + block + "\n"
    path.write_text(doc)


if __name__ == "__main__":
    sys.exit(main())
