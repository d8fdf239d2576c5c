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
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from reasonaudio.media import validate_file


class Pipeline:
    """Runs named steps once, atomically, with progress lines."""

    def __init__(self, out: Path, settings: dict, tag: str = "demo"):
        self.out = out
        self.tag = tag
        self.settings = settings
        self.out.mkdir(parents=True, exist_ok=True)
        self.state_file = out / "steps.json"
        self.state: dict = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        earlier = self.state.get("_settings")
        if earlier is not None and earlier != settings:
            raise ValueError(f"{out} was built with {earlier}, not {settings}: choose another --out or delete it")
        self.state["_settings"] = settings

    def step(self, name: str, fn: Callable[[Path], dict]) -> dict:
        """Run ``fn(tmp_dir)`` unless ``name`` finished before; returns the step's summary."""
        final = self.out / name
        if name in self.state and final.exists():
            print(f"[{self.tag}] {name}: done earlier, reusing {final}", flush=True)
            return self.state[name]
        # Everything recorded after a step that reruns was built from its old output.
        names = [k for k in self.state if k != "_settings"]
        for later in names[names.index(name) + 1:] if name in names else []:
            del self.state[later]
        partial = self.out / f"{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        partial.mkdir(parents=True)
        print(f"[{self.tag}] {name}: running ...", flush=True)
        t0 = time.perf_counter()
        summary = fn(partial)
        partial.rename(final)
        summary = {**summary, "seconds": round(time.perf_counter() - t0, 1)}
        self.state[name] = summary
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.state_file)
        print(f"[{self.tag}] {name}: finished in {summary['seconds']} s", flush=True)
        return summary


def _synth(num_clips: int, seed: int, duration: float) -> Callable[[Path], dict]:
    def run(tmp: Path) -> dict:
        from reasonaudio.data_modules.synthetic import synthesize_corpus

        synthesize_corpus(tmp, num_clips=num_clips, seed=seed, duration=duration, preset="tiny")
        return {"clips": num_clips, "seed": seed, "duration": duration}
    return run


def _judged(truth: dict | None) -> str:
    """The preference data's winners and losers on the ground truth, for the demo's report."""
    if not truth:
        return ""
    return (f"; on the ground truth, winners vs losers: onset error {1000 * truth['winner_onset_error_s']:.0f} vs "
            f"{1000 * truth['loser_onset_error_s']:.0f} ms, F1 {truth['winner_onset_f1']:.3f} vs "
            f"{truth['loser_onset_f1']:.3f}; the reward orders {100 * truth['ranking']['pair_agreement']:.0f} % of "
            f"{truth['ranking']['pairs']} candidate pairs ≥ 50 ms apart like the ground truth")


def _check(corpus: Path) -> Callable[[Path], dict]:
    def run(tmp: Path) -> dict:
        files = sorted(corpus.glob("**/*.mp4"))
        reports = []
        for i, f in enumerate(files, 1):
            reports.append(validate_file(f, require=("video", "audio")))
            if i % 8 == 0 or i == len(files):
                print(f"[demo] check: {i}/{len(files)} files decoded", flush=True)
        (tmp / "check.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reports))
        bad = [r for r in reports if not r["ok"]]
        if bad:
            raise SystemExit(f"[demo] check: {len(bad)} synthetic files failed to decode, e.g. {bad[0]}")
        return {"files": len(reports), "ok": len(reports) - len(bad)}
    return run


def _fit(stage: str, out: Path, steps: int, extra: list[str], data_roots: bool = True) -> Callable[[Path], dict]:
    """``reasonaudio fit`` of a stage config on the demo corpus, logging into the step's folder.

    ``{tmp}`` in ``extra`` stands for the step's folder.
    """
    def run(tmp: Path) -> dict:
        roots = [f"--data.init_args.root={out / 'corpus'}", f"--data.init_args.val_root={out / 'heldout'}"]
        cmd = [sys.executable, "-m", "reasonaudio", "fit", "--config", f"lightning_configs/{stage}.yaml",
               *(roots if data_roots else []),
               f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}",
               "--trainer.accelerator=cpu", "--trainer.log_every_n_steps=5",
               f"--trainer.logger.init_args.save_dir={tmp}", f"--trainer.logger.init_args.name={stage}",
               *(a.replace("{tmp}", str(tmp)) for a in extra)]
        subprocess.run(cmd, check=True)
        return {"steps": steps, **_last_scalars(tmp / stage)}
    return run


def _predict(args: list[str], out_dir: Path) -> Callable[[Path], dict]:
    """``reasonaudio predict`` writing into the step's folder (``{tmp}`` in ``args`` is replaced by it)."""
    def run(tmp: Path) -> dict:
        cmd = [sys.executable, "-m", "reasonaudio", "predict", "--trainer.accelerator=cpu",
               f"--trainer.logger.init_args.save_dir={tmp / 'logs'}", *(a.replace("{tmp}", str(tmp)) for a in args)]
        subprocess.run(cmd, check=True)
        return {"folder": str(out_dir)}
    return run


def corpus_captions(out: Path) -> list[str]:
    """Captions of the training and held-out corpora under ``out`` (the tiny text models' vocabulary)."""
    return [json.loads(line)["caption"] for corpus in ("corpus", "heldout")
            for line in (out / corpus / "manifest.jsonl").read_text().splitlines()]


def codec_args(vocoder_steps: int, vae_steps: int, same_clips: str, vocoder_ckpt: Path) -> tuple[list[str], list[str]]:
    """The demo codec's ``fit`` overrides: vocoder (cheap mel-only steps first, lr 1e-3; docs/decisions.md
    "Demo codec"), then the VAE validated through that vocoder (``vocoder_ckpt``)."""
    vocoder = ["--data.init_args.batch_size=4", same_clips, f"--model.init_args.disc_start={vocoder_steps * 5 // 8}",
               "--model.init_args.mel_loss=multiscale", "--model.init_args.mel_weight=15",
               "--model.init_args.optimizer.init_args.lr=1e-3", "--model.init_args.disc_optimizer.init_args.lr=1e-3"]
    vae = [same_clips, f"--model.init_args.disc_start={vae_steps // 2}",
           "--model.init_args.vocoder=reasonaudio.systems.vocoder.trained_generator",
           f"--model.init_args.vocoder.init_args.path={vocoder_ckpt}"]
    return vocoder, vae


def _tiny_mllm(out: Path) -> Callable[[Path], dict]:
    def run(tmp: Path) -> dict:
        from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl

        write_tiny_qwen_vl(tmp, corpus_captions(out))
        return {"folder": str(out / "mllm")}
    return run


def _cli(args: Callable[[Path], list[str]], summary: Callable[[Path], dict]) -> Callable[[Path], dict]:
    """``reasonaudio <args(tmp)>`` in a subprocess; the step's summary is ``summary(tmp)``."""
    def run(tmp: Path) -> dict:
        subprocess.run([sys.executable, "-m", "reasonaudio", *args(tmp)], check=True)
        return summary(tmp)
    return run


def _latent_fd(generated, real) -> float:
    """Fréchet distance between Gaussian fits of latent frames ``[B, T, C]`` (a quality proxy of the generator)."""
    from reasonaudio.experiments.post_train_compare import frechet_distance

    return frechet_distance(generated.reshape(-1, generated.shape[-1]).double().numpy(),
                            real.reshape(-1, real.shape[-1]).double().numpy())


ROWS = {"untrained": "untrained", "pretrained": "pretrained", "post_trained": "post-trained (DPO)",
        "vocoded_gt": "ground truth (vocoded)", "chance": "chance (random onsets)"}
"""``summary.json`` row keys and the names the printed table gives them."""


def _row(clips: list[dict], **extra: float) -> dict:
    """Mean of per-clip scores as a summary row (onset error in ms), with the per-clip scores kept.

    A score no clip has (e.g. off-screen presence without off-screen sources, or of the chance row) is
    ``None`` (JSON ``null``): strict JSON readers reject NaN.
    """
    import math

    def mean(key: str) -> float | None:
        values = [c[key] for c in clips if c.get(key) is not None and not math.isnan(c[key])]
        return sum(values) / len(values) if values else None

    clips = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in c.items()} for c in clips]
    desync = {"desync_s": mean("desync")} if any("desync" in c for c in clips) else {}
    return {"onset_f1": mean("onset_f1"), "onset_error_ms": 1000 * mean("onset_error"), **desync,
            "offscreen_presence": mean("offscreen_presence"), "timbre_agreement": mean("timbre_agreement"),
            **extra, "clips": clips}


def _evaluate(out: Path, steps: int, cfg: float, sync_weights: Path | None) -> Callable[[Path], dict]:
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
        import torch

        from reasonaudio.data_modules.features import CachedFeatureDataModule
        from reasonaudio.generation import clip_scores, latents_to_audio
        from reasonaudio.media import mux_audio, write_audio
        from reasonaudio.metrics.synthetic import chance_onset_scores
        from reasonaudio.systems.flow_matching import FlowMatchingPretrain
        from reasonaudio.systems.preference import load_policy_weights
        from reasonaudio.systems.vae import trained_vae
        from reasonaudio.systems.vocoder import trained_generator

        run_dir = out / "pretrain" / "pretrain" / "version_0"
        system = FlowMatchingPretrain.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt").eval()
        vae = trained_vae(str(out / "latent_stats" / "vae.ckpt"))
        vocoder = trained_generator(str(out / "vocoder" / "vocoder" / "version_0" / "checkpoints" / "last.ckpt"))
        dm = CachedFeatureDataModule(train=[str(out / "features_corpus")], val=[str(out / "features_heldout")],
                                     batch_size=64)
        dm.setup("fit")
        batch = next(iter(dm.val_dataloader()))
        noise = torch.randn(batch["latent"].shape, generator=torch.Generator().manual_seed(0))
        sr = 16000
        gts = [out / "heldout" / "gt" / f"{i}.json" for i in batch["id"]]

        videos = [out / "heldout" / "videos" / f"{i}.mp4" for i in batch["id"]]
        sync_model = None
        if sync_weights is not None:
            from reasonaudio.metrics.desync import clip_desync, load_sync_model

            sync_model = load_sync_model(sync_weights)

        def scored(wavs: torch.Tensor, latents: torch.Tensor | None) -> dict:
            clips = [{"id": i, **c} for i, c in zip(batch["id"], clip_scores(wavs, sr, gts))]
            if sync_model is not None:
                cut = wavs[:, : round(json.loads(gts[0].read_text())["duration"] * sr)]  # the clip, not codec padding
                for clip, desync in zip(clips, clip_desync(sync_model, videos, cut, sr).tolist()):
                    clip["desync"] = desync
            fd = {} if latents is None else {"fd_latent": _latent_fd(latents, batch["latent"])}
            return _row(clips, **fd)

        rows = {"untrained": scored(latents_to_audio(noise, vae, vocoder), noise)}
        models = (("pretrained", lambda: system.load_ema(str(out / "pretrain" / "export" / "model.safetensors"))),
                  ("post_trained", lambda: load_policy_weights(system, out / "post_train" / "export")))
        for name, load in models:
            load()
            system.eval()
            latents = system.generate(batch, steps=steps, cfg=cfg, seed=0)
            wavs = latents_to_audio(latents, vae, vocoder)
            rows[name] = scored(wavs, latents)
            (tmp / name / "audio").mkdir(parents=True)
            for clip_id, wav in zip(batch["id"], wavs):
                write_audio(tmp / name / "audio" / f"{clip_id}.flac", wav, sr)
                mux_audio(out / "heldout" / "videos" / f"{clip_id}.mp4", wav, sr, tmp / name / f"{clip_id}.mp4")
        rows["vocoded_gt"] = {**scored(latents_to_audio(batch["latent"], vae, vocoder), None), "fd_latent": 0.0}
        chance = []
        for clip_id, path in zip(batch["id"], gts):
            error, f1 = chance_onset_scores(json.loads(path.read_text()), draws=1000, seed=0)
            chance.append({"id": clip_id, "onset_error": error, "onset_f1": f1})
        rows["chance"] = _row(chance)
        summary = {"sync_offset_acc": None, "sync_offset_top1": None, "rows": rows}
        if sync_weights is not None:
            trained = json.loads((sync_weights.parent / "metrics.json").read_text())
            summary["sync_offset_acc"], summary["sync_offset_top1"] = trained["val/acc_within_one"], trained["val/acc"]
        (tmp / "metrics.json").write_text(json.dumps(summary, indent=2))
        return summary
    return run


def _folder_metrics(out: Path, duration: float) -> Callable[[Path], dict]:
    """``reasonaudio-metrics`` on the post-trained outputs vs the held-out clips (weights from ``runs/weights``
    when present; otherwise every Table-2 metric is reported as ``weights not found: <file>``)."""
    def run(tmp: Path) -> dict:
        weights = Path("runs/weights")  # missing files (or folder) are reported by name, e.g. runs/weights/<file>
        import csv

        with (tmp / "captions.csv").open("w", newline="") as f:  # CLAP scores the held-out captions
            writer = csv.writer(f)
            writer.writerow(["id", "caption"])
            for line in (out / "heldout" / "manifest.jsonl").read_text().splitlines():
                item = json.loads(line)
                writer.writerow([item["id"], item["caption"]])
        cmd = [sys.executable, "-m", "reasonaudio.metrics.evaluate", "--captions", str(tmp / "captions.csv"), "--pred", str(out / "generate" / "post_trained" / "audio"),
               "--gt", str(out / "heldout" / "videos"), "--videos", str(out / "heldout" / "videos"),
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
    from reasonaudio.models.synchformer import read_export_config

    c = read_export_config(sync_weights)
    return f"{c.num_offsets} classes of {c.offset_step:g} s over ±{c.max_offset:g} s, {c.window_seconds:g} s windows"


def _last_scalars(log_root: Path) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, float] = {}
    for events in sorted(log_root.glob("version_*/events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values[tag] = acc.Scalars(tag)[-1].value
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reasonaudio-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="artifact folder")
    parser.add_argument("--num-clips", type=int, default=48, help="training clips")
    parser.add_argument("--heldout-clips", type=int, default=8, help="held-out clips")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per clip")
    parser.add_argument("--vocoder-steps", type=int, default=400,
                        help="vocoder optimisation steps (the first 5/8 mel-only, then GAN)")
    parser.add_argument("--vae-steps", type=int, default=300, help="VAE optimisation steps")
    # The encoder (correlation head, docs/decisions.md "Synchrony encoder") reaches ~0.98 held-out within 100 steps;
    # its visual branch makes the sync tokens, and the whole model scores DeSync.
    parser.add_argument("--sync-steps", type=int, default=100,
                        help="synchrony encoder optimisation steps (0: no sync stage, random sync-encoder weights; "
                             "needs clips of at least 3.76 s)")
    parser.add_argument("--pretrain-steps", type=int, default=1500, help="MM-DiT optimisation steps")
    parser.add_argument("--sample-steps", type=int, default=25, help="Euler steps when generating")
    parser.add_argument("--reward", choices=("sync", "classifier"), default="sync",
                        help="preference reward: a second Synchformer's expected offset (needs clips of at least "
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
    out = Path(args.out)
    pipe = Pipeline(out, {k: v for k, v in vars(args).items() if k != "out"})
    t0 = time.perf_counter()
    synth = pipe.step("corpus", _synth(args.num_clips, seed=0, duration=args.duration))
    held = pipe.step("heldout", _synth(args.heldout_clips, seed=10_000, duration=args.duration))
    check = pipe.step("check", _check(out))
    same_clips = f"--data.init_args.duration={args.duration}"  # the stages read the corpus as it was rendered
    sync = (pipe.step("sync", _fit("sync", out, args.sync_steps, [same_clips, "--model.init_args.export={tmp}/export"]))
            if args.sync_steps else None)
    sync_weights = out / "sync" / "export" / "synchformer.safetensors"  # the features steps load it by path
    vocoder_ckpt = out / "vocoder" / "vocoder" / "version_0" / "checkpoints" / "last.ckpt"
    vocoder_args, vae_args = codec_args(args.vocoder_steps, args.vae_steps, same_clips, vocoder_ckpt)
    vocoder = pipe.step("vocoder", _fit("vocoder", out, args.vocoder_steps, vocoder_args))
    vae = pipe.step("vae", _fit("vae", out, args.vae_steps, vae_args))
    vae_ckpt = out / "vae" / "vae" / "version_0" / "checkpoints" / "last.ckpt"
    pipe.step("latent_stats", _predict([
        "--config", "lightning_configs/vae.yaml", "--config", "lightning_configs/predict/latent_stats.yaml",
        f"--data.init_args.root={out / 'corpus'}", f"--data.init_args.val_root={out / 'heldout'}", same_clips,
        "--trainer.callbacks.init_args.output={tmp}/vae.ckpt", f"--ckpt_path={vae_ckpt}"], out / "latent_stats"))
    for corpus in ("corpus", "heldout"):
        pipe.step(f"features_{corpus}", _predict([
            "--config", "lightning_configs/features.yaml",
            f"--model.init_args.vae_checkpoint={out / 'latent_stats' / 'vae.ckpt'}",
            *([f"--model.init_args.sync_checkpoint={sync_weights}"] if sync else []),
            f"--model.init_args.duration={args.duration}", f"--data.init_args.duration={args.duration}",
            f"--data.init_args.root={out / corpus}", "--data.init_args.skip_done_in={tmp}",
            "--trainer.callbacks.init_args.output={tmp}"], out / f"features_{corpus}"))
    pipe.step("mllm", _tiny_mllm(out))
    stored = [] if args.no_prefix_kv else ["--data.init_args.prefix_kv=demo"]
    for corpus in ([] if args.no_prefix_kv else ["corpus", "heldout"]):  # stores inside the caches; logs in the step
        pipe.step(f"prefix_kv_{corpus}", _predict([
            "--config", "lightning_configs/prefix_kv.yaml", f"--model.init_args.conditioner.init_args.model={out / 'mllm'}",
            f"--data.init_args.cache={out / f'features_{corpus}'}", "--data.init_args.name=demo"],
            out / f"features_{corpus}" / "prefix_kv" / "demo"))
    pipe.step("pretrain", _fit("pretrain", out, args.pretrain_steps, [
        f"--model.init_args.conditioner.init_args.model={out / 'mllm'}",
        f"--model.init_args.net.init_args.duration={args.duration}",
        f"--data.init_args.train=[{out / 'features_corpus'}]", f"--data.init_args.val=[{out / 'features_heldout'}]",
        *stored, "--trainer.callbacks.init_args.export={tmp}/export"], data_roots=False))
    from reasonaudio.experiments.post_train_compare import (post_train_args, preference_data_args, reward_args,
                                                            sync_reward_args, sync_reward_overrides)

    mllm, pretrained = out / "mllm", out / "pretrain" / "export" / "model.safetensors"
    train_cache = out / "features_corpus"
    # the reward is a Synchformer trained like the synchrony encoder from another seed: DeSync never scores with the
    # network the policy was optimised against (docs/post_training.md, "Which reward")
    if args.reward == "sync":
        reward = pipe.step("reward", _cli(
            lambda tmp: sync_reward_args(tmp, out / "corpus", out / "heldout", args.reward_steps, seed=1,
                                         duration=args.duration),
            lambda tmp: {"steps": args.reward_steps, **_last_scalars(tmp / "reward_sync")}))
        scorer: Path | list[str] = sync_reward_overrides(out / "reward" / "export" / "synchformer.safetensors",
                                                         [out / "corpus"], out / "latent_stats" / "vae.ckpt",
                                                         vocoder_ckpt)
    else:
        reward = pipe.step("reward", _cli(
            lambda tmp: reward_args(tmp, train_cache, out / "features_heldout", args.reward_steps),
            lambda tmp: {"steps": args.reward_steps, **_last_scalars(tmp / "reward")}))
        scorer = out / "reward" / "export" / "reward.safetensors"
    prefs = pipe.step("preference_data", _cli(
        lambda tmp: preference_data_args(tmp / "groups", train_cache, pretrained, mllm,
                                         scorer, tmp / "logs",
                                         args.candidates, args.sample_steps, duration=args.duration,
                                         ground_truth=(out / "corpus", out / "latent_stats" / "vae.ckpt", vocoder_ckpt)),
        lambda tmp: json.loads((tmp / "groups" / "summary.json").read_text())))
    post = pipe.step("post_train", _cli(
        lambda tmp: post_train_args("dpo", tmp, out / "preference_data" / "groups", train_cache, pretrained, mllm,
                                    args.post_train_steps, seed=0, duration=args.duration),
        lambda tmp: {"steps": args.post_train_steps, **_last_scalars(tmp / "post_train_dpo")}))
    scores = pipe.step("generate", _evaluate(out, args.sample_steps, cfg=4.5,
                                             sync_weights=sync_weights if sync else None))
    table2 = pipe.step("evaluate", _folder_metrics(out, args.duration))
    rows = [
        ("synthetic corpus", f"{synth['clips']} train + {held['clips']} held-out clips, {args.duration:g} s each"),
        ("decode check", f"{check['ok']}/{check['files']} mp4 files ok"),
        ("synchrony encoder", f"{sync['steps']} steps, held-out offsets ({_grid(sync_weights)}): "
                              f"top-1 {sync['val/acc']:.3f}, within one step {sync['val/acc_within_one']:.3f}"
                              if sync else "not trained (--sync-steps 0): random weights make the sync tokens"),
        ("BigVGAN vocoder", f"{vocoder['steps']} steps, held-out resynthesis: log-mel L1 "
                            f"{vocoder['val/mel_l1']:.3f}, MR-STFT {vocoder['val/mrstft']:.3f}"),
        ("mel VAE", f"{vae['steps']} steps, held-out: mel L1 {vae['val/l1']:.3f}, "
                    f"vocoded MR-STFT {vae['val/mrstft']:.3f}"),
        ("feature caches", f"{out / 'features_corpus'} and {out / 'features_heldout'} "
                           "(VAE posteriors, sync tokens, MLLM frames)"),
        ("stored prefix KV", "not used (--no-prefix-kv)" if args.no_prefix_kv else
                             f"{out / 'features_*' / 'prefix_kv' / 'demo'} (each clip's MLLM prompt, run once)"),
        ("MM-DiT pretraining", f"{args.pretrain_steps} steps (EMA export {pretrained})"),
        (("synchrony reward", f"{reward['steps']} steps of its own Synchformer (seed 1), held-out offsets: top-1 "
                              f"{reward['val/acc']:.3f}, within one step {reward['val/acc_within_one']:.3f}; reward "
                              "1 − E|offset| / 1.2 s") if args.reward == "sync" else
         ("reward classifier", f"{reward['steps']} steps, held-out accuracy: "
                               + ", ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in reward.items()
                                           if k.startswith("val/acc")))),
        ("preference data", f"{prefs['kept']} groups of {args.candidates} kept ({prefs['dropped']} dropped), "
                            f"mean reward spread {prefs['spread_mean']:.3f}" + _judged(prefs.get("ground_truth"))),
        ("Flow-DPO (LoRA 64)", f"{post['steps']} steps; adapter + merged export in {out / 'post_train' / 'export'}"),
        ("Table-2 metrics", f"reasonaudio-metrics → {out / 'evaluate' / 'results.json'}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows))
    summary = {**scores, "rows": {k: {m: v for m, v in row.items() if m != "clips"} for k, row in scores["rows"].items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
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
    print(f"  (also in {out / 'summary.json'}; per-clip scores in {out / 'generate' / 'metrics.json'})")
    print("\n  Table-2 metrics of the post-trained outputs (reasonaudio-metrics; pretrained weights go in runs/weights/):")
    for name, value in table2["metrics"].items():
        print(f"    {name:<10} {value:.4g}" if isinstance(value, float) else f"    {name:<10} {value}")
    print(f"\n  artifacts:   {out}/ (corpus/, heldout/, check/, vocoder/, vae/, latent_stats/, features_*/, mllm/, "
          "prefix_kv_*/, pretrain/, reward/, preference_data/, post_train/, generate/, evaluate/)")
    print(f"  generated:   {out / 'generate'}/{{pretrained,post_trained}}/<id>.mp4 (held-out videos with generated "
          "audio) and audio/<id>.flac")
    print(f"  TensorBoard: .venv/bin/tensorboard --logdir {out}  (audio and mel reconstructions under IMAGES / AUDIO)")
    print(f"  total: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
