"""Runs that survive being killed (issue 23): exact resume, `--ckpt_path last`, preemption signals, atomic
checkpoint writes, non-finite losses. The runs are real `reasonaudio fit` subprocesses on tiny feature caches;
equality is checked on the losses read back from their TensorBoard files and on their final checkpoints."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from reasonaudio.cli import CONFIG_DIR, build_cli, resolve_last
from reasonaudio.data_modules.resumable import ResumableLoader
from reasonaudio.experiments.resume_check import check, compare, fit, logged_scalars

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(args: list[str]):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setattr(sys, "argv", ["reasonaudio"])
        return build_cli(args)


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, Path]:
    """Feature caches of 4 + 2 synthetic clips (2 s) and a tiny MLLM covering their captions."""
    from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl
    from reasonaudio.models.vae import mel_vae_tiny

    root = tmp_path_factory.mktemp("resume")
    torch.manual_seed(0)
    vae = root / "vae.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in mel_vae_tiny().state_dict().items()}}, vae)
    for corpus, clips in (("train", 4), ("heldout", 2)):
        _cli(["predict", "--config", str(CONFIG_DIR / "features.yaml"), f"--model.init_args.vae_checkpoint={vae}",
              "--audio.duration=2.0", f"--data.init_args.root={root / corpus}", f"--data.init_args.num_clips={clips}",
              f"--data.init_args.seed={len(corpus)}", f"--data.init_args.skip_done_in={root / ('cache_' + corpus)}",
              f"--trainer.logger.init_args.save_dir={root / 'runs'}",
              f"--trainer.callbacks.output={root / ('cache_' + corpus)}", "--trainer.accelerator=cpu"])
    captions = [json.loads(line)["caption"] for c in ("train", "heldout")
                for line in (root / c / "manifest.jsonl").read_text().splitlines()]
    return {"root": root, "vae": vae, "mllm": write_tiny_qwen_vl(root / "mllm", captions),
            "train": root / "cache_train", "val": root / "cache_heldout"}


def _pretrain(d: dict, steps: int = 16, workers: int = 0, cache: Path | None = None) -> list[str]:
    # 4 clips in batches of 3: 2 batches per epoch, so the runs cross epoch boundaries and resume mid-epoch;
    # validation every 4 steps (it draws nothing from the training steps' generators).
    return ["--config", str(CONFIG_DIR / "pretrain.yaml"), f"--model.init_args.conditioner.init_args.model={d['mllm']}",
            "--audio.duration=2.0", f"--data.init_args.train=[{cache or d['train']}]",
            f"--data.init_args.val=[{d['val']}]", "--data.init_args.batch_size=3", f"--data.init_args.num_workers={workers}",
            f"--trainer.max_steps={steps}", "--trainer.val_check_interval=4", "--trainer.limit_val_batches=1",
            "--trainer.accelerator=cpu", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
            "--checkpoint.every_n_train_steps=2", "--trainer.callbacks.init_args.export=null"]


@pytest.fixture(scope="module")
def uninterrupted(caches) -> Path:
    """The reference: 16 pretraining steps in one go (run folder)."""
    out = caches["root"] / "uninterrupted"
    fit([*_pretrain(caches), f"--trainer.logger.init_args.save_dir={out}", "--trainer.logger.init_args.name=pretrain"],
        caches["root"] / "uninterrupted.log")
    return out / "pretrain" / "version_0"


def _assert_exact(res: dict) -> None:
    assert res["event_files"] == 2  # the killed run's log and the resumed run's, in one run folder
    assert res["steps"] == 16 and res["missing_steps"] == []
    assert res["max_loss_diff"] == 0.0 and res["max_weight_diff"] == 0.0, res
    assert res["tensors"] > 100  # weights and EMA averages
    assert res["equal"]


def test_last_ckpt_holds_the_final_step_after_a_periodic_save(caches):
    """5 steps with a checkpoint every 2: Lightning alone leaves step 4 in last.ckpt; FinalStepCheckpoint writes 5."""
    out = caches["root"] / "final_step"
    trainer = _cli(["fit", *_pretrain(caches, steps=5), f"--trainer.logger.init_args.save_dir={out}",
                    "--trainer.logger.init_args.name=pretrain", "--trainer.val_check_interval=5"]).trainer
    folder = out / "pretrain" / "version_0" / "checkpoints"
    steps = {p.name: torch.load(p, weights_only=False)["global_step"] for p in folder.glob("*.ckpt")}
    assert steps == {"step0000004.ckpt": 4, "last.ckpt": 5}  # the periodic file (top 1) and the last step
    last = torch.load(folder / "last.ckpt", weights_only=False)["state_dict"]
    model = trainer.lightning_module.state_dict()
    assert all(torch.equal(last[k], model[k].cpu()) for k in model)  # the weights the run ended with


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_pretrain_killed_and_resumed_with_ckpt_path_last_equals_the_uninterrupted_run(caches, uninterrupted, workers):
    """SIGKILL after the step-4 checkpoint, `fit --ckpt_path last`: every logged loss and every final weight equal."""
    res = check("pretrain", _pretrain(caches, workers=workers), caches["root"] / f"kill_w{workers}", kill_at_step=4,
                reference=uninterrupted if workers == 0 else None)
    _assert_exact(res)
    ckpt = torch.load(res["resumed"] / "checkpoints" / "last.ckpt", weights_only=True)  # Lightning's default load
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ExactResume"))
    assert {"torch", "numpy", "python", "cuda"} <= set(state["rng"])
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 7, "batches": 2}]  # 8 passes of 2


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signal_saves_last_exits_cleanly_and_resumes_exactly(caches, uninterrupted, sig):
    """SIGTERM / SIGUSR1 to a real run: it writes last.ckpt after the step under way and exits with status 0;
    `--ckpt_path last` then finishes it, equal to the uninterrupted run."""
    # Validation only at the end here: the training steps draw nothing from validation, so the reference
    # (validation every 4 steps) must still be matched exactly.
    res = check("pretrain", [*_pretrain(caches), "--trainer.val_check_interval=16"], caches["root"] / f"sig{int(sig)}",
                kill_at_step=4, sig=sig, reference=uninterrupted)
    _assert_exact(res)
    log = (caches["root"] / f"sig{int(sig)}" / "killed.log").read_text()
    assert f"[resume] {signal.Signals(sig).name}: wrote" in log


@pytest.mark.slow
def test_post_training_with_lora_killed_and_resumed_equals_the_uninterrupted_run(caches):
    from safetensors.torch import save_file

    from reasonaudio.models.reward import AlignmentClassifier

    root = caches["root"]
    model = [f"--model.init_args.conditioner.init_args.model={caches['mllm']}", "--audio.duration=2.0"]
    _cli(["fit", *_pretrain(caches, steps=1), f"--trainer.logger.init_args.save_dir={root / 'pre'}",
          f"--trainer.callbacks.init_args.export={root / 'export'}"])
    save_file(AlignmentClassifier(width=32, kernel=3).state_dict(), str(root / "reward.safetensors"))
    _cli(["predict", "--config", str(CONFIG_DIR / "preference_data.yaml"), *model,
          f"--model.init_args.pretrained={root / 'export' / 'model.safetensors'}",
          f"--model.init_args.reward.init_args.checkpoint={root / 'reward.safetensors'}", "--model.init_args.num_candidates=3",
          "--model.init_args.steps=2", f"--data.init_args.cache={caches['train']}", f"--data.init_args.groups={root / 'groups'}",
          f"--trainer.logger.init_args.save_dir={root / 'pre'}", "--trainer.accelerator=cpu"])
    args = ["--config", str(CONFIG_DIR / "post_train_dpo.yaml"), *model,
            f"--model.init_args.pretrained={root / 'export' / 'model.safetensors'}", "--model.init_args.export=null",
            "--model.init_args.val_ground_truth=null", "--model.init_args.optimizer.init_args.lr=0.01",
            f"--data.init_args.cache={caches['train']}", f"--data.init_args.groups={root / 'groups'}",
            "--data.init_args.batch_size=3", "--trainer.max_steps=12", "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0", "--trainer.accelerator=cpu", "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false", "--checkpoint.every_n_train_steps=2"]
    res = check("post_train_dpo", args, root / "post_kill", kill_at_step=4)
    assert res["event_files"] == 2 and res["steps"] == 12 and res["missing_steps"] == []
    assert res["max_loss_diff"] == 0.0 and res["max_weight_diff"] == 0.0 and res["equal"], res
    assert any("lora" in k for k in torch.load(res["resumed"] / "checkpoints" / "last.ckpt",
                                               weights_only=True)["state_dict"])


def test_loader_resumes_mid_epoch_with_the_same_batches_and_item_draws():
    """Order, position and per-item draws (torch RNG inside __getitem__) continue exactly, with and without workers."""
    class Noisy(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.tensor([float(i), torch.rand(()).item(), float(np.random.rand())])

    def loader(workers: int) -> ResumableLoader:
        sampler = torch.utils.data.WeightedRandomSampler(torch.ones(10), 10, generator=torch.Generator())
        return ResumableLoader(Noisy(), seed=3, batch_size=3, sampler=sampler, num_workers=workers)

    full = []
    ref = loader(0)
    for _ in range(3):
        full += list(ref)
    for workers in (0, 2):
        first = loader(workers)
        it = iter(first)
        taken = [next(it), next(it)]
        state = first.state_dict()
        assert state == {"epoch": 0, "batches": 2}
        resumed = loader(workers)
        resumed.load_state_dict(state)
        rest = list(resumed) + list(resumed) + list(resumed)
        assert all(torch.equal(a, b) for a, b in zip(taken + rest, full)) and len(taken + rest) == len(full)
    assert not torch.equal(full[0], full[4])  # epochs differ in order and draws


def test_ckpt_path_last_picks_the_newest_run_and_continues_its_folder(tmp_path):
    import os

    for version, mtime in (("version_0", 100), ("version_1", 300), ("version_2", 200)):
        last = tmp_path / "pretrain" / version / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True)
        last.write_bytes(b"x")
        os.utime(last, (mtime, mtime))
    (tmp_path / "pretrain" / "version_3").mkdir()  # a run that died before its first checkpoint
    config = {"ckpt_path": "last", "checkpoint": {"dirpath": None},
              "trainer": {"logger": {"class_path": "x", "init_args": {"save_dir": str(tmp_path), "name": "pretrain"}}}}
    resolve_last(config)
    assert config["ckpt_path"] == str(tmp_path / "pretrain" / "version_1" / "checkpoints" / "last.ckpt")
    assert config["trainer"]["logger"]["init_args"]["version"] == "version_1"
    fresh = {"ckpt_path": "last", "checkpoint": {}, "trainer": {"logger": {"init_args": {"save_dir": str(tmp_path / "no"),
                                                                                           "name": "pretrain"}}}}
    resolve_last(fresh)
    assert fresh["ckpt_path"] == "last"  # nothing to resume: Lightning starts from scratch


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path):
    """A real process SIGKILLs itself halfway through writing the second checkpoint."""
    path = tmp_path / "last.ckpt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from reasonaudio.callbacks.resume import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        io.save_checkpoint({{"step": 1, "w": torch.arange(1000.0)}}, {str(path)!r})
        def dying_save(obj, f):
            f.write(b"half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        io.save_checkpoint({{"step": 2, "w": torch.zeros(1000)}}, {str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 1 and torch.equal(ckpt["w"], torch.arange(1000.0))
    assert all(p.name.startswith(".last.ckpt.tmp-") for p in tmp_path.iterdir() if p.name != "last.ckpt")


def _nan_cache(src: Path, dst: Path, rows: int) -> Path:
    """A copy of a cache whose first ``rows`` latents are NaN."""
    import shutil

    shutil.copytree(src, dst)
    meta = json.loads((dst / "meta.json").read_text())
    latents = np.fromfile(dst / "latent_mean.f32", dtype=np.float32)
    per_row = latents.size // meta["num_clips"]
    latents[: rows * per_row] = np.nan
    latents.tofile(dst / "latent_mean.f32")
    return dst


def test_a_nan_batch_is_skipped_counted_and_logged_with_its_ids(caches, capsys):
    cache = _nan_cache(caches["train"], caches["root"] / "nan_one", rows=1)
    out = caches["root"] / "nan_one_run"
    with pytest.warns(UserWarning, match=r"\[nonfinite\] step \d+: loss nan.*optimizer step skipped; batch ids \[") as rec:
        _cli(["fit", *_pretrain(caches, steps=6, cache=cache), f"--trainer.logger.init_args.save_dir={out}",
              "--trainer.val_check_interval=6"])
    ids = {i for w in rec if "[nonfinite]" in str(w.message) for i in json.loads(
        str(w.message).split("batch ids ")[1].replace("'", '"'))}
    first_id = json.loads((caches["train"] / "index.jsonl").read_text().splitlines()[0])["id"]
    assert first_id in ids  # every skipped batch held the NaN clip
    run = out / "pretrain" / "version_0"
    skipped = logged_scalars(run, "train/nonfinite_skipped")
    losses = logged_scalars(run, "train/loss")
    assert skipped[max(skipped)] == sum(1 for s in losses if not np.isfinite(losses[s])) > 0
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_non_finite_steps_in_a_row_stop_the_run_naming_the_step(caches):
    cache = _nan_cache(caches["train"], caches["root"] / "nan_all", rows=4)
    with pytest.raises(FloatingPointError, match=r"3 training batches in a row .* at step 2"):
        _cli(["fit", *_pretrain(caches, steps=6, cache=cache), f"--trainer.logger.init_args.save_dir={caches['root'] / 'nan_all_run'}",
              "--nonfinite.max_consecutive=3"])
