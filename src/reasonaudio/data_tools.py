"""`reasonaudio-data` — dataset tools.

    reasonaudio-data check PATH_OR_MANIFEST... [--duration S] [--require video,audio] [--jsonl] [--media-root DIR]
    reasonaudio-data synth --out DIR --num-clips N --seed S [--duration D] [--preset tiny]
    reasonaudio-data tiny-mllm --out DIR MANIFEST.jsonl...

``check`` decodes every file (or every file a manifest names) and prints one line per file as it
goes; with ``--jsonl`` one JSON object per file. Exit status: 0 when every file is ok, 1 when any
is not, 2 on usage errors. Clip ids that begin with ``-`` (``-Qowmc0P9ic_000034.mp4``) are taken
as paths, not options.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator, Sequence

from reasonaudio.data_modules.manifests import read_manifest, read_think_jsonl, resolve_media
from reasonaudio.media import validate_file

MANIFEST_SUFFIXES = {".csv", ".tsv", ".jsonl", ".json"}


def _manifest_format(path: Path) -> str:
    """Guess a manifest's format from its extension and first line."""
    if path.suffix == ".jsonl":
        return "think_jsonl"
    if path.suffix == ".json":
        return "wavcaps_json"
    if path.suffix == ".tsv":
        return "mmaudio_tsv"
    with open(path, newline="") as f:
        first = f.readline()
    return "audiocaps_csv" if first.startswith("audiocap_id") else "vggsound_csv"


def _targets(paths: Sequence[str], media_root: str | None) -> Iterator[tuple[str, str | None]]:
    """Yield (path, error) for every media file named directly or through a manifest."""
    for p in map(Path, paths):
        if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
            try:
                rows = read_manifest(p, _manifest_format(p))
            except ValueError as e:
                yield str(p), f"bad manifest: {e}"
                continue
            root = Path(media_root) if media_root else p.parent
            for row in rows:
                try:
                    yield str(resolve_media(row, root)), None
                except ValueError as e:
                    yield str(root / row.id), f"missing media: {e}"
        else:
            yield str(p), None


def _human(r: dict) -> str:
    if not r["ok"]:
        return f"FAIL {r['path']}: {r['reason']}"
    parts = [f"ok   {r['path']}", f"{r['duration']:.3f} s"]
    if r["video_fps"]:
        parts.append(f"video {r['video_fps']:.3f} fps {r['width']}x{r['height']}")
    if r["audio_rate"]:
        parts.append(f"audio {r['audio_rate']} Hz {r['audio_channels']} ch")
    return "  ".join(parts)


def cmd_check(args: argparse.Namespace) -> int:
    require = [k for k in (args.require or "").split(",") if k]
    bad_kinds = [k for k in require if k not in ("audio", "video")]
    if bad_kinds:
        print(f"reasonaudio-data check: --require takes 'audio' and/or 'video', got {bad_kinds}", file=sys.stderr)
        return 2
    n = n_bad = 0
    for path, error in _targets(args.paths, args.media_root):
        if error is None:
            report = validate_file(path, duration=args.duration, require=require)
        else:
            report = dict(path=path, ok=False, reason=error, duration=None, video_fps=None, audio_rate=None,
                          audio_channels=None, width=None, height=None)
        report["path"] = args.aliases.get(report["path"], report["path"])
        n += 1
        n_bad += not report["ok"]
        print(json.dumps(report) if args.jsonl else _human(report), flush=True)
    print(f"checked {n} files: {n - n_bad} ok, {n_bad} not ok", file=sys.stderr)
    return 1 if n_bad else 0


def cmd_synth(args: argparse.Namespace) -> int:
    # lazy: the generator's module pulls in Lightning (about 3 s of this CLI's 4.9 s start-up on the 2-core AMD
    # host, measured with and without it); `check`, the common command, needs none of it
    from reasonaudio.data_modules.synthetic import synthesize_corpus

    manifest = synthesize_corpus(args.out, num_clips=args.num_clips, seed=args.seed, duration=args.duration,
                                 preset=args.preset)
    print(f"wrote {args.num_clips} clips; manifest: {manifest}")
    return 0


def cmd_tiny_mllm(args: argparse.Namespace) -> int:
    # lazy: transformers' Qwen2.5-VL classes cost start-up time that `check` does not need
    from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl

    captions = [row.caption or "" for manifest in args.captions for row in read_think_jsonl(manifest)]
    print(f"wrote a tiny random Qwen2.5-VL for {len(captions)} captions: {write_tiny_qwen_vl(args.out, captions)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reasonaudio-data", description="ReasonAudio dataset tools")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="decode files (or the files of manifests) and report problems")
    check.add_argument("paths", nargs="+", help="media files and/or manifests (.csv, .tsv, .jsonl, .json)")
    check.add_argument("--duration", type=float, default=None, help="minimum duration in seconds")
    check.add_argument("--require", default="", help="comma-separated stream kinds that must exist: video,audio")
    check.add_argument("--jsonl", action="store_true", help="one JSON object per file")
    check.add_argument("--media-root", default=None, help="media folder for manifests (default: the manifest's)")
    check.set_defaults(func=cmd_check)
    synth = sub.add_parser("synth", help="render the synthetic audio-visual corpus")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--num-clips", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--duration", type=float, default=4.0)
    synth.add_argument("--preset", default="tiny", help="AudioConfig preset (sets the sample rate)")
    synth.set_defaults(func=cmd_synth)
    tiny = sub.add_parser("tiny-mllm", help="write a tiny random Qwen2.5-VL folder whose vocabulary covers captions")
    tiny.add_argument("--out", required=True, help="output folder")
    tiny.add_argument("captions", nargs="+", help="VGGSound-Think JSONL manifests whose captions set the vocabulary")
    tiny.set_defaults(func=cmd_tiny_mllm)
    return parser


def _protect_dash_paths(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, str]]:
    """Rewrite existing files that start with '-' (YouTube ids) as './-…' so argparse sees paths.

    Returns the new argv and a map from the rewritten form back to what the user typed.
    """
    options = {s for a in parser._subparsers._group_actions[0].choices.values() for s in a._option_string_actions}
    options |= set(parser._option_string_actions)
    out, aliases = [], {}
    for arg in argv:
        if arg.startswith("-") and arg.split("=")[0] not in options and Path(arg).exists():
            aliases[f"./{arg}"] = arg
            arg = f"./{arg}"
        out.append(arg)
    return out, aliases


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args_list = list(sys.argv[1:] if argv is None else argv)
    protected, args_aliases = _protect_dash_paths(args_list, parser)
    # Paths may follow options (`check a.mp4 --jsonl b.mp4`); argparse leaves those for us.
    args, extras = parser.parse_known_args(protected)
    if extras and (args.command != "check" or any(e.startswith("-") for e in extras)):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if extras:
        args.paths += extras
    args.aliases = args_aliases
    if args.command == "synth" and args.num_clips < 1:
        parser.error(f"--num-clips must be >= 1, got {args.num_clips}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
