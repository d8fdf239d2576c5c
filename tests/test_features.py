"""The `features` stage: cache contents equal direct encoding, resuming fills only missing rows, training reads it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.data_modules.features import CachedFeatureDataModule, FeatureCache
from reasonaudio.media import load_audio
from reasonaudio.models.mel import MelSpectrogram
from reasonaudio.models.vae import mel_vae_tiny

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def vae_ckpt(tmp_path) -> Path:
    """A VAETrain-format checkpoint of a random tiny VAE (only ``state_dict["net.*"]`` is read)."""
    torch.manual_seed(0)
    vae = mel_vae_tiny()
    vae.latent_mean.fill_(0.5)
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in vae.state_dict().items()}}, path)
    return path


def _extract(tmp_path: Path, vae_ckpt: Path, cache: Path, corpus: str = "synth", clips: int = 3):
    args = ["predict", "--config", str(CONFIG_DIR / "features.yaml"),
            f"--model.init_args.vae_checkpoint={vae_ckpt}", "--audio.duration=2.0",
            f"--data.init_args.root={tmp_path / corpus}", f"--data.init_args.num_clips={clips}",
            f"--data.init_args.skip_done_in={cache}",
            "--data.init_args.batch_size=2", f"--trainer.logger.init_args.save_dir={cache.parent / 'runs'}",
            f"--trainer.callbacks.output={cache}", "--trainer.accelerator=cpu"]
    build_cli(args)


def test_cache_equals_direct_encoding_and_resumes(tmp_path, vae_ckpt, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["reasonaudio"])
    cache_dir = tmp_path / "cache"
    _extract(tmp_path, vae_ckpt, cache_dir)
    cache = FeatureCache(cache_dir)
    assert len(cache) == 3 and cache.done.tolist() == [1, 1, 1]
    assert cache.meta["arrays"] == {"latent_mean": [63, 8], "latent_std": [63, 8], "sync": [40, 768]}  # 50 frames → 5 windows × 8
    assert cache.meta["latent_stats"]["mean"] == [0.5] * 8
    assert [r["id"] for r in cache.rows] == ["synth_000000", "synth_000001", "synth_000002"]
    assert (tmp_path / "runs" / "features" / "version_0" / "config.yaml").exists()

    # Row 1 equals encoding the clip's audio track directly with the same VAE.
    vae = mel_vae_tiny()
    vae.load_state_dict({k[4:]: v for k, v in torch.load(vae_ckpt)["state_dict"].items()})
    wav = load_audio(tmp_path / "synth" / "videos" / "synth_000001.mp4", 16000, duration=2.0).wav
    wav = torch.nn.functional.pad(wav, (0, 63 * 512 - wav.shape[0]))[None]
    with torch.no_grad():
        mean, std = vae.eval().encode(MelSpectrogram("tiny")(wav))
    assert np.allclose(cache.arrays["latent_mean"][1], mean[0].T.numpy(), atol=1e-5)
    assert np.allclose(cache.arrays["latent_std"][1], std[0].T.numpy(), atol=1e-5)
    assert np.abs(cache.arrays["sync"][1]).max() > 0  # synthetic clips have video
    # the cache records the hash of the sync weights it was built with (those kept in sync_encoder.pt)
    import yaml

    from reasonaudio.models.synchformer import SynchformerConfig, SynchformerVisualEncoder

    sizes = yaml.safe_load((CONFIG_DIR / "features.yaml").read_text())["model"]["init_args"]["sync_encoder"]
    encoder = SynchformerVisualEncoder(SynchformerConfig(**sizes["init_args"]["config"]))
    encoder.load_state_dict(torch.load(cache_dir / "sync_encoder.pt", weights_only=True))
    assert cache.meta["sync_weights_sha256"] == encoder.weights_hash()
    frames = np.load(cache_dir / "mllm" / "1.npy")
    assert frames.shape == (4, 3, 84, 84) and frames.dtype == np.uint8  # 2 s at 2 fps; 96 px → 84 (×28)

    # Interrupted run: row 2 never finished. Rerunning recomputes only row 2.
    rw_mean = np.memmap(cache_dir / "latent_mean.f32", dtype=np.float32, mode="r+", shape=(3, 63, 8))
    rw_done = np.memmap(cache_dir / "done.u8", dtype=np.uint8, mode="r+", shape=(3,))
    expected_row2 = np.array(rw_mean[2])
    rw_mean[0] = 123.0  # a finished row: must stay untouched
    rw_mean[2] = 0.0
    rw_done[2] = 0
    rw_mean.flush()
    rw_done.flush()
    _extract(tmp_path, vae_ckpt, cache_dir)
    cache = FeatureCache(cache_dir)
    assert cache.done.tolist() == [1, 1, 1]
    assert float(cache.arrays["latent_mean"][0].min()) == 123.0
    assert np.allclose(cache.arrays["latent_mean"][2], expected_row2, atol=1e-6)

    with pytest.raises(ValueError, match="another source"):
        _extract(tmp_path, vae_ckpt, cache_dir, corpus="other", clips=2)


def test_cached_datamodule_mixes_and_samples(tmp_path, vae_ckpt, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["reasonaudio"])
    _extract(tmp_path, vae_ckpt, tmp_path / "a", corpus="a", clips=2)
    _extract(tmp_path, vae_ckpt, tmp_path / "b", corpus="b", clips=4)
    dm = CachedFeatureDataModule(train=[str(tmp_path / "a"), str(tmp_path / "b")], val=[str(tmp_path / "a")],
                                 weights=[3.0, 1.0], samples_per_epoch=2000, batch_size=4)
    dm.setup("fit")
    drawn = torch.tensor(list(iter(dm.train_dataloader().sampler)))
    assert abs(float((drawn < 2).float().mean()) - 0.75) < 0.04  # cache a (2 clips) gets 3/4 of the draws
    batch = next(iter(dm.train_dataloader()))
    assert batch["latent"].shape == (4, 63, 8) and batch["sync"].shape == (4, 40, 768) and batch["has_video"].all()
    assert len(batch["mllm_video"]) == 4 and batch["mllm_video"][0].shape == (4, 3, 84, 84)
    val = next(iter(dm.val_dataloader()))
    mean = torch.from_numpy(np.array(FeatureCache(tmp_path / "a").arrays["latent_mean"][:2]))
    assert torch.allclose(val["latent"], mean - 0.5)  # validation: posterior mean, normalised (stats 0.5 / 1)
    train_item = dm.train_sets[0][0]
    assert not torch.allclose(train_item["latent"], mean[0] - 0.5)  # training re-samples mean + std · ε
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["split"] == "train" and meta["source"] == "SyntheticDataModule"


def test_items_read_as_labels_or_without_video(tmp_path, vae_ckpt, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["reasonaudio"])
    cache = tmp_path / "a"
    _extract(tmp_path, vae_ckpt, cache, corpus="a", clips=2)
    rows = [json.loads(line) for line in (cache / "index.jsonl").read_text().splitlines()]
    plain = CachedFeatureDataModule(train=[str(cache)], val=[str(cache)], batch_size=2)
    labels = CachedFeatureDataModule(train=[str(cache)], val=[str(cache)], batch_size=2, text="label", video=False)
    for dm in (plain, labels):
        dm.setup("fit")
    a, b = next(iter(plain.val_dataloader())), next(iter(labels.val_dataloader()))
    assert a["caption"] == [r["caption"] for r in rows] and b["caption"] == [r["label"] for r in rows]
    assert a["caption"] != b["caption"] and b["has_text"].all()
    assert a["has_video"].all() and not b["has_video"].any() and b["mllm_video"] == [None, None]
    assert torch.equal(a["latent"], b["latent"]) and torch.equal(a["sync"], b["sync"])  # the net nulls sync itself
    with pytest.raises(ValueError, match="prefix_kv 'demo' was stored from the captions"):
        CachedFeatureDataModule(train=[str(cache)], prefix_kv="demo", video=False)
    with pytest.raises(ValueError, match="text must be 'caption' or 'label'"):
        CachedFeatureDataModule(train=[str(cache)], text="keywords")
    for r in rows:
        r.pop("label")
    (cache / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"index.jsonl: 2 clips have no 'label'"):
        CachedFeatureDataModule(train=[str(cache)], text="label").setup("fit")
