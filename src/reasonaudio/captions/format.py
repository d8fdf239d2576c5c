"""VGGSound-Think captions: parse, validate and serialise.

A caption is an acoustic hint, a free grounding paragraph (possibly empty) and one or more
structured tracks (paper, Appendix F)::

    <HINT>Someone calls 911 and stays here until help arrives.</HINT> <TRACK
    name='caller_waiting' screen=on_screen> <KEYWORDS> quiet room, anxious pacing, soft
    rustle, handset handling </KEYWORDS> </TRACK> <TRACK ...> ... </TRACK>

Parsing is tolerant of layout (any run of whitespace, newlines included, counts as one space, and
whitespace next to tags is ignored) and strict about structure: track names must match
``[A-Za-z0-9_]+`` and be unique, ``screen`` must be ``on_screen`` or ``off_screen``, every track
holds exactly one non-empty ``<KEYWORDS>`` block, and no text may sit outside the tags after the
hint paragraph. Violations raise :class:`CaptionFormatError` with the reason and the track number.

Keyword representation: a ``<KEYWORDS>`` block is split on commas, and only on commas. The paper
writes both comma lists (``quiet room, anxious pacing, soft rustle``) and bare word lists
(``broadband noise turbulent rushing``). A comma list gives one keyword per phrase; a bare word
list is kept as a single keyword, because the phrase boundaries in it are not recoverable
(``close_mic effort grunt breathy exhale`` may be four or five phrases) and splitting on spaces
would make the two styles indistinguishable when written back. Serialisation joins keywords with
``", "``, so ``format_caption(parse_caption(text))`` reproduces the original keyword text up to
whitespace, whichever style it used.

The canonical serialisation is a single line::

    <HINT>{hint}</HINT> {grounding} <TRACK name='{name}' screen={screen}> <KEYWORDS> {k1, k2}
    </KEYWORDS> </TRACK> <TRACK ...> ... </TRACK>

with the grounding (and its space) left out when empty; the first example of Appendix F is
already in this form.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

Screen = Literal["on_screen", "off_screen"]
SCREENS: tuple[str, ...] = get_args(Screen)
"""The two legal values of a track's ``screen`` attribute."""

_NAME = re.compile(r"[A-Za-z0-9_]+")
# Attributes inside the opening tag: name first, then screen. Either quote style is accepted for
# the name (the canonical form uses the paper's single quotes); the screen value is validated
# separately so that a bad value gets its own message instead of "malformed tag".
_TRACK_ATTRS = re.compile(r"\s+name\s*=\s*(['\"])(?P<name>.*?)\1\s+screen\s*=\s*(?P<screen>\S*)\s*")
_KEYWORDS = re.compile(r"\s*<KEYWORDS>(?P<body>[^<>]*)</KEYWORDS>\s*")
_SNIPPET = 40


class CaptionFormatError(ValueError):
    """A VGGSound-Think caption that does not follow the format; the message says why."""


def _collapse(text: str) -> str:
    """Collapses every whitespace run (newlines included) to one space and strips the ends."""
    return " ".join(text.split())


def _snippet(text: str) -> str:
    """Shortens offending text for an error message."""
    text = _collapse(text)
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 1] + "…"


def _check_str(value: object, what: str) -> None:
    """Rejects non-string fields, which reach the dataclasses from JSON via ``from_dict``."""
    if not isinstance(value, str):
        raise CaptionFormatError(f"{what} must be a string, got {value!r}")


def _check_free_text(text: str, what: str) -> None:
    """Rejects angle brackets, which would read back as (broken) tags."""
    if "<" in text or ">" in text:
        raise CaptionFormatError(f"{what} must not contain '<' or '>': {_snippet(text)!r}")


@dataclass
class Track:
    """One sound source of a caption.

    Whitespace in the keywords is collapsed on construction, so every valid ``Track`` serialises
    to text that parses back to an equal ``Track``.

    Args:
        name: identifier matching ``[A-Za-z0-9_]+``, unique within a caption.
        screen: whether the source is visible (``on_screen``) or not (``off_screen``).
        keywords: the comma-separated items of the ``<KEYWORDS>`` block; a bare word list is one
            item (see the module docstring). Items are non-empty and contain no commas.

    Raises:
        CaptionFormatError: if any field breaks the rules above.
    """

    name: str
    screen: Screen
    keywords: list[str]

    def __post_init__(self) -> None:
        _check_str(self.name, "TRACK name")
        if not _NAME.fullmatch(self.name):
            raise CaptionFormatError(f"TRACK name {self.name!r} must match [A-Za-z0-9_]+")
        if self.screen not in SCREENS:
            raise CaptionFormatError(
                f"TRACK {self.name!r}: screen must be on_screen or off_screen, got {self.screen!r}"
            )
        if not isinstance(self.keywords, list):
            raise CaptionFormatError(
                f"TRACK {self.name!r}: keywords must be a list, got {self.keywords!r}"
            )
        if not self.keywords:
            raise CaptionFormatError(f"TRACK {self.name!r}: no keywords")
        for keyword in self.keywords:
            _check_str(keyword, f"TRACK {self.name!r} keyword")
        self.keywords = [_collapse(k) for k in self.keywords]
        for keyword in self.keywords:
            if not keyword:
                raise CaptionFormatError(f"TRACK {self.name!r}: empty keyword")
            # A comma inside one keyword would split into two on the next parse.
            if "," in keyword:
                raise CaptionFormatError(f"TRACK {self.name!r}: keyword {keyword!r} contains a comma")
            _check_free_text(keyword, f"TRACK {self.name!r} keyword")

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict ``{"name", "screen", "keywords"}``."""
        return {"name": self.name, "screen": self.screen, "keywords": list(self.keywords)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Track:
        """Builds a track from :meth:`to_dict` output.

        Raises:
            CaptionFormatError: on a missing key or an invalid value.
        """
        if not isinstance(data, dict):
            raise CaptionFormatError(f"a track must be a dict, got {data!r}")
        missing = [key for key in ("name", "screen", "keywords") if key not in data]
        if missing:
            raise CaptionFormatError(f"track dict is missing key {missing[0]!r}")
        return cls(name=data["name"], screen=data["screen"], keywords=data["keywords"])


@dataclass
class ThinkCaption:
    """A parsed VGGSound-Think caption.

    Whitespace in the hint and grounding is collapsed on construction (see :class:`Track`).

    Args:
        hint: the acoustic hint (non-empty).
        grounding: the free paragraph between the hint and the first track; may be empty.
        tracks: one or more tracks with unique names.

    Raises:
        CaptionFormatError: if any field breaks the rules above.
    """

    hint: str
    grounding: str
    tracks: list[Track]

    def __post_init__(self) -> None:
        _check_str(self.hint, "HINT")
        _check_str(self.grounding, "grounding paragraph")
        self.hint = _collapse(self.hint)
        self.grounding = _collapse(self.grounding)
        if not self.hint:
            raise CaptionFormatError("empty <HINT>")
        _check_free_text(self.hint, "HINT")
        _check_free_text(self.grounding, "grounding paragraph")
        if not isinstance(self.tracks, list) or not all(isinstance(t, Track) for t in self.tracks):
            raise CaptionFormatError(f"tracks must be a list of Track, got {self.tracks!r}")
        if not self.tracks:
            raise CaptionFormatError("no <TRACK> found")
        first_index: dict[str, int] = {}
        for index, track in enumerate(self.tracks, start=1):
            if track.name in first_index:
                raise CaptionFormatError(
                    f"duplicate track name {track.name!r} "
                    f"(TRACK {first_index[track.name]} and TRACK {index})"
                )
            first_index[track.name] = index

    @property
    def on_screen(self) -> list[Track]:
        """Tracks whose source is visible, in caption order."""
        return [t for t in self.tracks if t.screen == "on_screen"]

    @property
    def off_screen(self) -> list[Track]:
        """Tracks whose source is not visible, in caption order."""
        return [t for t in self.tracks if t.screen == "off_screen"]

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict ``{"hint", "grounding", "tracks": [track dicts]}``."""
        return {
            "hint": self.hint,
            "grounding": self.grounding,
            "tracks": [t.to_dict() for t in self.tracks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThinkCaption:
        """Builds a caption from :meth:`to_dict` output.

        Raises:
            CaptionFormatError: on a missing key or an invalid value.
        """
        if not isinstance(data, dict):
            raise CaptionFormatError(f"a caption must be a dict, got {data!r}")
        missing = [key for key in ("hint", "grounding", "tracks") if key not in data]
        if missing:
            raise CaptionFormatError(f"caption dict is missing key {missing[0]!r}")
        tracks = data["tracks"]
        if isinstance(tracks, list):
            tracks = [Track.from_dict(t) for t in tracks]
        return cls(hint=data["hint"], grounding=data["grounding"], tracks=tracks)


def _parse_track(text: str, start: int, index: int) -> tuple[Track, int]:
    """Parses the track whose ``<TRACK`` opens at ``start``.

    Returns:
        The track and the position just after its ``</TRACK>``.
    """
    where = f"TRACK {index}"
    tag_end = text.find(">", start)
    next_open = text.find("<", start + 1)
    if tag_end < 0 or (0 <= next_open < tag_end):
        raise CaptionFormatError(f"{where}: opening tag is not closed with '>'")
    attrs = text[start + len("<TRACK") : tag_end]
    match = _TRACK_ATTRS.fullmatch(attrs)
    if match is None:
        raise CaptionFormatError(
            f"{where}: malformed tag <TRACK{attrs}>, expected "
            "<TRACK name='…' screen=on_screen|off_screen>"
        )
    name, screen = match["name"], match["screen"]
    if not _NAME.fullmatch(name):
        raise CaptionFormatError(f"{where}: name {name!r} must match [A-Za-z0-9_]+")
    if screen not in SCREENS:
        raise CaptionFormatError(f"{where}: screen must be on_screen or off_screen, got {screen!r}")

    close = text.find("</TRACK>", tag_end)
    # A later <TRACK> before our </TRACK> means this one was never closed; without the check the
    # next track's body would be swallowed into this one.
    reopened = text.find("<TRACK", tag_end)
    if close < 0 or (0 <= reopened < close):
        raise CaptionFormatError(f"{where} ({name}): unclosed <TRACK>")
    body = text[tag_end + 1 : close]
    keywords = _KEYWORDS.fullmatch(body)
    if keywords is None:
        if "<KEYWORDS>" not in body:
            reason = "missing <KEYWORDS>"
        elif "</KEYWORDS>" not in body:
            reason = "missing </KEYWORDS>"
        else:
            reason = f"unexpected content in track body {_snippet(body)!r}"
        raise CaptionFormatError(f"{where} ({name}): {reason}")
    listed = keywords["body"]
    if not _collapse(listed):
        raise CaptionFormatError(f"{where} ({name}): empty <KEYWORDS>")
    items = listed.split(",")
    if any(not _collapse(item) for item in items):
        raise CaptionFormatError(f"{where} ({name}): empty keyword in {_snippet(listed)!r}")
    return Track(name=name, screen=screen, keywords=items), close + len("</TRACK>")


def parse_caption(text: str) -> ThinkCaption:
    """Parses a VGGSound-Think caption.

    Args:
        text: the caption; any whitespace layout.

    Returns:
        The parsed caption, with whitespace collapsed in every field.

    Raises:
        CaptionFormatError: naming the first problem found, e.g. ``missing </HINT>`` or
            ``TRACK 2: screen must be on_screen or off_screen, got 'onscreen'``.
    """
    text = text.strip()
    if not text.startswith("<HINT>"):
        raise CaptionFormatError(f"caption must start with <HINT>, got {_snippet(text)!r}")
    hint_end = text.find("</HINT>")
    if hint_end < 0:
        raise CaptionFormatError("missing </HINT>")
    hint = text[len("<HINT>") : hint_end]
    if "<" in hint:
        raise CaptionFormatError(f"unexpected tag inside <HINT>: {_snippet(hint)!r}")

    position = hint_end + len("</HINT>")
    first_track = text.find("<TRACK", position)
    if first_track < 0:
        raise CaptionFormatError("no <TRACK> found")
    grounding = text[position:first_track]
    if "<" in grounding or ">" in grounding:
        raise CaptionFormatError(f"unexpected tag in the grounding paragraph: {_snippet(grounding)!r}")

    tracks: list[Track] = []
    position = first_track
    while True:
        track, position = _parse_track(text, position, len(tracks) + 1)
        tracks.append(track)
        rest = text[position:]
        stripped = rest.lstrip()
        if not stripped:
            break
        if not stripped.startswith("<TRACK"):
            if "<TRACK" in stripped:
                raise CaptionFormatError(
                    f"text outside tags between TRACK {len(tracks)} and TRACK {len(tracks) + 1}: "
                    f"{_snippet(stripped)!r}"
                )
            raise CaptionFormatError(f"text outside tags after the last TRACK: {_snippet(stripped)!r}")
        position += len(rest) - len(stripped)
    return ThinkCaption(hint=hint, grounding=grounding, tracks=tracks)


def format_caption(caption: ThinkCaption) -> str:
    """Serialises a caption in the canonical single-line form (module docstring).

    ``parse_caption(format_caption(c)) == c`` for every valid caption ``c``.
    """
    parts = [f"<HINT>{caption.hint}</HINT>"]
    if caption.grounding:
        parts.append(caption.grounding)
    for track in caption.tracks:
        parts.append(
            f"<TRACK name='{track.name}' screen={track.screen}> "
            f"<KEYWORDS> {', '.join(track.keywords)} </KEYWORDS> </TRACK>"
        )
    return " ".join(parts)
