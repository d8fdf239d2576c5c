"""Validation of the three annotation answers and of assembled VGGSound-Think captions.

Every check raises :class:`ValidationError` whose message says what is wrong in words a model can
act on; the pipeline sends exactly that message back in its one repair round-trip
(:mod:`reasonaudio.captions.pipeline`). Rules (paper, Appendix D.1 and the issue):

- **gist** (the ``<HINT>``): non-empty, at most ``gist_max_sentences`` sentences, and no sound-source
  name from ``object_names`` (whole words, case-insensitive, plural ``s``/``es`` included).
- **grounding**: ``grounding_sentences`` (2–4) sentences.
- **structured**: every line holding ``<Object`` must read ``<Object 'id' screen=on_screen|off_screen>
  keywords``; ids unique and ``snake_case``; 2–6 objects; 3–8 keywords per object; at most one
  interaction cue ``masked_by_X`` / ``overlaps_with_X`` per object, naming another object's id.
  Other lines (a "Step 1" list, Markdown fences) carry no annotation and are ignored.

Neither free-text answer may contain ``<`` or ``>``: the caption format reads them as tags.

**Keyword counting.** The structured prompt asks for keywords "separated by spaces", the paper's
own answers also use ``;`` (Appendix D.2: ``wailing rise_fall; reverberant``) and its final
captions use comma lists (Appendix F: ``quiet room, anxious pacing, soft rustle``). A keyword list
that contains a comma counts its comma-separated phrases; one without counts its space- or
semicolon-separated words (a ``snake_case`` word is one keyword). Interaction cues are not counted.
The text is kept verbatim in the caption (:mod:`reasonaudio.captions.format` splits it on commas
only), so nothing is rewritten.

**Sentences** are counted by splitting after ``.``, ``!`` or ``?`` (and any closing quote or
bracket) followed by whitespace; text without final punctuation is one sentence. Abbreviations
such as "e.g." therefore count as a sentence end.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from reasonaudio.captions.format import SCREENS, CaptionFormatError, ThinkCaption, Track, parse_caption
from reasonaudio.captions.prompts import read_word_list

SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
"""An object id: lower-case words of letters and digits joined by single underscores."""
CUE = re.compile(r"(masked_by|overlaps_with)_([A-Za-z0-9_]+)")
"""An interaction cue token; group 2 is the referenced object id."""

_OBJECT_LINE = re.compile(
    r"<\s*object\s+(?P<q>['\"]?)(?P<id>[^'\"\s>]*)(?P=q)\s+screen\s*=\s*(?P<sq>['\"]?)(?P<screen>[^'\"\s>]*)(?P=sq)"
    r"\s*>(?P<keywords>.*)", re.IGNORECASE)
# A line is an object line when it holds "<Object" (any case); its only allowed prefix is a Markdown
# list marker or backtick.
_OBJECT_MARK = re.compile(r"<\s*object\b", re.IGNORECASE)
_LINE_PREFIX = re.compile(r"\s*(?:[-*•]|\d+[.)])?\s*`?")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=\S)")
_KEYWORD_SPLIT = re.compile(r"[\s;]+")


class ValidationError(ValueError):
    """An answer or caption that breaks a rule.

    Args:
        step: ``gist``, ``grounding``, ``structured`` or ``caption``.
        message: what is wrong, phrased for the model's repair round-trip.
    """

    def __init__(self, step: str, message: str):
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


@dataclass(frozen=True)
class ValidationRules:
    """The configurable limits of the checks (defaults: the paper's prompts).

    Args:
        object_names: lower-case sound-source names the gist must not mention; default the
            package's ``data/object_names.txt``.
        gist_max_sentences: most sentences in a gist; ``None`` for no limit. The prompt asks for
            one, the paper's own second Appendix F hint has two; 2 accepts the paper's data and
            still rejects a gist that runs into a paragraph.
        grounding_sentences: inclusive (min, max) sentences of the grounding paragraph.
        tracks: inclusive (min, max) objects of the structured answer.
        keywords: inclusive (min, max) keywords per object, cues not counted.
        max_cues: most interaction cues per object (the prompt: "a single interaction cue").
        allow_empty_grounding: :func:`validate_caption` accepts a caption without a grounding
            paragraph, as the paper's first Appendix F example is (the pipeline always asks for one).
    """

    object_names: tuple[str, ...] = field(default_factory=read_word_list)
    gist_max_sentences: int | None = 2
    grounding_sentences: tuple[int, int] = (2, 4)
    tracks: tuple[int, int] = (2, 6)
    keywords: tuple[int, int] = (3, 8)
    max_cues: int = 1
    allow_empty_grounding: bool = True

    def __post_init__(self) -> None:
        for name in ("grounding_sentences", "tracks", "keywords"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"ValidationRules.{name} must be (min, max) with 0 <= min <= max, "
                                 f"got {(low, high)}")
        if self.gist_max_sentences is not None and self.gist_max_sentences < 1:
            raise ValueError(f"gist_max_sentences must be >= 1 or None, got {self.gist_max_sentences}")
        if self.max_cues < 0:
            raise ValueError(f"max_cues must be >= 0, got {self.max_cues}")
        object.__setattr__(self, "object_names", tuple(n.strip().lower() for n in self.object_names if n.strip()))
        object.__setattr__(self, "_names_re", _names_pattern(self.object_names))

    def to_dict(self) -> dict:
        """JSON-ready form, recorded with every run."""
        return {"object_names": list(self.object_names), "gist_max_sentences": self.gist_max_sentences,
                "grounding_sentences": list(self.grounding_sentences), "tracks": list(self.tracks),
                "keywords": list(self.keywords), "max_cues": self.max_cues,
                "allow_empty_grounding": self.allow_empty_grounding}


def _names_pattern(names: tuple[str, ...]) -> re.Pattern | None:
    """One regex matching any name as whole words, with an optional plural ending."""
    if not names:
        return None
    # Longest first, so "fire truck" is reported rather than "truck".
    alternatives = [r"\s+".join(map(re.escape, name.split())) for name in sorted(set(names), key=len, reverse=True)]
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")(?:e?s)?\b", re.IGNORECASE)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def count_sentences(text: str) -> int:
    """Sentences in ``text`` (module docstring); 0 for blank text."""
    text = _collapse(text)
    return len(_SENTENCE_END.split(text)) if text else 0


def _free_text(step: str, text: str) -> str:
    """Collapses whitespace and rejects empty text and angle brackets."""
    text = _collapse(text)
    if not text:
        raise ValidationError(step, "the answer is empty")
    if "<" in text or ">" in text:
        raise ValidationError(step, "the answer must be plain text without '<' or '>'")
    return text


def _check_range(step: str, what: str, value: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not low <= value <= high:
        wanted = f"exactly {low}" if low == high else f"{low}–{high}"
        raise ValidationError(step, f"{what}: expected {wanted}, got {value}")


def check_gist(text: str, rules: ValidationRules) -> str:
    """Validates a coarse acoustic gist; returns it with whitespace collapsed.

    Raises:
        ValidationError: empty, tags, too many sentences, or a listed sound-source name.
    """
    text = _free_text("gist", text)
    if rules.gist_max_sentences is not None:
        sentences = count_sentences(text)
        if sentences > rules.gist_max_sentences:
            limit = "a single sentence" if rules.gist_max_sentences == 1 else \
                f"at most {rules.gist_max_sentences} sentences"
            raise ValidationError("gist", f"write {limit}, got {sentences} sentences")
    found = sorted({m.group(0).lower() for m in rules._names_re.finditer(text)}) if rules._names_re else []
    if found:
        raise ValidationError("gist", "the gist names sound-producing objects ("
                              + ", ".join(repr(f) for f in found) + "); describe sound attributes instead")
    return text


def check_grounding(text: str, rules: ValidationRules) -> str:
    """Validates a grounding paragraph; returns it with whitespace collapsed.

    Raises:
        ValidationError: empty, tags, or a sentence count outside ``rules.grounding_sentences``.
    """
    text = _free_text("grounding", text)
    _check_range("grounding", "sentences in the paragraph", count_sentences(text), rules.grounding_sentences)
    return text


def split_keywords(text: str) -> list[str]:
    """The ``Track.keywords`` of a keyword text: its comma-separated items (one item without commas).

    Raises:
        ValidationError: empty text or an empty comma item.
    """
    text = _collapse(text)
    if not text:
        raise ValidationError("structured", "no keywords")
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise ValidationError("structured", f"empty keyword in {text!r}")
    return items


def keyword_units(keywords: list[str]) -> tuple[list[str], list[str]]:
    """Splits a track's keywords into counted keywords and interaction cues (module docstring).

    Returns:
        ``(keywords, cues)``; a cue is a ``masked_by_X`` / ``overlaps_with_X`` token.
    """
    units = keywords if len(keywords) > 1 else [w for w in _KEYWORD_SPLIT.split(keywords[0]) if w]
    counted, cues = [], []
    for unit in units:
        tokens = [t for t in _KEYWORD_SPLIT.split(unit) if t]
        if any(CUE.fullmatch(t) for t in tokens):
            cues += [t for t in tokens if CUE.fullmatch(t)]
            # A phrase that is a cue plus other words still carries keywords.
            if len(tokens) > sum(bool(CUE.fullmatch(t)) for t in tokens):
                counted.append(unit)
        else:
            counted.append(unit)
    return counted, cues


def check_tracks(tracks: list[Track], rules: ValidationRules, step: str = "structured") -> None:
    """Checks object count, id style and uniqueness, keyword counts and interaction cues.

    Raises:
        ValidationError: naming the object and the rule it breaks.
    """
    _check_range(step, "number of objects", len(tracks), rules.tracks)
    ids = [t.name for t in tracks]
    for track in tracks:
        if not SNAKE_CASE.fullmatch(track.name):
            raise ValidationError(step, f"object id {track.name!r} is not snake_case "
                                        "(lower-case letters and digits joined by single underscores)")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValidationError(step, f"object ids must be unique, repeated: {', '.join(duplicates)}")
    for track in tracks:
        counted, cues = keyword_units(track.keywords)
        _check_range(step, f"keywords of {track.name!r}", len(counted), rules.keywords)
        if len(cues) > rules.max_cues:
            raise ValidationError(step, f"{track.name!r} has {len(cues)} interaction cues ({', '.join(cues)}); "
                                        f"at most {rules.max_cues} allowed")
        for cue in cues:
            target = CUE.fullmatch(cue).group(2)
            if target == track.name:
                raise ValidationError(step, f"interaction cue {cue!r} of {track.name!r} refers to itself")
            if target not in ids:
                raise ValidationError(step, f"interaction cue {cue!r} of {track.name!r} refers to {target!r}, "
                                            f"which is not an object id ({', '.join(ids)})")


def parse_structured(text: str, rules: ValidationRules) -> list[Track]:
    """Parses and validates the structured relation answer into caption tracks.

    Args:
        text: the model's answer, one ``<Object 'id' screen=…> keywords`` line per object.
        rules: the limits.

    Returns:
        One :class:`Track` per object line, in answer order, keywords kept verbatim.

    Raises:
        ValidationError: naming the 1-based line and the problem.
    """
    tracks: list[Track] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not _OBJECT_MARK.search(line):
            continue
        prefix = _LINE_PREFIX.match(line)
        body = line[prefix.end():].rstrip().removesuffix("`")
        match = _OBJECT_LINE.fullmatch(body)
        if match is None:
            raise ValidationError("structured", f"line {number} does not follow the format "
                                                f"<Object 'object_id' screen=on_screen|off_screen> keywords: "
                                                f"{_collapse(line)[:80]!r}")
        where = f"line {number} ({match['id'] or 'no id'})"
        if not match["id"]:
            raise ValidationError("structured", f"line {number} has an empty object id")
        if match["screen"] not in SCREENS:
            raise ValidationError("structured", f"{where}: screen must be on_screen or off_screen, "
                                                f"got {match['screen']!r}")
        keywords = match["keywords"]
        if "<" in keywords or ">" in keywords:
            raise ValidationError("structured", f"{where}: keywords must not contain '<' or '>'")
        try:
            tracks.append(Track(name=match["id"], screen=match["screen"], keywords=split_keywords(keywords)))
        except ValidationError as error:
            raise ValidationError("structured", f"{where}: {error.message}") from None
        except CaptionFormatError as error:
            raise ValidationError("structured", f"{where}: {error}") from None
    if not tracks:
        raise ValidationError("structured", "no <Object 'object_id' screen=on_screen|off_screen> keywords line found")
    check_tracks(tracks, rules)
    return tracks


def validate_caption(caption: ThinkCaption | str, rules: ValidationRules) -> ThinkCaption:
    """Validates an assembled VGGSound-Think caption against the same rules as the answers.

    The hint is checked as a gist, a non-empty grounding as a grounding paragraph (an empty one is
    accepted with ``rules.allow_empty_grounding``), the tracks as a structured answer.

    Args:
        caption: a parsed caption or its text.
        rules: the limits.

    Returns:
        The parsed caption.

    Raises:
        ValidationError: the first rule broken, ``step`` naming the part (``gist``, ``grounding``,
            ``structured``; ``caption`` for text that does not parse).
    """
    if isinstance(caption, str):
        try:
            caption = parse_caption(caption)
        except CaptionFormatError as error:
            raise ValidationError("caption", str(error)) from None
    check_gist(caption.hint, rules)
    if caption.grounding or not rules.allow_empty_grounding:
        check_grounding(caption.grounding, rules)
    check_tracks(caption.tracks, rules)
    return caption
