"""``reasonaudio-metrics``: objective metrics of a folder of generated audio, av-benchmark style.

    reasonaudio-metrics --pred DIR [--gt DIR] [--videos DIR] [--captions CSV]
                        [--metrics fd_panns,kl_panns,...] --weights DIR --out results.json

Files are paired by file stem (``<ytid>_<start:06d>.flac`` in ``--pred`` ↔ ``<ytid>_<start:06d>.wav``
in ``--gt`` ↔ ``<ytid>_<start:06d>.mp4`` in ``--videos``), exactly as av-benchmark pairs
KL_PANNs. Nothing is dropped or replaced silently: unpaired stems, files that cannot be decoded,
clips too short for a network, ambiguous stems (``a.wav`` and ``a.flac``) and non-media files are
all listed in the JSON and summarised on stdout. Every clip is read whole, mono, at its native
rate, and each network gets av-benchmark's input (``AudioBackbone.prepare``: DC removed,
resampled with torchaudio's default resampler, cut to ``--duration`` seconds).

Which clips each metric uses (av-benchmark's ``evaluate.py``):

==========  ====================================================  =============================
metric      definition                                            clips
==========  ====================================================  =============================
fd_panns    Fréchet distance of PANNs Cnn14 2048-d embeddings     all generated vs all ground truth
fd_vggish   Fréchet distance of VGGish 0.96 s window embeddings   all windows of all clips, both sides
fd_passt    Fréchet distance of PaSST 768-d embeddings            paired clips
kl_panns    mean KL(softmax gt ‖ softmax generated), Cnn14        paired clips
kl_passt    the same with PaSST logits                            paired clips
is_panns    Inception Score (10 splits, seed 2020), Cnn14         all generated (sorted by stem)
is_passt    the same with PaSST logits                            all generated
desync      mean |Synchformer offset| (first / last 4.8 s)        generated audio ↔ ``--videos``
clap        caption–audio cosine, MS-CLAP 2023 (``--clap laion``:  generated clips with a caption
            LAION-CLAP), the checkpoint named in the results
==========  ====================================================  =============================

Weights are read from ``--weights DIR`` under their official file names
(``Cnn14_16k_mAP=0.438.pth``, ``vggish-10086976.pth``, ``passt-s-f128-p16-s10-ap.476-swa.pt``,
``synchformer_state_dict.pth``, ``CLAP_weights_2023.pth`` + ``msclap_gpt2/``); a metric whose file is
missing is reported as ``weights not found: <path>`` and the others are still computed. Nothing is downloaded.

Extracted features are cached per file (key: resolved path, size, modification time, network,
weights file identity, ``--duration``) under ``--cache-dir`` (default
``$XDG_CACHE_HOME/reasonaudio/metrics``), so a second run against the same ground truth only runs
the networks on new or changed files.

Exit status: 0 when every requested metric was computed and every file was usable; 3 when the
results were written but a metric could not be computed (missing weights, too few clips) or some
file was unusable; 2 for a usage error (argparse). Unpaired stems alone do not change the status.

More metrics plug in through :func:`register_metric` (a :class:`MetricSpec` whose ``compute``
receives the :class:`Evaluation`); docs/evaluation.md shows CLAP and ImageBind registered this way.

This module is the command line (:func:`main`, :func:`build_parser`) and the report; the rest lives in
:mod:`~reasonaudio.metrics.evaluate_inputs` (folders, captions, audio, reference weights, feature cache),
:mod:`~reasonaudio.metrics.evaluate_runner` (:class:`Evaluation`) and
:mod:`~reasonaudio.metrics.evaluate_registry` (metric specs, the built-in metrics, :func:`run_metrics`),
and every name is importable from here as well.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from reasonaudio.metrics.evaluate_inputs import (CACHE_VERSION, CLAP_CHECKPOINTS, CLAP_FOLDER, IMAGEBIND_FILE,
                                                 MEDIA_SUFFIXES, MODELS, MSCLAP_FILE, MSCLAP_TEXT_FOLDER,
                                                 SYNCHFORMER_CHECKPOINT, EmbeddingCache, Folder, ModelSpec,
                                                 WeightsMissing, default_cache_dir, read_audio, read_captions,
                                                 scan_folder)
from reasonaudio.metrics.evaluate_registry import (IMAGEBIND_SIZE, METRICS, MetricResult, MetricSpec, register_metric,
                                                   run_metrics)
from reasonaudio.metrics.evaluate_runner import Evaluation
from reasonaudio.metrics.listening import main as listening_main
from reasonaudio.metrics.scores import IS_SPLITS

__all__ = [
    "CACHE_VERSION", "CLAP_CHECKPOINTS", "CLAP_FOLDER", "EXIT_INCOMPLETE", "EXIT_OK", "IMAGEBIND_FILE",
    "IMAGEBIND_SIZE", "MEDIA_SUFFIXES", "METRICS", "MODELS", "MSCLAP_FILE", "MSCLAP_TEXT_FOLDER", "SUBCOMMANDS",
    "SYNCHFORMER_CHECKPOINT", "EmbeddingCache", "Evaluation", "Folder", "MetricResult", "MetricSpec", "ModelSpec",
    "WeightsMissing", "build_parser", "default_cache_dir", "format_table", "main", "read_audio", "read_captions",
    "register_metric", "run_metrics", "scan_folder",
]

EXIT_OK = 0
EXIT_INCOMPLETE = 3


# --------------------------------------------------------------------------- reporting and the command line


def _format_value(result: MetricResult) -> str:
    if result.value is None:
        return "—"
    return f"{result.value:.4f}" if math.isfinite(result.value) else str(result.value)


def format_table(results: dict[str, MetricResult]) -> str:
    """A Markdown table: metric, value, clips, status."""
    lines = ["| metric | value | clips | status |", "|---|---:|---:|---|"]
    for name, r in results.items():
        spec = METRICS[name]
        arrow = "↑" if spec.higher_is_better else "↓"
        lines.append(f"| {spec.title} {arrow} | {_format_value(r)} | {r.clips} | {r.status} |")
    named = [f"{METRICS[n].title}: {r.details['checkpoint']}" for n, r in results.items() if "checkpoint" in r.details]
    return "\n".join(lines + ([""] + [f"checkpoint of {line}" for line in named] if named else []))


def build_parser() -> argparse.ArgumentParser:
    """The ``reasonaudio-metrics`` argument parser."""
    p = argparse.ArgumentParser(prog="reasonaudio-metrics", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, type=Path, help="folder of generated clips (audio or video files)")
    p.add_argument("--gt", type=Path, help="folder of ground-truth clips, paired by file stem")
    p.add_argument("--videos", type=Path, help="folder of ground-truth videos for DeSync, paired by file stem")
    p.add_argument("--captions", type=Path, help="CSV with an id column (name/id/clip_id) and 'caption'")
    p.add_argument("--metrics", help="comma-separated metric names (default: every registered metric whose "
                                     f"inputs are given); available: {', '.join(METRICS)}")
    p.add_argument("--weights", type=Path, default=Path("weights"),
                   help="folder with the official checkpoint files (default: ./weights)")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="results JSON (default: results.json)")
    p.add_argument("--duration", type=float, default=8.0,
                   help="seconds of each clip that are scored (av-benchmark's --audio_length; default 8)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"feature cache (default: {default_cache_dir()})")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--batch-size", type=int, default=16, help="clips per network call (default 16)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available)")
    p.add_argument("--is-splits", type=int, default=IS_SPLITS, help="Inception Score splits (default 10)")
    p.add_argument("--clap", choices=tuple(CLAP_CHECKPOINTS), default="msclap",
                   help=f"CLAP of the clap metric: msclap = {CLAP_CHECKPOINTS['msclap']} ({MSCLAP_FILE} and "
                        f"{MSCLAP_TEXT_FOLDER}/ under --weights; the paper's, default), laion = "
                        f"{CLAP_CHECKPOINTS['laion']} ({CLAP_FOLDER}/ under --weights)")
    return p


def _inputs_given(spec: MetricSpec, args: argparse.Namespace) -> str | None:
    """None when every input ``spec`` needs was given, else the missing option."""
    for need in spec.needs:
        if getattr(args, need) is None:
            return f"--{need}"
    return None


def _select_metrics(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    if args.metrics:
        names = [n.strip() for n in args.metrics.split(",") if n.strip()]
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            parser.error(f"unknown metric(s) {', '.join(unknown)}; available: {', '.join(METRICS)}")
        for n in names:
            missing = _inputs_given(METRICS[n], args)
            if missing:
                parser.error(f"metric {n} needs {missing}")
        return list(dict.fromkeys(names)), {}
    names, skipped = [], {}
    for n, spec in METRICS.items():
        missing = _inputs_given(spec, args)
        if missing:
            skipped[n] = f"needs {missing}"
        else:
            names.append(n)
    return names, skipped


SUBCOMMANDS = ("listening-test", "mos")
"""First arguments that select the subjective-evaluation tools (:mod:`reasonaudio.metrics.listening`)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``reasonaudio-metrics``; returns the exit status (module docstring).

    ``reasonaudio-metrics listening-test …`` and ``reasonaudio-metrics mos …`` run the listening-test
    tools instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return listening_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.batch_size < 1 or args.is_splits < 1:
        parser.error("--duration must be > 0, --batch-size and --is-splits >= 1")
    names, skipped = _select_metrics(parser, args)
    folders = {}
    for side in ("pred", "gt", "videos"):
        if getattr(args, side) is not None:
            try:
                folders[side] = scan_folder(getattr(args, side))
            except ValueError as err:
                parser.error(f"--{side}: {err}")
    if not folders["pred"].files:
        parser.error(f"--pred: no media files in {args.pred}")
    captions = None
    if args.captions is not None:
        try:
            captions = read_captions(args.captions)
        except (OSError, ValueError) as err:
            parser.error(f"--captions: {err}")
    cache = EmbeddingCache(None if args.no_cache else (args.cache_dir or default_cache_dir()))
    ev = Evaluation(folders["pred"], folders.get("gt"), folders.get("videos"), captions, args.weights, args.duration,
                    torch.device(args.device), args.batch_size, cache,
                    audio_backbones=[b for n in names for b in METRICS[n].audio_backbones], is_splits=args.is_splits,
                    clap=args.clap)
    results = run_metrics(ev, names)
    pairing = {}
    if ev.gt is not None:
        pairing["paired"] = len(ev.paired("pred", "gt"))
        pairing["pred_only"] = sorted(set(ev.pred.files) - set(ev.gt.files))
        pairing["gt_only"] = sorted(set(ev.gt.files) - set(ev.pred.files))
    if ev.videos is not None:
        pairing["pred_without_video"] = sorted(set(ev.pred.files) - set(ev.videos.files))
    if captions is not None:
        pairing["pred_without_caption"] = sorted(set(ev.pred.files) - set(captions))
    duplicates = {side: f.duplicates for side, f in folders.items() if f.duplicates}
    incomplete = any(r.status != "ok" for r in results.values()) or bool(ev.problems) or bool(duplicates)
    status = EXIT_INCOMPLETE if incomplete else EXIT_OK
    report = {
        "metrics": {n: {"title": METRICS[n].title, **asdict(r)} for n, r in results.items()},
        "skipped": skipped,
        "inputs": {side: f.summary() for side, f in folders.items()},
        "pairing": pairing,
        "problems": dict(ev.problems),
        "shorter_than_duration": ev.short,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
                  | {"metrics": names, "cache_dir": str(cache.root) if cache.root else None},
        "exit_status": status,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(format_table(results))
    _print_summary(ev, folders, pairing, skipped, args.out)
    return status


def _print_summary(ev: Evaluation, folders: dict[str, Folder], pairing: dict, skipped: dict[str, str],
                   out: Path, shown: int = 20) -> None:
    lines = []
    for side, f in folders.items():
        lines.append(f"{side}: {len(f.files)} clips in {f.root}"
                     + (f", {len(f.duplicates)} ambiguous stems left out" if f.duplicates else "")
                     + (f", {len(f.ignored)} non-media entries ignored" if f.ignored else ""))
    for key in ("pred_only", "gt_only", "pred_without_video", "pred_without_caption"):
        if pairing.get(key):
            items = pairing[key]
            lines.append(f"{key}: {len(items)} ({', '.join(items[:shown])}{', …' if len(items) > shown else ''})")
    if ev.problems:
        lines.append(f"{len(ev.problems)} file(s) with problems:")
        for path, reasons in list(ev.problems.items())[:shown]:
            lines.append(f"  {path}: {'; '.join(reasons)}")
        if len(ev.problems) > shown:
            lines.append(f"  … {len(ev.problems) - shown} more")
    if ev.short:
        lines.append(f"{len(ev.short)} file(s) shorter than --duration {ev.duration:g} s (scored as they are)")
    for name, reason in skipped.items():
        lines.append(f"skipped {name}: {reason}")
    lines.append(f"results: {out}")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
