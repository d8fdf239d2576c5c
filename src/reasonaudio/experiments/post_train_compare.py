"""`make post-train-compare`: SFT vs RWR vs Flow-DPO from one tiny pretrained model, on the synthetic corpus.

    python -m reasonaudio.experiments.post_train_compare [--demo runs/demo] [--out runs/post_train_compare]
        [--seeds 0 1 2] [--steps 150] [--betas 1 2 50] [--docs docs/results.md]

Reads the artifacts of a finished ``make demo`` (training and held-out feature caches, VAE, vocoder, tiny
MLLM, the pretrained EMA export) and never writes there. Every step runs a committed stage config
through the ``reasonaudio`` CLI (in this process) and is skipped when its output exists, so an
interrupted comparison resumes where it stopped:

1. **held-out clips** — the demo's held-out set plus ``--extra-heldout`` new synthetic clips (their own
   seed), whose features come from the demo's VAE and Synchformer weights (``features.yaml``);
2. **reward** — ``reward.yaml``: the alignment classifier on the demo's training cache; its accuracy
   per negative type is measured on the held-out clips (10 draws of windows and shifts);
3. **preference data** — ``preference_data.yaml``: K candidates per training condition from the
   pretrained EMA model, scored with the classifier;
4. **post-training** — ``post_train_{sft,rwr,dpo}.yaml`` (and DPO at the ``--betas``) for every seed,
   with the same steps, learning rate and batch of groups;
5. **evaluation** — every model samples every held-out clip from the same noises; the audio is scored
   against the synthetic ground truth (``metrics/synthetic.py``: onset error, onset F1, timbre
   agreement), never with the reward. Quality proxies: the Fréchet distance between Gaussian fits of
   the generated and the real held-out latent frames (FD-latent, the generator alone) and of log-mel
   frames of the decoded audio against the vocoded ground truth (FD-mel). Seed s of every method is
   evaluated with noise set s, and the pretrained model with every noise set, so its ± is the
   evaluation's own noise and ``Δ`` columns are paired differences at equal noise;
6. **table** — mean ± std over seeds into ``<out>/results.md`` and ``results.json``; with ``--docs`` the
   block between ``<!-- post_train_compare:begin -->`` and ``<!-- post_train_compare:end -->`` of that
   file is replaced by it.

The step functions (:func:`train_reward`, :func:`build_preference_data`, :func:`post_train`) are the
ones ``make demo`` can call; ``*_args`` give the same runs as ``reasonaudio`` command lines.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from reasonaudio.cli import CONFIG_DIR

EVAL_SEED = 1_000_000_000
"""Base of the evaluation noise seeds (apart from every preference-data seed)."""
MARKERS = ("<!-- post_train_compare:begin -->", "<!-- post_train_compare:end -->")


def run_cli(args: Sequence[str]) -> None:
    """``reasonaudio <args>`` in this process (with this script's own arguments out of ``sys.argv``)."""
    from reasonaudio.cli import build_cli

    argv = sys.argv
    sys.argv = argv[:1]
    try:
        build_cli(list(args))
    finally:
        sys.argv = argv


def _model_args(mllm: Path, duration: float) -> list[str]:
    return [f"--model.init_args.conditioner.init_args.model={mllm}",
            f"--model.init_args.net.init_args.duration={duration}"]


# --------------------------------------------------------------------------- stages as command lines


def features_args(corpus: Path, cache: Path, vae_checkpoint: Path, sync_weights: Path, logs: Path,
                  num_clips: int, seed: int, duration: float = 4.0) -> list[str]:
    """``predict`` of ``features.yaml``: synthesise ``num_clips`` clips (``seed``) into ``corpus`` and cache them
    with the given VAE and Synchformer visual weights."""
    return ["predict", "--config", str(CONFIG_DIR / "features.yaml"),
            f"--model.init_args.vae_checkpoint={vae_checkpoint}", f"--model.init_args.sync_checkpoint={sync_weights}",
            f"--model.init_args.duration={duration}", f"--data.init_args.root={corpus}",
            f"--data.init_args.num_clips={num_clips}", f"--data.init_args.seed={seed}",
            f"--data.init_args.duration={duration}", f"--data.init_args.skip_done_in={cache}",
            f"--trainer.callbacks.init_args.output={cache}", f"--trainer.logger.init_args.save_dir={logs}",
            "--trainer.accelerator=cpu"]


def reward_args(out: Path, train_cache: Path, val_cache: Path, steps: int, seed: int = 0) -> list[str]:
    """``fit`` of ``reward.yaml``; the classifier is exported to ``<out>/export/reward.safetensors``."""
    return ["fit", "--config", str(CONFIG_DIR / "reward.yaml"), f"--seed_everything={seed}",
            f"--data.init_args.train=[{train_cache}]", f"--data.init_args.val=[{val_cache}]",
            f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}", "--trainer.accelerator=cpu",
            "--trainer.log_every_n_steps=10", f"--trainer.logger.init_args.save_dir={out}",
            f"--model.init_args.export={out / 'export'}"]


def preference_data_args(groups: Path, cache: Path, pretrained: Path, mllm: Path, reward: Path, logs: Path,
                         candidates: int = 8, sample_steps: int = 25, min_spread: float = 0.0, seed: int = 0,
                         duration: float = 4.0, ground_truth: tuple[Path, Path, Path] | None = None) -> list[str]:
    """``predict`` of ``preference_data.yaml``: K candidates per condition of ``cache`` into the store ``groups``.

    ``ground_truth``: (corpus folder, VAE checkpoint, vocoder checkpoint) to score every candidate against the
    synthetic ground truth (``PreferenceDataBuilder(ground_truth=...)``)."""
    truth = [] if ground_truth is None else [
        f"--model.init_args.ground_truth={ground_truth[0]}", "--model.init_args.vae=reasonaudio.models.vae.mel_vae_tiny",
        f"--model.init_args.vae_checkpoint={ground_truth[1]}", f"--model.init_args.vocoder={ground_truth[2]}"]
    return ["predict", "--config", str(CONFIG_DIR / "preference_data.yaml"), *_model_args(mllm, duration), *truth,
            f"--model.init_args.pretrained={pretrained}", f"--model.init_args.reward.init_args.checkpoint={reward}",
            f"--model.init_args.num_candidates={candidates}", f"--model.init_args.steps={sample_steps}",
            f"--model.init_args.min_spread={min_spread}", f"--model.init_args.seed={seed}",
            f"--data.init_args.cache={cache}", f"--data.init_args.groups={groups}",
            f"--trainer.logger.init_args.save_dir={logs}", "--trainer.accelerator=cpu"]


def post_train_args(objective: str, out: Path, groups: Path, cache: Path, pretrained: Path, mllm: Path,
                    steps: int, seed: int, lr: float = 1e-4, extra: Sequence[str] = (),
                    duration: float = 4.0) -> list[str]:
    """``fit`` of ``post_train_<objective>.yaml`` without validation; adapter and merged export in ``<out>/export``."""
    return ["fit", "--config", str(CONFIG_DIR / f"post_train_{objective}.yaml"), f"--seed_everything={seed}",
            *_model_args(mllm, duration), f"--model.init_args.pretrained={pretrained}",
            f"--model.init_args.export={out / 'export'}", "--model.init_args.val_ground_truth=null",
            f"--model.init_args.optimizer.init_args.lr={lr}", f"--data.init_args.cache={cache}",
            f"--data.init_args.groups={groups}", f"--data.init_args.seed={seed}", f"--trainer.max_steps={steps}",
            "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--trainer.accelerator=cpu",
            "--trainer.log_every_n_steps=10", f"--trainer.logger.init_args.save_dir={out}", *extra]


# --------------------------------------------------------------------------- stages as functions (for the demo)


def train_reward(out: Path, train_cache: Path, val_cache: Path, steps: int = 300, seed: int = 0) -> Path:
    """Train the alignment classifier (``reward.yaml``); returns ``<out>/export/reward.safetensors``."""
    export = out / "export" / "reward.safetensors"
    if not export.is_file():
        run_cli(reward_args(out, train_cache, val_cache, steps, seed))
    return export


def build_preference_data(groups: Path, cache: Path, pretrained: Path, mllm: Path, reward: Path,
                          candidates: int = 8, sample_steps: int = 25, min_spread: float = 0.0, seed: int = 0,
                          duration: float = 4.0) -> dict[str, Any]:
    """Sample and score the groups (resumes an interrupted store); returns the store's summary."""
    from data_modules.preference import PreferenceStore

    run_cli(preference_data_args(groups, cache, pretrained, mllm, reward, groups.parent / "logs", candidates,
                                 sample_steps, min_spread, seed, duration))
    return PreferenceStore(groups).summary()


def post_train(objective: str, out: Path, groups: Path, cache: Path, pretrained: Path, mllm: Path, steps: int,
               seed: int, lr: float = 1e-4, extra: Sequence[str] = (), duration: float = 4.0) -> Path:
    """Post-train with ``post_train_<objective>.yaml``; returns the export folder (adapter + merged weights)."""
    export = out / "export"
    if not (export / "model.safetensors").is_file():
        run_cli(post_train_args(objective, out, groups, cache, pretrained, mllm, steps, seed, lr, extra, duration))
    return export


# --------------------------------------------------------------------------- evaluation


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two sets of vectors ``[N, D]`` and ``[M, D]``."""
    from reasonaudio.metrics import frechet_distance as fd

    return fd(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


class HeldOut:
    """Held-out clips: feature caches with their synthetic corpus folders (ground truth), loaded once.

    Args:
        sets: ``(feature cache, corpus folder)`` pairs.
    """

    def __init__(self, sets: Sequence[tuple[Path, Path]]):
        from data_modules.preference import _RowDataset, collate_groups

        self.batches, self.gts = [], []
        for cache, corpus in sets:
            ds = _RowDataset(cache)
            for start in range(0, len(ds), 8):
                batch = collate_groups([ds[i] for i in range(start, min(start + 8, len(ds)))])
                batch["row"] = batch["row"] + 100_000 * len(self.batches)  # distinct noise seeds across sets
                self.batches.append(batch)
                self.gts += [json.loads((corpus / "gt" / f"{i}.json").read_text()) for i in batch["id"]]
        self.latents = torch.cat([b["latent"] for b in self.batches])  # [N, T, C] posterior means, normalised

    def __len__(self) -> int:
        return len(self.gts)


def load_model(pretrain_config: Sequence[str], weights: Path):
    """A ``FlowMatchingPretrain`` of ``pretrain.yaml`` (with overrides) holding ``weights`` (an export or adapter)."""
    from reasonaudio.cli import build_cli
    from reasonaudio.systems.preference import load_policy_weights

    system = build_cli(["--config", str(CONFIG_DIR / "pretrain.yaml"), *pretrain_config, "--trainer.logger=false"],
                       run=False).model
    load_policy_weights(system, weights)
    return system.eval()


@torch.no_grad()
def evaluate(system, heldout: HeldOut, decode, noise_set: int, samples: int = 2, steps: int = 25, cfg: float = 4.5,
             reference_wavs: torch.Tensor | None = None, sample_rate: int = 16000) -> dict[str, float]:
    """Synthetic metrics and quality proxies of ``samples`` generations per held-out clip (noise set ``noise_set``)."""
    from reasonaudio.metrics import synthetic
    from reasonaudio.models.mel import MelSpectrogram
    from reasonaudio.systems.preference_data import candidate_seeds, sample_candidates

    base = EVAL_SEED + 10_000_000 * noise_set
    latents = torch.cat([sample_candidates(system, b, candidate_seeds(b["row"], samples, base), steps, cfg)
                         for b in heldout.batches])  # [N, M, T, C]
    wavs = decode(latents.flatten(0, 1)).view(len(heldout), samples, -1)
    err, f1, timbre = [], [], []
    for clip_wavs, gt in zip(wavs.numpy(), heldout.gts):
        for wav in clip_wavs:
            err.append(synthetic.onset_sync_error(wav, sample_rate, gt))
            f1.append(synthetic.onset_f1(wav, sample_rate, gt))
            timbre.append(synthetic.timbre_agreement(wav, sample_rate, gt))
    out = {"onset_error": float(np.mean(err)), "onset_f1": float(np.mean(f1)),
           "timbre_agreement": float(np.mean(timbre)),
           "fd_latent": frechet_distance(latents.flatten(0, 2).numpy(), heldout.latents.flatten(0, 1).numpy())}
    if reference_wavs is not None:
        mel = MelSpectrogram("tiny")
        frames = lambda w: mel(w).transpose(1, 2).flatten(0, 1).numpy()  # noqa: E731  [N·F, n_mels]
        out["fd_mel"] = frechet_distance(frames(wavs.flatten(0, 1)), frames(reference_wavs))
    return out


# --------------------------------------------------------------------------- the comparison


TIMINGS: dict[str, float] = {}
"""Seconds of every step run so far (``<out>/timings.json`` keeps them across invocations)."""


def _timed(label: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    print(f"[post_train_compare] {label} ...", flush=True)
    result = fn(*args, **kwargs)
    seconds = round(time.perf_counter() - t0, 1)
    TIMINGS[label] = max(TIMINGS.get(label, 0.0), seconds)  # a step found finished keeps the time it took to run
    print(f"[post_train_compare] {label}: {seconds:.0f} s", flush=True)
    return result


def reward_accuracy(export: Path, caches: Sequence[Path], draws: int = 10) -> dict[str, float]:
    """Held-out accuracy of the classifier per example type (aligned, shifted, swapped), over ``draws`` draws."""
    from data_modules.features import CachedFeatureDataModule
    from reasonaudio.models.reward import AlignmentClassifier, load_classifier_state
    import yaml

    from reasonaudio.systems.reward import RewardTrain

    config = yaml.safe_load((CONFIG_DIR / "reward.yaml").read_text())["model"]["init_args"]["classifier"]["init_args"]
    classifier = AlignmentClassifier(**config)
    classifier.load_state_dict(load_classifier_state(export))
    system = RewardTrain(classifier.eval())
    dm = CachedFeatureDataModule(train=[str(c) for c in caches], val=[str(c) for c in caches], batch_size=64)
    dm.setup("fit")
    correct: dict[str, float] = {}
    seen = 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            b = batch["latent"].shape[0]
            seen += b * draws
            for seed in range(draws):
                _, acc = system._losses(*system.examples(batch, torch.Generator().manual_seed(seed)))
                for k, v in acc.items():
                    correct[k] = correct.get(k, 0.0) + float(v) * b
    return {k: v / seen for k, v in correct.items()}


def reward_vs_ground_truth(groups: Path, corpus: Path, decode, sample_rate: int = 16000) -> dict[str, Any]:
    """Ground truth against the reward in the preference groups: the onset error / F1 of each group's winner
    and loser (``data_modules.preference.ground_truth_of_pairs``), and its ``ranking`` over every candidate."""
    from data_modules.preference import PreferenceStore, ground_truth_of_pairs
    from reasonaudio.systems.preference_data import candidate_onset_scores

    judged = []
    for path in PreferenceStore(groups).kept():
        g = PreferenceStore.load(path)
        scores = candidate_onset_scores(decode(g["latents"]), sample_rate, corpus, g["id"])
        judged.append({**g, **{f"gt_{k}": v for k, v in scores.items()}})
    truth = ground_truth_of_pairs(judged)
    return {"winner_error": truth["winner_onset_error_s"], "loser_error": truth["loser_onset_error_s"],
            "winner_f1": truth["winner_onset_f1"], "loser_f1": truth["loser_onset_f1"], **truth["ranking"]}


def _fmt(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    v = np.asarray(values) * scale
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else f"{v.mean():.{digits}f}"


def results_table(results: dict[str, Any]) -> str:
    """The markdown table of a finished comparison."""
    rows = ["| model | onset error (ms) ↓ | onset F1 ↑ | Δ error vs pretrained (ms) | Δ F1 vs pretrained | "
            "FD-latent ↓ | FD-mel ↓ | timbre agreement ↑ |", "|---|---|---|---|---|---|---|---|"]
    base = results["models"]["pretrained"]
    for name, per_seed in results["models"].items():
        seeds = sorted(per_seed, key=int)
        col = lambda k: [per_seed[s][k] for s in seeds]  # noqa: E731
        delta = lambda k: [per_seed[s][k] - base[s][k] for s in seeds]  # noqa: E731
        rows.append(f"| {results['labels'].get(name, name)} | {_fmt(col('onset_error'), 1000, 1)} | "
                    f"{_fmt(col('onset_f1'))} | "
                    f"{'—' if name == 'pretrained' else _fmt(delta('onset_error'), 1000, 1)} | "
                    f"{'—' if name == 'pretrained' else _fmt(delta('onset_f1'))} | {_fmt(col('fd_latent'))} | "
                    f"{_fmt(col('fd_mel'))} | {_fmt(col('timbre_agreement'))} |")
    return "\n".join(rows)


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
    parser.add_argument("--reward-steps", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=8, help="K candidates per training condition")
    parser.add_argument("--min-spread", type=float, default=0.0, help="groups with reward spread <= this are dropped")
    parser.add_argument("--extra-heldout", type=int, default=24, help="new synthetic held-out clips besides the demo's")
    parser.add_argument("--eval-samples", type=int, default=2, help="generations per held-out clip")
    parser.add_argument("--sample-steps", type=int, default=25, help="Euler steps of every sampler")
    parser.add_argument("--docs", type=Path, default=None, help="markdown file whose marked block gets the table")
    parser.add_argument("--no-cfg1-diagnostic", dest="cfg1_diagnostic", action="store_false",
                        help="skip sampling the first seed of every objective without guidance")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared machine more threads busy-wait each other)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    demo, out = args.demo, args.out
    pretrained = demo / "pretrain" / "export" / "model.safetensors"
    mllm, train_cache = demo / "mllm", demo / "features_corpus"
    vae_ckpt = demo / "latent_stats" / "vae.ckpt"
    vocoder = demo / "vocoder" / "vocoder" / "version_0" / "checkpoints" / "last.ckpt"
    for path in (pretrained, mllm, train_cache, demo / "features_heldout", vae_ckpt, vocoder):
        if not path.exists():
            raise SystemExit(f"post_train_compare: {path} not found: run `make demo` first (or pass --demo)")
    out.mkdir(parents=True, exist_ok=True)
    # Settings that change finished outputs must not change on a rerun; seeds, objectives and betas only add runs.
    fixed = ("demo", "steps", "lr", "reward_steps", "candidates", "min_spread", "extra_heldout", "eval_samples",
             "sample_steps")
    settings = {k: str(getattr(args, k)) if isinstance(getattr(args, k), Path) else getattr(args, k) for k in fixed}
    settings_file = out / "settings.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        raise SystemExit(f"post_train_compare: {out} was made with {settings_file.read_text()}; use another --out")
    settings_file.write_text(json.dumps(settings, indent=2))
    timings_file = out / "timings.json"
    TIMINGS.update(json.loads(timings_file.read_text()) if timings_file.is_file() else {})

    # 1. held-out clips
    heldout_sets = [(demo / "features_heldout", demo / "heldout")]
    if args.extra_heldout:
        extra_cache, extra_corpus = out / "features_heldout_extra", out / "heldout_extra"
        meta = extra_cache / "meta.json"
        if not meta.is_file() or "latent_stats" not in json.loads(meta.read_text()):
            _timed("extra held-out clips", run_cli, features_args(extra_corpus, extra_cache, vae_ckpt,
                                                                  train_cache / "sync_encoder.pt", out / "logs",
                                                                  args.extra_heldout, seed=20_000))
        heldout_sets.append((extra_cache, extra_corpus))

    # 2. reward
    reward = _timed("reward", train_reward, out / "reward", train_cache, demo / "features_heldout", args.reward_steps)
    accuracy = reward_accuracy(reward, [c for c, _ in heldout_sets])

    # 3. preference data
    groups = out / "preference_data" / "groups"
    summary = _timed("preference data", build_preference_data, groups, train_cache, pretrained, mllm, reward,
                     args.candidates, args.sample_steps, args.min_spread)

    from reasonaudio.systems.preference_data import make_decoder
    from reasonaudio.models.vae import mel_vae_tiny

    decode = make_decoder(mel_vae_tiny(), str(vae_ckpt), str(vocoder))
    agreement_file = out / "preference_data" / "reward_vs_ground_truth.json"
    if not agreement_file.is_file() or "pair_agreement" not in json.loads(agreement_file.read_text()):
        agreement = _timed("reward vs ground truth", reward_vs_ground_truth, groups, demo / "corpus", decode)
        agreement_file.write_text(json.dumps(agreement, indent=2))
    agreement = json.loads(agreement_file.read_text())

    # 4. post-training
    runs: dict[str, tuple[str, list[str]]] = {o: (o, []) for o in args.objectives}
    labels = {"pretrained": "pretrained (no post-training)", "sft": "SFT", "rwr": "RWR (softmax, τ = 1)",
              "dpo": "DPO (β = 5)"}
    for beta in args.betas:
        name = f"dpo_beta{beta:g}"
        runs[name] = ("dpo", [f"--model.init_args.objective.init_args.beta={beta}"])
        labels[name] = f"DPO (β = {beta:g})"
    exports: dict[str, dict[int, Path]] = {}
    for name, (objective, extra) in runs.items():
        for seed in args.seeds:
            exports.setdefault(name, {})[seed] = _timed(f"post-train {name} seed {seed}", post_train, objective,
                                                        out / "runs" / f"{name}_seed{seed}", groups, train_cache,
                                                        pretrained, mllm, args.steps, seed, args.lr, extra)

    # 5. evaluation
    heldout = HeldOut(heldout_sets)
    reference_wavs = decode(heldout.latents)
    model_args = _model_args(mllm, 4.0)
    evals_dir = out / "eval"
    evals_dir.mkdir(exist_ok=True)
    models: dict[str, dict[str, dict[str, float]]] = {"pretrained": {}}
    todo = [("pretrained", seed, pretrained) for seed in args.seeds]
    todo += [(name, seed, path) for name, per_seed in exports.items() for seed, path in per_seed.items()]
    for name, seed, weights in todo:
        file = evals_dir / f"{name}_seed{seed}.json"
        if not file.is_file():
            system = load_model(model_args, weights)
            scores = _timed(f"evaluate {name} seed {seed}", evaluate, system, heldout, decode, noise_set=seed,
                            samples=args.eval_samples, steps=args.sample_steps, reference_wavs=reference_wavs)
            file.write_text(json.dumps(scores, indent=2))
        models.setdefault(name, {})[str(seed)] = json.loads(file.read_text())

    # diagnostic: the first seed of every objective sampled without guidance (cfg = 1)
    unguided: dict[str, dict[str, float]] = {}
    if args.cfg1_diagnostic:
        seed = args.seeds[0]
        for name, weights in [("pretrained", pretrained)] + [(o, exports[o][seed]) for o in args.objectives]:
            file = evals_dir / f"{name}_seed{seed}_cfg1.json"
            if not file.is_file():
                scores = _timed(f"evaluate {name} seed {seed} at cfg 1", evaluate, load_model(model_args, weights),
                                heldout, decode, noise_set=seed, samples=1, steps=args.sample_steps, cfg=1.0)
                file.write_text(json.dumps(scores, indent=2))
            unguided[name] = json.loads(file.read_text())

    # 6. table
    results = {"settings": {**settings, "seeds": args.seeds, "objectives": args.objectives, "betas": args.betas},
               "unguided": unguided, "reward_accuracy": accuracy, "preference_data": summary,
               "reward_vs_ground_truth": agreement, "heldout_clips": len(heldout), "models": models, "labels": labels,
               "timings_s": dict(TIMINGS), "total_s": round(sum(TIMINGS.values()), 1)}
    timings_file.write_text(json.dumps(TIMINGS, indent=2))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = results_table(results)
    notes = (f"\n\nHeld-out clips: {len(heldout)} ({args.eval_samples} generations each); seeds {args.seeds}; "
             f"{args.steps} post-training steps, lr {args.lr:g}, LoRA rank 64; {summary['kept']} preference groups "
             f"kept, {summary['dropped']} dropped (K = {args.candidates}, spread ≤ {args.min_spread:g}). Reward "
             f"accuracy on "
             f"held-out clips: aligned {accuracy['aligned']:.2f}, shifted {accuracy['shifted']:.2f}, swapped "
             f"{accuracy['swapped']:.2f}. Reward winners vs losers on the training conditions (ground truth): onset "
             f"error {1000 * agreement['winner_error']:.0f} vs {1000 * agreement['loser_error']:.0f} ms, F1 "
             f"{agreement['winner_f1']:.3f} vs {agreement['loser_f1']:.3f}; over every candidate, the reward orders "
             f"{100 * agreement['pair_agreement']:.0f} % of the {agreement['pairs']} pairs whose errors differ by "
             f"≥ 50 ms like the ground truth (Spearman ρ reward vs error {agreement['spearman']:.2f}, within groups "
             f"{agreement['spearman_within']:.2f}); {100 * agreement['saturated_low']:.0f} % of candidates have "
             f"P(aligned) ≤ 0.01, {100 * agreement['saturated_high']:.0f} % ≥ 0.99. Time of all steps: "
             f"{results['total_s'] / 60:.1f} min (2 shared CPU cores, one thread).")
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
