"""`make resume-check`: is a killed and resumed run the uninterrupted run, bit for bit?

For pretraining and LoRA post-training on the demo's caches (`make demo`), or the stages named by
``--stages`` (also ``vae``, ``vocoder``, ``sync`` on the demo's corpus and ``reward`` on its caches; `make
resume-check STAGES="vae vocoder reward sync"`), the same ``reasonaudio fit`` command runs twice in subprocesses:

1. uninterrupted, into ``<out>/<check>/uninterrupted``;
2. into ``<out>/<check>/killed``, SIGKILLed as soon as its ``--kill-after``-th step checkpoint exists, then
   run again with ``--ckpt_path last`` (which continues the killed run's ``version_N`` folder).

The per-step ``train/loss`` values are read back from each run's TensorBoard event files (a resumed
folder holds the killed run's file and the resumed run's; for a step logged in both, the later file
wins, as TensorBoard shows it), and the final weights from each run's ``last.ckpt`` (``state_dict`` and
every callback tensor, e.g. the EMA). It prints the maximum absolute differences and exits 1 unless
both are 0 and every step of the uninterrupted run is in the resumed run's log.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

from reasonaudio.cli import CONFIG_DIR
from reasonaudio.experiments.layout import DemoLayout


def fit(args: Sequence[str], log: Path | None = None) -> None:
    """``python -m reasonaudio fit <args>`` in a subprocess (output to ``log`` when given); raises on failure."""
    with open(log, "ab") if log else open(os.devnull, "wb") as out:
        result = subprocess.run([sys.executable, "-m", "reasonaudio", "fit", *args], stdout=out,
                                stderr=subprocess.STDOUT)
    if result.returncode:
        raise RuntimeError(f"reasonaudio fit exited with {result.returncode}" + (f"; see {log}" if log else ""))


def checkpoint_steps(runs: Path) -> list[int]:
    """Steps of the ``step<N>.ckpt`` files under ``<runs>/*/checkpoints`` (ModelCheckpoint keeps the latest)."""
    return sorted(int(p.stem[4:]) for p in runs.glob("*/checkpoints/step*.ckpt"))


def _last_written(runs: Path, step: int) -> bool:
    """Whether ``last.ckpt`` next to ``step<step>.ckpt`` under ``<runs>/*/checkpoints`` is at least as new as it."""
    for path in runs.glob(f"*/checkpoints/step{step:07d}.ckpt"):
        last = path.with_name("last.ckpt")
        try:
            if last.stat().st_mtime_ns >= path.stat().st_mtime_ns:
                return True
        except FileNotFoundError:
            pass
    return False


def _logged(runs: Path, step: int, tag: str = "train/loss") -> bool:
    """Whether the loss of the step checkpointed as ``step<step>.ckpt`` (logged at step ``step - 1``) is on disk."""
    return any(step - 1 in logged_scalars(v, tag) for v in runs.glob("*") if v.is_dir())


def fit_and_kill(args: Sequence[str], checkpoints: Path, step: int, log: Path | None = None,
                 timeout: float = 600.0, sig: int = signal.SIGKILL) -> int:
    """Start ``fit``; send ``sig`` once a step checkpoint of step >= ``step`` exists under
    ``checkpoints/*/checkpoints``.

    Returns that checkpoint's step. Raises if the run ends (or times out) first, and, for a signal other than
    SIGKILL, unless the run then exits with status 0 (a preempted run ends cleanly).
    """
    with open(log, "ab") if log else open(os.devnull, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "reasonaudio", "fit", *args], stdout=out,
                                stderr=subprocess.STDOUT)
        start = time.monotonic()
        try:
            while True:
                done = proc.poll() is not None
                found = [s for s in checkpoint_steps(checkpoints) if s >= step]
                if found and not _last_written(checkpoints, found[0]):
                    found = []  # ModelCheckpoint writes last.ckpt right after the step file: wait for it
                if found and not _logged(checkpoints, found[0]) and time.monotonic() - start < timeout / 2:
                    # The step's loss reaches the event file just after its checkpoint; a kill in between
                    # would lose that one point from the log (the resumed run starts after it).
                    found = []
                if found and not done:
                    proc.send_signal(sig)
                    status = proc.wait(timeout=timeout)
                    if sig != signal.SIGKILL and status != 0:
                        raise RuntimeError(f"the run exited with status {status} after signal {sig}")
                    return found[0]
                if done:
                    raise RuntimeError(f"the run ended (status {proc.returncode}) before it was killed after step "
                                       f"{step}")
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"no checkpoint of step {step} after {timeout:.0f} s")
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def logged_scalars(run_dir: Path, tag: str = "train/loss") -> dict[int, float]:
    """``step → value`` of ``tag`` from every event file of a run folder, in write order (a later file wins)."""
    files = sorted(run_dir.glob("events.out.tfevents.*"), key=lambda p: (int(p.name.split(".")[3]), p.name))
    values: dict[int, float] = {}
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if v.tag == tag:
                    values[event.step] = (float(v.simple_value) if v.HasField("simple_value")
                                          else float(tensor_util.make_ndarray(v.tensor)))
    return values


def checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's ``state_dict`` and callback states (EMA averages, ...), by key path."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    out: dict[str, torch.Tensor] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}/{k}", v)

    walk("state_dict", ckpt["state_dict"])
    for name, state in ckpt.get("callbacks", {}).items():
        if not name.startswith("ExactResume"):  # generator states are bookkeeping, not weights
            walk(f"callbacks/{name}", state)
    return out


def compare(reference: Path, resumed: Path, tag: str = "train/loss") -> dict[str, Any]:
    """Max abs differences of the logged per-step ``tag`` values and of the final checkpoints' tensors.

    ``reference`` and ``resumed`` are run folders (``<save_dir>/<name>/version_N``).
    """
    a, b = logged_scalars(reference, tag), logged_scalars(resumed, tag)
    missing = sorted(set(a) - set(b))
    loss_diff = max((abs(a[s] - b[s]) for s in a if s in b), default=float("nan"))
    wa = checkpoint_tensors(reference / "checkpoints" / "last.ckpt")
    wb = checkpoint_tensors(resumed / "checkpoints" / "last.ckpt")
    if set(wa) != set(wb):
        raise ValueError(f"checkpoints hold different tensors: {sorted(set(wa) ^ set(wb))[:5]}")
    weight_diff = max((float((wa[k].double() - wb[k].double()).abs().max()) if wa[k].numel() else 0.0) for k in wa)
    equal = not missing and bool(a) and loss_diff == 0.0 and weight_diff == 0.0
    return {"steps": len(a), "missing_steps": missing, "max_loss_diff": loss_diff, "max_weight_diff": weight_diff,
            "tensors": len(wa), "equal": equal}


def check(name: str, args: Sequence[str], out: Path, kill_at_step: int, sig: int = signal.SIGKILL,
          reference: Path | None = None) -> dict[str, Any]:
    """Uninterrupted vs killed-after-the-checkpoint-of-``kill_at_step``-and-resumed runs of ``fit <args>``; see the
    module doc.

    ``args`` must not set the logger's save_dir or name (set here) nor ckpt_path. ``sig``: the signal that
    interrupts the run (SIGTERM / SIGUSR1: preemption, the run saves and exits by itself). ``reference``: the
    run folder of an uninterrupted run of the same ``args`` made before (else one is made here).
    """
    out.mkdir(parents=True, exist_ok=True)
    runs = {k: out / k for k in ("uninterrupted", "killed")}
    where = {k: [f"--trainer.logger.init_args.save_dir={v}", f"--trainer.logger.init_args.name={name}"]
             for k, v in runs.items()}
    if reference is None:
        fit([*args, *where["uninterrupted"]], out / "uninterrupted.log")
        reference = runs["uninterrupted"] / name / "version_0"
    killed_at = fit_and_kill([*args, *where["killed"]], runs["killed"] / name, kill_at_step, out / "killed.log",
                             sig=sig)
    fit([*args, *where["killed"], "--ckpt_path=last"], out / "resumed.log")
    versions = sorted((runs["killed"] / name).iterdir())
    if len(versions) != 1:
        raise AssertionError(f"--ckpt_path last should continue the killed run's folder, found {versions}")
    result = compare(reference, versions[0])
    return {"check": name, "killed_after_checkpoint": killed_at, "reference": reference, "resumed": versions[0],
            "event_files": len(list(versions[0].glob("events.out.tfevents.*"))), **result}


def pretrain_args(demo: Path, steps: int, every: int, workers: int, duration: float) -> list[str]:
    """The demo's pretraining from its caches (live MLLM prompts), checkpoints every ``every`` steps."""
    run = DemoLayout(demo)
    return ["--config", str(CONFIG_DIR / "pretrain.yaml"), f"--model.init_args.conditioner.init_args.model={run.mllm}",
            f"--audio.duration={duration}", f"--data.init_args.train=[{run.features_corpus}]",
            f"--data.init_args.val=[{run.features_heldout}]", f"--data.init_args.num_workers={workers}",
            f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps // 2}",
            "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu", "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false", f"--checkpoint.every_n_train_steps={every}",
            "--trainer.callbacks.init_args.export=null"]


def post_train_args(demo: Path, steps: int, every: int, workers: int, duration: float) -> list[str]:
    """The demo's Flow-DPO post-training with LoRA from its pretrained export and preference groups."""
    run = DemoLayout(demo)
    return ["--config", str(CONFIG_DIR / "post_train_dpo.yaml"),
            f"--model.init_args.conditioner.init_args.model={run.mllm}",
            f"--audio.duration={duration}", f"--model.init_args.pretrained={run.pretrained}",
            "--model.init_args.export=null", "--model.init_args.val_ground_truth=null",
            f"--data.init_args.cache={run.features_corpus}", f"--data.init_args.groups={run.preference_groups}",
            f"--data.init_args.val=[{run.features_heldout}]", f"--data.init_args.num_workers={workers}",
            f"--trainer.max_steps={steps}", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
            "--trainer.accelerator=cpu", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
            f"--checkpoint.every_n_train_steps={every}"]


def _stage_args(stage: str) -> Callable[[Path, int, int, int, float], list[str]]:
    """``vae`` / ``vocoder`` / ``sync`` on the demo's synthetic corpus, ``reward`` on its feature caches (small
    batches)."""
    def make(demo: Path, steps: int, every: int, workers: int, duration: float) -> list[str]:
        run = DemoLayout(demo)
        common = [f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps // 2}",
                  "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0", "--trainer.accelerator=cpu",
                  "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
                  f"--checkpoint.every_n_train_steps={every}", f"--data.init_args.num_workers={workers}"]
        if stage == "reward":
            data = [f"--data.init_args.train=[{run.features_corpus}]", f"--data.init_args.val=[{run.features_heldout}]",
                    "--data.init_args.batch_size=4", "--model.init_args.export=null"]
        else:
            data = [f"--data.init_args.root={run.corpus}", f"--data.init_args.val_root={run.heldout}",
                    f"--audio.duration={duration}", "--data.init_args.batch_size=2"]
            data += {"vae": ["--model.init_args.disc_start=2"],
                     "vocoder": ["--model.init_args.segment_size=4096"],
                     "sync": ["--model.init_args.export=null", "--model.init_args.pairs_per_clip=4",
                              "--model.init_args.val_positions=1"]}[stage]
        return ["--config", str(CONFIG_DIR / f"{stage}.yaml"), *common, *data]

    return make


STAGES = {"pretrain": pretrain_args, "post_train_dpo": post_train_args,
          **{s: _stage_args(s) for s in ("vae", "vocoder", "reward", "sync")}}
"""The stages ``--stages`` can check (``make resume-check STAGES="vae vocoder"``)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"), help="the demo's output folder (make demo)")
    parser.add_argument("--out", type=Path, default=Path("runs/resume_check"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=15, help="checkpoint every N steps")
    parser.add_argument("--kill-after", type=int, default=2, help="SIGKILL once the checkpoint number N exists")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers (one check each)")
    parser.add_argument("--duration", type=float, default=4.0, help="the demo's clip duration")
    parser.add_argument("--no-post-train", action="store_true", help="only the pretraining check")
    parser.add_argument("--stages", nargs="+", choices=sorted(STAGES), default=None,
                        help="stages to check (default: pretrain post_train_dpo; --no-post-train: pretrain)")
    args = parser.parse_args(argv)
    if not DemoLayout(args.demo).features_corpus.is_dir():
        parser.error(f"{DemoLayout(args.demo).features_corpus} not found: run `make demo` first")
    names = args.stages or ["pretrain"] + ([] if args.no_post_train else ["post_train_dpo"])
    stages = [(name, STAGES[name]) for name in names]
    results = []
    for stage, make_args in stages:
        for workers in args.workers:
            name = f"{stage}_w{workers}"
            res = check(stage, make_args(args.demo, args.steps, args.every, workers, args.duration),
                        args.out / name, args.kill_after * args.every)
            results.append({**res, "check": name})
            print(f"{name}: {res['steps']} steps, killed after the step-{res['killed_after_checkpoint']} checkpoint; "
                  f"max |loss diff| {res['max_loss_diff']:.3g}, max |weight diff| {res['max_weight_diff']:.3g} over "
                  f"{res['tensors']} tensors, missing steps {res['missing_steps'] or 'none'} -> "
                  f"{'EQUAL' if res['equal'] else 'DIFFERENT'}", flush=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=1, default=str))
    return 0 if all(r["equal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
