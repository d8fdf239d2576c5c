"""`make paper-table<N>`: the paper's numbers as copied, and the Markdown table beside ours from real results files."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from reasonaudio.experiments.paper_tables import (PAPER_DIR, TABLES, TOY, main, paper_value, toy_train_args,
                                                  validate_args)
from reasonaudio.metrics.table import columns, write_tables

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "000_7e94c07eda9983a6.txt"


def test_paper_numbers_are_the_papers_rows():
    """Every row's values appear, in the table's column order, on a line of the paper text that starts with the row's
    label (underline markup removed)."""
    if not PAPER.is_file():
        pytest.skip(f"paper text not found: {PAPER}")
    lines = [re.sub(r"</?u>", "", line).split("\t") for line in PAPER.read_text().splitlines()]
    for name, table in TABLES.items():
        for row in table.rows.values():
            want = [paper_value(row, m) for m in table.metrics]
            hits = [cells for cells in lines if cells[0].strip() == row.label
                    and all(f"{v:g}" in [f"{float(c):g}" for c in cells[1:] if re.fullmatch(r"[\d.]+", c.strip())]
                            for v in want if v is not None)]
            assert hits, (name, row.label, want)


def test_every_row_evaluates_with_an_existing_paper_config():
    for name, table in TABLES.items():
        for key, row in table.rows.items():
            args = validate_args(name, key, Path("x.ckpt"), Path("out"))
            assert args[:3] == ["validate", "--config", str(PAPER_DIR / row.eval_config)] and Path(args[2]).is_file()
            assert all(Path(a).is_file() for a in args if a.endswith(".yaml")), (name, key)


def test_table_writes_paper_beside_ours_from_results_files(tmp_path, capsys):
    """Results written by the evaluation's own writer (metrics.table) for two of Table 5's rows; the others not run."""
    ours = {"mllm": {"fd": 3.25, "kl": 1.5, "clap": 0.125, "ib": "weights not found: weights/imagebind_huge.pth"},
            "clip": {"fd": 4.5, "clap": 0.0625, "ib": 0.03}}
    args = ["table5", "--out", str(tmp_path / "tables")]
    for key, cells in ours.items():
        _, csv = write_tables(tmp_path / key, {"ckpt": cells}, columns(list(cells)))
        args += ["--results", f"{key}={csv}"]
    assert main(args) == 0
    md = (tmp_path / "tables" / "table5.md").read_text()
    assert md == capsys.readouterr().out.split("\nwritten to")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in md.splitlines() if line.startswith("| ")}
    assert rows["ReasonAudio"][1:7] == ["2.09", "3.25", "0.28", "0.12", "0.32",
                                        "weights not found: weights/imagebind_huge.pth"]
    assert rows["CLIP"][1:7] == ["1.92", "4.50", "0.24", "0.06", "0.25", "0.03"]
    assert rows["LLM"][1:7] == ["2.11", "not run", "0.27", "not run", "—", "not run"]
    assert rows["ReasonAudio"][7].startswith("(results ") and rows["LLM"][7] == "—"
    assert all(r[8].startswith("MS-CLAP 2023 (weights/msclap/CLAP_weights_2023.pth") for k, r in rows.items()
               if k != "model")
    assert "paper Table 5" in md


def test_unknown_row_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="ROW=PATH with ROW in"):
        main(["table2", "--ckpt", "medium=x.ckpt", "--out", str(tmp_path)])


@pytest.mark.parametrize("table, row, net, conditioner, out_dim, queries", [
    ("table2", "large", "dit_l", "MLLMQueryConditioner", 896, 77),
    ("table9", "q32", "dit_s", "MLLMQueryConditioner", 448, 32),
    ("table5", "clip", "dit_s", "CLIPConditioner", 448, None)])
def test_row_overlays_compose_with_the_eval_config(table, row, net, conditioner, out_dim, queries, monkeypatch):
    """A row's validate command line (without the checkpoint) resolves to the row's model."""
    import contextlib
    import io
    import sys

    import yaml

    from reasonaudio.cli import main as cli_main

    monkeypatch.setattr(sys, "argv", ["reasonaudio"])
    args = [a for a in validate_args(table, row, Path("x.ckpt"), Path("out")) if not a.startswith("--ckpt_path")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli_main([*args, "--print_config"])
    model = yaml.safe_load(out.getvalue())["model"]["init_args"]
    assert model["net"]["class_path"] == f"reasonaudio.models.dit.{net}"
    assert model["conditioner"]["class_path"] == f"reasonaudio.models.conditioners.{conditioner}"
    assert model["conditioner"]["init_args"].get("out_dim") == out_dim
    assert model["conditioner"]["init_args"].get("num_queries") == queries


def test_every_row_has_a_toy_counterpart_or_says_why_not():
    for name, table in TABLES.items():
        assert set(TOY[name]) == set(table.rows), name
    assert [k for t in TOY.values() for k, r in t.items() if r.skip] == ["large", "large"]  # one toy model size


@pytest.mark.parametrize("table, row, conditioner, queries", [
    ("table5", "mllm", "MLLMQueryConditioner", 77), ("table9", "q32", "MLLMQueryConditioner", 32),
    ("table5", "clip", "CLIPConditioner", None), ("table5", "llm", "MLLMTextOnlyQueryConditioner", 77),
    ("table5", "clip_llm", "CLIPLLMConditioner", None), ("table5", "omni", "OmniThinkerQueryConditioner", 77)])
def test_toy_rows_resolve_to_their_conditioner(table, row, conditioner, queries, monkeypatch):
    """A toy row's `fit` command line resolves to the row's conditioner on the tiny model folders."""
    import contextlib
    import io
    import sys

    import yaml

    from reasonaudio.cli import main as cli_main

    monkeypatch.setattr(sys, "argv", ["reasonaudio"])
    folders = {"mllm": "runs/demo/mllm", "clip": "toy/clip", "omni": "toy/omni", "frames": 8}
    args = [a.replace("{tmp}", "out") for a in toy_train_args(TOY[table][row], Path("runs/demo"), folders, 300, 0, 4.0)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli_main([*args, "--print_config"])
    config = yaml.safe_load(out.getvalue())
    cond = config["model"]["init_args"]["conditioner"]
    assert cond["class_path"] == f"reasonaudio.models.conditioners.{conditioner}"
    assert cond["init_args"].get("num_queries") == queries and config["trainer"]["max_steps"] == 300
    assert config["audio"]["duration"] == 4.0  # the run's shape, given to the net (and every class) when it is built
    if conditioner == "CLIPLLMConditioner":
        clip, llm = cond["init_args"]["clip"], cond["init_args"]["llm"]
        assert (clip["init_args"]["model"], clip["init_args"]["num_frames"], clip["init_args"]["num_tokens"]) == (
            "toy/clip", 8, 77)
        assert llm["init_args"]["model"] == "runs/demo/mllm" and llm["init_args"]["num_queries"] == 77
    elif conditioner != "CLIPConditioner":
        assert cond["init_args"]["model"] == {"omni": "toy/omni"}.get(row, "runs/demo/mllm")


def test_toy_run_takes_no_checkpoints_and_needs_a_demo(tmp_path):
    with pytest.raises(SystemExit, match="takes no --ckpt"):
        main(["table2", "--toy", "--ckpt", "small=x.ckpt", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="steps.json not found .*run `make demo` first"):
        main(["table2", "--toy", "--demo", str(tmp_path / "nothing"), "--out", str(tmp_path)])
