"""The captions of a synthetic scene (:mod:`reasonaudio.data_modules.synthetic`): a VGGSound-Think caption whose
hint names no object, whose grounding paragraph describes every source and when it sounds, and whose tracks mark
off-screen sources ``screen=off_screen``; and a plain VGGSound-style label. Both read only the scene dict."""
from __future__ import annotations

from typing import Any

from reasonaudio.captions.format import ThinkCaption, Track, format_caption

_COLOUR_NAMES = {"ball": "red", "block": "blue", "bell": "golden"}
_LABELS = {"ball": "ball bouncing", "block": "block knocking", "bell": "bell ringing", "hum": "electric hum",
           "rain": "rain", "beeps": "beeping"}


def _grade(value: float, low: str, middle: str, high: str) -> str:
    """Names the third of [0, 1] that ``value`` falls in."""
    return low if value < 1 / 3 else high if value > 2 / 3 else middle


def _join(phrases: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _describe(source: dict[str, Any]) -> tuple[str, str, list[str]]:
    """The hint phrase (no object names), grounding sentence and keywords of one source."""
    kind = source["type"]
    if source["screen"] == "off_screen":
        if kind == "hum":
            return ("a steady low drone", "A steady low hum continues throughout from a source that is not visible.",
                    ["low drone", "steady", "harmonic", "continuous"])
        if kind == "rain":
            return ("a continuous soft broadband hiss", "A soft hiss like rain fills the background, though no rain "
                    "is shown.", ["broadband hiss", "steady", "noisy", "continuous"])
        period = f"{source['period']:.1f} s"
        return ("short high beeps at a regular pace", f"An off-screen device beeps about every {period}.",
                ["beeping", "high tone", "periodic", f"every {period}"])
    pitch = _grade(source["size"], "high", "mid", "low")  # bigger is lower
    size = _grade(source["size"], "small", "medium-sized", "large")
    tone = _grade(source["brightness"], "dull", "mellow", "bright")
    shade = _grade(source["brightness"], "dark ", "", "light ")
    colour = f"{shade}{_COLOUR_NAMES[kind]}"
    n, first = len(source["impact_times"]), source["impact_times"][0]
    if kind == "ball":
        return (f"{tone} {pitch}-pitched tonal pings",
                f"A {size} {colour} ball bounces on the floor; each of its {_count(n, 'landing')}, the first at "
                f"{first:.1f} s, gives a short {pitch}-pitched ping.",
                ["ping", f"{pitch} pitch", tone, "tonal", "short decay", _count(n, "bounce")])
    if kind == "block":
        return (f"short {tone} {pitch}-pitched knocks",
                f"A {size} {colour} block slides along the floor and knocks against the right wall "
                f"{_count(n, 'time')}, first at {first:.1f} s.",
                ["knock", f"{pitch} pitch", tone, "noisy", "very short", _count(n, "hit")])
    return (f"{tone} {pitch}-pitched inharmonic ringing that lingers",
            f"A {size} {colour} bell swings from the ceiling and rings each time it strikes the post "
            f"({_count(n, 'strike')}, the first at {first:.1f} s), its tone fading slowly after each.",
            ["ringing", f"{pitch} pitch", tone, "inharmonic", "long decay", _count(n, "strike")])


def make_caption(scene: dict[str, Any]) -> str:
    """The VGGSound-Think caption of a scene: an object-agnostic hint, a grounding paragraph and one track per
    source, with off-screen sources marked ``screen=off_screen``."""
    described = [(source, *_describe(source)) for source in scene["sources"]]
    heard = [phrase for source, phrase, _, _ in described if source["screen"] == "on_screen"]
    background = [phrase for source, phrase, _, _ in described if source["screen"] == "off_screen"]
    hint = _join(heard) + " recur at irregular moments"
    hint = (hint + ", over " + _join(background) if background else hint + " in a quiet room") + "."
    caption = ThinkCaption(
        hint=hint[0].upper() + hint[1:],
        grounding=" ".join(sentence for _, _, sentence, _ in described),
        tracks=[Track(name=source["name"], screen=source["screen"], keywords=keywords)
                for source, _, _, keywords in described],
    )
    return format_caption(caption)


def make_label(scene: dict[str, Any]) -> str:
    """A plain VGGSound-style label listing every source, e.g. ``"ball bouncing, electric hum"``."""
    return ", ".join(_LABELS[source["type"]] for source in scene["sources"])
