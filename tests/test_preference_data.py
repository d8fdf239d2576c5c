"""The preference_data stage: K scored candidates per condition, stored as groups; resumable, thresholded, joined
with their conditions for training."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reasonaudio.cli import CONFIG_DIR, build_cli
from reasonaudio.data_modules.preference_groups import PreferenceDataModule, PreferenceStore
from reasonaudio.models.reward import AlignmentClassifier
from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl

REPO = Path(__file__).resolve().parents[1]
T, TS, K = 63, 40, 3  # 2 s tiny latents, Synchformer tokens; candidates per group
CAPTIONS = ["a red ball bounces", "a bell rings twice", "", "a blue block knocks"]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_cache(root: Path, seed: int = 0) -> Path:
    """A 4-clip feature cache in data_modules/features.py's format (clip 2 has no caption, clip 3 no video)."""
    rng = np.random.default_rng(seed)
    n = len(CAPTIONS)
    arrays = {"latent_mean": rng.normal(0, 1, (n, T, 8)), "latent_std": np.full((n, T, 8), 0.1),
              "sync": rng.normal(0, 1, (n, TS, 768))}
    (root / "mllm").mkdir(parents=True)
    for name, value in arrays.items():
        np.memmap(root / f"{name}.f32", dtype=np.float32, mode="w+", shape=value.shape)[:] = value
    np.memmap(root / "done.u8", dtype=np.uint8, mode="w+", shape=(n,))[:] = 1
    for row in range(3):
        np.save(root / "mllm" / f"{row}.npy", rng.integers(0, 255, (4, 3, 28, 28), dtype=np.uint8))
    (root / "meta.json").write_text(json.dumps({"num_clips": n, "arrays": {k: list(v.shape[1:]) for k, v in arrays.items()},
                                                "latent_stats": {"mean": [0.0] * 8, "std": [1.0] * 8}}))
    (root / "index.jsonl").write_text("".join(json.dumps({"id": f"clip_{i}", "caption": c, "label": "", "has_video": i != 3,
                                                          "corpus": "toy"}) + "\n" for i, c in enumerate(CAPTIONS)))
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Cache, tiny MLLM, a random 'pretrained' export of pretrain.yaml's model at 2 s, a random reward classifier."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("preference")
    mllm = write_tiny_qwen_vl(root / "mllm", CAPTIONS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setattr(sys, "argv", ["reasonaudio"])
        torch.manual_seed(0)
        system = build_cli(["--config", str(CONFIG_DIR / "pretrain.yaml"), f"--model.init_args.conditioner.init_args.model={mllm}",
                            "--audio.duration=2.0"], run=False).model
    with torch.no_grad():  # the zero-initialised output layers random, so samples depend on the condition
        for p in system.net.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    trainable = {n for n, p in system.named_parameters() if p.requires_grad}
    export = root / "pretrain_export"
    export.mkdir()
    save_file({n: v.contiguous() for n, v in system.state_dict().items() if n in trainable or n.startswith("net.")},
              str(export / "model.safetensors"))
    save_file(AlignmentClassifier(width=32, kernel=3).state_dict(), str(root / "reward.safetensors"))
    return {"root": root, "mllm": mllm, "cache": write_cache(root / "cache"), "export": export / "model.safetensors",
            "reward": root / "reward.safetensors"}


def run_stage(d: dict[str, Path], groups: Path, *extra: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setattr(sys, "argv", ["reasonaudio"])
        build_cli(["predict", "--config", str(CONFIG_DIR / "preference_data.yaml"),
                   f"--model.init_args.conditioner.init_args.model={d['mllm']}", "--audio.duration=2.0",
                   f"--model.init_args.pretrained={d['export']}", f"--model.init_args.reward.init_args.checkpoint={d['reward']}",
                   f"--model.init_args.num_candidates={K}", "--model.init_args.steps=2", "--model.init_args.min_spread=0.0",
                   f"--data.init_args.cache={d['cache']}", f"--data.init_args.groups={groups}", "--data.init_args.batch_size=1",
                   "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
                   f"--trainer.logger.init_args.save_dir={d['root'] / 'runs'}", *extra])


def _groups(folder: Path) -> dict[int, dict]:
    return {int(p.stem): PreferenceStore.load(p) for p in sorted((folder / "groups").glob("*.pt"))}


def test_interrupted_run_resumes_to_the_same_groups(setup):
    d = setup
    run_stage(d, d["root"] / "whole")
    whole = _groups(d["root"] / "whole")
    assert sorted(whole) == [0, 1, 2, 3]
    for row, g in whole.items():
        assert g["id"] == f"clip_{row}" and g["seeds"].tolist() == [row * K + k for k in range(K)]  # seed + row·K + k
        assert g["latents"].shape == (K, T, 8) and g["rewards"].shape == (K,) and ((g["rewards"] >= 0) & (g["rewards"] <= 1)).all()
        assert not torch.equal(g["latents"][0], g["latents"][1])  # distinct seeds, distinct candidates
    assert json.loads((d["root"] / "whole" / "summary.json").read_text())["kept"] == 4
    assert list((d["root"] / "runs" / "preference_data").glob("version_*/config.yaml"))  # resolved config saved

    cut = d["root"] / "cut"
    run_stage(d, cut, "--trainer.limit_predict_batches=2")  # "killed" after two groups
    assert sorted(_groups(cut)) == [0, 1]
    (cut / "groups" / ".000002.pt.999.tmp").write_bytes(b"half-written")  # what a kill mid-write leaves
    run_stage(d, cut)
    resumed = _groups(cut)
    assert sorted(resumed) == [0, 1, 2, 3] and len(list((cut / "groups").glob("*.pt"))) == 4  # no duplicates
    for row in whole:
        assert torch.equal(resumed[row]["seeds"], whole[row]["seeds"])
        assert torch.allclose(resumed[row]["latents"], whole[row]["latents"], atol=1e-6)
        assert torch.allclose(resumed[row]["rewards"], whole[row]["rewards"], atol=1e-6)

    stamps = {p: p.stat().st_mtime_ns for p in (cut / "groups").glob("*.pt")}
    run_stage(d, cut)  # finished: nothing is sampled or rewritten
    assert {p: p.stat().st_mtime_ns for p in (cut / "groups").glob("*.pt")} == stamps
    with pytest.raises(ValueError, match="meta.json: the groups there were made with other settings"):
        run_stage(d, cut, "--model.init_args.seed=5")


def test_groups_without_spread_are_dropped_and_counted(setup):
    d = setup
    folder = d["root"] / "flat"
    run_stage(d, folder, "--model.init_args.min_spread=1.0")  # probabilities never spread by more than 1
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["kept"], summary["dropped"]) == (0, 4)
    dropped = PreferenceStore.load(folder / "dropped" / "000001.pt")
    assert "latents" not in dropped and dropped["rewards"].shape == (K,)
    dm = PreferenceDataModule(cache=str(d["cache"]), groups=str(folder))
    with pytest.raises(ValueError, match="no kept preference groups"):
        dm.train_dataloader()
    assert len(dm.predict_dataset()) == 0  # dropped groups count as done


def test_training_batches_join_groups_with_their_conditions(setup):
    d = setup
    folder = d["root"] / "train_groups"
    run_stage(d, folder)
    dm = PreferenceDataModule(cache=str(d["cache"]), groups=str(folder), val=[str(d["cache"])], batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    groups = _groups(folder)
    assert batch["latents"].shape == (4, K, T, 8) and batch["rewards"].shape == (4, K) and batch["sync"].shape == (4, TS, 768)
    from reasonaudio.data_modules.features import FeatureCache

    cache = FeatureCache(d["cache"])
    for i, row in enumerate(batch["row"].tolist()):
        assert batch["id"][i] == f"clip_{row}" and batch["caption"][i] == CAPTIONS[row]
        assert torch.equal(batch["latents"][i], groups[row]["latents"])
        assert torch.equal(batch["sync"][i], torch.from_numpy(np.array(cache.arrays["sync"][row])))
        assert (batch["mllm_video"][i] is None) == (row == 3) and bool(batch["has_video"][i]) == (row != 3)
    assert next(iter(dm.val_dataloader()))["latent"].shape == (4, T, 8)
    bad = PreferenceStore.load(folder / "groups" / "000000.pt")
    bad["id"] = "someone_else"
    torch.save(bad, folder / "groups" / "000000.pt")
    with pytest.raises(ValueError, match="000000.pt: group of 'someone_else' but row 0"):
        dm.train_dataloader()


def test_candidates_do_not_depend_on_the_batch(setup):
    """Candidate (row, k) comes from its own seed: sampled alone or next to another condition, it is the same."""
    from reasonaudio.data_modules.preference_groups import _RowDataset, collate_groups
    from reasonaudio.systems.policy_weights import load_policy_weights
    from reasonaudio.systems.preference_builder import candidate_seeds, sample_candidates

    d = setup
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setattr(sys, "argv", ["reasonaudio"])
        system = build_cli(["--config", str(CONFIG_DIR / "pretrain.yaml"), f"--model.init_args.conditioner.init_args.model={d['mllm']}",
                            "--audio.duration=2.0"], run=False).model.eval()
    load_policy_weights(system, d["export"])
    ds = _RowDataset(d["cache"], [0, 1])
    pair = collate_groups([ds[0], ds[1]])
    together = sample_candidates(system, pair, candidate_seeds(pair["row"], 2, 0), steps=2)
    alone = sample_candidates(system, collate_groups([ds[1]]), candidate_seeds(torch.tensor([1]), 2, 0), steps=2)
    assert torch.allclose(together[1], alone[0], atol=1e-5)


def test_summary_judges_the_reward_against_the_ground_truth(tmp_path):
    """With per-candidate ground truth the store's summary says whether the reward's winners beat its losers."""
    store = PreferenceStore(tmp_path)
    seeds, latents = torch.arange(3), torch.zeros(3, 4, 2)
    t = lambda *v: torch.tensor(v)  # noqa: E731
    # group 0: the reward's winner is the best candidate; group 1: its winner is the worst; group 2 ties (dropped)
    store.write(0, "a", seeds, t(0.9, 0.5, 0.1), latents, {"onset_error": t(0.01, 0.10, 0.30), "onset_f1": t(1.0, 0.5, 0.0)})
    store.write(1, "b", seeds, t(0.8, 0.2, 0.4), latents, {"onset_error": t(0.20, 0.04, 0.10), "onset_f1": t(0.2, 0.9, 0.5)})
    store.write(2, "c", seeds, t(0.5, 0.5, 0.5), None, {"onset_error": t(0.0, 1.0, 2.0), "onset_f1": t(1.0, 0.0, 0.0)})
    assert PreferenceStore.load(tmp_path / "groups" / "000000.pt")["gt_onset_error"].shape == (3,)
    summary = store.summary()
    truth = summary["ground_truth"]
    assert truth["pairs"] == 2  # the kept groups only
    assert truth["winner_onset_error_s"] == pytest.approx((0.01 + 0.20) / 2)
    assert truth["loser_onset_error_s"] == pytest.approx((0.30 + 0.04) / 2)
    assert truth["winner_minus_loser_error_s"] == pytest.approx(((0.01 - 0.30) + (0.20 - 0.04)) / 2)
    assert truth["winner_minus_loser_error_sem_s"] == pytest.approx(abs((0.01 - 0.30) - (0.20 - 0.04)) / 2, rel=1e-5)
    assert (truth["winner_onset_f1"], truth["loser_onset_f1"]) == pytest.approx(((1.0 + 0.2) / 2, (0.0 + 0.9) / 2))
    assert truth["ranking"]["pair_agreement"] == pytest.approx(3 / 6)  # group 0's three pairs right, group 1's three wrong
    assert summary["spread_quantiles"]["0.5"] == pytest.approx(0.6)  # spreads 0.8, 0.6, 0.0
    assert json.loads((tmp_path / "summary.json").read_text())["ground_truth"]["pairs"] == 2


def test_ground_truth_needs_the_decoder(setup):
    d = setup
    with pytest.raises(ValueError, match="ground_truth scores decoded candidates"):
        run_stage(d, d["root"] / "gt", f"--model.init_args.ground_truth={d['root']}")
