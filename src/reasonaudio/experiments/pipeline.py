"""The experiments' step runner and the steps they share.

:class:`Pipeline` runs named steps once, atomically, and records them (``make demo``, ``make study``, the paper
tables' toy runs). The shared steps: synthesising a corpus (:func:`synth_step`), decode-checking it
(:func:`check_step`), ``reasonaudio fit`` / ``predict`` / any ``reasonaudio`` command in a subprocess
(:func:`fit_step`, :func:`predict_step`, :func:`cli_step`), the tiny MLLM folder (:func:`tiny_mllm_step`). Also
``reasonaudio`` in this process (:func:`run_cli`), the last logged scalars a step reports (:func:`last_scalars`),
the demo corpora's captions and the machine a run records (:func:`machine_name`).
"""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from reasonaudio.cli import build_cli
from reasonaudio.data_modules.synthetic import synthesize_corpus
from reasonaudio.experiments.layout import STEPS, DemoLayout, corpus_manifest
from reasonaudio.media import validate_file
from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl

RAN = "_ran"
"""Key of ``steps.json`` that maps each step to ``{"finished": ISO time, "machine": machine_name()}``."""


def _count(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


def provenance(steps: dict) -> str:
    """Where and when the recorded steps of a ``steps.json`` ran, in words (steps of older versions that did
    not record it are counted as such)."""
    ran = steps.get(RAN, {})
    unrecorded = [k for k in steps if not k.startswith("_") and k not in ran]
    parts = []
    if ran:
        days = sorted(r["finished"][:10] for r in ran.values())
        span = days[0] if days[0] == days[-1] else f"{days[0]} … {days[-1]}"
        parts.append(f"{_count(len(ran))} ran {span} on {'; '.join(sorted({r['machine'] for r in ran.values()}))}")
    if unrecorded:
        named = f" ({', '.join(unrecorded)})" if len(unrecorded) <= 3 else ""
        parts.append(f"{_count(len(unrecorded))}{named} ran before steps recorded when and where")
    return "; ".join(parts) or "no step recorded"


class Pipeline:
    """Runs named steps once, atomically, with progress lines.

    Each step writes into ``<out>/<name>.partial`` and renames it to ``<out>/<name>`` when it has finished, then
    records its summary in ``<out>/steps.json``, and when and on which machine it finished under ``_ran`` (so
    the report of a resumed run names where its figures come from, not only where it was written); a rerun with
    the same ``settings`` skips recorded steps whose outputs still exist (other settings are refused: they would
    mix artifacts), and an interrupted step leaves only the ``*.partial`` folder that the rerun deletes and redoes.
    """

    def __init__(self, out: Path, settings: dict, tag: str = "demo"):
        self.out = out
        self.tag = tag
        self.settings = settings
        self.out.mkdir(parents=True, exist_ok=True)
        self.state_file = out / STEPS
        self.state: dict = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        earlier = self.state.get("_settings")
        if earlier is not None and earlier != settings:
            raise ValueError(f"{out} was built with {earlier}, not {settings}: choose another --out or delete it")
        self.state["_settings"] = settings
        self.state.setdefault(RAN, {})

    def step(self, name: str, fn: Callable[[Path], dict]) -> dict:
        """Run ``fn(tmp_dir)`` unless ``name`` finished before; returns the step's summary."""
        final = self.out / name
        if name in self.state and final.exists():
            print(f"[{self.tag}] {name}: done earlier, reusing {final}", flush=True)
            return self.state[name]
        # Everything recorded after a step that reruns was built from its old output.
        names = [k for k in self.state if not k.startswith("_")]
        for later in names[names.index(name) + 1:] if name in names else []:
            del self.state[later]
            self.state[RAN].pop(later, None)
        partial = self.out / f"{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        partial.mkdir(parents=True)
        print(f"[{self.tag}] {name}: running ...", flush=True)
        t0 = time.perf_counter()
        summary = fn(partial)
        partial.rename(final)
        summary = {**summary, "seconds": round(time.perf_counter() - t0, 1)}
        self.state[name] = summary
        self.state[RAN][name] = {"finished": datetime.now().isoformat(timespec="seconds"), "machine": machine_name()}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.state_file)
        print(f"[{self.tag}] {name}: finished in {summary['seconds']} s", flush=True)
        return summary


def run_cli(args: Sequence[str]) -> None:
    """``reasonaudio <args>`` in this process (with this script's own arguments out of ``sys.argv``)."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        build_cli(list(args))
    finally:
        sys.argv = argv


def last_scalars(log_root: Path) -> dict[str, float]:
    """The last value of every scalar logged under ``<log_root>/version_*`` (TensorBoard event files)."""
    values: dict[str, float] = {}
    for events in sorted(log_root.glob("version_*/events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values[tag] = acc.Scalars(tag)[-1].value
    return values


def corpus_captions(layout: DemoLayout) -> list[str]:
    """Captions of a run's training and held-out corpora (the tiny text models' vocabulary)."""
    return [json.loads(line)["caption"] for corpus in (layout.corpus, layout.heldout)
            for line in corpus_manifest(corpus).read_text().splitlines()]


def machine_name() -> str:
    """The CPU model and count (`lscpu`), for the figures a run records."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
        cpus = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("CPU(s)"))
        return f"{model}, {cpus} CPUs"
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


# --------------------------------------------------------------------------- steps


def synth_step(num_clips: int, seed: int, duration: float) -> Callable[[Path], dict]:
    """Synthesise ``num_clips`` clips (``seed``, ``tiny`` preset) into the step's folder."""
    def run(tmp: Path) -> dict:
        synthesize_corpus(tmp, num_clips=num_clips, seed=seed, duration=duration, preset="tiny")
        return {"clips": num_clips, "seed": seed, "duration": duration}
    return run


def check_step(root: Path, tag: str = "demo") -> Callable[[Path], dict]:
    """Decode every mp4 under ``root`` (video and audio); the reports go to ``check.jsonl``, a failure stops."""
    def run(tmp: Path) -> dict:
        files = sorted(root.glob("**/*.mp4"))
        reports = []
        for i, f in enumerate(files, 1):
            reports.append(validate_file(f, require=("video", "audio")))
            if i % 8 == 0 or i == len(files):
                print(f"[{tag}] check: {i}/{len(files)} files decoded", flush=True)
        (tmp / "check.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reports))
        bad = [r for r in reports if not r["ok"]]
        if bad:
            raise SystemExit(f"[{tag}] check: {len(bad)} synthetic files failed to decode, e.g. {bad[0]}")
        return {"files": len(reports), "ok": len(reports) - len(bad)}
    return run


def fit_step(stage: str, steps: int, extra: Sequence[str], data: DemoLayout | None = None) -> Callable[[Path], dict]:
    """``reasonaudio fit`` of a stage config, logging into the step's folder as ``<stage>/version_0``.

    ``data``: the run whose corpora are the data module's ``root`` and ``val_root`` (None: ``extra`` names the
    data). ``{tmp}`` in ``extra`` stands for the step's folder. The summary: the steps and the last scalars.
    """
    def run(tmp: Path) -> dict:
        roots = ([] if data is None else
                 [f"--data.init_args.root={data.corpus}", f"--data.init_args.val_root={data.heldout}"])
        cmd = [sys.executable, "-m", "reasonaudio", "fit", "--config", f"lightning_configs/{stage}.yaml", *roots,
               f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}",
               "--trainer.accelerator=cpu", "--trainer.log_every_n_steps=5",
               f"--trainer.logger.init_args.save_dir={tmp}", f"--trainer.logger.init_args.name={stage}",
               *(a.replace("{tmp}", str(tmp)) for a in extra)]
        subprocess.run(cmd, check=True)
        return {"steps": steps, **last_scalars(tmp / stage)}
    return run


def predict_step(args: Sequence[str], out_dir: Path) -> Callable[[Path], dict]:
    """``reasonaudio predict`` writing into the step's folder (``{tmp}`` in ``args`` is replaced by it)."""
    def run(tmp: Path) -> dict:
        cmd = [sys.executable, "-m", "reasonaudio", "predict", "--trainer.accelerator=cpu",
               f"--trainer.logger.init_args.save_dir={tmp / 'logs'}", *(a.replace("{tmp}", str(tmp)) for a in args)]
        subprocess.run(cmd, check=True)
        return {"folder": str(out_dir)}
    return run


def cli_step(args: Callable[[Path], list[str]], summary: Callable[[Path], dict]) -> Callable[[Path], dict]:
    """``reasonaudio <args(tmp)>`` in a subprocess; the step's summary is ``summary(tmp)``."""
    def run(tmp: Path) -> dict:
        subprocess.run([sys.executable, "-m", "reasonaudio", *args(tmp)], check=True)
        return summary(tmp)
    return run


def tiny_mllm_step(layout: DemoLayout) -> Callable[[Path], dict]:
    """A tiny local Qwen2.5-VL whose vocabulary covers the run's captions (the step's folder is ``layout.mllm``)."""
    def run(tmp: Path) -> dict:
        write_tiny_qwen_vl(tmp, corpus_captions(layout))
        return {"folder": str(layout.mllm)}
    return run
