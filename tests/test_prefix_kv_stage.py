"""The `prefix_kv` stage end to end: it stores what the conditioner computes, resumes, and pretraining
from the store follows the live pretraining run step for step."""
from __future__ import annotations

import json

import pytest
import torch
from test_pretrain import setup_dirs  # noqa: F401  (fixture: 3 + 2 clip caches and a tiny Qwen2.5-VL folder)

from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.data_modules.features import CachedFeatureDataModule, FeatureCache
from reasonaudio.models.conditioners import MLLMQueryConditioner
from reasonaudio.models.prefix_kv import load_prefix
from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl


def _extract(d, cache, mllm=None):
    return build_cli(["predict", "--config", str(CONFIG_DIR / "prefix_kv.yaml"),
               f"--model.init_args.conditioner.init_args.model={mllm or d['mllm']}",
               f"--data.init_args.cache={cache}", "--data.init_args.batch_size=2",
               f"--trainer.logger.init_args.save_dir={d['root'] / 'runs'}", "--trainer.accelerator=cpu"])


def _fit(d, name, prefix_kv="null"):
    build_cli(["fit", "--config", str(CONFIG_DIR / "pretrain.yaml"), "--config", str(CONFIG_DIR / "debug" / "cpu.yaml"),
               f"--model.init_args.conditioner.init_args.model={d['mllm']}", "--audio.duration=2.0",
               f"--data.init_args.train=[{d['train']}]", f"--data.init_args.val=[{d['val']}]",
               "--data.init_args.batch_size=3", f"--data.init_args.prefix_kv={prefix_kv}",
               f"--trainer.logger.init_args.save_dir={d['root'] / name}", "--trainer.max_steps=4",
               "--trainer.val_check_interval=4", f"--trainer.callbacks.init_args.export={d['root'] / name / 'export'}"])
    return torch.load(next((d["root"] / name).rglob("last.ckpt")), weights_only=False)["state_dict"]


def test_stage_stores_the_conditioners_prefixes_and_resumes(setup_dirs, capsys):
    d = setup_dirs
    cli = _extract(d, d["train"])
    assert cli.trainer.predict_loop.predictions == []  # written to disk, not also kept in memory
    store = d["train"] / "prefix_kv" / "tiny_mllm"
    assert sorted(p.name for p in store.glob("*.safetensors")) == ["0.safetensors", "1.safetensors", "2.safetensors"]
    assert "prefix KV store" in capsys.readouterr().out
    assert (d["root"] / "runs" / "prefix_kv" / "version_0" / "config.yaml").exists()

    # The files hold exactly what the training conditioner computes from the cache's frames and captions.
    cond = MLLMQueryConditioner(d["mllm"], out_dim=64, num_queries=16)
    assert json.loads((store / "meta.json").read_text())["fingerprint"] == cond.prefix_fingerprint()
    cache = FeatureCache(d["train"])
    direct = cond.store_prefix([cache.frames(r) for r in range(3)], [row["caption"] for row in cache.rows])
    for row, expected in enumerate(direct):
        got = load_prefix(store / f"{row}.safetensors")
        assert torch.equal(got.ids, expected.ids) and torch.equal(got.positions, expected.positions)
        assert got.grid == expected.grid is not None
        torch.testing.assert_close(got.kv, expected.kv, rtol=1e-5, atol=1e-6)  # batched with other clips: padding

    # Resume: only the missing row is computed again.
    (store / "1.safetensors").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in store.glob("*.safetensors")}
    _extract(d, d["train"])
    assert {p.name: p.stat().st_mtime_ns for p in store.glob("*.safetensors") if p.name in kept} == kept
    assert (store / "1.safetensors").is_file()

    # Another backbone never writes into this store, and training refuses stores of another backbone.
    other = write_tiny_qwen_vl(d["root"] / "other_mllm", [row["caption"] for row in cache.rows], seed=1)
    with pytest.raises(ValueError, match="holds prefixes of another backbone"):
        _extract(d, d["train"], mllm=other)
    dm = CachedFeatureDataModule(train=[str(d["train"])], prefix_kv="tiny_mllm")
    dm.setup("fit")
    wrong = MLLMQueryConditioner(other, out_dim=64, num_queries=16)
    with pytest.raises(ValueError, match="tiny_mllm: prefix KV store made by another backbone"):
        wrong.check_store(*reversed(dm.prefix_kv_stores()[0]))

    # A stored prompt no longer matching its clip (here: the caption was edited) is refused by file name.
    index = d["train"] / "index.jsonl"
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    rows[0]["caption"] = "an edited caption"
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = dm.train_sets[0].__class__(d["train"], prefix_kv="tiny_mllm")
    assert dataset[1]["mllm_kv"].clip["id"] == rows[1]["id"]
    with pytest.raises(ValueError, match=r"0\.safetensors: stale stored prefix"):
        dataset[0]

    # A cache whose store is incomplete is refused by name.
    (store / "2.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 clips have no stored prefix .*2\.safetensors"):
        CachedFeatureDataModule(train=[str(d["train"])], prefix_kv="tiny_mllm").setup("fit")


def test_pretraining_from_the_store_follows_the_live_run(setup_dirs):
    d = setup_dirs
    for cache in (d["train"], d["val"]):
        _extract(d, cache)
    live = _fit(d, "live")
    stored = _fit(d, "stored", prefix_kv="tiny_mllm")
    assert live.keys() == stored.keys() and "conditioner.queries" in live
    for k in live:  # 4 AdamW steps with random condition drops, from the same seed
        assert torch.allclose(stored[k], live[k], rtol=1e-4, atol=1e-6), k
    dm = CachedFeatureDataModule(train=[str(d["train"])], prefix_kv="tiny_mllm", batch_size=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["mllm_kv"]) == 3 and all(v is None for v in batch["mllm_video"])  # frames are not even read
