"""`make paper-table<N>`: evaluate checkpoints with the paper's eval configs and write the paper's table beside ours.

    python -m reasonaudio.experiments.paper_tables table2 --ckpt small=PATH [--ckpt large=PATH]
        [--results ROW=results.csv ...] [--out runs/paper_tables] [-- extra `reasonaudio validate` arguments]

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
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from reasonaudio.cli import CONFIG_DIR

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

TITLES = {"fd": "FD ↓", "kl": "KL ↓", "is": "IS ↑", "clap": "CLAP ↑", "ib": "IB ↑", "desync": "DeSync ↓"}


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


def to_markdown(name: str, ours: Mapping[str, Mapping[str, float | str]], checkpoints: Mapping[str, str]) -> str:
    """The table: per row the paper's value and ours for every metric, the checkpoint, the CLAP checkpoint."""
    table = TABLES[name]
    header = ["model"] + [f"{TITLES[m]} {side}" for m in table.metrics for side in ("paper", "ours")]
    header += ["checkpoint", "CLAP checkpoint"]
    lines = [f"### {table.title} ({table.source})", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for key, row in table.rows.items():
        results = ours.get(key)
        cells = [row.label]
        for m in table.metrics:
            cells += [_cell(paper_value(row, m)),
                      "not run" if results is None else _cell(results.get(m, "not configured"))]
        cells += [checkpoints.get(key, "—"), clap_checkpoint(row.eval_config)]
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


def _pairs(items: Sequence[str], table: Table, option: str) -> dict[str, Path]:
    out = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or key not in table.rows:
            raise SystemExit(f"paper_tables: {option} {item!r}: expected ROW=PATH with ROW in {list(table.rows)}")
        out[key] = Path(path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from reasonaudio.experiments.post_train_compare import run_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="paper_tables", description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=sorted(TABLES))
    parser.add_argument("--ckpt", action="append", default=[], metavar="ROW=PATH", help="evaluate this checkpoint")
    parser.add_argument("--results", action="append", default=[], metavar="ROW=CSV",
                        help="an existing evaluation's results.csv for this row")
    parser.add_argument("--out", type=Path, default=Path("runs/paper_tables"))
    args = parser.parse_args(argv)
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
