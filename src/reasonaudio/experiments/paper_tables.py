"""`make paper-table<N>`: evaluate checkpoints with the paper's eval configs and write the paper's table beside ours.

    python -m reasonaudio.experiments.paper_tables table2 --ckpt small=PATH [--ckpt large=PATH]
        [--results ROW=results.csv ...] [--out runs/paper_tables] [-- extra `reasonaudio validate` arguments]
    python -m reasonaudio.experiments.paper_tables table5 --toy [--demo runs/demo] [--toy-steps 800]

For every row given a checkpoint (``--ckpt ROW=PATH``) the driver runs
``reasonaudio validate --config lightning_configs/paper/<row's eval config> [row overlay] --ckpt_path PATH``
(the GenerationMetrics callback writes ``results.csv`` into ``<out>/<table>/<row>/…/version_N/``) and reads
the results back; ``--results ROW=results.csv`` takes an existing evaluation instead. It then writes
``<out>/<table>.md``: per row, the paper's value and ours side by side for every metric of the table, the
checkpoint evaluated and the CLAP checkpoint of the eval config. Rows without a checkpoint keep the paper's
numbers and say ``not run``; a metric the evaluation could not compute shows its reason (e.g. ``weights not
found: …``). Paper values are copied from the paper's text (the table named in :data:`TABLES`); baselines
of other papers are left out. Figure 4 (post-training methods and β) has no numbers in the text: its
comparison is ``make post-train-compare``.

``--toy`` smoke-runs a table at toy scale on the artifacts of a finished ``make demo`` (:data:`TOY`): every
row trains its counterpart (``dit_tiny`` with the row's conditioner on the tiny models, same steps and seed)
and is evaluated by the same ``validate`` of its paper eval config and overlay, pointed at the demo's tiny
codec and held-out clips, with DeSync (the demo's trained Synchformer) and the synthetic ground truth's onset
F1 and timbre agreement added. It writes ``<out>/toy/<table>.md``; steps are resumable and rows that train
the same model are shared across tables (``<out>/toy/steps.json``).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from reasonaudio.cli import CONFIG_DIR
from reasonaudio.experiments.layout import DemoLayout, fit_checkpoint
from reasonaudio.experiments.pipeline import Pipeline, corpus_captions, run_cli
from reasonaudio.models.tiny_clip import write_tiny_clip
from reasonaudio.models.tiny_mllm import write_tiny_qwen_omni_thinker

PAPER_DIR = CONFIG_DIR / "paper"
L_OVERLAY = ("--model.init_args.net.class_path=reasonaudio.models.dit.dit_l",
             "--model.init_args.conditioner.init_args.out_dim=896")
"""The L model in an eval config written for M (``net`` dit_l, connector to 896)."""


@dataclass(frozen=True)
class Row:
    """One model of a table.

    Attributes:
        label: the paper's row name.
        paper: the paper's values by metric (``None``: the paper gives none).
        eval_config: the file under ``lightning_configs/paper/`` that evaluates it.
        overlay: extra ``reasonaudio validate`` arguments (config overlays, overrides) for this row.
    """

    label: str
    paper: Mapping[str, float | None]
    eval_config: str
    overlay: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    """A paper table: its source, metrics in the paper's column order, and our rows (keyed for ``--ckpt``)."""

    title: str
    source: str
    metrics: tuple[str, ...]
    rows: dict[str, Row] = field(default_factory=dict)


def _ablation(name: str) -> tuple[str, ...]:
    return ("--config", str(PAPER_DIR / "ablations" / f"{name}.yaml"))


def _queries(n: int) -> tuple[str, ...]:
    return (f"--model.init_args.conditioner.init_args.num_queries={n}",)


TABLES: dict[str, Table] = {
    "table2": Table("Video-to-audio, VGGSound test", "paper Table 2", ("fd", "kl", "is", "clap", "ib", "desync"), {
        "small": Row("ReasonAudio-Small", dict(fd=1.89, kl=1.80, is_=16.9, clap=0.23, ib=0.30, desync=0.29),
                     "eval_vggsound.yaml"),
        "large": Row("ReasonAudio-Large", dict(fd=1.56, kl=1.75, is_=15.4, clap=0.24, ib=0.31, desync=0.28),
                     "eval_vggsound.yaml", L_OVERLAY)}),
    "table3": Table("Text-to-audio, AudioCaps test", "paper Table 3", ("fd", "kl", "is", "clap"), {
        "small": Row("ReasonAudio-Small", dict(fd=2.36, kl=1.43, is_=11.7, clap=0.34), "eval_audiocaps.yaml"),
        "large": Row("ReasonAudio-Large", dict(fd=1.88, kl=1.42, is_=11.5, clap=0.35), "eval_audiocaps.yaml",
                     L_OVERLAY)}),
    "table4": Table("Video-to-audio reasoning, VGGSound-Think test", "paper Table 4", ("fd", "clap", "ib"), {
        "small": Row("ReasonAudio", dict(fd=2.09, clap=0.28, ib=0.32), "eval_vggsound_think.yaml")}),
    "table5": Table("Ablations of understanding components (VGGSound-Think test)", "paper Table 5",
                    ("fd", "clap", "ib"), {
        "mllm": Row("ReasonAudio", dict(fd=2.09, clap=0.28, ib=0.32), "eval_vggsound_think.yaml"),
        "clip": Row("CLIP", dict(fd=1.92, clap=0.24, ib=0.25), "eval_vggsound_think.yaml", _ablation("table5_clip")),
        "llm": Row("LLM", dict(fd=2.11, clap=0.27, ib=None), "eval_vggsound_think.yaml", _ablation("table5_llm")),
        "clip_llm": Row("CLIP+LLM", dict(fd=2.06, clap=0.28, ib=0.28), "eval_vggsound_think.yaml",
                        _ablation("table5_clip_llm")),
        "omni": Row("ReasonAudio-Omni", dict(fd=1.98, clap=0.29, ib=0.31), "eval_vggsound_think.yaml",
                    _ablation("table5_omni"))}),
    "table8": Table("Ablations on text format (ReasonAudio-Small)", "paper Table 8 (Appendix)", ("fd", "kl", "ib"), {
        "think": Row("ReasonAudio (VGGSound-Think)", dict(fd=2.09, kl=1.38, ib=0.32), "eval_vggsound_think.yaml"),
        "vggsound": Row("ReasonAudio (VGGSound)", dict(fd=2.36, kl=1.43, ib=0.31), "eval_vggsound.yaml")}),
    "table9": Table("Number of learnable queries (VGGSound-Think test)", "paper Table 9 (Appendix E)",
                    ("fd", "clap", "ib"), {
        f"q{n}": Row(str(n), dict(fd=fd, clap=clap, ib=ib), "eval_vggsound_think.yaml", () if n == 77 else _queries(n))
        for n, fd, clap, ib in ((128, 2.04, 0.29, 0.33), (77, 2.09, 0.28, 0.32), (64, 2.17, 0.26, 0.31),
                                (32, 2.32, 0.24, 0.29))}),
    "table10": Table("MovieGen Audio Bench", "paper Table 10 (Appendix H; its IB is ×100)",
                     ("is", "ib", "clap", "desync"), {
        "small": Row("ReasonAudio", dict(is_=8.96, ib=32.8, clap=0.46, desync=0.59), "eval_moviegen.yaml")}),
}
"""The paper's numbers (``is_`` holds IS: ``is`` is a keyword) and how each row is evaluated."""

TITLES = {"fd": "FD ↓", "kl": "KL ↓", "is": "IS ↑", "clap": "CLAP ↑", "ib": "IB ↑", "desync": "DeSync ↓",
          "onset_f1": "onset F1 ↑", "timbre_agreement": "timbre ↑"}


# --------------------------------------------------------------------------- toy scale

@dataclass(frozen=True)
class ToyRow:
    """A row's counterpart at toy scale (``--toy``), on the artifacts of a finished ``make demo``.

    Every toy row trains its own ``dit_tiny`` from ``pretrain.yaml`` with the same steps, seed and data, with
    the tiny MLLM read out by :data:`TOY_QUERIES` queries unless ``conditioner`` replaces it, and the prompt
    run live in every row (the demo's stored prefix KV would fit only some); rows of several tables that
    train the same thing share one run.

    Attributes:
        conditioner: ``fit`` overrides of the conditioner; ``{mllm}``, ``{clip}``, ``{omni}`` name the tiny
            model folders and ``{frames}`` the MLLM frame count of a clip (2 fps).
        eval_data: data overrides of the evaluation (text-to-audio: no video; Table 8: the text format).
        skip: why the row has no toy counterpart (the table says so).
    """

    conditioner: tuple[str, ...] = ()
    eval_data: tuple[str, ...] = ()
    skip: str = ""


TOY_QUERIES = 77
"""The paper's number of learnable queries, kept at toy scale so that Table 9's rows vary around it."""
_COND = "--model.init_args.conditioner"
_ONE_SIZE = ToyRow(skip="no toy counterpart: the toy scale has one model size (dit_tiny)")
_TEXT_ONLY = ("--data.init_args.video=false",)
TOY: dict[str, dict[str, ToyRow]] = {
    "table2": {"small": ToyRow(), "large": _ONE_SIZE},
    "table3": {"small": ToyRow(eval_data=_TEXT_ONLY), "large": _ONE_SIZE},
    "table4": {"small": ToyRow()},
    "table5": {
        "mllm": ToyRow(),
        "clip": ToyRow((f"{_COND}=reasonaudio.models.conditioners.CLIPConditioner", f"{_COND}.init_args.model={{clip}}",
                        f"{_COND}.init_args.out_dim=64", f"{_COND}.init_args.num_frames={{frames}}",
                        f"{_COND}.init_args.num_tokens={TOY_QUERIES}")),
        "llm": ToyRow((f"{_COND}=reasonaudio.models.conditioners.MLLMTextOnlyQueryConditioner",
                       f"{_COND}.init_args.model={{mllm}}", f"{_COND}.init_args.out_dim=64",
                       f"{_COND}.init_args.num_queries={TOY_QUERIES}")),
        "clip_llm": ToyRow((f"{_COND}=reasonaudio.models.conditioners.CLIPLLMConditioner",
                            f"{_COND}.init_args.clip=reasonaudio.models.conditioners.CLIPConditioner",
                            f"{_COND}.init_args.clip.init_args.model={{clip}}",
                            f"{_COND}.init_args.clip.init_args.out_dim=64",
                            f"{_COND}.init_args.clip.init_args.num_frames={{frames}}",
                            f"{_COND}.init_args.clip.init_args.num_tokens={TOY_QUERIES}",
                            f"{_COND}.init_args.llm=reasonaudio.models.conditioners.MLLMTextOnlyQueryConditioner",
                            f"{_COND}.init_args.llm.init_args.model={{mllm}}",
                            f"{_COND}.init_args.llm.init_args.out_dim=64",
                            f"{_COND}.init_args.llm.init_args.num_queries={TOY_QUERIES}")),
        "omni": ToyRow((f"{_COND}=reasonaudio.models.conditioners.OmniThinkerQueryConditioner",
                        f"{_COND}.init_args.model={{omni}}", f"{_COND}.init_args.out_dim=64",
                        f"{_COND}.init_args.num_queries={TOY_QUERIES}"))},
    # Table 8 is one model read with two text formats (the paper's two test sets): here its captions or labels
    "table8": {"think": ToyRow(), "vggsound": ToyRow(eval_data=("--data.init_args.text=label",))},
    "table9": {f"q{n}": ToyRow(() if n == TOY_QUERIES else (f"{_COND}.init_args.num_queries={n}",))
               for n in (128, 77, 64, 32)},
    "table10": {"small": ToyRow()},
}
"""Each paper row's toy counterpart (a test checks every row of :data:`TABLES` has one)."""
TOY_METRICS = ("desync", "onset_f1", "timbre_agreement")
"""Metrics every toy evaluation adds: DeSync by the demo's trained tiny Synchformer, and the synthetic
ground truth's onset F1 and timbre agreement."""


def paper_value(row: Row, metric: str) -> float | None:
    return row.paper.get("is_" if metric == "is" else metric)


def read_results(path: str | Path) -> dict[str, float | str]:
    """The first row of a GenerationMetrics ``results.csv``: metric → float, or the reason it has no value."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no results row")
    out: dict[str, float | str] = {}
    for key, cell in rows[0].items():
        if key == "model":
            continue
        try:
            out[key] = float(cell)
        except ValueError:
            out[key] = cell
    return out


def clap_checkpoint(eval_config: str) -> str:
    """The CLAP model and weights an eval config scores with (``not configured`` when it has none)."""
    config = yaml.safe_load((PAPER_DIR / eval_config).read_text())
    for callback in config["trainer"]["callbacks"]:
        clap = (callback.get("init_args") or {}).get("metrics", {}).get("clap")
        if clap:
            name = "MS-CLAP 2023" if clap["class_path"].endswith("MSCLAPScore") else "LAION-CLAP"
            files = ", ".join(str(v) for k, v in clap.get("init_args", {}).items() if k in ("weights", "model"))
            return f"{name} ({files})"
    return "not configured"


def _cell(value: float | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return "n/a" if math.isnan(value) else f"{value:.3g}" if abs(value) >= 10 else f"{value:.2f}"


def to_markdown(name: str, ours: Mapping[str, Mapping[str, float | str]], checkpoints: Mapping[str, str],
                extra: Sequence[str] = (), heading: str = "") -> str:
    """The table: per row the paper's value and ours for every metric (then ours for the ``extra`` metrics),
    the checkpoint, the CLAP checkpoint; ``heading`` is added to the title."""
    table = TABLES[name]
    extra = [m for m in extra if m not in table.metrics]
    header = ["model"] + [f"{TITLES[m]} {side}" for m in table.metrics for side in ("paper", "ours")]
    header += [f"{TITLES.get(m, m)} ours" for m in extra] + ["checkpoint", "CLAP checkpoint"]
    lines = [f"### {table.title} ({table.source}){heading}", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for key, row in table.rows.items():
        results = ours.get(key)
        ours_cell = lambda m: "not run" if results is None else _cell(results.get(m, "not configured"))  # noqa: E731
        cells = [row.label]
        for m in table.metrics:
            cells += [_cell(paper_value(row, m)), ours_cell(m)]
        cells += [ours_cell(m) for m in extra] + [checkpoints.get(key, "—"), clap_checkpoint(row.eval_config)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def validate_args(name: str, key: str, ckpt: Path, out: Path, extra: Sequence[str] = ()) -> list[str]:
    """``reasonaudio validate`` of one row: the row's eval config and overlay, logging under ``out``."""
    row = TABLES[name].rows[key]
    return ["validate", "--config", str(PAPER_DIR / row.eval_config), *row.overlay, f"--ckpt_path={ckpt}",
            f"--trainer.logger.init_args.save_dir={out}", *extra]


def newest_results(folder: Path) -> Path:
    """The newest ``results.csv`` under ``folder``."""
    found = sorted(folder.rglob("results.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no results.csv under {folder}: the evaluation wrote no table (GenerationMetrics "
                                "table: true)")
    return found[-1]


def demo_caches(demo: Path) -> list[str]:
    """The data overrides that point a feature data module at the demo's training and held-out caches."""
    layout = DemoLayout(demo)
    return [f"--data.init_args.train=[{layout.features_corpus}]", f"--data.init_args.val=[{layout.features_heldout}]"]


def demo_settings(demo: Path) -> dict:
    """The settings of a finished ``make demo`` folder, after checking the artifacts a toy run reads."""
    layout = DemoLayout(demo)
    state = layout.steps
    needed = [state, layout.features_corpus, layout.features_heldout, layout.heldout, layout.mllm, layout.vae,
              layout.vocoder]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise SystemExit(f"paper_tables --toy: {missing[0]} not found (and {len(missing) - 1} more): run `make demo` "
                         "first (or pass --demo)")
    return json.loads(state.read_text())["_settings"]


def toy_train_args(row: ToyRow, demo: Path, folders: Mapping[str, object], steps: int, seed: int,
                   duration: float) -> list[str]:
    """``fit`` of ``pretrain.yaml`` for a toy row on the demo's caches (``{tmp}``: the run's folder)."""
    replaces_class = any(a.startswith(f"{_COND}=") for a in row.conditioner)
    base = [] if replaces_class else [f"{_COND}.init_args.model={folders['mllm']}",
                                      f"{_COND}.init_args.num_queries={TOY_QUERIES}"]
    return ["fit", "--config", str(CONFIG_DIR / "pretrain.yaml"), f"--seed_everything={seed}",
            f"--trainer.max_steps={steps}", "--trainer.limit_val_batches=0", "--trainer.accelerator=cpu",
            "--trainer.log_every_n_steps=5", "--trainer.logger.init_args.save_dir={tmp}",
            "--trainer.logger.init_args.name=pretrain", "--trainer.callbacks.init_args.export={tmp}/export",
            f"--audio.duration={duration}", *base,
            *(a.format(**folders) for a in row.conditioner), *demo_caches(demo)]


def toy_validate_args(name: str, key: str, ckpt: Path, out: Path, demo: Path, duration: float) -> list[str]:
    """The row's ``validate`` (its paper eval config and overlay, :func:`validate_args`) pointed at the demo:
    its audio shape (``duration`` s, ``tiny`` preset), tiny codec, held-out caches and clips, CPU fp32, plus
    :data:`TOY_METRICS`."""
    row, metrics, layout = TOY[name][key], "--trainer.callbacks.init_args.metrics", DemoLayout(demo)
    sync = layout.sync_weights
    desync = ([f"{metrics}.desync.class_path=reasonaudio.metrics.desync.DeSync",
               f"{metrics}.desync.init_args.synchformer={sync}"] if sync.is_file() else [])
    return [*validate_args(name, key, ckpt, out), f"--audio.duration={duration}", "--audio.preset=tiny",
            "--trainer.callbacks.init_args.vae=reasonaudio.models.vae.mel_vae_tiny",
            f"--trainer.callbacks.init_args.vae_checkpoint={layout.vae}",
            f"--trainer.callbacks.init_args.vocoder={layout.vocoder}",
            f"--trainer.callbacks.init_args.corpora=[{layout.heldout}]",
            *desync, f"{metrics}.onset_f1.class_path=reasonaudio.metrics.synthetic.OnsetF1",
            f"{metrics}.timbre_agreement.class_path=reasonaudio.metrics.synthetic.TimbreAgreement",
            *demo_caches(demo), "--data.init_args.batch_size=8", "--data.init_args.num_workers=0",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1", "--trainer.precision=32", *row.eval_data]


def run_toy(name: str, demo: Path, out: Path, steps: int, seed: int = 0) -> str:
    """Smoke-run a table at toy scale (module docstring); returns its Markdown, also written to ``<out>/<name>.md``."""
    layout = DemoLayout(demo)
    duration = float(demo_settings(demo)["duration"])
    pipe = Pipeline(out, {"demo": str(demo), "steps": steps, "seed": seed}, tag="paper_tables")
    folders: dict[str, object] = {"mllm": layout.mllm, "frames": max(1, round(2 * duration))}
    rows = TOY[name]
    needed = {f for row in rows.values() for arg in row.conditioner for f in re.findall(r"{(\w+)}", arg)}
    for folder, write in (("clip", write_tiny_clip), ("omni", write_tiny_qwen_omni_thinker)):
        if folder in needed:  # tiny random models whose vocabulary covers the demo's captions
            pipe.step(folder, lambda tmp, write=write: {"folder": str(write(tmp, corpus_captions(layout)))})
            folders[folder] = out / folder
    ours: dict[str, dict[str, float | str]] = {}
    checkpoints: dict[str, str] = {}
    started = time.perf_counter()
    for key, row in rows.items():
        if row.skip:
            checkpoints[key] = f"not run: {row.skip}"
            continue
        train = toy_train_args(row, demo, folders, steps, seed, duration)
        model = "model_" + hashlib.sha1("\0".join(train).encode()).hexdigest()[:12]
        pipe.step(model, lambda tmp, train=train: run_cli([a.replace("{tmp}", str(tmp)) for a in train]) or
                  {"args": train})
        ckpt = fit_checkpoint(out / model, "pretrain")
        evaluation = pipe.step(f"{name}_{key}", lambda tmp, key=key, ckpt=ckpt: (
            run_cli(toy_validate_args(name, key, ckpt, tmp, demo, duration)) or
            {"results": read_results(newest_results(tmp))}))
        ours[key], checkpoints[key] = evaluation["results"], str(ckpt)
    minutes = (time.perf_counter() - started) / 60
    desync = ("DeSync here is the demo's trained tiny Synchformer" if layout.sync_weights.parent.is_dir()
              else "the demo trained no Synchformer, so DeSync needs the released one")
    note = (f"\nToy scale (a wiring check, not comparable with the paper): the synthetic corpus of `{demo}` "
            f"({duration:g} s clips), every row a `dit_tiny` trained {steps} steps from seed {seed} with its own "
            f"conditioner ({TOY_QUERIES} queries on the tiny MLLM unless the row replaces it), evaluated on the "
            "demo's held-out clips by the row's paper eval config with the tiny codec. FD, KL, IS, CLAP and IB need "
            f"the released backbones' weights; {desync}; onset F1 and timbre agreement are scored against the "
            f"synthetic ground truth. This run: {minutes:.1f} min "
            "(rows finished by an earlier run are reused).\n")
    text = to_markdown(name, ours, checkpoints, TOY_METRICS, heading=" — toy smoke run") + note
    (out / f"{name}.md").write_text(text)
    return text


def _pairs(items: Sequence[str], table: Table, option: str) -> dict[str, Path]:
    out = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or key not in table.rows:
            raise SystemExit(f"paper_tables: {option} {item!r}: expected ROW=PATH with ROW in {list(table.rows)}")
        out[key] = Path(path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="paper_tables", description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=sorted(TABLES))
    parser.add_argument("--ckpt", action="append", default=[], metavar="ROW=PATH", help="evaluate this checkpoint")
    parser.add_argument("--results", action="append", default=[], metavar="ROW=CSV",
                        help="an existing evaluation's results.csv for this row")
    parser.add_argument("--out", type=Path, default=Path("runs/paper_tables"))
    parser.add_argument("--toy", action="store_true",
                        help="smoke-run every row at toy scale on a finished `make demo` (writes <out>/toy/<table>.md)")
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"), help="the demo folder a --toy run reads")
    parser.add_argument("--toy-steps", type=int, default=800, help="training steps of every toy row")
    args = parser.parse_args(argv)
    if args.toy:
        if args.ckpt or args.results or extra:
            raise SystemExit("paper_tables: --toy trains and evaluates its own rows; it takes no --ckpt, --results "
                             "or extra arguments")
        print(run_toy(args.table, args.demo, args.out / "toy", args.toy_steps), flush=True)
        return 0
    table = TABLES[args.table]
    ckpts, given = _pairs(args.ckpt, table, "--ckpt"), _pairs(args.results, table, "--results")
    ours, checkpoints = {}, {}
    for key, ckpt in ckpts.items():
        folder = args.out / args.table / key
        run_cli(validate_args(args.table, key, ckpt, folder, extra))
        ours[key], checkpoints[key] = read_results(newest_results(folder)), str(ckpt)
    for key, path in given.items():
        ours[key], checkpoints[key] = read_results(path), f"(results {path})"
    text = to_markdown(args.table, ours, checkpoints)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.table}.md").write_text(text)
    print(text + f"\nwritten to {args.out / f'{args.table}.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
