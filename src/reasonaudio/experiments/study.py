"""`make study`: does pretraining learn timing? Three training seeds and the ablations a reviewer asks for first.

One command on 2 CPU cores: the synthetic corpus (train and held-out), the synchrony encoder, the
codec (vocoder, VAE), feature caches — once with the trained synchrony encoder, once with a random
one —, the tiny MLLM and its stored prompts, then MM-DiT pretraining

- with ``--seeds`` training seeds (different initialisation, data order and noise): the full model;
- one seed on the random-sync caches (``sync_random``: the synchrony stream carries no timing);
- one seed with frozen CLIP conditioning instead of the MLLM's learnable queries (``no_queries``:
  the paper's baseline conditioning, Table 5 "CLIP": frame and caption tokens, 77 in all);
- one seed without the per-latent synchronisation module (``joint_attention_only``: the sync tokens
  reach the audio only through joint attention, the paper's Figure 3; ``dit_tiny`` adds MMAudio's
  module, see docs/decisions.md "Where the sync tokens sit in time").

Every model generates audio for the same held-out clips from the same noise, and every row is
scored against the synthetic ground truth: onset F1 and error, DeSync (trained synchrony encoder),
off-screen presence in the audio and in the latents (:mod:`reasonaudio.metrics.latent_probe`, fitted on the
training corpus' ground-truth latents), timbre agreement and the FD of latent frames. Inference-time ablations use the
pretrained checkpoints of every seed: ``video_dropped`` (MLLM frames and sync tokens replaced by the
learned null embeddings CFG uses) and ``text_dropped`` (the caption replaced likewise). ``untrained``
is the initial noise (the DiT's output layer starts at zero), ``vocoded_gt`` the held-out latents
decoded, and ``chance`` random onsets at each clip's true rate.

Outputs: ``runs/study/summary.json`` (the demo summary's shape, every value ``{"mean", "std"}`` over
the seeds that produced it: the inference rows and ``pretrained`` over ``--seeds``, the rest over
one; how many per row under ``seeds``), ``docs/study.md`` (tables, settings, machine, timings) and
``docs/study_onsets.png`` (onset strength of 4 held-out clips: ground truth, pretrained, video dropped, true
impacts marked). Steps are resumable like the demo's (``runs/study/steps.json``); the artefacts' folders are
the demo's (:class:`~reasonaudio.experiments.layout.DemoLayout`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

import torch

from reasonaudio.data_modules.features import CachedFeatureDataModule
from reasonaudio.experiments.layout import DemoLayout, corpus_video
from reasonaudio.experiments.pipeline import (Pipeline, check_step, corpus_captions, fit_step, machine_name,
                                              predict_step, provenance, synth_step, tiny_mllm_step)
from reasonaudio.experiments.scoring import chance_row, latent_fd, summary_row
from reasonaudio.experiments.stages import codec_args
from reasonaudio.media import write_audio
from reasonaudio.metrics.desync import clip_desync, load_sync_model
from reasonaudio.metrics.latent_probe import LatentSourceProbe, mean_score
from reasonaudio.metrics.synthetic import ONSET_THRESHOLD, clip_scores, onset_strength
from reasonaudio.models.tiny_clip import write_tiny_clip
from reasonaudio.synthetic_world import GroundTruth, ground_truth_files, impact_times, read_ground_truth
from reasonaudio.systems.codec import AudioDecoder
from reasonaudio.systems.flow_matching import FlowMatchingPretrain

METRICS = ("onset_f1", "onset_error_ms", "desync_s", "offscreen_presence", "offscreen_probe", "timbre_agreement",
           "fd_latent")
"""Per-row metrics of the summary, in table order."""
INFERENCE_ROWS = ("pretrained", "video_dropped", "text_dropped")
"""Rows measured on every training seed's checkpoint."""
ROW_NAMES = {"untrained": "untrained", "pretrained": "pretrained (full model)",
             "video_dropped": "video dropped at inference", "text_dropped": "text dropped at inference",
             "sync_random": "sync encoder random", "no_queries": "no learnable queries (CLIP)",
             "joint_attention_only": "sync through joint attention only",
             "vocoded_gt": "ground truth (vocoded)", "chance": "chance (random onsets)"}
"""Summary row keys and their names in the tables."""
RETRAINED = ("sync_random", "no_queries", "joint_attention_only")
"""Ablations that retrain (one seed each)."""
PROBE_TYPE = "offscreen_probe_"
"""Prefix of the per-type latent-probe scores of a row (in ``per_seed.json``, not in the summary)."""


def mean_std(values: list[float | None]) -> dict[str, float | None]:
    """``{"mean", "std"}`` of the values that exist (population std; 0 for one value; None for none)."""
    xs = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return {"mean": None, "std": None}
    m = sum(xs) / len(xs)
    return {"mean": m, "std": math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))}


def aggregate(per_seed: dict[str, list[dict[str, float | None]]]) -> dict[str, dict[str, dict]]:
    """Rows of per-seed metric dicts → rows of ``{metric: {"mean", "std"}}`` (plus ``seeds``: how many)."""
    out = {}
    for row, seeds in per_seed.items():
        keys = [k for k in METRICS if any(k in s for s in seeds)]
        out[row] = {k: mean_std([s.get(k) for s in seeds]) for k in keys}
        out[row]["seeds"] = len(seeds)
    return out


def probe_breakdown(per_seed: dict[str, list[dict[str, float | None]]]) -> dict:
    """The latent probe per off-screen type for every row (``{"mean", "std"}`` over its seeds), and the caption's
    effect paired by training seed: ``text_dropped`` minus ``pretrained`` of each seed."""
    by_type = {}
    for row, seeds in per_seed.items():
        kinds = sorted({k for s in seeds for k in s if k.startswith(PROBE_TYPE)})
        if kinds:
            by_type[row] = {k[len(PROBE_TYPE):]: mean_std([s.get(k) for s in seeds]) for k in kinds}
    paired = [d["offscreen_probe"] - p["offscreen_probe"]
              for p, d in zip(per_seed.get("pretrained", []), per_seed.get("text_dropped", []))
              if p.get("offscreen_probe") is not None and d.get("offscreen_probe") is not None]
    return {"by_type": by_type, "text_dropped_minus_pretrained": {**mean_std(paired), "per_seed": paired}}


def clip_frames(duration: float) -> int:
    """CLIP frame tokens of the ``no_queries`` row: the MLLM's 2 fps over the clip."""
    return max(1, round(duration * 2))


def _pretrain(out: DemoLayout, steps: int, seed: int, caches: str, extra: list[str] = ()) -> Callable[[Path], dict]:
    """``reasonaudio fit`` of pretrain.yaml on the study's caches (``caches``: ``features`` or ``features_random``)."""
    return fit_step("pretrain", steps, [
        f"--model.init_args.conditioner.init_args.model={out.mllm}",
        f"--data.init_args.train=[{out.features('corpus', caches)}]",
        f"--data.init_args.val=[{out.features('heldout', caches)}]",
        f"--seed_everything={seed}", "--trainer.callbacks.init_args.export={tmp}/export", *extra])


def split_seeds(score: dict) -> dict:
    """The summary file's shape: every metric of every row ``{"mean", "std"}``; the seed counts under ``seeds``."""
    rows = {row: {k: v for k, v in metrics.items() if k != "seeds"} for row, metrics in score["rows"].items()}
    seeds = {row: metrics["seeds"] for row, metrics in score["rows"].items()}
    return {"sync_offset_acc": score["sync_offset_acc"], "sync_offset_top1": score["sync_offset_top1"],
            "rows": rows, "seeds": seeds}


def _clip_folder(out: DemoLayout) -> Callable[[Path], dict]:
    def run(tmp: Path) -> dict:
        write_tiny_clip(tmp, corpus_captions(out))
        return {"folder": str(out.clip)}
    return run


def _score(out: DemoLayout, args: argparse.Namespace) -> Callable[[Path], dict]:
    """Generate for the held-out clips with every model and score each row against the ground truth."""
    def run(tmp: Path) -> dict:
        decode = AudioDecoder(vae_checkpoint=out.vae, vocoder=out.vocoder)
        sync_model = load_sync_model(out.sync_weights)
        sr = 16000

        def heldout(caches: str, stored: bool = True) -> dict[str, Any]:
            dm = CachedFeatureDataModule(train=[str(out.features("corpus", caches))],
                                         val=[str(out.features("heldout", caches))],
                                         batch_size=1024, **({"prefix_kv": "study"} if stored else {}))
            dm.setup("fit")
            return next(iter(dm.val_dataloader()))

        batch = heldout("features")
        ids = batch["id"]
        gts = ground_truth_files(out.heldout, ids)
        # The off-screen probe reads latents as the training corpus' ground truth taught it (metrics.latent_probe).
        corpus = CachedFeatureDataModule(train=[str(out.features("corpus", "features"))],
                                         val=[str(out.features("corpus", "features"))], batch_size=4096)
        corpus.setup("fit")
        corpus = next(iter(corpus.val_dataloader()))
        corpus_gts = ground_truth_files(out.corpus, corpus["id"])
        probe = LatentSourceProbe.fit(corpus["latent"], corpus_gts)
        probe_ceiling = LatentSourceProbe.cross_validated(corpus["latent"], corpus_gts)
        videos = [corpus_video(out.heldout, i) for i in ids]
        samples = round(read_ground_truth(gts[0])["duration"] * sr)
        noise = torch.randn(batch["latent"].shape, generator=torch.Generator().manual_seed(0))
        per_clip: dict[str, list] = {}
        curves: dict[str, torch.Tensor] = {}

        def scored(name: str, wavs: torch.Tensor, latents: torch.Tensor) -> dict:
            clips = [{"id": i, **c} for i, c in zip(ids, clip_scores(wavs, sr, gts))]
            for clip, desync in zip(clips, clip_desync(sync_model, videos, wavs[:, :samples], sr).tolist()):
                clip["desync"] = desync
            by_type = probe.balanced_accuracy(latents, gts)
            row = summary_row(clips, offscreen_probe=mean_score(by_type),
                              **{f"{PROBE_TYPE}{k}": v for k, v in by_type.items()},
                              fd_latent=latent_fd(latents, batch["latent"]))
            per_clip[name] = row.pop("clips")
            return row

        def sample(system: FlowMatchingPretrain, data: dict, **flags: bool) -> torch.Tensor:
            data = dict(data)
            for flag, on in flags.items():
                data[flag] = torch.zeros_like(data[flag]) if not on else data[flag]
            return system.generate(data, steps=args.sample_steps, cfg=args.cfg, seed=0)

        def load(run: str) -> FlowMatchingPretrain:
            system = FlowMatchingPretrain.load_from_checkpoint(out.pretrain_checkpoint(run), map_location="cpu").eval()
            system.load_ema(str(out.pretrain_export(run)))
            return system.eval()

        per_seed: dict[str, list[dict]] = {"untrained": [], "vocoded_gt": [], "chance": []}
        per_seed["untrained"].append(scored("untrained", decode(noise), noise))
        gt_wavs = decode(batch["latent"])
        per_seed["vocoded_gt"].append({**scored("vocoded_gt", gt_wavs, batch["latent"]), "fd_latent": 0.0})
        curves["vocoded_gt"] = gt_wavs
        for seed in range(args.seeds):
            system = load(f"pretrain_seed{seed}")
            for row, flags in (("pretrained", {}), ("video_dropped", {"has_video": False}),
                               ("text_dropped", {"has_text": False})):
                print(f"[study] scoring {row}, training seed {seed}", flush=True)
                latents = sample(system, batch, **flags)
                wavs = decode(latents)
                per_seed.setdefault(row, []).append(scored(f"{row}/seed{seed}", wavs, latents))
                if seed == 0:
                    curves[row] = wavs
                    (tmp / row).mkdir(exist_ok=True)
                    for clip_id, wav in zip(ids, wavs):
                        write_audio(tmp / row / f"{clip_id}.flac", wav, sr)
        for row, run_name, caches in (("sync_random", "pretrain_sync_random", "features_random"),
                                      ("no_queries", "pretrain_no_queries", "features"),
                                      ("joint_attention_only", "pretrain_joint_attention_only", "features")):
            if not (out.root / run_name).exists():
                continue
            print(f"[study] scoring {row}", flush=True)
            data = heldout(caches, stored=row != "no_queries")  # CLIP reads frames and captions, not MLLM prompts
            assert data["id"] == ids, "every row scores the same held-out clips in the same order"
            latents = sample(load(run_name), data)
            per_seed[row] = [scored(row, decode(latents), latents)]
        per_seed["chance"].append(chance_row(ids, gts))
        per_seed["chance"][0].pop("clips")
        trained = json.loads(out.sync_metrics.read_text())
        summary = {"sync_offset_acc": mean_std([trained["val/acc_within_one"]]),
                   "sync_offset_top1": mean_std([trained["val/acc"]]), "rows": aggregate(per_seed),
                   "offscreen_probe_ceiling": probe_ceiling, "offscreen_probe_breakdown": probe_breakdown(per_seed)}
        (tmp / "per_clip.json").write_text(json.dumps(per_clip, indent=2))
        (tmp / "per_seed.json").write_text(json.dumps(per_seed, indent=2))
        _onset_figure(curves, ids, gts, sr, tmp / "study_onsets.png")
        return summary
    return run


def _onset_figure(curves: dict, ids: list[str], gts: list[GroundTruth], sr: int, path: Path, clips: int = 4) -> None:
    """Onset strength over time of ``clips`` held-out clips: ground truth (vocoded), pretrained, video dropped."""
    # lazy: matplotlib is no install requirement (setup.cfg); only the figure needs it
    import matplotlib

    matplotlib.use("Agg")
    # lazy: pyplot must load after matplotlib.use("Agg") picks the headless backend
    import matplotlib.pyplot as plt

    shown = [("vocoded_gt", "ground truth (vocoded)", "black"), ("pretrained", "pretrained", "tab:blue"),
             ("video_dropped", "video dropped", "tab:orange")]
    fig, axes = plt.subplots(min(clips, len(ids)), 1, figsize=(9, 2.2 * min(clips, len(ids))), sharex=True)
    for ax, i in zip(axes, range(clips)):
        gt = read_ground_truth(gts[i])
        for key, label, colour in shown:
            t, flux = onset_strength(curves[key][i].cpu().numpy()[: round(gt["duration"] * sr)], sr)
            inner = (t > 0.05) & (t < gt["duration"] - 0.05)  # the detector ignores the reflect-padded ends
            ax.plot(t[inner], flux[inner], label=label, color=colour, linewidth=0.9, alpha=0.85)
        ax.axhline(ONSET_THRESHOLD, color="grey", linestyle="--", linewidth=0.7)
        for x in impact_times(gt):
            ax.axvline(x, color="tab:red", linestyle=":", linewidth=0.8)
        ax.set_ylabel(ids[i], fontsize=8)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("seconds (dotted: true on-screen impacts; dashed: the detector's threshold)")
    fig.suptitle("onset strength of held-out clips (training seed 0, sampling seed 0)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(m: dict | None, digits: int, scale: float = 1.0) -> str:
    if m is None or m.get("mean") is None:
        return "–"
    if m.get("std") is None:
        return f"{m['mean'] * scale:.{digits}f}"
    return f"{m['mean'] * scale:.{digits}f} ± {m['std'] * scale:.{digits}f}"


def _probe_lines(breakdown: dict | None) -> list[str]:
    """The report's section on the latent probe by off-screen type and the caption's paired effect."""
    if not breakdown or not breakdown["by_type"]:
        return []
    kinds = sorted({k for types in breakdown["by_type"].values() for k in types})
    lines = ["", "## Off-screen sources in the latents", "",
             "Latent probe by off-screen type (balanced accuracy; 0.5: the latents say nothing about that source):", "",
             "| row | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for key, name in ROW_NAMES.items():
        if key in breakdown["by_type"]:
            cells = [_cell(breakdown["by_type"][key].get(k), 3) for k in kinds]
            lines.append(f"| {name} (`{key}`) | " + " | ".join(cells) + " |")
    delta = breakdown["text_dropped_minus_pretrained"]
    if delta["per_seed"]:
        lines += ["", f"Caption dropped minus full model, paired by training seed: {_cell(delta, 3)} "
                  f"(per seed {', '.join(f'{d:+.3f}' for d in delta['per_seed'])})."]
    return lines


def write_report(summary: dict, steps: dict, args: argparse.Namespace, path: Path, seconds: float) -> None:
    """``docs/study.md``: the rows table, the targets and the settings, from ``summary`` as measured."""
    rows = summary["rows"]
    lines = [
        "# The study: does pretraining learn timing? (`make study`)", "",
        f"Written {date.today().isoformat()} on {machine_name()} by `src/reasonaudio/experiments/study.py` from "
        f"`runs/study/summary.json` (never by hand); {seconds / 60:.1f} min of steps in all: {provenance(steps)}.", "",
        f"Held-out synthetic clips: {steps['heldout']['clips']} (seed {steps['heldout']['seed']}), training clips: "
        f"{steps['corpus']['clips']}, {args.duration:g} s each. Values are mean ± std over training seeds "
        f"(`seeds` column); sampling: {args.sample_steps} Euler steps, CFG {args.cfg:g}, sampling seed 0.", "",
        f"Synchrony encoder ({steps['sync']['steps']} steps), held-out offsets: within one step "
        f"{_cell(summary['sync_offset_acc'], 3)}, top-1 {_cell(summary['sync_offset_top1'], 3)}.", "",
        "| row | seeds | onset F1 | onset error (ms) | DeSync (s) | off-screen (audio) | off-screen (latent probe) "
        "| timbre | FD latent |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, name in ROW_NAMES.items():
        if key not in rows:
            continue
        r = rows[key]
        lines.append(f"| {name} (`{key}`) | {summary['seeds'][key]} | {_cell(r.get('onset_f1'), 3)} | "
                     f"{_cell(r.get('onset_error_ms'), 1)} | {_cell(r.get('desync_s'), 2)} | "
                     f"{_cell(r.get('offscreen_presence'), 3)} | {_cell(r.get('offscreen_probe'), 3)} | "
                     f"{_cell(r.get('timbre_agreement'), 3)} | "
                     f"{_cell(r.get('fd_latent'), 3)} |")
    f1, err = rows["pretrained"]["onset_f1"]["mean"], rows["pretrained"]["onset_error_ms"]["mean"]
    gt_f1, desync = rows["vocoded_gt"]["onset_f1"]["mean"], rows["pretrained"].get("desync_s", {}).get("mean")
    step = 0.2
    ceiling = steps.get("score", {}).get("offscreen_probe_ceiling", {})

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines += [
        "", "## Targets (issue 18)", "",
        f"- pretrained onset F1 ≥ 0.8: {f1:.3f} — {verdict(f1 >= 0.8)}",
        f"- pretrained onset F1 ≥ 0.85 × vocoded ground truth ({0.85 * gt_f1:.3f}): {verdict(f1 >= 0.85 * gt_f1)}",
        f"- pretrained onset error ≤ 50 ms: {err:.1f} ms — {verdict(err <= 50)}",
        f"- pretrained DeSync ≤ one grid step ({step:g} s): "
        + (f"{desync:.3f} s — {verdict(desync <= step + 1e-9)}" if desync is not None else "not measured"),
        *_probe_lines(steps.get("score", {}).get("offscreen_probe_breakdown")),
        "", "## Settings", "",
        f"- pretraining: `lightning_configs/pretrain.yaml`, {args.pretrain_steps} steps per run, training seeds "
        f"0 … {args.seeds - 1}; MLLM prompts stored once per clip (prefix KV)",
        f"- codec: vocoder {args.vocoder_steps} steps, VAE {args.vae_steps} steps (the demo's recipe)",
        "- `video_dropped` / `text_dropped`: the same checkpoints with `has_video` / `has_text` false, i.e. the "
        "learned null embeddings CFG uses; `sync_random`: feature caches made by a randomly initialised "
        "synchrony encoder (trained from scratch on them); `no_queries`: `CLIPConditioner` on a tiny random CLIP "
        f"({clip_frames(args.duration)} frame + {77 - clip_frames(args.duration)} caption tokens) in place of the "
        "MLLM's learnable queries; `joint_attention_only`: `sync_adaln: false`, the sync tokens reach the audio "
        "through joint attention alone (the paper's Figure 3), where the toy default also adds MMAudio's per-latent "
        "synchronisation module (docs/decisions.md, \"Where the sync tokens sit in time\").",
        "- off-screen (audio): `metrics.synthetic.offscreen_presence`, the fraction of a clip's off-screen sources "
        "heard, over clips that have any; off-screen (latent probe): `metrics.latent_probe`, linear detectors of "
        "each off-screen type fitted on the training corpus' ground-truth latents, balanced accuracy on the "
        "held-out clips averaged over the types (0.5: the latents say nothing about the sources). Its ceiling, "
        "4-fold cross-validated on the training corpus' ground-truth latents: "
        + (", ".join(f"{k} {v:.3f}" for k, v in sorted(ceiling.items())) or "not measured")
        + ". Why two scores: docs/decisions.md, \"Semantic scores and the toy codec\".",
        "- per-clip scores: `runs/study/score/per_clip.json`; per seed: `runs/study/score/per_seed.json`.",
        "", "![onset strength](study_onsets.png)", "",
        "Step timings (s): " + ", ".join(f"{k} {v['seconds']:.0f}" for k, v in steps.items()
                                         if isinstance(v, dict) and "seconds" in v), "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reasonaudio-study", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/study", help="artifact folder")
    parser.add_argument("--docs", default="docs", help="folder for study.md and study_onsets.png")
    parser.add_argument("--num-clips", type=int, default=96, help="training clips")
    parser.add_argument("--heldout-clips", type=int, default=16, help="held-out clips")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per clip")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds of the full model")
    parser.add_argument("--sync-steps", type=int, default=150, help="synchrony encoder steps")
    parser.add_argument("--vocoder-steps", type=int, default=1250, help="vocoder steps (the demo's recipe)")
    parser.add_argument("--vae-steps", type=int, default=2000, help="VAE steps")
    parser.add_argument("--pretrain-steps", type=int, default=3000, help="MM-DiT steps per training run")
    parser.add_argument("--sample-steps", type=int, default=25, help="Euler steps when generating")
    parser.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance scale")
    parser.add_argument("--ablations", default=",".join(RETRAINED),
                        help="retrained ablations to run (comma-separated; '' for none)")
    args = parser.parse_args(argv)
    out = DemoLayout(args.out)
    ablations = {a for a in args.ablations.split(",") if a}
    if ablations - set(RETRAINED):
        parser.error(f"unknown ablations {sorted(ablations - set(RETRAINED))}")
    pipe = Pipeline(out.root, {k: v for k, v in vars(args).items() if k not in ("out", "docs")}, tag="study")
    t0 = time.perf_counter()
    same = f"--audio.duration={args.duration}"
    pipe.step("corpus", synth_step(args.num_clips, seed=0, duration=args.duration))
    pipe.step("heldout", synth_step(args.heldout_clips, seed=10_000, duration=args.duration))
    pipe.step("check", check_step(out.root, tag="study"))
    pipe.step("sync", fit_step("sync", args.sync_steps, [same, "--model.init_args.export={tmp}/export"], data=out))
    vocoder_args, vae_args = codec_args(args.vocoder_steps, args.vae_steps, same, out.vocoder)
    pipe.step("vocoder", fit_step("vocoder", args.vocoder_steps, vocoder_args, data=out))
    pipe.step("vae", fit_step("vae", args.vae_steps, vae_args, data=out))
    pipe.step("latent_stats", predict_step([
        "--config", "lightning_configs/vae.yaml", "--config", "lightning_configs/predict/latent_stats.yaml",
        f"--data.init_args.root={out.corpus}", f"--data.init_args.val_root={out.heldout}", same,
        f"--trainer.callbacks.init_args.output={{tmp}}/{out.vae.name}", f"--ckpt_path={out.vae_fit}"],
        out.vae.parent))
    cache_sets = {"features": [f"--model.init_args.sync_checkpoint={out.sync_weights}"]}
    if "sync_random" in ablations:
        cache_sets["features_random"] = []  # the features stage's own random synchrony encoder (fixed seed)
    for caches, sync_args in cache_sets.items():
        for corpus in ("corpus", "heldout"):
            pipe.step(f"{caches}_{corpus}", predict_step([
                "--config", "lightning_configs/features.yaml", f"--model.init_args.vae_checkpoint={out.vae}",
                *sync_args, same,
                f"--data.init_args.root={out.root / corpus}", "--data.init_args.skip_done_in={tmp}",
                "--trainer.callbacks.init_args.output={tmp}"], out.features(corpus, caches)))
    pipe.step("mllm", tiny_mllm_step(out))
    for caches in cache_sets:
        for corpus in ("corpus", "heldout"):
            pipe.step(f"prefix_kv_{caches}_{corpus}", predict_step([
                "--config", "lightning_configs/prefix_kv.yaml",
                f"--model.init_args.conditioner.init_args.model={out.mllm}",
                f"--data.init_args.cache={out.features(corpus, caches)}", "--data.init_args.name=study"],
                out.prefix_kv(corpus, "study", caches)))
    stored = ["--data.init_args.prefix_kv=study"]
    duration = f"--audio.duration={args.duration}"
    for seed in range(args.seeds):
        pipe.step(f"pretrain_seed{seed}", _pretrain(out, args.pretrain_steps, seed, "features", [duration, *stored]))
    if "sync_random" in ablations:
        pipe.step("pretrain_sync_random", _pretrain(out, args.pretrain_steps, 0, "features_random",
                                                    [duration, *stored]))
    if "no_queries" in ablations:
        pipe.step("clip", _clip_folder(out))
        pipe.step("pretrain_no_queries", _pretrain(out, args.pretrain_steps, 0, "features", [
            duration, "--model.init_args.conditioner=reasonaudio.models.conditioners.CLIPConditioner",
            f"--model.init_args.conditioner.init_args.model={out.clip}",
            "--model.init_args.conditioner.init_args.out_dim=64",
            f"--model.init_args.conditioner.init_args.num_frames={clip_frames(args.duration)}"]))
    if "joint_attention_only" in ablations:
        pipe.step("pretrain_joint_attention_only", _pretrain(out, args.pretrain_steps, 0, "features", [
            duration, *stored, "--model.init_args.net.init_args.sync_adaln=false"]))
    summary = split_seeds(pipe.step("score", _score(out, args)))
    out.summary.write_text(json.dumps(summary, indent=2) + "\n")
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "study_onsets.png").write_bytes((out.root / "score" / "study_onsets.png").read_bytes())
    steps = json.loads(out.steps.read_text())
    seconds = sum(v["seconds"] for v in steps.values() if isinstance(v, dict) and "seconds" in v)
    write_report(summary, steps, args, docs / "study.md", seconds)
    print((docs / "study.md").read_text())
    print(f"[study] steps {seconds:.0f} s in all, this invocation {time.perf_counter() - t0:.0f} s; summary in "
          f"{out.summary}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
