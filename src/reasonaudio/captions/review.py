"""A static HTML page for the paper's 5% human check of the annotated clips (Appendix D.1).

``write_review`` samples a fraction of the accepted clips (seeded) and writes one self-contained
page: per clip the video (with its sound), a separate audio player when the clip has its own audio
file, the caption (hint, grounding, a table of tracks), a note field and Accept / Reject buttons.
Decisions are kept in the browser's ``localStorage`` (reloading the page keeps them) and "Export
CSV" downloads ``<page stem>.csv`` with columns ``id,decision,note,label,caption``
(``decision`` is ``accept``, ``reject`` or empty; RFC 4180 quoting). Media is linked by paths
relative to the page, so page and media folder can be moved together. The page needs no server
and no network; ``window.reviewCsv()`` returns the CSV text (the export button downloads exactly it).
"""
from __future__ import annotations

import html
import json
import os
import random
import urllib.request
from pathlib import Path
from typing import Any

from reasonaudio.captions.format import CaptionFormatError, parse_caption
from reasonaudio.captions.store import read_records

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; max-width: 70rem; }
.clip { border: 1px solid #bbb; border-radius: 6px; padding: 1rem; margin: 1rem 0; scroll-margin-top: 4rem; }
.clip.accept { border-color: #2a8a2a; background: #f1fbf1; }
.clip.reject { border-color: #b22; background: #fdf1f1; }
video { width: 28rem; max-width: 100%; display: block; margin: .5rem 0; background: #000; }
table { border-collapse: collapse; margin: .5rem 0; }
td, th { border: 1px solid #ccc; padding: .2rem .5rem; text-align: left; vertical-align: top; }
.hint { font-style: italic; }
button { font-size: 1rem; margin-right: .5rem; }
textarea { width: 100%; max-width: 40rem; }
#bar { position: sticky; top: 0; background: #fff; padding: .5rem 0; border-bottom: 1px solid #ddd; }
"""

_SCRIPT = """
const KEY = "reasonaudio-review:" + document.body.dataset.key;
const state = JSON.parse(localStorage.getItem(KEY) || "{}");
function save() { localStorage.setItem(KEY, JSON.stringify(state)); }
function render() {
  let accepted = 0, rejected = 0;
  for (const clip of document.querySelectorAll(".clip")) {
    const entry = state[clip.dataset.id] || {};
    clip.classList.toggle("accept", entry.decision === "accept");
    clip.classList.toggle("reject", entry.decision === "reject");
    clip.querySelector(".decision").textContent = entry.decision || "undecided";
    if (document.activeElement !== clip.querySelector(".note")) clip.querySelector(".note").value = entry.note || "";
    accepted += entry.decision === "accept";
    rejected += entry.decision === "reject";
  }
  document.getElementById("n-accept").textContent = accepted;
  document.getElementById("n-reject").textContent = rejected;
  document.getElementById("n-open").textContent = CLIPS.length - accepted - rejected;
}
function csvField(value) {
  const text = String(value ?? "");
  return /[",\\r\\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
}
window.reviewCsv = function () {
  const lines = [["id", "decision", "note", "label", "caption"].join(",")];
  for (const clip of CLIPS) {
    const entry = state[clip.id] || {};
    lines.push([clip.id, entry.decision || "", entry.note || "", clip.label, clip.caption].map(csvField).join(","));
  }
  return lines.join("\\r\\n") + "\\r\\n";
};
for (const clip of document.querySelectorAll(".clip")) {
  const id = clip.dataset.id;
  for (const decision of ["accept", "reject"]) {
    clip.querySelector("button." + decision).addEventListener("click", () => {
      state[id] = Object.assign(state[id] || {}, {decision: decision});
      save(); render();
    });
  }
  clip.querySelector(".note").addEventListener("input", (event) => {
    state[id] = Object.assign(state[id] || {}, {note: event.target.value});
    save(); render();
  });
}
document.getElementById("export").addEventListener("click", () => {
  const url = URL.createObjectURL(new Blob([window.reviewCsv()], {type: "text/csv"}));
  const link = document.createElement("a");
  link.href = url;
  link.download = document.body.dataset.csv;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
});
render();
"""


def _media_url(path: str, page_dir: Path) -> str:
    """A URL of ``path`` relative to the page's folder (absolute ``file:`` URL across drives)."""
    try:
        relative = os.path.relpath(Path(path).resolve(), page_dir.resolve())
    except ValueError:
        return Path(path).resolve().as_uri()
    return urllib.request.pathname2url(relative)


def _caption_html(caption: str) -> str:
    """The caption as hint, grounding and a track table (raw text when it does not parse)."""
    try:
        parsed = parse_caption(caption)
    except CaptionFormatError:
        return f"<p>{html.escape(caption)}</p>"
    rows = "".join(f"<tr><td>{html.escape(t.name)}</td><td>{html.escape(t.screen)}</td>"
                   f"<td>{html.escape(', '.join(t.keywords))}</td></tr>" for t in parsed.tracks)
    grounding = f"<p class='grounding'>{html.escape(parsed.grounding)}</p>" if parsed.grounding else ""
    return (f"<p class='hint'>{html.escape(parsed.hint)}</p>{grounding}"
            f"<table><tr><th>track</th><th>screen</th><th>keywords</th></tr>{rows}</table>")


def _clip_html(record: dict[str, Any], page_dir: Path) -> str:
    players = ""
    if record.get("video"):
        players += (f"<video controls preload='metadata' src='{html.escape(_media_url(record['video'], page_dir))}'>"
                    "</video>")
    if record.get("audio"):
        players += (f"<audio controls preload='metadata' src='{html.escape(_media_url(record['audio'], page_dir))}'>"
                    "</audio>")
    label = f" <small>({html.escape(record['label'])})</small>" if record.get("label") else ""
    return (f"<section class='clip' data-id='{html.escape(record['id'])}'>"
            f"<h2>{html.escape(record['id'])}{label}</h2>{players}{_caption_html(record['caption'])}"
            "<p><button class='accept'>Accept</button><button class='reject'>Reject</button>"
            " decision: <b class='decision'>undecided</b></p>"
            "<textarea class='note' rows='2' placeholder='note (optional)'></textarea></section>")


def write_review(path: str | Path, out: str | Path, fraction: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Writes the review page for a sample of the accepted clips of ``path``.

    Args:
        path: the annotate output (``OUT.jsonl``).
        out: the page (``review.html``); the export is named after it (``review.csv``).
        fraction: share of the clips to review, in (0, 1]; at least one clip.
        seed: sampling seed.

    Returns:
        ``{"page", "csv", "clips", "ids", "seed", "fraction"}``.

    Raises:
        ValueError: a bad fraction or a file without captions.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    records = [r for r in read_records(path) if isinstance(r.get("caption"), str) and r["caption"].strip()]
    if not records:
        raise ValueError(f"{path}: no captioned clip to review")
    count = max(1, round(fraction * len(records)))
    chosen = sorted(random.Random(seed).sample(records, count), key=lambda r: r["id"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_name = out.with_suffix(".csv").name
    clips = [{"id": r["id"], "label": r.get("label") or "", "caption": r["caption"]} for r in chosen]
    data = json.dumps(clips, ensure_ascii=False).replace("</", "<\\/")
    key = f"{Path(path).resolve()}|{seed}|{fraction}"
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>VGGSound-Think review — {html.escape(Path(path).name)}</title><style>{_STYLE}</style></head>"
            f"<body data-key='{html.escape(key)}' data-csv='{html.escape(csv_name)}'>"
            f"<h1>VGGSound-Think review</h1><p>{len(chosen)} of {len(records)} clips of "
            f"{html.escape(str(path))} (fraction {fraction}, seed {seed}).</p>"
            "<div id='bar'>accepted <b id='n-accept'>0</b> · rejected <b id='n-reject'>0</b> · open "
            "<b id='n-open'>0</b> <button id='export'>Export CSV</button></div>"
            + "".join(_clip_html(r, out.parent) for r in chosen)
            + f"<script>const CLIPS = {data};</script><script>{_SCRIPT}</script></body></html>\n")
    out.write_text(page, encoding="utf-8")
    return {"page": str(out), "csv": csv_name, "clips": len(chosen), "ids": [r["id"] for r in chosen],
            "seed": seed, "fraction": fraction}
