"""The post-training stages end to end on a tiny real pipeline: features → pretrain → preference data →
SFT / RWR / DPO with LoRA → adapter + merged export → reasonaudio-generate --adapter; online mode."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.data_modules.preference_groups import PreferenceStore

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _cli(args: list[str]):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setattr(sys, "argv", ["reasonaudio"])
        return build_cli(args)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Feature caches of 3 + 2 synthetic clips (2 s), a tiny MLLM, a 1-step pretrained model with its EMA export,
    a random reward classifier, preference groups (K = 3), a tiny vocoder."""
    from safetensors.torch import save_file

    from reasonaudio.models.bigvgan import bigvgan_tiny
    from reasonaudio.models.reward import AlignmentClassifier
    from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl
    from reasonaudio.models.vae import mel_vae_tiny

    root = tmp_path_factory.mktemp("post_train")
    torch.manual_seed(0)
    vae = root / "vae.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in mel_vae_tiny().state_dict().items()}}, vae)
    for corpus, clips in (("train", 3), ("heldout", 2)):
        _cli(["predict", "--config", str(CONFIG_DIR / "features.yaml"), f"--model.init_args.vae_checkpoint={vae}",
              "--audio.duration=2.0", f"--data.init_args.root={root / corpus}", f"--data.init_args.num_clips={clips}",
              f"--data.init_args.seed={len(corpus)}", f"--data.init_args.skip_done_in={root / ('cache_' + corpus)}",
              f"--trainer.logger.init_args.save_dir={root / 'runs'}",
              f"--trainer.callbacks.output={root / ('cache_' + corpus)}", "--trainer.accelerator=cpu"])
    captions = [json.loads(line)["caption"] for c in ("train", "heldout")
                for line in (root / c / "manifest.jsonl").read_text().splitlines()]
    mllm = write_tiny_qwen_vl(root / "mllm", captions)
    model = [f"--model.init_args.conditioner.init_args.model={mllm}", "--audio.duration=2.0"]
    _cli(["fit", "--config", str(CONFIG_DIR / "pretrain.yaml"), "--config", str(CONFIG_DIR / "debug" / "cpu.yaml"), *model,
          f"--data.init_args.train=[{root / 'cache_train'}]", f"--data.init_args.val=[{root / 'cache_heldout'}]",
          "--data.init_args.batch_size=2", "--trainer.max_steps=1", "--trainer.limit_val_batches=0",
          f"--trainer.logger.init_args.save_dir={root / 'runs'}", f"--trainer.callbacks.init_args.export={root / 'export'}"])
    save_file(AlignmentClassifier(width=32, kernel=3).state_dict(), str(root / "reward.safetensors"))
    _cli(["predict", "--config", str(CONFIG_DIR / "preference_data.yaml"), *model,
          f"--model.init_args.pretrained={root / 'export' / 'model.safetensors'}",
          f"--model.init_args.reward.init_args.checkpoint={root / 'reward.safetensors'}", "--model.init_args.num_candidates=3",
          "--model.init_args.steps=2", "--model.init_args.min_spread=0.0", f"--data.init_args.cache={root / 'cache_train'}",
          f"--data.init_args.groups={root / 'groups'}", f"--trainer.logger.init_args.save_dir={root / 'runs'}",
          "--trainer.accelerator=cpu"])
    bigvgan_tiny().save_pretrained(root / "bigvgan")
    return {"root": root, "mllm": mllm, "model": model, "vae": vae, "vocoder": root / "bigvgan",
            "pretrained": root / "export" / "model.safetensors", "ckpt": root / "runs" / "pretrain" / "version_0" / "checkpoints" / "last.ckpt",
            "features_config": root / "runs" / "features" / "version_0" / "config.yaml"}


def _post_train(d: dict, objective: str, name: str, *extra: str) -> Path:
    out = d["root"] / name
    _cli(["fit", "--config", str(CONFIG_DIR / f"post_train_{objective}.yaml"), *d["model"],
          f"--model.init_args.pretrained={d['pretrained']}", f"--model.init_args.export={out / 'export'}",
          f"--model.init_args.vae_checkpoint={d['vae']}", f"--model.init_args.vocoder={d['vocoder']}",
          f"--model.init_args.val_ground_truth=[{d['root'] / 'heldout'}]", "--model.init_args.val_items=2",
          "--model.init_args.sample_steps=2", "--model.init_args.optimizer.init_args.lr=0.01",
          f"--data.init_args.cache={d['root'] / 'cache_train'}", f"--data.init_args.groups={d['root'] / 'groups'}",
          f"--data.init_args.val=[{d['root'] / 'cache_heldout'}]", "--data.init_args.batch_size=2", "--trainer.max_steps=2",
          "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0",
          "--trainer.log_every_n_steps=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
          f"--trainer.logger.init_args.save_dir={out}", *extra])
    return out


def _scalars(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next(run.glob("events.out.tfevents.*"))))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def _velocity(net: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(9)
    kw = dict(queries=torch.randn(2, 16, 64), sync=torch.randn(2, 40, 768), has_text=torch.tensor([True, False]),
              has_video=torch.tensor([True, True]))
    return net(torch.randn(2, 63, 8), torch.rand(2), **kw)


@pytest.mark.parametrize("objective", ["sft", "rwr", "dpo"])
def test_objective_fits_logs_and_exports(setup, objective):
    from safetensors.torch import load_file

    from reasonaudio.systems.flow_matching import FlowMatchingPretrain
    from reasonaudio.systems.policy_weights import load_policy_weights
    from reasonaudio.systems.post_train import PreferencePostTrain

    d = setup
    snapshots = ["--model.init_args.snapshot_every=1"] if objective == "dpo" else []
    out = _post_train(d, objective, f"run_{objective}", *snapshots)
    run = out / f"post_train_{objective}" / "version_0"
    tags = _scalars(run)
    assert {"train/loss", "train/v_norm_ratio", "train/reward_margin", "val/loss", "val/onset_error", "val/onset_f1",
            "val/onset_error_ref", "val/onset_f1_ref"} <= tags
    if objective == "dpo":
        assert {"train/implicit_acc", "train/err_w", "train/err_l", "train/ref_err_w", "train/ref_err_l",
                "train/inside_abs", "train/beta"} <= tags
    assert (run / "config.yaml").is_file()
    export = out / "export"
    adapter_config = json.loads((export / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 64 and adapter_config["base_model_name_or_path"] == str(d["pretrained"].resolve())
    assert (export / "adapter" / "adapter_model.safetensors").is_file() and (export / "config.yaml").is_file()
    assert set(load_file(str(export / "model.safetensors"))) == set(load_file(str(d["pretrained"])))  # the EMA layout
    if snapshots:  # step 1 of 2 snapshotted (the last step is the export itself), between pretrained and final
        assert [p.name for p in (export / "snapshots").iterdir()] == ["step_0000001"]
        step1, final = (load_file(str(p / "model.safetensors"))
                        for p in (export / "snapshots" / "step_0000001", export))
        pre = load_file(str(d["pretrained"]))
        changed = [k for k in final if not torch.equal(final[k], pre[k])]
        assert changed and any(not torch.equal(step1[k], pre[k]) for k in changed)  # neither the start
        assert any(not torch.equal(step1[k], final[k]) for k in changed)  # nor the end

    trained = PreferencePostTrain.load_from_checkpoint(run / "checkpoints" / "last.ckpt").eval()
    with torch.no_grad():
        policy = _velocity(trained.net)
        with trained.net.disable_adapter():
            reference = _velocity(trained.net)
    assert not torch.allclose(policy, reference, atol=1e-4)  # the adapter learned something
    for weights in (export, export / "model.safetensors", export / "adapter"):
        system = FlowMatchingPretrain.load_from_checkpoint(d["ckpt"]).eval()
        assert load_policy_weights(system, weights) == ("adapter" if weights.name == "adapter" else "export")
        with torch.no_grad():
            assert torch.allclose(_velocity(system.net), policy, atol=1e-5)
    base = FlowMatchingPretrain.load_from_checkpoint(d["ckpt"]).eval()
    base.load_ema(str(d["pretrained"]))
    with torch.no_grad():
        assert torch.allclose(_velocity(base.net), reference, atol=1e-6)  # LoRA off = the pretrained model


def test_generate_takes_the_adapter_or_the_merged_export(setup):
    from reasonaudio.generate import main as generate_main
    from reasonaudio.media import load_audio

    d = setup
    out = d["root"] / "run_dpo" / "export"
    if not (out / "model.safetensors").is_file():
        _post_train(d, "dpo", "run_dpo")
    common = ["--ckpt", str(d["ckpt"]), "--features-config", str(d["features_config"]), "--vocoder", str(d["vocoder"]),
              "--text", "a ball bounces", "--duration", "2", "--steps", "3"]
    audio = {}
    for name, extra in (("base", ["--ema", str(d["pretrained"])]), ("merged", ["--adapter", str(out)]),
                        ("file", ["--adapter", str(out / "model.safetensors")]),
                        ("adapter", ["--adapter", str(out / "adapter")]),
                        ("adapter_on_ema", ["--ema", str(d["pretrained"]), "--adapter", str(out / "adapter")])):
        folder = d["root"] / "generated" / name
        assert generate_main([*common, *extra, "--out", str(folder)]) == 0
        audio[name] = load_audio(folder / "text_only.flac", 16000).wav
    assert not torch.equal(audio["merged"], audio["base"])
    for name in ("file", "adapter", "adapter_on_ema"):
        assert torch.allclose(audio[name], audio["merged"], atol=2 / 32768), name  # within a 16-bit step
    with pytest.raises(SystemExit, match="--adapter .*no weights"):
        generate_main([*common, "--adapter", str(d["root"]), "--out", str(d["root"] / "generated" / "bad")])


def test_online_mode_regenerates_groups_from_the_policy(setup):
    d = setup
    reward = json.dumps({"class_path": "reasonaudio.models.reward.ClassifierReward",
                         "init_args": {"checkpoint": str(d["root"] / "reward.safetensors"),
                                       "classifier": {"class_path": "reasonaudio.models.reward.AlignmentClassifier",
                                                      "init_args": {"width": 32, "kernel": 3}}}})
    online = ["--model.init_args.online_every=1", f"--model.init_args.reward={reward}", "--model.init_args.online_candidates=2"]
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        _post_train(d, "dpo", "online_bad", *online)
    out = _post_train(d, "dpo", "online", *online, "--data.init_args.groups_per_epoch=2",
                      "--trainer.reload_dataloaders_every_n_epochs=1")
    round_dir = d["root"] / "groups" / "online" / "step_0000001"
    summary = json.loads((round_dir / "summary.json").read_text())
    assert summary["groups"] == 3 and json.loads((round_dir / "meta.json").read_text())["policy_step"] == 1
    from reasonaudio.data_modules.preference_groups import PreferenceStore

    group = PreferenceStore.load(next((round_dir / "groups").glob("*.pt")))
    assert group["latents"].shape[0] == 2 and group["seeds"].min() >= 10_000_000 * 2  # apart from the offline seeds
    assert "online/kept" in _scalars(out / "post_train_dpo" / "version_0")


def test_preference_data_scored_by_the_synchrony_reward(setup):
    """The synchrony-reward overlay (make preference_data's default): candidates are decoded and scored by a separate
    Synchformer reading each clip's video — the stored rewards are that reward of the decoded candidates."""
    import yaml

    from reasonaudio.experiments.post_train_compare import sync_reward_overrides
    from reasonaudio.models.reward import SynchformerOffsetReward
    from reasonaudio.models.synchformer import Synchformer, SynchformerConfig, save_synchformer
    from reasonaudio.models.vae import mel_vae_tiny
    from reasonaudio.systems.preference_builder import make_decoder

    d = setup
    overlay = yaml.safe_load((CONFIG_DIR / "preference_data" / "synchrony_reward.yaml").read_text())
    config = SynchformerConfig(**{**overlay["model"]["init_args"]["reward"]["init_args"]["synchformer"]["init_args"]
                                  ["config"], "segments": 5})  # 2 s clips hold 5 windows
    torch.manual_seed(3)
    weights = save_synchformer(Synchformer(config), d["root"] / "reward_sync" / "synchformer.safetensors")
    groups = d["root"] / "groups_sync"
    _cli(["predict", "--config", str(CONFIG_DIR / "preference_data.yaml"),
          *sync_reward_overrides(weights, [d["root"] / "train"], d["vae"], d["vocoder"]),
          "--model.init_args.reward.init_args.synchformer.init_args.config.segments=5", *d["model"],
          f"--model.init_args.pretrained={d['pretrained']}", "--model.init_args.num_candidates=3",
          "--model.init_args.steps=2", f"--data.init_args.cache={d['root'] / 'cache_train'}",
          f"--data.init_args.groups={groups}", f"--trainer.logger.init_args.save_dir={d['root'] / 'runs'}",
          "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"])
    stored = [PreferenceStore.load(p) for p in PreferenceStore(groups).kept()]
    assert len(stored) == 3
    score = overlay["model"]["init_args"]["reward"]["init_args"]["score"]
    assert score == "contrast"  # the default reading (docs/post_training.md)
    reward = SynchformerOffsetReward(Synchformer(config), str(weights), score=score,
                                     video_root=[str(d["root"] / "train")]).prepare()
    decode = make_decoder(mel_vae_tiny(), str(d["vae"]), str(d["vocoder"]))
    with torch.no_grad():
        for g in stored:
            direct = reward(decode(g["latents"]), reward.video_inputs({"id": [g["id"]] * 3}))
            assert torch.allclose(g["rewards"], direct, atol=1e-4)
            assert torch.isfinite(g["rewards"]).all() and g["rewards"].std() > 0

    # make reward-check's readings: the export read as each score, every group decoded once
    from reasonaudio.experiments.post_train_eval import sync_reading_scores
    from reasonaudio.experiments.reward_check import decoded_once
    from reasonaudio.models.reward import SCORES

    calls = []
    once = decoded_once(lambda latents: calls.append(1) or decode(latents))
    for name in SCORES:
        read = sync_reading_scores(weights, [d["root"] / "train"], once, name)
        direct = SynchformerOffsetReward(Synchformer(config), str(weights), score=name,
                                         video_root=[str(d["root"] / "train")]).prepare()
        for g in stored:
            with torch.no_grad():
                want = direct(decode(g["latents"]), direct.video_inputs({"id": [g["id"]] * 3}))
            assert torch.allclose(torch.from_numpy(read(g)), want, atol=1e-4)
            if name == score:
                assert torch.allclose(torch.from_numpy(read(g)), g["rewards"], atol=1e-4)
    assert len(calls) == len(stored)


def test_post_training_from_stored_prefixes_equals_the_live_conditioner(setup):
    """With the caches' prompts stored (stage prefix_kv), Flow-DPO trains the same adapter as with the frozen
    conditioner run live, and the stored-prefix batches reach the system."""
    from safetensors.torch import load_file

    from reasonaudio.data_modules.preference_groups import PreferenceDataModule

    d = setup
    for cache in ("cache_train", "cache_heldout"):
        _cli(["predict", "--config", str(CONFIG_DIR / "prefix_kv.yaml"), d["model"][0],
              f"--data.init_args.cache={d['root'] / cache}", f"--trainer.logger.init_args.save_dir={d['root'] / 'runs'}",
              "--trainer.accelerator=cpu"])
    live = load_file(str(_post_train(d, "dpo", "dpo_live") / "export" / "model.safetensors"))
    stored = load_file(str(_post_train(d, "dpo", "dpo_stored", "--data.init_args.prefix_kv=tiny_mllm")
                           / "export" / "model.safetensors"))
    pretrained = load_file(str(d["pretrained"]))
    assert live.keys() == stored.keys() and any(not torch.equal(live[k], pretrained[k]) for k in live)  # it trained
    for k in live:
        # The stored prefix equals the live one to ~1e-6 per forward; AdamW's normalised steps carry that into
        # adapter differences of up to 1.6e-5 (measured in a clean clone) over the run.
        torch.testing.assert_close(stored[k], live[k], rtol=1e-4, atol=1e-4)
    dm = PreferenceDataModule(str(d["root"] / "cache_train"), str(d["root"] / "groups"), batch_size=2,
                              prefix_kv="tiny_mllm")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["mllm_kv"]) == 2 and all(v is None for v in batch["mllm_video"])
    assert [p for p, _ in dm.prefix_kv_stores()] == [d["root"] / "cache_train" / "prefix_kv" / "tiny_mllm"]
