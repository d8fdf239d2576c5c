"""The annotation prompts and word lists, kept as package data files.

``prompts/gist.txt``, ``prompts/grounding.txt`` and ``prompts/structured.txt`` are the three
prompts of the paper's Appendix D.1, verbatim (the PDF's emphasis kept as Markdown, its line
breaks inside code spans undone). ``prompts/repair.txt`` (the repair round-trip) and
``prompts/judge.txt`` (the pairwise judge) are this suite's own: the paper prints neither. They are
``string.Template`` texts (``$reason``; ``$first`` / ``$second``), so the literal braces of the paper's
prompts never need escaping. ``data/object_names.txt`` is the default list of sound-source names
the gist must not mention.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from string import Template

STEPS: tuple[str, ...] = ("gist", "grounding", "structured")
"""The three annotation steps, in the order they run."""


def _package_text(*parts: str) -> str:
    """Reads a UTF-8 data file of this package."""
    return resources.files(__package__).joinpath(*parts).read_text(encoding="utf-8")


def step_prompt(step: str) -> str:
    """The paper's prompt for ``step`` (one of :data:`STEPS`), without the trailing newline.

    Raises:
        ValueError: for an unknown step.
    """
    if step not in STEPS:
        raise ValueError(f"unknown annotation step {step!r}; expected one of {STEPS}")
    return _package_text("prompts", f"{step}.txt").rstrip("\n")


def repair_prompt(reason: str) -> str:
    """The follow-up message that asks the model to fix an answer the validator rejected."""
    return Template(_package_text("prompts", "repair.txt")).substitute(reason=reason).rstrip("\n")


def judge_prompt(first: str, second: str) -> str:
    """The pairwise judge question with the two captions in the given order."""
    return Template(_package_text("prompts", "judge.txt")).substitute(first=first, second=second).rstrip("\n")


def prompts_digest() -> str:
    """SHA-256 of every prompt file, recorded with each run so that results name the prompts they used."""
    digest = hashlib.sha256()
    for name in (*STEPS, "repair", "judge"):
        digest.update(_package_text("prompts", f"{name}.txt").encode("utf-8"))
    return digest.hexdigest()


def read_word_list(path: str | Path | None = None) -> tuple[str, ...]:
    """Reads a word list: one entry per line, blank lines and ``#`` comments ignored.

    Args:
        path: a file; ``None`` reads the default ``data/object_names.txt``.

    Raises:
        ValueError: naming the file when it cannot be read or holds no entry.
    """
    if path is None:
        text, where = _package_text("data", "object_names.txt"), "data/object_names.txt (package)"
    else:
        try:
            text, where = Path(path).read_text(encoding="utf-8"), str(path)
        except OSError as error:
            raise ValueError(f"{path}: cannot read the word list ({error.strerror})") from None
    words = tuple(line.strip().lower() for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith("#"))
    if not words:
        raise ValueError(f"{where}: the word list is empty")
    return words
