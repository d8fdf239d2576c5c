"""`reasonaudio-generate`: audio for a video (and/or text) from a pretrained checkpoint, muxed back into the mp4.

    reasonaudio-generate --ckpt PRETRAIN.ckpt --features-config FEATURES_RUN/config.yaml --vocoder VOCODER.ckpt \\
        [--video V.mp4 | --manifest M.jsonl --media-root DIR] [--text "..."] [--negative-text "..."] \\
        [--duration S] [--cfg 4.5] [--steps 25] [--seed 0] [--ema EXPORT/model.safetensors] \\
        [--adapter POST_TRAIN_EXPORT] --out OUT_DIR

The features config (saved by ``reasonaudio predict --config lightning_configs/features.yaml``) says how
clips were turned into conditions for training — VAE, Synchformer, frame sizes — so generation sees
its inputs exactly as training did. Writes ``<id>.flac`` and, for video inputs, ``<id>.mp4`` (the
source video with the generated audio, cut or padded to the video's duration). ``--duration``
defaults to the length of ``--video`` (8 s for manifests and text). Without ``--video`` the audio is
generated from text alone. ``--device`` picks where it runs (default: CUDA when present, with bf16
autocast for the networks; ``--precision fp32`` turns that off); a progress bar counts clips.

``--adapter`` takes a preference post-training result (``PreferencePostTrain``'s ``export``) in any of
its forms, recognised by content: the export folder or its merged ``model.safetensors`` (the adapter
already merged, loaded like an EMA export), or the peft ``adapter/`` folder alone, which is applied
on top of ``--ema`` (or, without ``--ema``, of the pretrained export its ``adapter_config.json``
names) and merged.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch
import yaml


def _load(args: argparse.Namespace, duration: float):
    from data_modules.features import SYNC_WEIGHTS
    from reasonaudio.cli import build_cli
    from reasonaudio.systems.flow_matching import FlowMatchingPretrain
    from reasonaudio.systems.vocoder import trained_generator

    for path, what in ((args.ckpt, "--ckpt"), (args.features_config, "--features-config"), (args.vocoder, "--vocoder")):
        if not Path(path).exists():
            raise SystemExit(f"reasonaudio-generate: {what} not found: {path}")
    # The saved config is a `predict` run's: drop the subcommand's own keys to rebuild model and data.
    config = yaml.safe_load(Path(args.features_config).read_text())
    for key in ("return_predictions", "ckpt_path", "weights_only"):
        config.pop(key, None)
    cli = build_cli(["--config", yaml.safe_dump(config), f"--model.init_args.duration={duration}",
                     f"--data.init_args.duration={duration}", "--trainer.logger=false"], run=False)
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
        from reasonaudio.systems.preference import load_policy_weights

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


def _records(args: argparse.Namespace):
    from data_modules.clips import ClipRecord
    from data_modules.manifests import read_think_jsonl, resolve_media

    if args.manifest:
        rows = read_think_jsonl(args.manifest)
        root = Path(args.media_root or Path(args.manifest).parent)
        return [ClipRecord(r.id, str(resolve_media(r, root)), caption=r.caption or "") for r in rows]
    if args.video:
        return [ClipRecord(Path(args.video).stem, str(args.video), caption=args.text or "")]
    return [ClipRecord("text_only", "", caption=args.text or "", has_video=False)]


@torch.no_grad()
def generate(args: argparse.Namespace) -> list[Path]:
    """Run generation; returns the written files."""
    from data_modules.clips import ClipDataset, collate_clips
    from reasonaudio.generation import latents_to_audio
    from reasonaudio.media import measure_duration, mux_audio, probe, write_audio

    duration = args.duration or (probe(args.video).duration or measure_duration(args.video) if args.video else 8.0)
    features, dm, system, vocoder = _load(args, duration)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
                              and args.precision == "bf16")
    for module in (features, system, vocoder):
        module.to(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    records = _records(args)
    kwargs = dict(dm.dataset_kwargs, strict=True)
    from tqdm import tqdm

    progress = tqdm(total=len(records), unit="clip", desc="generate", file=sys.stderr)
    for start in range(0, len(records), args.batch_size):
        chunk = records[start:start + args.batch_size]
        items = []
        for rec in chunk:
            if rec.has_video:
                items.append(ClipDataset([rec], **kwargs)[0])
            else:  # text only: silent placeholder audio just sets the lengths; no video is used
                items.append(_text_only_item(rec, features, kwargs))
        batch = _to(collate_clips(items), device)  # strict datasets raise instead of skipping, so items match chunk
        with torch.no_grad(), autocast:
            feats = features.predict_step(batch, 0)
        cond_batch = {"latent": feats["latent_mean"], "caption": batch["caption"], "has_text": batch["has_text"],
                      "has_video": batch["has_video"], "mllm_video": batch.get("mllm_video", [None] * len(chunk))}
        if "sync" in feats:
            cond_batch["sync"] = feats["sync"]
        with autocast:
            latents = system.generate(cond_batch, steps=args.steps, cfg=args.cfg, seed=args.seed,
                                      negative_caption=args.negative_text)
            wavs = latents_to_audio(latents.float(), features.vae, vocoder).float().cpu()
        sr = features.seq.audio.sample_rate
        for rec, wav in zip(chunk, wavs):
            wav = wav[: round(duration * sr)]
            flac = out / f"{rec.id}.flac"
            write_audio(flac, wav, sr)
            written.append(flac)
            if rec.has_video:
                mux_audio(rec.path, wav, sr, out / f"{rec.id}.mp4")
                written.append(out / f"{rec.id}.mp4")
            progress.update(1)
    progress.close()
    print(f"generated {len(records)} clip(s) into {out} ({len(written)} files)", flush=True)
    return written


def _to(batch: dict, device: torch.device) -> dict:
    """The batch's tensors (also inside lists, e.g. per-item MLLM frames) on ``device``."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, list):
            return [move(v) for v in value]
        return value
    return {k: move(v) for k, v in batch.items()}


def _text_only_item(rec, features, kwargs) -> dict:
    seq = features.seq
    item = dict(id=rec.id, wav=torch.zeros(seq.num_samples), wav_mask=torch.ones(seq.num_samples, dtype=torch.bool),
                caption=rec.caption, label="", has_video=False, has_text=bool(rec.caption.strip()), corpus="")
    if kwargs.get("load_sync_video"):
        size = kwargs["sync_size"]
        item["sync_video"] = torch.zeros(seq.sync_frames, 3, size, size, dtype=torch.uint8)
        item["sync_mask"] = torch.zeros(seq.sync_frames, dtype=torch.bool)
    if kwargs.get("load_mllm_video"):
        item["mllm_video"] = None
    return item


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
    p.add_argument("--video", default=None, help="input video")
    p.add_argument("--manifest", default=None, help="VGGSound-Think JSONL of clips to generate for (batch mode)")
    p.add_argument("--media-root", default=None, help="media folder of --manifest (default: its folder)")
    p.add_argument("--text", default=None, help="caption (VGGSound-Think or plain)")
    p.add_argument("--negative-text", default=None, help="negative prompt for CFG")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: the video's, else 8)")
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="network precision on CUDA")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from reasonaudio.media import MediaError

    args = build_parser().parse_args(argv)
    if args.video and args.manifest:
        raise SystemExit("reasonaudio-generate: give --video or --manifest, not both")
    if not (args.video or args.manifest or args.text):
        raise SystemExit("reasonaudio-generate: nothing to condition on: give --video, --manifest or --text")
    try:
        generate(args)
    except MediaError as e:  # an unreadable input video: say which and why, no traceback
        raise SystemExit(f"reasonaudio-generate: cannot use {e.path}: {e.reason}") from e
    return 0


if __name__ == "__main__":
    sys.exit(main())
