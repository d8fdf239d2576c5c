"""`make demo`: the pipeline, stage by stage, on the built-in synthetic corpus (2 CPU cores).

Stages: synthesise the corpus (train and held-out sets) → decode-check every file → train the
synchrony encoder (Synchformer offset classification; its weights make the sync tokens) → fit
the tiny BigVGAN vocoder → fit the tiny mel VAE, validated through that vocoder → its latent
statistics → feature caches of both sets → a tiny local Qwen2.5-VL folder → each clip's MLLM prompt
run once into the caches (stored prefix KV) → MM-DiT flow-matching pretraining from them → the synchrony
reward (a second Synchformer, trained from another seed) → preference data (K scored candidates per training
condition from the pretrained model, each also judged against the ground truth) → Flow-DPO post-training
with LoRA → generation (flac + mp4) for the held-out clips with the pretrained and the post-trained model,
scored against the synthetic ground truth (not with the reward) next to the untrained model and the vocoded
ground truth → the folder evaluator (``reasonaudio-metrics``) on the post-trained outputs.

Each step writes into a temporary folder and renames it into place when it has finished, then
records itself in ``runs/demo/steps.json``; a rerun with the same arguments skips recorded steps
whose outputs still exist (other arguments are refused: they would mix artifacts), and an
interrupted step (Ctrl-C) leaves only a ``*.partial`` folder that the rerun deletes and redoes.

This module holds the demo's own steps (generation and scoring, the folder evaluator) and its report; the step
runner and shared steps are :mod:`reasonaudio.experiments.pipeline`, the stages' command lines
:mod:`reasonaudio.experiments.stages`, the folder layout :class:`reasonaudio.experiments.layout.DemoLayout`.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from reasonaudio.data_modules.features import CachedFeatureDataModule
from reasonaudio.experiments.layout import DemoLayout, corpus_manifest, corpus_video, corpus_videos
from reasonaudio.experiments.pipeline import (Pipeline, check_step, cli_step, fit_step, last_scalars, predict_step,
                                              synth_step, tiny_mllm_step)
from reasonaudio.experiments.scoring import chance_row, latent_fd, summary_row
from reasonaudio.experiments.stages import (codec_args, post_train_args, preference_data_args, reward_args,
                                            sync_reward_args, sync_reward_overrides)
from reasonaudio.media import mux_audio, write_audio
from reasonaudio.metrics.desync import clip_desync, load_sync_model
from reasonaudio.metrics.synthetic import clip_scores
from reasonaudio.models.synchformer import read_export_config
from reasonaudio.preference_objectives import percent_interval
from reasonaudio.synthetic_world import ground_truth_files, read_ground_truth
from reasonaudio.systems.codec import AudioDecoder
from reasonaudio.systems.flow_matching import FlowMatchingPretrain
from reasonaudio.systems.policy_weights import load_policy_weights


def _judged(truth: dict | None) -> str:
    """The preference data's winners and losers on the ground truth, for the demo's report."""
    if not truth:
        return ""
    return (f"; on the ground truth, winners vs losers: onset error {1000 * truth['winner_onset_error_s']:.0f} vs "
            f"{1000 * truth['loser_onset_error_s']:.0f} ms, F1 {truth['winner_onset_f1']:.3f} vs "
            f"{truth['loser_onset_f1']:.3f}; the reward orders {100 * truth['ranking']['pair_agreement']:.0f} % "
            f"({percent_interval(truth['ranking'].get('pair_agreement_ci95'))}) of "
            f"{truth['ranking']['pairs']} candidate pairs ≥ 50 ms apart like the ground truth")


ROWS = {"untrained": "untrained", "pretrained": "pretrained", "post_trained": "post-trained (DPO)",
        "vocoded_gt": "ground truth (vocoded)", "chance": "chance (random onsets)"}
"""``summary.json`` row keys and the names the printed table gives them."""


def _evaluate(out: DemoLayout, steps: int, cfg: float, sync_weights: Path | None) -> Callable[[Path], dict]:
    """Generate for the held-out clips with the pretrained and the post-trained model; score against ground truth.

    Both models sample from the same noise. The untrained baseline needs no sampling: the DiT's final
    projection is zero-initialised, so an untrained model's velocity is 0 everywhere and its sample is
    the initial noise itself. Quality proxy: FD between Gaussian fits of generated and real held-out
    latent frames (``fd_latent``). ``chance`` places random onsets at each clip's true rate
    (:func:`~reasonaudio.metrics.synthetic.chance_onset_scores`, 1,000 draws per clip). With the
    trained synchrony encoder (``sync_weights``), every row with audio also gets its DeSync
    (:func:`~reasonaudio.metrics.desync.clip_desync` against the held-out videos), and the summary its
    held-out offset accuracy (``sync_offset_acc``: within one grid step; ``sync_offset_top1``).
    """
    def run(tmp: Path) -> dict:
        system = FlowMatchingPretrain.load_from_checkpoint(out.pretrain_checkpoint()).eval()
        decode = AudioDecoder(vae_checkpoint=out.vae, vocoder=out.vocoder)
        dm = CachedFeatureDataModule(train=[str(out.features_corpus)], val=[str(out.features_heldout)], batch_size=64)
        dm.setup("fit")
        batch = next(iter(dm.val_dataloader()))
        noise = torch.randn(batch["latent"].shape, generator=torch.Generator().manual_seed(0))
        sr = 16000
        gts = ground_truth_files(out.heldout, batch["id"])

        videos = [corpus_video(out.heldout, i) for i in batch["id"]]
        sync_model = None if sync_weights is None else load_sync_model(sync_weights)

        def scored(wavs: torch.Tensor, latents: torch.Tensor | None) -> dict:
            clips = [{"id": i, **c} for i, c in zip(batch["id"], clip_scores(wavs, sr, gts))]
            if sync_model is not None:
                cut = wavs[:, : round(read_ground_truth(gts[0])["duration"] * sr)]  # the clip, not codec padding
                for clip, desync in zip(clips, clip_desync(sync_model, videos, cut, sr).tolist()):
                    clip["desync"] = desync
            fd = {} if latents is None else {"fd_latent": latent_fd(latents, batch["latent"])}
            return summary_row(clips, **fd)

        rows = {"untrained": scored(decode(noise), noise)}
        models = (("pretrained", lambda: system.load_ema(str(out.pretrained))),
                  ("post_trained", lambda: load_policy_weights(system, out.post_train_export)))
        for name, load in models:
            load()
            system.eval()
            latents = system.generate(batch, steps=steps, cfg=cfg, seed=0)
            wavs = decode(latents)
            rows[name] = scored(wavs, latents)
            (tmp / name / "audio").mkdir(parents=True)
            for clip_id, wav in zip(batch["id"], wavs):
                write_audio(tmp / name / "audio" / f"{clip_id}.flac", wav, sr)
                mux_audio(corpus_video(out.heldout, clip_id), wav, sr, tmp / name / f"{clip_id}.mp4")
        rows["vocoded_gt"] = {**scored(decode(batch["latent"]), None), "fd_latent": 0.0}
        rows["chance"] = chance_row(batch["id"], gts)
        summary = {"sync_offset_acc": None, "sync_offset_top1": None, "rows": rows}
        if sync_weights is not None:
            trained = json.loads(out.sync_metrics.read_text())
            summary["sync_offset_acc"], summary["sync_offset_top1"] = trained["val/acc_within_one"], trained["val/acc"]
        (tmp / "metrics.json").write_text(json.dumps(summary, indent=2))
        return summary
    return run


def _folder_metrics(out: DemoLayout, duration: float) -> Callable[[Path], dict]:
    """``reasonaudio-metrics`` on the post-trained outputs vs the held-out clips (weights from ``runs/weights``
    when present; otherwise every Table-2 metric is reported as ``weights not found: <file>``)."""
    def run(tmp: Path) -> dict:
        weights = Path("runs/weights")  # missing files (or folder) are reported by name, e.g. runs/weights/<file>
        with (tmp / "captions.csv").open("w", newline="") as f:  # CLAP scores the held-out captions
            writer = csv.writer(f)
            writer.writerow(["id", "caption"])
            for line in corpus_manifest(out.heldout).read_text().splitlines():
                item = json.loads(line)
                writer.writerow([item["id"], item["caption"]])
        videos = corpus_videos(out.heldout)
        cmd = [sys.executable, "-m", "reasonaudio.metrics.evaluate", "--captions", str(tmp / "captions.csv"),
               "--pred", str(out.generated("post_trained") / "audio"), "--gt", str(videos), "--videos", str(videos),
               "--weights", str(weights), "--duration", str(duration), "--cache-dir", str(tmp / "cache"),
               "--out", str(tmp / "results.json")]
        code = subprocess.run(cmd).returncode
        if code not in (0, 3):  # 3: results written, something (weights) missing — reported, not fatal here
            raise SystemExit(f"[demo] reasonaudio-metrics failed with exit status {code}")
        report = json.loads((tmp / "results.json").read_text())
        def shown(result: dict) -> float | str:
            if result["status"] == "ok":
                return result["value"]
            kind, _, detail = result["status"].partition(": ")
            return f"{kind}: {Path(detail).name}" if kind == "weights not found" else result["status"]

        return {"exit": code, "metrics": {k: shown(v) for k, v in report["metrics"].items()}}
    return run


def _grid(sync_weights: Path) -> str:
    """The offset grid the exported synchrony encoder classifies, in words."""
    c = read_export_config(sync_weights)
    return f"{c.num_offsets} classes of {c.offset_step:g} s over ±{c.max_offset:g} s, {c.window_seconds:g} s windows"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reasonaudio-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="artifact folder")
    parser.add_argument("--num-clips", type=int, default=48, help="training clips")
    parser.add_argument("--heldout-clips", type=int, default=8, help="held-out clips")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per clip")
    parser.add_argument("--vocoder-steps", type=int, default=1250,
                        help="vocoder optimisation steps (the first 3/5 mel-only, then GAN)")
    parser.add_argument("--vae-steps", type=int, default=2000, help="VAE optimisation steps")
    # The encoder (correlation head, docs/decisions.md "Synchrony encoder") reaches ~0.98 held-out within 100 steps;
    # its visual branch makes the sync tokens, and the whole model scores DeSync.
    parser.add_argument("--sync-steps", type=int, default=100,
                        help="synchrony encoder optimisation steps (0: no sync stage, random sync-encoder weights; "
                             "needs clips of at least 3.76 s)")
    parser.add_argument("--pretrain-steps", type=int, default=1500, help="MM-DiT optimisation steps")
    parser.add_argument("--sample-steps", type=int, default=25, help="Euler steps when generating")
    parser.add_argument("--reward", choices=("sync", "classifier"), default="sync",
                        help="preference reward: a second Synchformer's zero-offset contrast (needs clips of at least "
                             "3.76 s) or the paper's alignment classifier (docs/post_training.md)")
    parser.add_argument("--reward-steps", type=int, default=None,
                        help="optimisation steps of the reward: its own Synchformer, seed 1 (default 100), or the "
                             "classifier (default 300)")
    parser.add_argument("--candidates", type=int, default=8, help="K candidates per training condition")
    parser.add_argument("--post-train-steps", type=int, default=100, help="Flow-DPO optimisation steps (LoRA)")
    parser.add_argument("--no-prefix-kv", action="store_true",
                        help="pretrain with the MLLM prompt run live every step instead of the stored prefix KV")
    args = parser.parse_args(argv)
    if args.reward_steps is None:
        args.reward_steps = 100 if args.reward == "sync" else 300
    out = DemoLayout(args.out)
    pipe = Pipeline(out.root, {k: v for k, v in vars(args).items() if k != "out"})
    t0 = time.perf_counter()
    synth = pipe.step("corpus", synth_step(args.num_clips, seed=0, duration=args.duration))
    held = pipe.step("heldout", synth_step(args.heldout_clips, seed=10_000, duration=args.duration))
    check = pipe.step("check", check_step(out.root))
    same_clips = f"--audio.duration={args.duration}"  # the stages read the corpus as it was rendered
    sync = (pipe.step("sync", fit_step("sync", args.sync_steps, [same_clips, "--model.init_args.export={tmp}/export"],
                                       data=out))
            if args.sync_steps else None)
    vocoder_args, vae_args = codec_args(args.vocoder_steps, args.vae_steps, same_clips, out.vocoder)
    vocoder = pipe.step("vocoder", fit_step("vocoder", args.vocoder_steps, vocoder_args, data=out))
    vae = pipe.step("vae", fit_step("vae", args.vae_steps, vae_args, data=out))
    pipe.step("latent_stats", predict_step([
        "--config", "lightning_configs/vae.yaml", "--config", "lightning_configs/predict/latent_stats.yaml",
        f"--data.init_args.root={out.corpus}", f"--data.init_args.val_root={out.heldout}", same_clips,
        f"--trainer.callbacks.init_args.output={{tmp}}/{out.vae.name}", f"--ckpt_path={out.vae_fit}"],
        out.vae.parent))
    for corpus in ("corpus", "heldout"):
        pipe.step(f"features_{corpus}", predict_step([
            "--config", "lightning_configs/features.yaml", f"--model.init_args.vae_checkpoint={out.vae}",
            *([f"--model.init_args.sync_checkpoint={out.sync_weights}"] if sync else []),  # loaded by path
            f"--audio.duration={args.duration}",
            f"--data.init_args.root={out.root / corpus}", "--data.init_args.skip_done_in={tmp}",
            "--trainer.callbacks.init_args.output={tmp}"], out.features(corpus)))
    pipe.step("mllm", tiny_mllm_step(out))
    stored = [] if args.no_prefix_kv else ["--data.init_args.prefix_kv=demo"]
    for corpus in ([] if args.no_prefix_kv else ["corpus", "heldout"]):  # stores inside the caches; logs in the step
        pipe.step(f"prefix_kv_{corpus}", predict_step([
            "--config", "lightning_configs/prefix_kv.yaml", f"--model.init_args.conditioner.init_args.model={out.mllm}",
            f"--data.init_args.cache={out.features(corpus)}", "--data.init_args.name=demo"],
            out.prefix_kv(corpus, "demo")))
    pipe.step("pretrain", fit_step("pretrain", args.pretrain_steps, [
        f"--model.init_args.conditioner.init_args.model={out.mllm}",
        f"--audio.duration={args.duration}",
        f"--data.init_args.train=[{out.features_corpus}]", f"--data.init_args.val=[{out.features_heldout}]",
        *stored, "--trainer.callbacks.init_args.export={tmp}/export"]))
    mllm, pretrained, train_cache = out.mllm, out.pretrained, out.features_corpus
    # the reward is a Synchformer trained like the synchrony encoder from another seed: DeSync never scores with the
    # network the policy was optimised against (docs/post_training.md, "Which reward")
    if args.reward == "sync":
        reward = pipe.step("reward", cli_step(
            lambda tmp: sync_reward_args(tmp, out.corpus, out.heldout, args.reward_steps, seed=1,
                                         duration=args.duration),
            lambda tmp: {"steps": args.reward_steps, **last_scalars(tmp / "reward_sync")}))
        scorer: Path | list[str] = sync_reward_overrides(out.reward_sync, [out.corpus], out.vae, out.vocoder)
    else:
        reward = pipe.step("reward", cli_step(
            lambda tmp: reward_args(tmp, train_cache, out.features_heldout, args.reward_steps),
            lambda tmp: {"steps": args.reward_steps, **last_scalars(tmp / "reward")}))
        scorer = out.reward_classifier
    prefs = pipe.step("preference_data", cli_step(
        lambda tmp: preference_data_args(tmp / "groups", train_cache, pretrained, mllm, scorer, tmp / "logs",
                                         args.candidates, args.sample_steps, duration=args.duration,
                                         ground_truth=(out.corpus, out.vae, out.vocoder)),
        lambda tmp: json.loads((tmp / "groups" / "summary.json").read_text())))
    post = pipe.step("post_train", cli_step(
        lambda tmp: post_train_args("dpo", tmp, out.preference_groups, train_cache, pretrained, mllm,
                                    args.post_train_steps, seed=0, duration=args.duration),
        lambda tmp: {"steps": args.post_train_steps, **last_scalars(tmp / "post_train_dpo")}))
    scores = pipe.step("generate", _evaluate(out, args.sample_steps, cfg=4.5,
                                             sync_weights=out.sync_weights if sync else None))
    table2 = pipe.step("evaluate", _folder_metrics(out, args.duration))
    rows = [
        ("synthetic corpus", f"{synth['clips']} train + {held['clips']} held-out clips, {args.duration:g} s each"),
        ("decode check", f"{check['ok']}/{check['files']} mp4 files ok"),
        ("synchrony encoder", f"{sync['steps']} steps, held-out offsets ({_grid(out.sync_weights)}): "
                              f"top-1 {sync['val/acc']:.3f}, within one step {sync['val/acc_within_one']:.3f}"
                              if sync else "not trained (--sync-steps 0): random weights make the sync tokens"),
        ("BigVGAN vocoder", f"{vocoder['steps']} steps, held-out resynthesis: log-mel L1 "
                            f"{vocoder['val/mel_l1']:.3f}, MR-STFT {vocoder['val/mrstft']:.3f}"),
        ("mel VAE", f"{vae['steps']} steps, held-out: mel L1 {vae['val/l1']:.3f}, "
                    f"vocoded MR-STFT {vae['val/mrstft']:.3f}"),
        ("feature caches", f"{out.features_corpus} and {out.features_heldout} "
                           "(VAE posteriors, sync tokens, MLLM frames)"),
        ("stored prefix KV", "not used (--no-prefix-kv)" if args.no_prefix_kv else
                             f"{out.prefix_kv('*', 'demo')} (each clip's MLLM prompt, run once)"),
        ("MM-DiT pretraining", f"{args.pretrain_steps} steps (EMA export {pretrained})"),
        (("synchrony reward", f"{reward['steps']} steps of its own Synchformer (seed 1), held-out offsets: top-1 "
                              f"{reward['val/acc']:.3f}, within one step {reward['val/acc_within_one']:.3f}; reward "
                              "the zero-offset contrast logit(0) − mean logit") if args.reward == "sync" else
         ("reward classifier", f"{reward['steps']} steps, held-out accuracy: "
                               + ", ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in reward.items()
                                           if k.startswith("val/acc")))),
        ("preference data", f"{prefs['kept']} groups of {args.candidates} kept ({prefs['dropped']} dropped), "
                            f"mean reward spread {prefs['spread_mean']:.3f}" + _judged(prefs.get("ground_truth"))),
        ("Flow-DPO (LoRA 64)", f"{post['steps']} steps; adapter + merged export in {out.post_train_export}"),
        ("Table-2 metrics", f"reasonaudio-metrics → {out.evaluate_results}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows))
    summary = {**scores,
               "rows": {k: {m: v for m, v in row.items() if m != "clips"} for k, row in scores["rows"].items()}}
    out.summary.write_text(json.dumps(summary, indent=2))
    print("\n  held-out synthetic metrics (onset error in ms, DeSync in s and FD-latent: lower is better; the rest "
          "higher):")
    if summary["sync_offset_acc"] is not None:
        print(f"  synchrony encoder, held-out offsets: within one step {summary['sync_offset_acc']:.3f}, "
              f"top-1 {summary['sync_offset_top1']:.3f}")
    print(f"    {'model':<24} {'onset err':>9} {'onset F1':>9} {'DeSync':>7} {'off-screen':>10} {'timbre':>7} "
          f"{'FD-latent':>9}")

    def cell(value: float | None, width: int, digits: int) -> str:
        return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    for key, name in ROWS.items():
        m = summary["rows"][key]
        print(f"    {name:<24} {cell(m['onset_error_ms'], 9, 1)} {cell(m['onset_f1'], 9, 3)} "
              f"{cell(m.get('desync_s'), 7, 2)} {cell(m['offscreen_presence'], 10, 3)} "
              f"{cell(m['timbre_agreement'], 7, 3)} {cell(m.get('fd_latent'), 9, 3)}")
    print(f"  (also in {out.summary}; per-clip scores in {out.generate_metrics})")
    print("\n  Table-2 metrics of the post-trained outputs (reasonaudio-metrics; pretrained weights go in "
          "runs/weights/):")
    for name, value in table2["metrics"].items():
        print(f"    {name:<10} {value:.4g}" if isinstance(value, float) else f"    {name:<10} {value}")
    print(f"\n  artifacts:   {out.root}/ (corpus/, heldout/, check/, vocoder/, vae/, latent_stats/, features_*/, "
          "mllm/, prefix_kv_*/, pretrain/, reward/, preference_data/, post_train/, generate/, evaluate/)")
    print(f"  generated:   {out.generated('{pretrained,post_trained}')}/<id>.mp4 (held-out videos with generated "
          "audio) and audio/<id>.flac")
    print(f"  TensorBoard: .venv/bin/tensorboard --logdir {out.root}  (audio and mel reconstructions under IMAGES / "
          "AUDIO)")
    print(f"  total: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
