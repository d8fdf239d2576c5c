"""``reasonaudio-captions`` — build and validate VGGSound-Think captions.

    reasonaudio-captions annotate --videos MANIFEST --out OUT.jsonl (--backend CONFIG | --base-url URL --model NAME)
        [--media-root DIR] [--workers N] [--retry-rejected] [--object-names FILE] [--timeout S]
        [--max-retries N] [--backoff S] [--frames N] [--send-audio] [--image-format jpeg|png]
        [--price-prompt P] [--price-completion P] [--no-progress]
    reasonaudio-captions diversity OUT.jsonl --classes K --per-class 20 --embedder DIR [--seed S]
        [--field caption] [--class-field label] [--out REPORT.json]
    reasonaudio-captions judge A.jsonl B.jsonl (--backend CONFIG | --base-url URL --model NAME)
        [--fraction 0.05] [--seed S] [--videos MANIFEST] [--out REPORT.json]
    reasonaudio-captions review OUT.jsonl [--fraction 0.05] [--seed S] --out review.html

``annotate`` writes accepted captions to ``OUT.jsonl`` and rejections to ``OUT.rejected.jsonl``,
resumes where a previous run stopped (``--retry-rejected`` runs rejected clips again) and appends
the resolved settings and the run's counts to ``OUT.runs.jsonl``. With ``--base-url`` and
``--model`` no config file is needed; the key is read from ``$OPENAI_API_KEY``. Flags given with
``--backend`` override the file's values. The other commands print a JSON report (``--out`` also
writes it to a file).

Exit status: 0 on success; 1 when some clips failed on transport errors (run again to retry
them); 2 on a usage, configuration or backend-configuration error.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from reasonaudio.captions.backend_config import build_backend, read_config
from reasonaudio.captions.backends import ChatBackend, FatalBackendError
from reasonaudio.captions.inputs import read_clips
from reasonaudio.captions.judge import run_judge
from reasonaudio.captions.pipeline import run_annotation
from reasonaudio.captions.prompts import prompts_digest, read_word_list
from reasonaudio.captions.review import write_review
from reasonaudio.captions.validate import ValidationRules

# CLI flag → backend config key; a flag left at None keeps the config's (or the default) value.
_BACKEND_FLAGS = {"base_url": "base_url", "model": "model", "timeout": "timeout", "max_retries": "max_retries",
                  "backoff": "backoff", "frames": "frames", "send_audio": "send_audio",
                  "image_format": "image_format", "price_prompt": "price_per_1k_prompt",
                  "price_completion": "price_per_1k_completion", "workers": "concurrency"}


def _add_backend_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend (a CONFIG file, or --base-url and --model)")
    group.add_argument("--backend", metavar="CONFIG", help="backend config file (YAML or JSON)")
    group.add_argument("--base-url", help="OpenAI-compatible API root, e.g. https://api.openai.com/v1")
    group.add_argument("--model", help="model name (openai) or model folder (hf)")
    group.add_argument("--timeout", type=float, help="seconds without an answer before a retry")
    group.add_argument("--max-retries", type=int, help="retries per request")
    group.add_argument("--backoff", type=float, help="first retry wait in seconds (doubles each retry)")
    group.add_argument("--frames", type=int, help="frames per clip")
    group.add_argument("--send-audio", action="store_true", default=None, help="attach the audio track")
    group.add_argument("--image-format", choices=("jpeg", "png"))
    group.add_argument("--price-prompt", type=float, help="price per 1000 prompt tokens")
    group.add_argument("--price-completion", type=float, help="price per 1000 completion tokens")
    group.add_argument("--workers", type=int, help="requests in flight (default: the config's concurrency)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The backend config mapping: the CONFIG file, overridden by flags."""
    if args.backend:
        config, where = read_config(args.backend), str(args.backend)
    elif args.base_url and args.model:
        config, where = {"backend": "openai"}, "command line"
    else:
        raise ValueError("give --backend CONFIG, or --base-url URL and --model NAME")
    for flag, key in _BACKEND_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            config[key] = value
    return config, where


def _rules(config: dict[str, Any], object_names: str | None, where: str) -> ValidationRules:
    """ValidationRules from the config's ``rules`` mapping and ``--object-names``."""
    if not isinstance(config.get("rules") or {}, dict):
        raise ValueError(f"{where}: 'rules' must be a mapping")
    settings = dict(config.get("rules") or {})
    names_file = object_names or settings.pop("object_names", None)
    if names_file is not None:
        settings["object_names"] = read_word_list(names_file)
    for key in ("grounding_sentences", "tracks", "keywords"):
        if key in settings:
            settings[key] = tuple(settings[key])
    try:
        return ValidationRules(**settings)
    except TypeError as error:
        raise ValueError(f"{where}: rules: {error}") from None


def _emit(report: dict[str, Any], out: str | None) -> None:
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n", encoding="utf-8")
    print(text)


def _append_run_log(out: Path, entry: dict[str, Any]) -> None:
    log = out.with_name(f"{out.stem}.runs.jsonl")
    with log.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def cmd_annotate(args: argparse.Namespace) -> int:
    config, where = _config(args)
    rules = _rules(config, args.object_names, where)
    clips = read_clips(args.videos, args.media_root)
    backend = build_backend(config, where)
    out = Path(args.out)
    settings = {"argv": args.argv, "videos": str(args.videos), "media_root": args.media_root, "out": str(out),
                "backend": backend.describe(), "rules": rules.to_dict(), "prompts_sha256": prompts_digest(),
                "retry_rejected": args.retry_rejected}
    out.parent.mkdir(parents=True, exist_ok=True)
    _append_run_log(out, {"event": "start", "time": time.time(), "settings": settings})
    summary = run_annotation(clips, backend, out, rules, retry_rejected=args.retry_rejected,
                             progress=not args.no_progress)
    report = summary.to_dict()
    _append_run_log(out, {"event": "end", "time": time.time(), "summary": report})
    _emit(report, None)
    return 1 if summary.failed else 0


def cmd_diversity(args: argparse.Namespace) -> int:
    # lazy: the caption embedder's transformers classes are 2.0 s of this CLI's 3.0 s import (-X importtime, 2-core
    # AMD host); annotate, validate and judge do not need them
    from reasonaudio.captions.diversity import run_diversity

    report = run_diversity(args.captions, args.classes, args.per_class, args.embedder, seed=args.seed,
                           field=args.field, class_field=args.class_field, batch_size=args.batch_size,
                           device=args.device)
    _emit(report, args.out)
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    config, where = _config(args)
    backend: ChatBackend = build_backend(config, where)
    clips = {c.id: c for c in read_clips(args.videos, args.media_root)} if args.videos else None
    report = run_judge(args.a, args.b, backend, fraction=args.fraction, seed=args.seed, clips=clips,
                       progress=not args.no_progress)
    report["backend"] = backend.describe()
    _emit(report, args.out)
    return 1 if report["failed"] else 0


def cmd_review(args: argparse.Namespace) -> int:
    _emit(write_review(args.captions, args.out, fraction=args.fraction, seed=args.seed), None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reasonaudio-captions", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    annotate = commands.add_parser("annotate", help="three-step VGGSound-Think annotation of clips")
    annotate.add_argument("--videos", required=True, metavar="MANIFEST", help="clips: .jsonl, vggsound .csv or .tsv")
    annotate.add_argument("--out", required=True, metavar="OUT.jsonl")
    annotate.add_argument("--media-root", help="folder of relative media paths (default: the manifest's folder)")
    annotate.add_argument("--retry-rejected", action="store_true", help="annotate earlier rejections again")
    annotate.add_argument("--object-names", metavar="FILE", help="names the gist must not mention (one per line)")
    _add_backend_flags(annotate)
    annotate.set_defaults(run=cmd_annotate)

    diversity = commands.add_parser("diversity", help="mean pairwise cosine distance within classes")
    diversity.add_argument("captions", metavar="OUT.jsonl")
    diversity.add_argument("--classes", type=int, required=True, metavar="K")
    diversity.add_argument("--per-class", type=int, default=20)
    diversity.add_argument("--embedder", required=True, metavar="DIR", help="local T5 / sentence-embedding folder")
    diversity.add_argument("--seed", type=int, default=0)
    diversity.add_argument("--field", default="caption", help="record key of the text to embed")
    diversity.add_argument("--class-field", default="label", help="record key of the class")
    diversity.add_argument("--batch-size", type=int, default=16)
    diversity.add_argument("--device", default="cpu")
    diversity.add_argument("--out", metavar="REPORT.json")
    diversity.set_defaults(run=cmd_diversity)

    judge = commands.add_parser("judge", help="pairwise VLM-as-judge win rate of A over B")
    judge.add_argument("a", metavar="A.jsonl")
    judge.add_argument("b", metavar="B.jsonl")
    judge.add_argument("--fraction", type=float, default=0.05)
    judge.add_argument("--seed", type=int, default=0)
    judge.add_argument("--videos", metavar="MANIFEST", help="media of the clips (default: the files' video fields)")
    judge.add_argument("--media-root")
    judge.add_argument("--out", metavar="REPORT.json")
    _add_backend_flags(judge)
    judge.set_defaults(run=cmd_judge)

    review = commands.add_parser("review", help="static accept/reject page for a human check")
    review.add_argument("captions", metavar="OUT.jsonl")
    review.add_argument("--fraction", type=float, default=0.05)
    review.add_argument("--seed", type=int, default=0)
    review.add_argument("--out", required=True, metavar="review.html")
    review.set_defaults(run=cmd_review)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except FatalBackendError as error:
        print(f"reasonaudio-captions {args.command}: backend error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"reasonaudio-captions {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
