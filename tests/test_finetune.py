"""`make finetune`: features of a folder of real clips (the VGGSound fixtures) with optional captions, then LoRA or
full fine-tuning from a pretrained export, at toy scale (2 s clips, tiny VAE / MLLM / DiT)."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
CLIPS = ("0nib7bMm8BA_000015", "1aDnyPubxdY_000118")
CAPTION = "a small bird sings"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory, fixtures_dir) -> dict[str, Path]:
    """Two fixture clips in a folder (a caption for the first only), a tiny VAE, a tiny MLLM, the features and
    pretrain configs of a 2 s toy model, and an export of its (random) weights in the EMA layout."""
    from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl
    from reasonaudio.models.vae import mel_vae_tiny

    root = tmp_path_factory.mktemp("finetune")
    videos = root / "videos"
    videos.mkdir()
    for clip in CLIPS:
        shutil.copy(fixtures_dir / "media" / "vggsound" / f"{clip}.mp4", videos)
    (root / "captions.jsonl").write_text(json.dumps({"id": CLIPS[0], "caption": CAPTION}) + "\n"
                                         + json.dumps({"id": CLIPS[1], "caption": ""}) + "\n")
    torch.manual_seed(0)
    vae = root / "vae.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in mel_vae_tiny().state_dict().items()}}, vae)
    features = root / "features_overlay.yaml"
    features.write_text(yaml.safe_dump({"audio": {"duration": 2.0},
                                        "model": {"init_args": {"vae_checkpoint": str(vae)}},
                                        "data": {"init_args": {"batch_size": 2}}, "trainer": {"accelerator": "cpu"}}))
    mllm = write_tiny_qwen_vl(root / "mllm", [CAPTION])
    model = ["--config", str(CONFIG_DIR / "pretrain.yaml"), f"--model.init_args.conditioner.init_args.model={mllm}",
             "--audio.duration=2.0"]
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        mp.setattr(sys, "argv", ["reasonaudio"])
        cli_main(["fit", *model, "--print_config"])
    pretrain = root / "pretrain_config.yaml"  # what a pretraining run's resolved config.yaml holds
    pretrain.write_text(out.getvalue())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["reasonaudio"])
        system = build_cli([*model, "--trainer.logger=false"], run=False).model
    torch.manual_seed(1)
    with torch.no_grad():  # as after pretraining: no zero-initialised weight left
        for p in system.net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    state = {f"net.{k}": v for k, v in system.net.state_dict().items()}
    state.update({f"conditioner.{k}": v for k, v in system.conditioner.state_dict().items()})
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "model.safetensors"))
    return {"root": root, "videos": videos, "captions": root / "captions.jsonl", "pretrain": pretrain, "model": model,
            "features": [CONFIG_DIR / "features.yaml", features], "export": root / "model.safetensors"}


def _finetune(base: dict, out: Path, *extra: str) -> None:
    from reasonaudio.experiments.finetune import main

    args = ["--data", str(base["videos"]), "--out", str(out), "--pretrain-config", str(base["pretrain"]),
            "--pretrained", str(base["export"]), *(("--captions", str(base["captions"])) if base["captions"] else ()),
            "--steps", "2", "--batch-size", "2",
            "--lr", "0.01", *[a for f in base["features"] for a in ("--features-config", str(f))], *extra,
            "--", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        assert main(args) == 0


def test_lora_finetune_of_a_folder_of_real_clips(base, tmp_path):
    from reasonaudio.data_modules.features import CachedFeatureDataset

    out = tmp_path / "ft"
    _finetune(base, out, "--lora-rank", "4")
    ds = CachedFeatureDataset(out / "features")
    items = {ds[i]["id"]: ds[i] for i in range(len(ds))}
    assert sorted(items) == list(CLIPS)  # both clips cut to 2 s and cached by the features stage
    assert items[CLIPS[0]]["caption"] == CAPTION and bool(items[CLIPS[0]]["has_text"])
    assert items[CLIPS[1]]["caption"] == "" and not bool(items[CLIPS[1]]["has_text"])  # the video-only prompt
    pretrained, tuned = load_file(str(base["export"])), load_file(str(out / "export" / "model.safetensors"))
    assert tuned.keys() == pretrained.keys()
    changed = [k for k in tuned if not torch.equal(tuned[k], pretrained[k])]
    assert changed and all(k.startswith("net.") for k in changed)  # LoRA: the conditioner is untouched
    adapter = json.loads((out / "export" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["base_model_name_or_path"] == str(base["export"].resolve())
    with pytest.MonkeyPatch.context() as mp:  # the export loads like a pretrained one
        mp.setattr(sys, "argv", ["reasonaudio"])
        system = build_cli([*base["model"], "--trainer.logger=false"], run=False).model
    system.load_ema(str(out / "export" / "model.safetensors"))


def test_full_finetune_from_a_lightning_checkpoint(base, tmp_path):
    """lora_rank 0 trains the DiT and the conditioner's queries; a .ckpt is converted to an export first."""
    ckpt = tmp_path / "pretrain.ckpt"
    torch.save({"state_dict": load_file(str(base["export"]))}, ckpt)
    out = tmp_path / "full"
    base = dict(base, export=ckpt)
    _finetune(base, out, "--lora-rank", "0")
    pretrained = load_file(str(out / "pretrained.safetensors"))
    tuned = load_file(str(out / "export" / "model.safetensors"))
    assert tuned.keys() == pretrained.keys() and not (out / "export" / "adapter").exists()
    assert not torch.equal(tuned["conditioner.queries"], pretrained["conditioner.queries"])
    assert not torch.equal(tuned["net.audio_in.0.weight"], pretrained["net.audio_in.0.weight"])


def test_captions_from_the_annotation_backend(base, tmp_path):
    """--captions-backend: the VGGSound-Think pipeline annotates the folder's clips over real HTTP (a scripted VLM
    on loopback answering every step from one synthetic clip's caption), and the features stage caches them."""
    from test_captions_pipeline import manifest_captions, structured_answer
    from test_captions_server import API_KEY, Answer, ScriptedServer

    from reasonaudio.captions.format import parse_caption
    from reasonaudio.data_modules.features import CachedFeatureDataset
    from reasonaudio.data_modules.synthetic import synthesize_corpus

    corpus = synthesize_corpus(tmp_path / "synth", num_clips=1, seed=0, duration=1.0, size=32, progress=False)
    caption = manifest_captions(corpus)["synth_000000"]
    parts = parse_caption(caption)
    answers = {"gist": parts.hint, "grounding": parts.grounding, "structured": structured_answer(parts.tracks)}
    with ScriptedServer(lambda request: Answer(answers[request.request_id.split(":")[1]])) as server:
        config = tmp_path / "backend.yaml"
        config.write_text(f"backend: openai\nbase_url: {server.url}\nmodel: scripted\napi_key: {API_KEY}\nframes: 1\n"
                          "image_format: png\ntimeout: 5\nbackoff: 0.01\n")
        base = dict(base, captions=None)
        out = tmp_path / "ft"
        _finetune(base, out, "--lora-rank", "4", "--captions-backend", str(config))
    assert {r.request_id.split(":")[0] for r in server.log} == set(CLIPS)  # each clip annotated, 3 steps each
    assert len(server.log) == 3 * len(CLIPS)
    records = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == list(CLIPS) and {r["caption"] for r in records} == {caption}
    ds = CachedFeatureDataset(out / "features")
    assert {ds[i]["id"]: ds[i]["caption"] for i in range(len(ds))} == {c: caption for c in CLIPS}
    assert (out / "export" / "model.safetensors").is_file()
