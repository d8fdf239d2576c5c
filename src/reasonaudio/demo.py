"""`make demo`: the pipeline, stage by stage, on the built-in synthetic corpus (2 CPU cores).

Stages: synthesise the corpus (train and held-out sets) → decode-check every file → fit
the tiny BigVGAN vocoder → fit the tiny mel VAE, validated through that vocoder → its latent
statistics → feature caches of both sets → a tiny local Qwen2.5-VL folder → MM-DiT flow-matching
pretraining → generation (flac + mp4) for the held-out clips, scored with the synthetic metrics
against the untrained model and the vocoded ground truth. Reward, preference data, DPO and the full
evaluation join as their issues land.

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

    def __init__(self, out: Path, settings: dict):
        self.out = out
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
            print(f"[demo] {name}: done earlier, reusing {final}", flush=True)
            return self.state[name]
        # Everything recorded after a step that reruns was built from its old output.
        names = [k for k in self.state if k != "_settings"]
        for later in names[names.index(name) + 1:] if name in names else []:
            del self.state[later]
        partial = self.out / f"{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        partial.mkdir(parents=True)
        print(f"[demo] {name}: running ...", flush=True)
        t0 = time.perf_counter()
        summary = fn(partial)
        partial.rename(final)
        summary = {**summary, "seconds": round(time.perf_counter() - t0, 1)}
        self.state[name] = summary
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.state_file)
        print(f"[demo] {name}: finished in {summary['seconds']} s", flush=True)
        return summary


def _synth(num_clips: int, seed: int, duration: float) -> Callable[[Path], dict]:
    def run(tmp: Path) -> dict:
        from data_modules.synthetic import synthesize_corpus

        synthesize_corpus(tmp, num_clips=num_clips, seed=seed, duration=duration, preset="tiny")
        return {"clips": num_clips, "seed": seed, "duration": duration}
    return run


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


def _tiny_mllm(out: Path) -> Callable[[Path], dict]:
    def run(tmp: Path) -> dict:
        from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl

        captions = [json.loads(line)["caption"] for corpus in ("corpus", "heldout")
                    for line in (out / corpus / "manifest.jsonl").read_text().splitlines()]
        write_tiny_qwen_vl(tmp, captions)
        return {"folder": str(out / "mllm")}
    return run


def _evaluate(out: Path, steps: int, cfg: float) -> Callable[[Path], dict]:
    """Generate for the held-out clips with the pretrained EMA model; score against ground truth.

    The untrained baseline needs no sampling: the DiT's final projection is zero-initialised, so an
    untrained model's velocity is 0 everywhere and its sample is the initial noise itself.
    """
    def run(tmp: Path) -> dict:
        import torch

        from data_modules.features import CachedFeatureDataModule
        from reasonaudio.generation import latents_to_audio, score_synthetic
        from reasonaudio.media import mux_audio, write_audio
        from reasonaudio.systems.flow_matching import FlowMatchingPretrain
        from reasonaudio.systems.vae import trained_vae
        from reasonaudio.systems.vocoder import trained_generator

        run_dir = out / "pretrain" / "pretrain" / "version_0"
        system = FlowMatchingPretrain.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt").eval()
        system.load_ema(str(out / "pretrain" / "export" / "model.safetensors"))
        vae = trained_vae(str(out / "latent_stats" / "vae.ckpt"))
        vocoder = trained_generator(str(out / "vocoder" / "vocoder" / "version_0" / "checkpoints" / "last.ckpt"))
        dm = CachedFeatureDataModule(train=[str(out / "features_corpus")], val=[str(out / "features_heldout")],
                                     batch_size=64)
        dm.setup("fit")
        batch = next(iter(dm.val_dataloader()))
        noise = torch.randn(batch["latent"].shape, generator=torch.Generator().manual_seed(0))
        sr = 16000
        gts = [out / "heldout" / "gt" / f"{i}.json" for i in batch["id"]]
        results = {"untrained": score_synthetic(latents_to_audio(noise, vae, vocoder), sr, gts)}
        latents = system.generate(batch, steps=steps, cfg=cfg, seed=0)
        wavs = latents_to_audio(latents, vae, vocoder)
        results["pretrained"] = score_synthetic(wavs, sr, gts)
        results["ground truth (vocoded)"] = score_synthetic(
            latents_to_audio(batch["latent"], vae, vocoder), sr, gts)
        for clip_id, wav in zip(batch["id"], wavs):
            write_audio(tmp / f"{clip_id}.flac", wav, sr)
            mux_audio(out / "heldout" / "videos" / f"{clip_id}.mp4", wav, sr, tmp / f"{clip_id}.mp4")
        (tmp / "metrics.json").write_text(json.dumps(results, indent=2))
        return results
    return run


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
    parser.add_argument("--vocoder-steps", type=int, default=200, help="vocoder optimisation steps")
    parser.add_argument("--vae-steps", type=int, default=300, help="VAE optimisation steps")
    parser.add_argument("--pretrain-steps", type=int, default=1500, help="MM-DiT optimisation steps")
    parser.add_argument("--sample-steps", type=int, default=25, help="Euler steps when generating")
    args = parser.parse_args(argv)
    out = Path(args.out)
    pipe = Pipeline(out, {k: v for k, v in vars(args).items() if k != "out"})
    t0 = time.perf_counter()
    synth = pipe.step("corpus", _synth(args.num_clips, seed=0, duration=args.duration))
    held = pipe.step("heldout", _synth(args.heldout_clips, seed=10_000, duration=args.duration))
    check = pipe.step("check", _check(out))
    same_clips = f"--data.init_args.duration={args.duration}"  # the stages read the corpus as it was rendered
    vocoder = pipe.step("vocoder", _fit("vocoder", out, args.vocoder_steps,
                                        ["--data.init_args.batch_size=4", same_clips]))
    vocoder_ckpt = out / "vocoder" / "vocoder" / "version_0" / "checkpoints" / "last.ckpt"
    vae = pipe.step("vae", _fit("vae", out, args.vae_steps, [
        same_clips, f"--model.init_args.disc_start={args.vae_steps // 2}",
        "--model.init_args.vocoder=reasonaudio.systems.vocoder.trained_generator",
        f"--model.init_args.vocoder.init_args.path={vocoder_ckpt}"]))
    vae_ckpt = out / "vae" / "vae" / "version_0" / "checkpoints" / "last.ckpt"
    pipe.step("latent_stats", _predict([
        "--config", "lightning_configs/vae.yaml", "--config", "lightning_configs/predict/latent_stats.yaml",
        f"--data.init_args.root={out / 'corpus'}", f"--data.init_args.val_root={out / 'heldout'}", same_clips,
        "--trainer.callbacks.init_args.output={tmp}/vae.ckpt", f"--ckpt_path={vae_ckpt}"], out / "latent_stats"))
    for corpus in ("corpus", "heldout"):
        pipe.step(f"features_{corpus}", _predict([
            "--config", "lightning_configs/features.yaml",
            f"--model.init_args.vae_checkpoint={out / 'latent_stats' / 'vae.ckpt'}",
            f"--model.init_args.duration={args.duration}", f"--data.init_args.duration={args.duration}",
            f"--data.init_args.root={out / corpus}", "--data.init_args.skip_done_in={tmp}",
            "--trainer.callbacks.init_args.output={tmp}"], out / f"features_{corpus}"))
    pipe.step("mllm", _tiny_mllm(out))
    pipe.step("pretrain", _fit("pretrain", out, args.pretrain_steps, [
        f"--model.init_args.conditioner.init_args.model={out / 'mllm'}",
        f"--model.init_args.net.init_args.duration={args.duration}",
        f"--data.init_args.train=[{out / 'features_corpus'}]", f"--data.init_args.val=[{out / 'features_heldout'}]",
        "--trainer.callbacks.init_args.export={tmp}/export"], data_roots=False))
    scores = pipe.step("generate", _evaluate(out, args.sample_steps, cfg=4.5))
    rows = [
        ("synthetic corpus", f"{synth['clips']} train + {held['clips']} held-out clips, {args.duration:g} s each"),
        ("decode check", f"{check['ok']}/{check['files']} mp4 files ok"),
        ("BigVGAN vocoder", f"{vocoder['steps']} steps, held-out resynthesis: log-mel L1 "
                            f"{vocoder['val/mel_l1']:.3f}, MR-STFT {vocoder['val/mrstft']:.3f}"),
        ("mel VAE", f"{vae['steps']} steps, held-out: mel L1 {vae['val/l1']:.3f}, "
                    f"vocoded MR-STFT {vae['val/mrstft']:.3f}"),
        ("feature caches", f"{out / 'features_corpus'} and {out / 'features_heldout'} "
                           "(VAE posteriors, sync tokens, MLLM frames)"),
        ("MM-DiT pretraining", f"{args.pretrain_steps} steps; generated flac + mp4 for the held-out clips in "
                               f"{out / 'generate'}"),
        ("not yet in the demo", "reward, preference data, DPO, full evaluation"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows))
    print("\n  held-out synthetic metrics (onset error in ms, lower is better; the rest higher is better):")
    print(f"    {'model':<24} {'onset err':>9} {'onset F1':>9} {'off-screen':>10} {'timbre':>7}")
    for name in ("untrained", "pretrained", "ground truth (vocoded)"):
        m = scores[name]
        print(f"    {name:<24} {1000 * m['onset_error']:9.1f} {m['onset_f1']:9.3f} "
              f"{m['offscreen_presence']:10.3f} {m['timbre_agreement']:7.3f}")
    print(f"\n  artifacts:   {out}/ (corpus/, heldout/, check/, vocoder/, vae/, latent_stats/, features_*/, mllm/, "
          "pretrain/, generate/)")
    print(f"  generated:   {out / 'generate'}/<id>.mp4 (held-out videos with generated audio) and <id>.flac")
    print(f"  TensorBoard: .venv/bin/tensorboard --logdir {out}  (audio and mel reconstructions under IMAGES / AUDIO)")
    print(f"  total: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
