"""The three-step annotation of clips into VGGSound-Think captions (paper §3.2, Appendix D.1).

Per clip, with the clip's frames (and audio) attached to every request:

1. **gist** — the paper's gist prompt; the answer becomes the ``<HINT>``;
2. **grounding** — the grounding prompt; the answer becomes the grounding paragraph;
3. **structured** — the structured prompt; each ``<Object 'id' screen=…> keywords`` line becomes
   a ``<TRACK name='id' screen=…> <KEYWORDS> keywords </KEYWORDS> </TRACK>``.

Each step is its own conversation with the paper's prompt verbatim (the prompts do not refer to
each other's answers). Each answer is validated (:mod:`reasonaudio.captions.validate`); a failing
answer gets **one** repair round-trip — the answer and the validator's message (``repair.txt``) are
sent back in the same conversation — and if the second answer fails too the clip is **rejected**
with that reason and no further step runs. Nothing is filled in or corrected by the pipeline:
an accepted caption is exactly the three answers (whitespace collapsed), and a clip whose media
cannot be decoded is rejected with the decoder's reason.

A request that fails after the backend's own retries (timeouts, 429, 5xx) leaves the clip
**failed**: nothing is written, so the next run tries it again.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from reasonaudio.captions.attachments import ClipMedia, load_clip_media
from reasonaudio.captions.backends import BackendError, ChatBackend, FatalBackendError, Reply, Turn
from reasonaudio.captions.format import ThinkCaption, format_caption
from reasonaudio.captions.inputs import ClipInput
from reasonaudio.captions.prompts import STEPS, repair_prompt, step_prompt
from reasonaudio.captions.store import ResultStore
from reasonaudio.captions.validate import (ValidationError, ValidationRules, check_gist, check_grounding,
                                           parse_structured, validate_caption)
from reasonaudio.media import MediaError


@dataclass
class Usage:
    """Token and cost totals.

    Args:
        requests: chat requests answered.
        prompt_tokens: input tokens the backend reported.
        completion_tokens: output tokens the backend reported.
        unreported: answers that came without usage counts.
        cost: money at the backend's prices.
        retries: transport retries (timeouts, 429, 5xx).
    """

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unreported: int = 0
    cost: float = 0.0
    retries: int = 0

    def add(self, reply: Reply, cost: float) -> None:
        """Counts one reply."""
        self.requests += 1
        self.prompt_tokens += reply.prompt_tokens or 0
        self.completion_tokens += reply.completion_tokens or 0
        self.unreported += reply.prompt_tokens is None or reply.completion_tokens is None
        self.cost += cost
        self.retries += reply.retries

    def merge(self, other: Usage) -> None:
        """Adds another total to this one."""
        for name in ("requests", "prompt_tokens", "completion_tokens", "unreported", "cost", "retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "unreported": self.unreported,
                "cost": round(self.cost, 8), "retries": self.retries}


@dataclass
class ClipOutcome:
    """The result of annotating one clip.

    Args:
        record: the JSONL record (accepted or rejected line).
        accepted: whether a caption was produced.
        repairs: repair round-trips used.
        usage: this clip's tokens and cost.
    """

    record: dict[str, Any]
    accepted: bool
    repairs: int
    usage: Usage = field(default_factory=Usage)


def _checker(step: str, rules: ValidationRules) -> Callable[[str], Any]:
    return {"gist": lambda text: check_gist(text, rules),
            "grounding": lambda text: check_grounding(text, rules),
            "structured": lambda text: parse_structured(text, rules)}[step]


def ask(backend: ChatBackend, media: ClipMedia, prompt: str, check: Callable[[str], Any], request_id: str,
        usage: Usage) -> tuple[Any, list[str], str | None]:
    """Asks one question with at most one repair round-trip.

    Returns:
        ``(value, answers, reason)``: the checked value (None when rejected), the raw answers, and
        the validator's final message (None when accepted).

    Raises:
        BackendError: a request failed after its retries.
    """
    turns = [Turn("user", prompt)]
    answers: list[str] = []
    for attempt in (1, 2):
        reply = backend.chat(media, turns, f"{request_id}:{attempt}")
        usage.add(reply, backend.cost(reply))
        answers.append(reply.text)
        try:
            return check(reply.text), answers, None
        except ValidationError as error:
            reason = error.message
        turns = [*turns, Turn("assistant", reply.text), Turn("user", repair_prompt(reason))]
    return None, answers, reason


def annotate_clip(clip: ClipInput, backend: ChatBackend, rules: ValidationRules) -> ClipOutcome:
    """Runs the three steps on one clip (module docstring).

    Raises:
        BackendError: a request failed after its retries (the clip is left unfinished).
    """
    usage = Usage()
    base = clip.to_record()
    try:
        media = load_clip_media(clip.video, clip.audio, backend.media, clip.duration)
    except MediaError as error:
        return ClipOutcome({**base, "status": "rejected", "step": "media",
                            "reason": f"{error.path}: {error.reason}"}, False, 0, usage)
    values: dict[str, Any] = {}
    answers: dict[str, list[str]] = {}
    repairs = 0
    for step in STEPS:
        value, step_answers, reason = ask(backend, media, step_prompt(step), _checker(step, rules),
                                          f"{clip.id}:{step}", usage)
        answers[step] = step_answers
        repairs += len(step_answers) - 1
        if reason is not None:
            record = {**base, "status": "rejected", "step": step, "reason": reason, "answers": answers,
                      "repairs": repairs, "usage": usage.to_dict()}
            return ClipOutcome(record, False, repairs, usage)
        values[step] = value
    caption = ThinkCaption(hint=values["gist"], grounding=values["grounding"], tracks=values["structured"])
    validate_caption(caption, rules)  # the steps' checks imply it; a failure here is a bug
    record = {**base, "caption": format_caption(caption), "status": "accepted", "answers": answers,
              "repairs": repairs, "usage": usage.to_dict()}
    return ClipOutcome(record, True, repairs, usage)


@dataclass
class RunSummary:
    """Counts of one annotate run (printed as JSON and appended to ``OUT.runs.jsonl``)."""

    clips: int = 0
    skipped: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    repaired_clips: int = 0
    repairs: int = 0
    failures: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"clips": self.clips, "skipped_finished": self.skipped, "accepted": self.accepted,
                "rejected": self.rejected, "failed": self.failed, "repaired_clips": self.repaired_clips,
                "repairs": self.repairs, "failures": self.failures[:50], "usage": self.usage.to_dict(),
                "seconds": round(self.seconds, 3)}


def run_annotation(clips: Sequence[ClipInput], backend: ChatBackend, out: str | Path, rules: ValidationRules,
                   retry_rejected: bool = False, workers: int | None = None, progress: bool = True) -> RunSummary:
    """Annotates every unfinished clip into ``out`` (resume semantics in :mod:`reasonaudio.captions.store`).

    Args:
        clips: the clips (unique ids).
        backend: the model.
        out: ``OUT.jsonl``.
        rules: validation limits.
        retry_rejected: annotate clips rejected by an earlier run again.
        workers: clips in flight at once (default the backend's ``concurrency``).
        progress: show a tqdm bar (done, rejected, retried, failed, tokens, cost) with ETA.

    Returns:
        The run's counts.

    Raises:
        FatalBackendError: a configuration problem; results finished so far are kept.
        ValueError: a locked or corrupt output.
    """
    workers = workers or backend.concurrency
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    started = time.monotonic()
    summary = RunSummary(clips=len(clips))
    with ResultStore(out, retry_rejected=retry_rejected) as store:
        pending = [clip for clip in clips if clip.id not in store.finished]
        summary.skipped = len(clips) - len(pending)
        bar = tqdm(total=len(clips), initial=summary.skipped, desc="annotate", unit="clip", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        fatal: BaseException | None = None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="annotate") as pool:
            queue = iter(pending)
            running: dict[Future, ClipInput] = {}

            def submit() -> None:
                # Bounded in-flight work: a million-clip manifest never becomes a million futures.
                while fatal is None and len(running) < 2 * workers:
                    clip = next(queue, None)
                    if clip is None:
                        return
                    running[pool.submit(annotate_clip, clip, backend, rules)] = clip

            submit()
            try:
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        clip = running.pop(future)
                        try:
                            outcome = future.result()
                        except FatalBackendError as error:
                            fatal = fatal or error
                            continue
                        except BackendError as error:
                            summary.failed += 1
                            summary.failures.append(f"{clip.id}: {error}")
                            bar.update(1)
                            continue
                        store.write(outcome.record, outcome.accepted)
                        summary.usage.merge(outcome.usage)
                        summary.accepted += outcome.accepted
                        summary.rejected += not outcome.accepted
                        summary.repairs += outcome.repairs
                        summary.repaired_clips += outcome.repairs > 0
                        bar.update(1)
                        bar.set_postfix(done=summary.accepted, rejected=summary.rejected,
                                        retried=summary.repaired_clips, failed=summary.failed,
                                        http_retries=summary.usage.retries,
                                        tokens=summary.usage.prompt_tokens + summary.usage.completion_tokens,
                                        cost=f"{summary.usage.cost:.4f}", refresh=False)
                    submit()
            except BaseException:
                # Ctrl-C or a bug: clips not started yet are dropped; only those in flight finish (unwritten).
                for future in running:
                    future.cancel()
                raise
        bar.close()
    summary.seconds = time.monotonic() - started
    if fatal is not None:
        raise fatal
    return summary
