"""`reasonaudio-generate`: audio for videos (and/or text) from a pretrained checkpoint, muxed back into mp4.

    reasonaudio-generate --ckpt PRETRAIN.ckpt --features-config FEATURES_RUN/config.yaml --vocoder VOCODER.ckpt \\
        [--video V.mp4 | --videos DIR_OR_LIST | --manifest M.jsonl --media-root DIR] [--text "..."] \\
        [--negative-text "..."] [--duration S] [--keep-original-audio] [--cfg 4.5] [--steps 25] [--seed 0] \\
        [--ema EXPORT/model.safetensors] [--adapter POST_TRAIN_EXPORT] --out OUT_DIR

Generation reads only what it conditions on: each video's frames (Synchformer and MLLM streams, decoded
by the features stage's own frame decoder, ``reasonaudio.data_modules.video_streams``) and optional text. Audio is
never required nor decoded: videos without an audio track, or with a silent one, work like any other.
Each video gets audio of its own displayed duration (any length up to the MLLM's frame budget, any frame
rate, rotation or size); ``--duration`` sets the length of text-only generation (default 8 s).

Outputs follow av-benchmark's naming: ``<stem>.flac`` at the model's sample rate and, for videos,
``<stem>.mp4`` — the source video stream copied whenever mp4 can hold its codec (H.264, HEVC, VP9, AV1,
...; else re-encoded to H.264) with the generated audio, fitted to the video's duration; with
``--keep-original-audio`` the source's own audio follows as a second track. ``--videos`` takes a folder
(its video files, not recursive) or a text file listing one video path per line (relative to the list);
inputs are batched by length. A run is resumable: files are written under ``OUT/.partial/`` and renamed
when complete, and a rerun skips every input whose outputs exist. A file that cannot be used does not
stop the run: its verdict goes to ``OUT/failures.jsonl`` (one JSON line per failed input) and the
command exits with status 1 at the end.

A video without ``--text`` is generated video-only (V2A) with the text-dropped prompt the model was trained
on (its condition dropout, p = 0.1): the MLLM's user turn holds the video alone — the paper's pure V2A
setting (Appendix C), which adds no instruction text. ``--text`` alone generates from text (T2A).

The features config (saved by ``reasonaudio predict --config lightning_configs/features.yaml``) says how
clips were turned into conditions for training — VAE, Synchformer, frame sizes and rates — so generation
sees its inputs exactly as training did. ``--device`` picks where it runs (default: CUDA when present,
with bf16 autocast for the networks; ``--precision fp32`` turns that off); a progress bar counts inputs.

``--adapter`` takes a preference post-training result (``PreferencePostTrain``'s ``export``) in any of
its forms, recognised by content: the export folder or its merged ``model.safetensors`` (the adapter
already merged, loaded like an EMA export), or the peft ``adapter/`` folder alone, which is applied
on top of ``--ema`` (or, without ``--ema``, of the pretrained export its ``adapter_config.json``
names) and merged.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from tqdm import tqdm

from reasonaudio.cli import build_cli
from reasonaudio.config import SYNC_DIM
from reasonaudio.data_modules.features import SYNC_WEIGHTS
from reasonaudio.data_modules.inference import (InferenceDataset, InferenceRecord, bucket_key, collate_inference,
                                                length_buckets)
from reasonaudio.data_modules.manifests import read_think_jsonl, resolve_media
from reasonaudio.media import MediaError, max_side_shape, mux_audio, probe, video_duration, write_audio
from reasonaudio.systems.codec import AudioDecoder
from reasonaudio.systems.flow_matching import FlowMatchingPretrain
from reasonaudio.systems.policy_weights import load_policy_weights
from reasonaudio.systems.vocoder import trained_generator

PARTIAL = ".partial"
"""Subfolder of the output folder where files are written before they are renamed into place."""
FAILURES = "failures.jsonl"
"""Per-input verdicts of a run's failed inputs, in the output folder."""
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
"""Files ``--videos DIR`` takes."""


def _load(args: argparse.Namespace):
    for path, what in ((args.ckpt, "--ckpt"), (args.features_config, "--features-config"), (args.vocoder, "--vocoder")):
        if not Path(path).exists():
            raise SystemExit(f"reasonaudio-generate: {what} not found: {path}")
    # The saved config is a `predict` run's: drop the subcommand's own keys to rebuild model and data.
    config = yaml.safe_load(Path(args.features_config).read_text())
    for key in ("return_predictions", "ckpt_path", "weights_only"):
        config.pop(key, None)
    cli = build_cli(["--config", yaml.safe_dump(config), "--trainer.logger=false"], run=False)
    features = cli.model.eval()
    features.setup("predict")
    if features.sync_encoder is not None:
        # The exact encoder that made the training cache (a random demo encoder cannot be rebuilt).
        sync_weights = Path(args.sync_weights) if args.sync_weights else _cache_folder(config) / SYNC_WEIGHTS
        if not sync_weights.is_file():
            raise SystemExit(f"reasonaudio-generate: Synchformer weights of the training cache not found: "
                             f"{sync_weights} (pass --sync-weights)")
        features.sync_encoder.load_state_dict(torch.load(sync_weights, weights_only=True), strict=True)
    system = FlowMatchingPretrain.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    if args.ema:
        system.load_ema(args.ema)
    if args.adapter:
        try:
            load_policy_weights(system, args.adapter, base=args.ema)
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"reasonaudio-generate: --adapter {args.adapter}: {err}") from err
        system.eval()
    return features, cli.datamodule, system, trained_generator(str(args.vocoder))


def _cache_folder(config: dict) -> Path:
    """The output folder of the features run's ``FeatureCacheWriter``."""
    writers = [c for c in config.get("trainer", {}).get("callbacks", []) or []
               if str(c.get("class_path", "")).endswith("FeatureCacheWriter")]
    if not writers:
        raise SystemExit("reasonaudio-generate: the features config has no FeatureCacheWriter callback")
    return Path(writers[0]["init_args"]["output"])


def list_videos(source: str | Path) -> list[Path]:
    """The videos of ``--videos``: a folder's video files (sorted, not recursive, hidden files left out), or
    the paths listed in a text file (one per line; blank lines and ``#`` comments skipped; relative to it)."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.iterdir()
                      if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."))
    if not source.is_file():
        raise SystemExit(f"reasonaudio-generate: --videos {source}: no such folder or list file")
    lines = [line.strip() for line in source.read_text().splitlines()]
    return [Path(line) if Path(line).is_absolute() else source.parent / line
            for line in lines if line and not line.startswith("#")]


def _inputs(args: argparse.Namespace) -> tuple[list[tuple[str, str, str]], list[dict]]:
    """``(id, video path, caption)`` per input ("" path for text only), and failures found while listing."""
    text = args.text or ""
    if args.manifest:
        inputs, failures = [], []
        root = Path(args.media_root or Path(args.manifest).parent)
        for row in read_think_jsonl(args.manifest):
            try:
                inputs.append((row.id, str(resolve_media(row, root, VIDEO_EXTENSIONS)), row.caption or text))
            except ValueError as err:
                failures.append({"id": row.id, "path": "", "verdict": f"no video: {err}"})
        return inputs, failures
    if args.videos:
        return [(p.stem, str(p), text) for p in list_videos(args.videos)], []
    if args.video:
        return [(Path(args.video).stem, str(args.video), text)], []
    return [("text_only", "", text)], []


def _record(clip_id: str, video: str, caption: str, args: argparse.Namespace, dataset, conditioner):
    """An ``InferenceRecord`` of one input, its length read from the video (``MediaError`` when the file
    cannot be used: unreadable, no video stream, too short for Synchformer, too long for the MLLM)."""
    if not video:
        return InferenceRecord(clip_id, "", args.duration or 8.0, caption)
    info = probe(video)
    if info.video is None:
        raise MediaError(video, "no video stream")
    rec = InferenceRecord(clip_id, video, video_duration(video), caption)
    try:
        seq = dataset.seq(rec)  # raises for clips shorter than one Synchformer window
        if dataset.load_mllm_video:
            _check_frame_budget(rec, seq, info.video, dataset, conditioner)
    except ValueError as err:
        raise MediaError(video, str(err)) from err
    return rec


def _check_frame_budget(rec, seq, stream, dataset, conditioner) -> None:
    """ValueError naming the limit when the video's MLLM frames give more visual tokens than the MLLM takes."""
    limit = getattr(conditioner, "max_video_tokens", None)
    vision = getattr(getattr(getattr(conditioner, "backbone", None), "config", None), "vision_config", None)
    if limit is None or vision is None or stream.width is None:
        return
    h, w = (stream.width, stream.height) if stream.rotation in (90, 270) else (stream.height, stream.width)
    h, w = max_side_shape(h, w, dataset.mllm_max_side, dataset.mllm_multiple)
    per_step = (h // vision.patch_size) * (w // vision.patch_size) // vision.spatial_merge_size ** 2
    steps = math.ceil(seq.mllm_frames / vision.temporal_patch_size)
    if steps * per_step > limit:
        seconds = limit // per_step * vision.temporal_patch_size / seq.mllm_fps
        raise ValueError(f"too long: {rec.duration:.1f} s gives {seq.mllm_frames} MLLM frames ({seq.mllm_fps:g} fps, "
                         f"{w}x{h}) = {steps * per_step} visual tokens, over the MLLM's frame budget "
                         f"max_video_tokens={limit} (at most {seconds:.1f} s at this frame size)")


def _done(out: Path, clip_id: str, has_video: bool) -> bool:
    """Whether an earlier run finished this input (files appear only once complete)."""
    return (out / f"{clip_id}.flac").is_file() and (not has_video or (out / f"{clip_id}.mp4").is_file())


@torch.no_grad()
def generate(args: argparse.Namespace) -> int:
    """Run generation; returns the number of inputs that failed (their verdicts are in ``failures.jsonl``)."""
    out = Path(args.out)
    listed, failures = _inputs(args)
    features, dm, system, vocoder = _load(args)
    kw = dm.dataset_kwargs
    dataset_kwargs = dict(audio_preset=kw["audio_preset"], load_sync_video=kw["load_sync_video"] and
                          features.sync_encoder is not None, sync_size=kw["sync_size"],
                          load_mllm_video=kw["load_mllm_video"], mllm_fps=kw["mllm_fps"],
                          mllm_max_side=kw["mllm_max_side"])
    probe_set = InferenceDataset([], **dataset_kwargs)
    records, seen, already = [], {}, 0
    for clip_id, video, caption in listed:
        if clip_id in seen:
            failures.append({"id": clip_id, "path": video, "verdict": f"duplicate output stem {clip_id!r} "
                                                                       f"(also {seen[clip_id]})"})
            continue
        seen[clip_id] = video
        if _done(out, clip_id, bool(video)):
            already += 1  # finished by an earlier run
            continue
        try:
            records.append(_record(clip_id, video, caption, args, probe_set, system.conditioner))
        except MediaError as err:
            if args.video:
                raise
            failures.append(_verdict(clip_id, video, err))
    dataset = InferenceDataset(records, **dataset_kwargs)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
                              and args.precision == "bf16")
    for module in (features, system, vocoder):
        module.to(device)
    (out / PARTIAL).mkdir(parents=True, exist_ok=True)
    sr = features.seq.audio.sample_rate
    decode = AudioDecoder(features.vae, vocoder=vocoder, audio_preset=kw["audio_preset"])
    written = 0
    progress = tqdm(total=len(records), unit="video", desc="generate", file=sys.stderr)
    for indices in length_buckets([bucket_key(dataset.seq(r)) for r in records], args.batch_size):
        items = []
        for i in indices:
            try:
                items.append(dataset[i])
            except MediaError as err:
                if args.video:
                    raise
                failures.append(_verdict(records[i].id, records[i].video, err))
                progress.update(1)
        if not items:
            continue
        seq = dataset.seq(records[indices[0]])
        batch = _to(collate_inference(items), device)
        with autocast:
            latents = _sample(batch, seq, features, system, args)
            wavs = decode(latents.float()).float().cpu()
        for item, wav in zip(items, wavs):
            wav = wav[: round(item["duration"] * sr)]
            try:
                _write(out, item, wav, sr, args.keep_original_audio)
                written += 1
            except MediaError as err:
                if args.video:
                    raise
                failures.append(_verdict(item["id"], item["path"], err))
            progress.update(1)
    progress.close()
    (out / FAILURES).write_text("".join(json.dumps(f) + "\n" for f in failures))
    print(f"generated {written} of {len(listed)} input(s) into {out} ({already} already done, "
          f"{len(failures)} failed" + (f": see {out / FAILURES}" if failures else "") + ")", flush=True)
    return len(failures)


def _verdict(clip_id: str, path: str, err: Exception) -> dict[str, str]:
    reason = err.reason if hasattr(err, "reason") else str(err)
    return {"id": clip_id, "path": str(path), "verdict": reason}


def _sample(batch: dict[str, Any], seq, features, system, args: argparse.Namespace) -> torch.Tensor:
    """Normalised latents ``[B, T, C]`` for one bucket's batch."""
    b = batch["has_video"].shape[0]
    device = batch["has_video"].device
    cond = {"latent": torch.zeros(b, seq.latent_len, seq.audio.latent_channels, device=device),
            "caption": batch["caption"], "has_text": batch["has_text"], "has_video": batch["has_video"],
            "mllm_video": batch.get("mllm_video", [None] * b)}
    if features.sync_encoder is not None:
        # As the features stage computes them (systems/features.py), at this bucket's length.
        sync = torch.zeros(b, seq.sync_len, SYNC_DIM, device=device)
        has_video = batch["has_video"]
        if has_video.any():
            sync[has_video] = features.sync_encoder(batch["sync_video"][has_video]).to(sync.dtype)
        cond["sync"] = sync
    return system.generate(cond, steps=args.steps, cfg=args.cfg, seed=args.seed, negative_caption=args.negative_text,
                           compiled=args.compile)


def _write(out: Path, item: dict[str, Any], wav: torch.Tensor, sr: int, keep_audio: bool) -> None:
    """``<id>.flac`` then ``<id>.mp4``, each written under ``.partial/`` and renamed into place when complete."""
    partial = out / PARTIAL
    flac = partial / f"{item['id']}.flac"
    write_audio(flac, wav, sr)
    os.replace(flac, out / flac.name)
    if item["has_video"]:
        mp4 = partial / f"{item['id']}.mp4"
        mux_audio(item["path"], wav, sr, mp4, keep_audio=keep_audio)
        os.replace(mp4, out / mp4.name)


def _to(batch: dict, device: torch.device) -> dict:
    """The batch's tensors (also inside lists, e.g. per-item MLLM frames) on ``device``."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, list):
            return [move(v) for v in value]
        return value
    return {k: move(v) for k, v in batch.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reasonaudio-generate", description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="FlowMatchingPretrain checkpoint")
    p.add_argument("--features-config", required=True, help="config.yaml of the features run that made the training cache")
    p.add_argument("--vocoder", required=True, help="VocoderTrain checkpoint or BigVGAN folder")
    p.add_argument("--ema", default=None, help="EMA export (model.safetensors) to generate with")
    p.add_argument("--adapter", default=None,
                   help="post-training result: its export folder, merged model.safetensors, or peft adapter folder")
    p.add_argument("--sync-weights", default=None,
                   help="sync_encoder.pt of the training cache (default: found through the features config)")
    p.add_argument("--video", default=None, help="one input video")
    p.add_argument("--videos", default=None, help="a folder of videos, or a text file listing video paths")
    p.add_argument("--manifest", default=None, help="VGGSound-Think JSONL of clips to generate for (batch mode)")
    p.add_argument("--media-root", default=None, help="media folder of --manifest (default: its folder)")
    p.add_argument("--text", default=None, help="caption (VGGSound-Think or plain); without video: text-only")
    p.add_argument("--negative-text", default=None, help="negative prompt for CFG")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of text-only audio (default 8); videos always get their own duration")
    p.add_argument("--keep-original-audio", action="store_true",
                   help="keep each video's own audio as a second track of the output mp4")
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true",
                   help="compile each guided Euler step as one graph per batch size and length (CUDA graphs on a "
                        "GPU): compiling takes a minute or more, so it pays off over many clips")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="network precision on CUDA")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sources = [name for name in ("video", "videos", "manifest") if getattr(args, name)]
    if len(sources) > 1:
        raise SystemExit(f"reasonaudio-generate: give one of --video, --videos, --manifest, not {', '.join(sources)}")
    if not (sources or args.text):
        raise SystemExit("reasonaudio-generate: nothing to condition on: give --video, --videos, --manifest or --text")
    if sources and args.duration is not None:
        raise SystemExit("reasonaudio-generate: --duration sets text-only generation; each video gets its own duration")
    if args.duration is not None and not args.duration > 0:
        raise SystemExit(f"reasonaudio-generate: --duration must be positive, got {args.duration}")
    try:
        failed = generate(args)
    except MediaError as e:  # --video: an unusable input video: say which and why, no traceback
        raise SystemExit(f"reasonaudio-generate: cannot use {e.path}: {e.reason}") from e
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
