"""Results tables shaped like the paper's Table 2, in Markdown and CSV.

Columns are metric names in a fixed order: the paper's Table 2 first (FD, KL, IS, CLAP, IB, DeSync),
then any others (the synthetic-benchmark metrics). A cell holds the metric's value, or the reason it
has none (``weights not found: weights/imagebind_huge.pth``, ``not configured``, ``no scorable
clips``), so a missing model never hides a column or crashes an evaluation.

Markdown cells round to 3 decimals; CSV cells keep full precision (``repr`` of the float).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Mapping, Sequence

TABLE_2 = ("fd", "kl", "is", "clap", "ib", "desync")
"""Table 2's objective columns, in the paper's order."""

TITLES = {"fd": "FD (↓)", "kl": "KL (↓)", "is": "IS (↑)", "clap": "CLAP (↑)", "ib": "IB (↑)", "desync": "DeSync (↓)",
          "onset_error": "Onset error s (↓)", "onset_f1": "Onset F1 (↑)", "offscreen_presence": "Off-screen (↑)",
          "timbre_agreement": "Timbre (↑)"}
"""Column headers of known metric names (others use the name itself)."""

Cell = float | str


def columns(metrics: Sequence[str]) -> list[str]:
    """Table 2's columns, then the other metric names in their given order."""
    return [*TABLE_2, *(m for m in metrics if m not in TABLE_2)]


def _markdown_cell(value: Cell) -> str:
    if isinstance(value, str):
        return value
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def to_markdown(rows: Mapping[str, Mapping[str, Cell]], metric_columns: Sequence[str]) -> str:
    """A Markdown table: one row per model, one column per metric (missing cells: ``not configured``)."""
    header = ["model", *(TITLES.get(c, c) for c in metric_columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, cells in rows.items():
        values = [_markdown_cell(cells.get(c, "not configured")) for c in metric_columns]
        lines.append("| " + " | ".join([model, *values]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Mapping[str, Mapping[str, Cell]], metric_columns: Sequence[str]) -> str:
    """The same table as CSV, with metric names as headers and full-precision numbers."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model", *metric_columns])
    for model, cells in rows.items():
        writer.writerow([model, *(v if isinstance(v := cells.get(c, "not configured"), str) else repr(float(v))
                                  for c in metric_columns)])
    return out.getvalue()


def write_tables(folder: str | Path, rows: Mapping[str, Mapping[str, Cell]], metric_columns: Sequence[str],
                 stem: str = "results") -> tuple[Path, Path]:
    """Write ``<folder>/<stem>.md`` and ``<folder>/<stem>.csv``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md, cs = folder / f"{stem}.md", folder / f"{stem}.csv"
    md.write_text(to_markdown(rows, metric_columns))
    cs.write_text(to_csv(rows, metric_columns))
    return md, cs
