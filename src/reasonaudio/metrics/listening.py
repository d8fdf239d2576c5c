"""Subjective evaluation kit: a static MOS listening-test page and the aggregation of its ratings.

``reasonaudio-metrics listening-test --clips DIR --out DIR`` builds a self-contained folder that can be
opened from disk (``file://``) or put on any static host — no server code:

- ``clips/item_NNN.mp4``: every clip (video with its audio) copied (or, with ``--link``, symlinked)
  under an anonymous name, so neither the page nor the file names reveal the system;
- ``index.html``: the page. Each clip is shown with two sliders on the paper's 20–100 scale
  (Appendix G): MOS-Q, "focus on examining the audio quality and naturalness", and MOS-F, "does the
  audio align with the video faithfully?" (anchors *somewhat*, *mostly*, *completely*). A slider
  counts as rated only once it has been moved. "Download ratings" saves a CSV (and shows it for
  copy-paste) once a rater id is entered and every clip has both ratings;
- ``key.csv``: which system and clip each item is (keep it away from raters);
- ``listening.json``: the settings that made the folder (seed, test id, sources).

Order. Items are numbered in an order shuffled with ``--seed``; each rater then sees them in an order
drawn from a per-session seed (from ``?seed=N`` in the URL, else random), shuffled by a seeded
Fisher–Yates with the mulberry32 generator. The seed is shown on the page and written into every CSV
row, and :func:`presentation_order` reproduces the order in Python.

``reasonaudio-metrics mos RATINGS.csv... --key key.csv`` joins ratings with the key and reports, per
system, the mean of all ratings (raters × clips) of MOS-Q and MOS-F with a 95 % t-interval
(``mean ± t(0.975, n − 1) · sd / √n``, sd with n − 1) — what §5.3 of the paper reports. Appendix G
instead says "mean ± standard deviation"; the table therefore lists the SD too.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import html
import json
import math
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from scipy import stats

from reasonaudio.media import MediaError, probe

SCALE = (20, 100)
"""The paper's rating scale (Appendix G)."""
RATING_COLUMNS = ("test_id", "rater", "order_seed", "position", "item", "mos_q", "mos_f", "submitted_at")
"""Columns of the CSV the page exports, in order."""
KEY_COLUMNS = ("test_id", "item", "system", "clip", "source")


# --------------------------------------------------------------------------- order


def mulberry32(seed: int):
    """The 32-bit generator the page uses: yields floats in [0, 1) (JavaScript's mulberry32, bit for bit)."""
    state = seed & 0xFFFFFFFF
    while True:
        state = (state + 0x6D2B79F5) & 0xFFFFFFFF
        t = state
        t = ((t ^ (t >> 15)) * (t | 1)) & 0xFFFFFFFF
        t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & 0xFFFFFFFF)) & 0xFFFFFFFF
        yield ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296


def presentation_order(n: int, seed: int) -> list[int]:
    """Indices ``0..n-1`` in the order the page shows them for ``seed`` (Fisher–Yates from the end)."""
    order, rng = list(range(n)), mulberry32(seed)
    for i in range(n - 1, 0, -1):
        j = math.floor(next(rng) * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order


# --------------------------------------------------------------------------- page


@dataclass(frozen=True)
class Clip:
    """One clip of one system."""

    system: str
    clip: str
    source: Path


def find_clips(folder: Path) -> list[Clip]:
    """``DIR/<system>/<clip>.mp4`` (one subfolder per system), or ``DIR/<clip>.mp4`` for a single system.

    Raises:
        ValueError: no clips, or mp4 files both at the top and in subfolders.
    """
    if not folder.is_dir():
        raise ValueError(f"clips folder not found: {folder}")
    top = sorted(p for p in folder.glob("*.mp4") if p.is_file())
    nested = sorted(p for p in folder.glob("*/*.mp4") if p.is_file())
    if top and nested:
        raise ValueError(f"{folder}: put every system's mp4s in its own subfolder (found mp4s at the top and in "
                         f"subfolders, e.g. {top[0].name} and {nested[0].relative_to(folder)})")
    if not top and not nested:
        raise ValueError(f"{folder}: no .mp4 clips (expected {folder}/<system>/<clip>.mp4)")
    if top:
        return [Clip(folder.name, p.stem, p) for p in top]
    return [Clip(p.parent.name, p.stem, p) for p in nested]


def _check_media(clips: Sequence[Clip]) -> None:
    """Every clip must decode as a video with an audio track; all problems are reported at once."""
    bad = []
    for c in clips:
        try:
            info = probe(c.source)
        except MediaError as e:
            bad.append(f"{c.source}: {e.reason}")
            continue
        if info.video is None or info.audio is None:
            bad.append(f"{c.source}: {'no video stream' if info.video is None else 'no audio stream'}")
    if bad:
        raise ValueError("clips that cannot be rated:\n  " + "\n  ".join(bad))


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 60rem; margin: 1rem auto; padding: 0 1rem; }}
.item {{ border: 1px solid #ccc; border-radius: 6px; padding: .8rem; margin: 1rem 0; }}
.item video {{ width: 100%; max-height: 24rem; background: #000; }}
.scale {{ display: grid; grid-template-columns: 9rem 1fr 6rem; align-items: center; gap: .6rem; margin: .4rem 0; }}
.scale input {{ width: 100%; }}
.anchors {{ display: flex; justify-content: space-between; font-size: .8rem; color: #555; grid-column: 2; }}
.unrated {{ color: #b00; }}
#status {{ font-weight: bold; }}
textarea {{ width: 100%; height: 8rem; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>Watch each clip with sound (headphones recommended) and rate it twice on a scale from {lo} to {hi}:</p>
<ul>
<li><b>MOS-Q (audio quality)</b>: focus on examining the audio quality and naturalness.</li>
<li><b>MOS-F (audio–video fit)</b>: does the audio align with the video faithfully? From <i>somewhat</i>
({lo}) through <i>mostly</i> to <i>completely</i> ({hi}).</li>
</ul>
<p>A rating counts once its slider has been moved. When every clip has both ratings, enter your rater id and
download your ratings.</p>
<p>Rater id: <input id="rater" type="text" autocomplete="off"> &nbsp; Order seed: <span id="seed"></span></p>
<div id="items"></div>
<p id="status"></p>
<p><button id="export" type="button">Download ratings (CSV)</button></p>
<textarea id="csv" readonly
  placeholder="Your ratings appear here after the download (copy them if the download is blocked)."></textarea>
<script>
const TEST_ID = {test_id};
const ITEMS = {items};
const LO = {lo}, HI = {hi};
function mulberry32(a) {{
  return function() {{
    a = (a + 0x6D2B79F5) | 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }};
}}
function order(n, seed) {{
  const idx = [...Array(n).keys()], rnd = mulberry32(seed);
  for (let i = n - 1; i > 0; i--) {{ const j = Math.floor(rnd() * (i + 1)); [idx[i], idx[j]] = [idx[j], idx[i]]; }}
  return idx;
}}
const urlSeed = new URLSearchParams(window.location.search).get("seed");
const SEED = urlSeed !== null && /^\\d+$/.test(urlSeed) ? Number(urlSeed) >>> 0
  : crypto.getRandomValues(new Uint32Array(1))[0];
document.getElementById("seed").textContent = SEED;
const ORDER = order(ITEMS.length, SEED).map(i => ITEMS[i]);
const ratings = {{}};
function slider(item, kind, label, anchors) {{
  const row = document.createElement("div"); row.className = "scale";
  const name = document.createElement("span"); name.textContent = label;
  const input = document.createElement("input");
  Object.assign(input, {{type: "range", min: LO, max: HI, step: 1, value: (LO + HI) / 2}});
  input.id = item.item + "-" + kind; input.dataset.item = item.item; input.dataset.kind = kind;
  const shown = document.createElement("span"); shown.className = "unrated"; shown.textContent = "not rated";
  input.addEventListener("input", () => {{
    ratings[item.item][kind] = Number(input.value); shown.className = ""; shown.textContent = input.value; update();
  }});
  row.append(name, input, shown);
  if (anchors) {{
    const a = document.createElement("div"); a.className = "anchors";
    for (const word of anchors) {{ const s = document.createElement("span"); s.textContent = word; a.append(s); }}
    row.append(document.createElement("span"), a);
  }}
  return row;
}}
ORDER.forEach((item, position) => {{
  ratings[item.item] = {{mos_q: null, mos_f: null}};
  const box = document.createElement("div"); box.className = "item"; box.id = "box-" + item.item;
  const head = document.createElement("h3"); head.textContent = "Clip " + (position + 1) + " of " + ORDER.length;
  const video = document.createElement("video");
  Object.assign(video, {{controls: true, preload: "metadata", src: item.file}});
  box.append(head, video, slider(item, "mos_q", "MOS-Q (quality)", null),
             slider(item, "mos_f", "MOS-F (fit)", ["somewhat", "mostly", "completely"]));
  document.getElementById("items").append(box);
}});
function missing() {{
  return ORDER.filter(it => ratings[it.item].mos_q === null || ratings[it.item].mos_f === null);
}}
function update() {{
  const done = ORDER.length - missing().length;
  document.getElementById("status").textContent = done + " of " + ORDER.length + " clips rated";
}}
function csvText(rater) {{
  const when = new Date().toISOString(), q = s => /[",\\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  const rows = [{columns}.join(",")];
  ORDER.forEach((it, position) => rows.push([TEST_ID, q(rater), SEED, position + 1, it.item,
    ratings[it.item].mos_q, ratings[it.item].mos_f, when].join(",")));
  return rows.join("\\n") + "\\n";
}}
document.getElementById("export").addEventListener("click", () => {{
  const rater = document.getElementById("rater").value.trim(), left = missing();
  if (!rater) {{ document.getElementById("status").textContent = "Enter your rater id first."; return; }}
  if (left.length) {{
    document.getElementById("status").textContent = left.length + " clips still need both ratings: clip " +
      left.map(it => ORDER.indexOf(it) + 1).join(", clip ");
    return;
  }}
  const text = csvText(rater);
  document.getElementById("csv").value = text;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], {{type: "text/csv"}}));
  a.download = "ratings_" + rater.replace(/[^A-Za-z0-9_-]/g, "_") + "_" + TEST_ID + ".csv";
  document.body.append(a); a.click(); a.remove();
  document.getElementById("status").textContent = "Ratings downloaded (" + a.download + "). Thank you!";
}});
update();
</script>
</body>
</html>
"""


def build_page(clips_dir: str | Path, out_dir: str | Path, seed: int = 0, title: str = "Listening test",
               link: bool = False) -> Path:
    """Write the listening-test folder (module docstring); returns the path of ``index.html``.

    Raises:
        ValueError: no clips, a clip without video or audio, or an output folder that is not empty.
    """
    clips_dir, out = Path(clips_dir).resolve(), Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output folder is not empty: {out} (a listening test is never overwritten)")
    clips = find_clips(clips_dir)
    _check_media(clips)
    random.Random(seed).shuffle(clips)
    digest = hashlib.sha1(json.dumps([[c.system, c.clip] for c in clips] + [seed]).encode()).hexdigest()[:12]
    test_id = f"lt-{digest}"
    (out / "clips").mkdir(parents=True)
    width = max(3, len(str(len(clips))))
    items, key_rows = [], []
    for n, c in enumerate(clips, start=1):
        item = f"item_{n:0{width}d}"
        target = out / "clips" / f"{item}.mp4"
        if link:
            os.symlink(c.source, target)
        else:
            shutil.copy2(c.source, target)
        items.append({"item": item, "file": f"clips/{item}.mp4"})
        key_rows.append({"test_id": test_id, "item": item, "system": c.system, "clip": c.clip, "source": str(c.source)})
    with (out / "key.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, KEY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(key_rows)
    page = _PAGE.format(title=html.escape(title), lo=SCALE[0], hi=SCALE[1], test_id=json.dumps(test_id),
                        items=json.dumps(items), columns=json.dumps(list(RATING_COLUMNS)))
    (out / "index.html").write_text(page, encoding="utf-8")
    (out / "listening.json").write_text(json.dumps(
        {"test_id": test_id, "seed": seed, "title": title, "clips": str(clips_dir), "link": link,
         "items": len(items), "systems": sorted({c.system for c in clips})}, indent=2) + "\n")
    return out / "index.html"


def listening_test_main(argv: Sequence[str] | None = None) -> int:
    """``reasonaudio-metrics listening-test --clips DIR --out DIR [--seed N] [--title T] [--link]``."""
    p = argparse.ArgumentParser(prog="reasonaudio-metrics listening-test",
                                description="Build a static MOS-Q / MOS-F listening-test page (no server needed).")
    p.add_argument("--clips", required=True, type=Path, help="DIR/<system>/<clip>.mp4 (or DIR/<clip>.mp4)")
    p.add_argument("--out", required=True, type=Path, help="new folder for index.html, clips/ and key.csv")
    p.add_argument("--seed", type=int, default=0, help="seed of the item numbering (recorded in key.csv)")
    p.add_argument("--title", default="Listening test")
    p.add_argument("--link", action="store_true", help="symlink the clips instead of copying them")
    args = p.parse_args(argv)
    try:
        page = build_page(args.clips, args.out, args.seed, args.title, args.link)
    except ValueError as e:
        p.exit(2, f"error: {e}\n")
    print(f"listening test: {page} ({sum(1 for _ in (args.out / 'clips').iterdir())} clips); "
          f"keep {args.out / 'key.csv'} to aggregate the ratings with `reasonaudio-metrics mos`")
    return 0


# --------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class Summary:
    """Mean, SD, count and 95 % t-interval half-width of one system's ratings on one scale."""

    mean: float
    sd: float
    n: int
    ci95: float


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile (scipy)."""
    return float(stats.t.ppf(p, df))


def summarize(values: Sequence[float]) -> Summary:
    """Mean ± 95 % t-interval half-width (NaN with fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Summary(mean, float("nan"), n, float("nan"))
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(mean, sd, n, t_quantile(0.975, n - 1) * sd / math.sqrt(n))


def read_key(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """``(test_id, item)`` → key row."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(KEY_COLUMNS) - set(rows[0]):
        raise ValueError(f"{path}: not a listening-test key (columns {', '.join(KEY_COLUMNS)})")
    return {(r["test_id"], r["item"]): r for r in rows}


def read_ratings(paths: Sequence[Path], key: dict[tuple[str, str], dict[str, str]] | None
                 ) -> list[dict[str, str | float]]:
    """Ratings with their system; every problem names the file and the line.

    A file with a ``system`` column needs no key; otherwise each ``(test_id, item)`` must be in the key.
    A rater who rated the same item twice (two submissions) is an error, not an average.
    """
    out, seen = [], {}
    for path in paths:
        with Path(path).open(newline="") as f:
            reader = csv.DictReader(f)
            has_system = "system" in (reader.fieldnames or [])
            needed = {"rater", "item", "mos_q", "mos_f"} | (set() if has_system else {"test_id"})
            if reader.fieldnames is None or needed - set(reader.fieldnames):
                raise ValueError(f"{path}: missing columns {sorted(needed - set(reader.fieldnames or []))}")
            for line, row in enumerate(reader, start=2):
                where = f"{path}, line {line}"
                system = row.get("system")
                if not system:
                    if key is None:
                        raise ValueError(f"{where}: no system column; pass the test's key.csv with --key")
                    entry = key.get((row["test_id"], row["item"]))
                    if entry is None:
                        raise ValueError(f"{where}: item {row['item']!r} of test {row['test_id']!r} is not in the key")
                    system = entry["system"]
                scores = {}
                for column in ("mos_q", "mos_f"):
                    try:
                        scores[column] = float(row[column])
                    except (TypeError, ValueError):
                        raise ValueError(f"{where}, column {column!r}: expected a number, "
                                         f"got {row[column]!r}") from None
                    if not SCALE[0] <= scores[column] <= SCALE[1]:
                        raise ValueError(f"{where}, column {column!r}: {scores[column]:g} is outside "
                                         f"{SCALE[0]}–{SCALE[1]}")
                ident = (row.get("test_id", ""), row["rater"], row["item"])
                if ident in seen:
                    raise ValueError(f"{where}: rater {row['rater']!r} already rated item {row['item']!r} "
                                     f"({seen[ident]})")
                seen[ident] = where
                out.append({"system": system, "rater": row["rater"], **scores})
    if not out:
        raise ValueError("no ratings in " + ", ".join(map(str, paths)))
    return out


def aggregate(ratings: Sequence[dict[str, str | float]]) -> dict[str, dict[str, Summary | int]]:
    """Per system: MOS-Q and MOS-F summaries over all its ratings, and the number of raters."""
    systems: dict[str, dict[str, Summary | int]] = {}
    for system in sorted({r["system"] for r in ratings}):
        rows = [r for r in ratings if r["system"] == system]
        systems[system] = {"mos_q": summarize([r["mos_q"] for r in rows]),
                           "mos_f": summarize([r["mos_f"] for r in rows]),
                           "raters": len({r["rater"] for r in rows})}
    return systems


def _pm(s: Summary) -> str:
    return f"{s.mean:.1f} ± {s.ci95:.1f}" if s.n > 1 else f"{s.mean:.1f}"


def mos_table(result: dict[str, dict[str, Summary | int]]) -> str:
    """Markdown: mean ± 95 % CI (as the paper's tables), then SD and counts."""
    lines = ["| system | MOS-Q (↑) | MOS-F (↑) | SD Q | SD F | ratings | raters |", "|---|---|---|---|---|---|---|"]
    for system, r in result.items():
        q, f = r["mos_q"], r["mos_f"]
        lines.append(f"| {system} | {_pm(q)} | {_pm(f)} | {q.sd:.1f} | {f.sd:.1f} | {q.n} | {r['raters']} |")
    return "\n".join(lines) + "\n"


def mos_main(argv: Sequence[str] | None = None) -> int:
    """``reasonaudio-metrics mos RATINGS.csv... [--key key.csv] [--out results.csv]``."""
    p = argparse.ArgumentParser(prog="reasonaudio-metrics mos",
                                description="Mean opinion scores with 95% t-intervals per system.")
    p.add_argument("ratings", nargs="+", type=Path, help="CSV files downloaded from the listening-test page")
    p.add_argument("--key", type=Path, help="the test's key.csv (needed unless the ratings carry a system column)")
    p.add_argument("--out", type=Path, help="also write the summary as CSV (full precision) and .md next to it")
    args = p.parse_args(argv)
    try:
        missing = [str(x) for x in [*args.ratings, *([args.key] if args.key else [])] if not x.is_file()]
        if missing:
            raise ValueError(f"file not found: {', '.join(missing)}")
        result = aggregate(read_ratings(args.ratings, read_key(args.key) if args.key else None))
    except ValueError as e:
        p.exit(2, f"error: {e}\n")
    table = mos_table(result)
    print(table, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["system", "mos_q", "mos_q_ci95", "mos_q_sd", "mos_f", "mos_f_ci95", "mos_f_sd",
                             "ratings", "raters"])
            for system, r in result.items():
                q, fs = r["mos_q"], r["mos_f"]
                writer.writerow([system, q.mean, q.ci95, q.sd, fs.mean, fs.ci95, fs.sd, q.n, r["raters"]])
        args.out.with_suffix(".md").write_text(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``listening-test …`` or ``mos …`` (the ``reasonaudio-metrics`` subcommands of this module)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"listening-test": listening_test_main, "mos": mos_main}
    if not argv or argv[0] not in commands:
        print(f"usage: reasonaudio-metrics {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
