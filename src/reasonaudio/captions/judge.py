"""Pairwise VLM-as-judge preference between two caption sets of the same clips (paper §3.3, Table 1).

A fraction of the clips captioned in both files is sampled (seeded). For each clip the judge sees
the clip's frames (and audio, where its backend sends audio) and both captions, and is asked which
is better aligned (``prompts/judge.txt``) **twice**: A as caption 1 and B as caption 2, then the
other way round, so a judge that prefers a position cannot favour either set. An answer must name
exactly one of ``1`` / ``2``; otherwise it gets one repair round-trip, and an answer still unreadable
makes that pair invalid (excluded and listed).

Per pair: A wins if both orders pick A, B wins if both pick B, and a split is a tie. The win rate
of A is ``(wins_A + ties / 2) / pairs``. Its 95% interval is the Wilson score interval of that
proportion over ``pairs`` trials (z = 1.959964). Counting a tie as half a win gives each pair a
score in {0, ½, 1} whose variance is at most the Bernoulli variance of the same mean, so the
binomial interval is conservative (never too narrow).
"""
from __future__ import annotations

import math
import random
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from reasonaudio.captions.attachments import load_clip_media
from reasonaudio.captions.backends import BackendError, ChatBackend, FatalBackendError
from reasonaudio.captions.inputs import ClipInput
from reasonaudio.captions.pipeline import Usage, ask
from reasonaudio.captions.prompts import judge_prompt
from reasonaudio.captions.store import read_records
from reasonaudio.captions.validate import ValidationError
from reasonaudio.media import MediaError

Z95 = 1.959963984540054
"""Two-sided 95% standard normal quantile."""
ORDERS = ("AB", "BA")
_CHOICE = re.compile(r"(?<![\w.])([12])(?!\w|\.\d)")  # "1", "1.", "Caption 2"; not "12" or "1.5"


def wilson_interval(successes: float, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    Args:
        successes: number of successes (may be fractional, e.g. ties counted as ½).
        trials: number of trials (> 0).
        z: normal quantile (default: 95% two-sided).

    Returns:
        ``(low, high)``, inside [0, 1].
    """
    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, {trials}], got {successes}")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def parse_choice(text: str) -> int:
    """The caption number (1 or 2) a judge answer names.

    Raises:
        ValidationError: the answer names neither or both.
    """
    found = set(_CHOICE.findall(text))
    if len(found) != 1:
        raise ValidationError("judge", f"answer with exactly one character, 1 or 2; got {text.strip()[:80]!r}")
    return int(found.pop())


def read_captions(path: str | Path) -> dict[str, dict[str, Any]]:
    """Records with a non-empty ``caption`` of a caption JSONL, by id (other lines are skipped).

    Raises:
        ValueError: naming the file for a corrupt line or a repeated id.
    """
    captions: dict[str, dict[str, Any]] = {}
    for record in read_records(path):
        caption = record.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            continue
        if record["id"] in captions:
            raise ValueError(f"{path}: clip id {record['id']!r} appears twice")
        captions[record["id"]] = record
    return captions


def _judge_pair(clip: ClipInput, caption_a: str, caption_b: str, backend: ChatBackend) -> dict[str, Any]:
    """Both orders of one pair; returns the pair's record."""
    usage = Usage()
    try:
        media = load_clip_media(clip.video, clip.audio, backend.media, clip.duration)
    except MediaError as error:
        return {"id": clip.id, "outcome": "invalid", "reason": f"{error.path}: {error.reason}", "usage": usage}
    votes: dict[str, str | None] = {}
    answers: dict[str, list[str]] = {}
    for order in ORDERS:
        first, second = (caption_a, caption_b) if order == "AB" else (caption_b, caption_a)
        choice, answers[order], reason = ask(backend, media, judge_prompt(first, second), parse_choice,
                                             f"judge:{clip.id}:{order}", usage)
        votes[order] = None if choice is None else order[choice - 1]
    if None in votes.values():
        outcome = "invalid"
    elif votes["AB"] == votes["BA"]:
        outcome = votes["AB"]
    else:
        outcome = "tie"
    return {"id": clip.id, "votes": votes, "outcome": outcome, "answers": answers, "usage": usage}


def run_judge(a_path: str | Path, b_path: str | Path, backend: ChatBackend, fraction: float = 0.05, seed: int = 0,
              clips: dict[str, ClipInput] | None = None, workers: int | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Judges a sample of the clips captioned in both files.

    Args:
        a_path: caption set A (JSONL with ``id``, ``caption`` and, unless ``clips`` is given, ``video``).
        b_path: caption set B for the same clips.
        backend: the judge model.
        fraction: share of the common clips to judge, in (0, 1]; at least one clip.
        seed: sampling seed.
        clips: media of the clips by id (from a videos manifest); default the ``video`` / ``audio``
            fields of A (else B).
        workers: pairs judged at once (default the backend's concurrency).
        progress: show a tqdm bar.

    Returns:
        The report: counts, ``win_rate_a``, ``ci95``, position bias, sampled ids, per-pair votes, usage.

    Raises:
        ValueError: no common clip, a bad fraction, or a clip without media.
        FatalBackendError: a configuration problem of the judge backend.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    set_a, set_b = read_captions(a_path), read_captions(b_path)
    common = sorted(set(set_a) & set(set_b))
    if not common:
        raise ValueError(f"{a_path} and {b_path} caption no clip in common")
    count = max(1, round(fraction * len(common)))
    ids = sorted(random.Random(seed).sample(common, count))
    inputs = []
    for clip_id in ids:
        if clips is not None:
            if clip_id not in clips:
                raise ValueError(f"clip {clip_id!r} is not in the videos manifest")
            inputs.append(clips[clip_id])
            continue
        record = set_a[clip_id] if set_a[clip_id].get("video") or set_a[clip_id].get("audio") else set_b[clip_id]
        if not (record.get("video") or record.get("audio")):
            raise ValueError(f"clip {clip_id!r} has no 'video' in {a_path} or {b_path}; pass --videos MANIFEST")
        inputs.append(ClipInput(id=clip_id, video=record.get("video"), audio=record.get("audio"),
                                duration=record.get("duration")))
    usage = Usage()
    pairs, failures = [], []
    bar = tqdm(total=len(inputs), desc="judge", unit="pair", disable=not progress, file=sys.stderr)
    with ThreadPoolExecutor(max_workers=workers or backend.concurrency, thread_name_prefix="judge") as pool:
        futures = [(clip, pool.submit(_judge_pair, clip, set_a[clip.id]["caption"], set_b[clip.id]["caption"],
                                      backend)) for clip in inputs]
        for clip, future in futures:
            try:
                pair = future.result()
            except FatalBackendError:
                pool.shutdown(cancel_futures=True)
                raise
            except BackendError as error:
                failures.append(f"{clip.id}: {error}")
                bar.update(1)
                continue
            usage.merge(pair.pop("usage"))
            pairs.append(pair)
            bar.update(1)
    bar.close()
    valid = [p for p in pairs if p["outcome"] != "invalid"]
    wins_a = sum(p["outcome"] == "A" for p in valid)
    wins_b = sum(p["outcome"] == "B" for p in valid)
    ties = len(valid) - wins_a - wins_b
    report: dict[str, Any] = {
        "a": str(a_path), "b": str(b_path), "seed": seed, "fraction": fraction, "common_clips": len(common),
        "sampled": len(ids), "ids": ids, "valid_pairs": len(valid), "wins_a": wins_a, "wins_b": wins_b,
        "ties": ties, "invalid": len(pairs) - len(valid), "failed": failures, "interval": "wilson95",
        "win_rate_a": None, "ci95": None, "first_position_rate": None, "pairs": pairs, "usage": usage.to_dict()}
    if valid:
        score = wins_a + ties / 2
        report["win_rate_a"] = score / len(valid)
        report["ci95"] = list(wilson_interval(score, len(valid)))
        # Share of judgments that picked caption 1: 0.5 for a judge without position bias.
        first = sum((p["votes"]["AB"] == "A") + (p["votes"]["BA"] == "B") for p in valid)
        report["first_position_rate"] = first / (2 * len(valid))
    return report
