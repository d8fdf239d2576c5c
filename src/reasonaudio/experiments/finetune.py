"""`make finetune DATA=…`: fine-tune a pretrained model on your own videos (LoRA or full).

    python -m reasonaudio.experiments.finetune --data FOLDER_or_MANIFEST.jsonl --out runs/finetune
        --features-config CFG [--features-config CFG ...] --pretrain-config CFG --pretrained EXPORT_or_CKPT
        [--captions CAPTIONS.jsonl | --captions-backend BACKEND.yaml] [--lora-rank 64 | --lora-rank 0]
        [--steps 500] [--lr 1e-4] [--batch-size 8] [-- extra `reasonaudio fit` arguments]

Steps (each resumes or is skipped when its output exists; nothing is written outside ``--out``):

1. **clips** — ``reasonaudio.data_modules.folder``: every video of a folder, or the rows of a JSONL manifest (``id``,
   ``video``, ``caption``); the videos' own audio is the training target.
2. **captions** — ``--captions`` (JSONL ``id`` + ``caption``) or, with ``--captions-backend``, the
   VGGSound-Think annotation pipeline (``reasonaudio-captions annotate``) on the clips into
   ``<out>/captions.jsonl``. Clips left without a caption train with the video-only prompt
   (``has_text = False``), the prompt ``reasonaudio-generate`` uses for V2A.
3. **features** — the features stage (``predict``) of the pretrained model's codec and encoders
   (``--features-config``: the resolved ``config.yaml`` of the run that made its caches, or
   ``lightning_configs/paper/features.yaml`` + weights) with the data swapped for the clips, into
   ``<out>/features`` (resumable, as ``make features``).
4. **fine-tune** — ``lightning_configs/finetune.yaml`` (:class:`~reasonaudio.systems.finetune.FlowMatchingFinetune`)
   with the pretrained model's ``net`` and ``conditioner`` copied from ``--pretrain-config`` (the run's
   resolved ``config.yaml``, or ``lightning_configs/paper/pretrain_m.yaml``) into ``<out>/model.yaml``,
   starting from ``--pretrained``: an export (``model.safetensors`` or its folder: a released model, the
   EMA export of pretraining, a post-training export) or a Lightning ``.ckpt`` (its raw weights, converted
   to ``<out>/pretrained.safetensors``). The result: ``<out>/export/model.safetensors`` (+ ``adapter/``).
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from safetensors.torch import save_file

from reasonaudio.captions.cli import main as captions_main
from reasonaudio.cli import CONFIG_DIR
from reasonaudio.data_modules.clips import ClipDataModule
from reasonaudio.data_modules.folder import list_clips
from reasonaudio.experiments.pipeline import run_cli


def _compose(configs: Sequence[Path]) -> dict[str, Any]:
    """The later YAMLs' keys over the earlier ones' (dicts merged, everything else replaced)."""
    def merge(a: Any, b: Any) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            return {**a, **{k: merge(a[k], v) if k in a else v for k, v in b.items()}}
        return b

    out: dict[str, Any] = {}
    for path in configs:
        out = merge(out, yaml.safe_load(Path(path).read_text()) or {})
    return out


def clip_data_args(features_config: dict[str, Any]) -> dict[str, Any]:
    """The decoding arguments (duration, preset, frame sizes, batch) of a features config's data module, the
    ones :class:`~reasonaudio.data_modules.clips.ClipDataModule` takes."""
    accepted = set(inspect.signature(ClipDataModule.__init__).parameters) - {"self", "skip_done_in", "predict_split"}
    given = (features_config.get("data") or {}).get("init_args") or {}
    return {k: v for k, v in given.items() if k in accepted}


def write_features_data(out: Path, source: Path, captions: Path | None, features_config: dict[str, Any]) -> Path:
    """``<out>/features_data.yaml``: the features stage's data swapped for the clips (same decoding)."""
    init = {"source": str(source), "captions": str(captions) if captions else None,
            **clip_data_args(features_config), "predict_split": "train", "skip_done_in": str(out / "features")}
    path = out / "features_data.yaml"
    path.write_text(yaml.safe_dump({"data": {"class_path": "reasonaudio.data_modules.folder.VideoFolderDataModule",
                                             "init_args": init}}, sort_keys=False))
    return path


def write_model_overlay(out: Path, pretrain_config: dict[str, Any]) -> Path:
    """``<out>/model.yaml``: the pretrained model's ``net`` and ``conditioner`` under the fine-tuning system, with its
    ``audio`` shape when the config declares one."""
    args = (pretrain_config.get("model") or {}).get("init_args") or {}
    missing = [k for k in ("net", "conditioner") if k not in args]
    if missing:
        raise SystemExit(f"finetune: --pretrain-config has no model.init_args.{missing[0]}")
    overlay = {"model": {"class_path": "reasonaudio.systems.finetune.FlowMatchingFinetune",
                         "init_args": {"net": args["net"], "conditioner": args["conditioner"]}}}
    if pretrain_config.get("audio"):  # the pretrained model's audio shape (cli.AudioShape) reaches its net again
        overlay = {"audio": pretrain_config["audio"], **overlay}
    path = out / "model.yaml"
    path.write_text(yaml.safe_dump(overlay, sort_keys=False))
    return path


def pretrained_export(path: Path, out: Path) -> Path:
    """An export file for ``path``: itself (file or folder) or, for a Lightning ``.ckpt``, its ``net.*`` and
    ``conditioner.*`` weights written to ``<out>/pretrained.safetensors``."""
    if path.suffix != ".ckpt":
        return path
    converted = out / "pretrained.safetensors"
    if not converted.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        save_file({k: v.contiguous() for k, v in state.items() if k.startswith(("net.", "conditioner."))},
                  str(converted))
    return converted


def annotate(out: Path, clips: Sequence[tuple[str, Path, str]], backend: Path) -> Path:
    """Run the VGGSound-Think annotation pipeline on the clips into ``<out>/captions.jsonl`` (it resumes)."""
    manifest = out / "clips.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "video": str(v.resolve())}) + "\n" for i, v, _ in clips))
    code = captions_main(["annotate", "--videos", str(manifest), "--out", str(out / "captions.jsonl"),
                          "--backend", str(backend)])
    if code not in (0, None):
        raise SystemExit(f"finetune: reasonaudio-captions annotate exited with {code}")
    return out / "captions.jsonl"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="finetune", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder of videos or a JSONL manifest")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune"))
    parser.add_argument("--features-config", type=Path, action="append", required=True,
                        help="the features stage's config(s) of the pretrained model (composed in order)")
    parser.add_argument("--pretrain-config", type=Path, action="append", required=True,
                        help="the pretrained model's config(s) (net and conditioner are read from them)")
    parser.add_argument("--pretrained", type=Path, required=True, help="export (model.safetensors / folder) or .ckpt")
    captions = parser.add_mutually_exclusive_group()
    captions.add_argument("--captions", type=Path, help="JSONL of id + caption")
    captions.add_argument("--captions-backend", type=Path, help="annotation backend config (reasonaudio-captions)")
    parser.add_argument("--lora-rank", type=int, default=64, help="LoRA rank; 0 = full fine-tuning")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        clips = list_clips(args.data)
    except ValueError as err:
        parser.error(f"--data: {err}")
    if not args.pretrained.exists():
        parser.error(f"--pretrained: {args.pretrained} not found")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    caption_file = args.captions
    if args.captions_backend:
        caption_file = annotate(out, clips, args.captions_backend)
    features_configs = [p.resolve() for p in args.features_config]
    data_yaml = write_features_data(out, args.data.resolve(), caption_file and caption_file.resolve(),
                                    _compose(features_configs))
    print(f"[finetune] {len(clips)} clips, features → {out / 'features'}", flush=True)
    run_cli(["predict", *[a for c in features_configs for a in ("--config", str(c))], "--config", str(data_yaml),
             f"--trainer.callbacks.init_args.output={out / 'features'}",
             f"--trainer.logger.init_args.save_dir={out / 'logs'}"])
    model_yaml = write_model_overlay(out, _compose(args.pretrain_config))
    pretrained = pretrained_export(args.pretrained, out)
    mode = f"LoRA rank {args.lora_rank}" if args.lora_rank else "full"
    print(f"[finetune] {mode} fine-tuning from {args.pretrained}, {args.steps} steps", flush=True)
    run_cli(["fit", "--config", str(CONFIG_DIR / "finetune.yaml"), "--config", str(model_yaml),
             f"--seed_everything={args.seed}", f"--model.init_args.pretrained={pretrained}",
             f"--model.init_args.export={out / 'export'}", f"--model.init_args.lora_rank={args.lora_rank}",
             f"--model.init_args.optimizer.init_args.lr={args.lr}", f"--data.init_args.train=[{out / 'features'}]",
             f"--data.init_args.batch_size={args.batch_size}", f"--data.init_args.seed={args.seed}",
             f"--trainer.max_steps={args.steps}", f"--trainer.logger.init_args.save_dir={out}", *extra])
    print(f"[finetune] done: {out / 'export' / 'model.safetensors'} (reasonaudio-generate --ema reads it)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
