"""VGGSound-Think caption format: the paper's examples round-trip, malformed captions say why."""
from __future__ import annotations

import json
import re

import pytest

from reasonaudio.captions.format import CaptionFormatError, ThinkCaption, Track, format_caption, parse_caption

# Appendix F of the paper (paper/000_7e94c07eda9983a6.txt, lines 956-989), with the PDF line
# numbers and italics markers removed and the PDF's line breaks kept, except where the PDF
# hyphenated a word across lines: those lines are joined, "high-pitched" keeping its hyphen and
# "scraping", "turbulence" and "contrasting" (words split by the typesetter) losing theirs.
PAPER_EXAMPLE_1 = """\
<HINT>Someone calls 911 and stays here until help arrives.</HINT> <TRACK
name='caller_waiting' screen=on_screen> <KEYWORDS> quiet room, anxious
pacing, soft rustle, handset handling </KEYWORDS> </TRACK> <TRACK
name='approaching_emergency_vehicle' screen=off_screen> <KEYWORDS> cycling
tonal pattern, rising loudness, approach-pass, outdoor </KEYWORDS> </TRACK>
<TRACK name='dispatch_handset_exchange' screen=off_screen> <KEYWORDS> clipped
phrases, short bursts, handheld device, intermittent </KEYWORDS> </TRACK> <TRACK
name='intersection_yield_dynamics' screen=off_screen> <KEYWORDS> brake rub, tire scrub,
indicator ticks, staggered movement </KEYWORDS> </TRACK>
"""

PAPER_EXAMPLE_2 = """\
<HINT>Crisp, granular crunching under pressure is followed by a series of brief, energetic, high-pitched tonal bursts and indistinct murmurs. A powerful and sustained rush of air builds, suggesting
rapid movement through an open, cold environment. </HINT> This video captures a first-person
perspective of someone standing on and then tumbling down a snowy mountain slope. The audio
begins with faint, distant shouts and wind, which are abruptly replaced by a loud, chaotic scraping and rushing sound as the person slides down the hill. This intense sound of friction and turbulence continues until the person comes to a stop, followed by a close-up, heavy exhale. The
overall acoustics are dominated by the near-field, high-energy turbulent noise of the slide, contrasting with the initially distant environmental sounds. <TRACK name='wind' screen=off_screen>
<KEYWORDS> broadband noise turbulent rushing </KEYWORDS> </TRACK> <TRACK
name='distant_human_speech' screen=off_screen> <KEYWORDS> distant muffled indistinct
chatter </KEYWORDS> </TRACK> <TRACK name='human_vocalization' screen=off_screen>
<KEYWORDS> close_mic effort grunt breathy exhale </KEYWORDS> </TRACK> <TRACK
name='sliding_on_snow' screen=on_screen> <KEYWORDS> friction scraping turbulent rush
granular </KEYWORDS> </TRACK>
"""


def _normalise(text: str) -> str:
    """Collapses whitespace and drops it next to tags: the equivalence the parser promises."""
    return re.sub(r"\s*(<[^<>]*>)\s*", r"\1", " ".join(text.split()))


def _track(name: str, screen: str = "on_screen", keywords: str = "a, b") -> str:
    return f"<TRACK name='{name}' screen={screen}> <KEYWORDS> {keywords} </KEYWORDS> </TRACK>"


def _caption(*tracks: str, grounding: str = "") -> str:
    return " ".join(["<HINT>a hint</HINT>", grounding, *tracks])


@pytest.mark.parametrize("text", [PAPER_EXAMPLE_1, PAPER_EXAMPLE_2], ids=["example1", "example2"])
def test_paper_examples_round_trip(text: str) -> None:
    canonical = format_caption(parse_caption(text))
    assert _normalise(canonical) == _normalise(text)
    assert "\n" not in canonical
    assert parse_caption(canonical) == parse_caption(text)


def test_paper_examples_canonical_text() -> None:
    assert format_caption(parse_caption(PAPER_EXAMPLE_1)) == " ".join(PAPER_EXAMPLE_1.split())
    # The only layout change in example 2 is the space the paper leaves before </HINT>.
    expected = " ".join(PAPER_EXAMPLE_2.split()).replace("environment. </HINT>", "environment.</HINT>")
    assert format_caption(parse_caption(PAPER_EXAMPLE_2)) == expected


def test_paper_example_1_fields() -> None:
    caption = parse_caption(PAPER_EXAMPLE_1)
    assert caption.hint == "Someone calls 911 and stays here until help arrives."
    assert caption.grounding == ""
    assert [t.name for t in caption.tracks] == [
        "caller_waiting",
        "approaching_emergency_vehicle",
        "dispatch_handset_exchange",
        "intersection_yield_dynamics",
    ]
    assert caption.tracks[0].keywords == [
        "quiet room", "anxious pacing", "soft rustle", "handset handling"
    ]
    assert caption.tracks[1].keywords == [
        "cycling tonal pattern", "rising loudness", "approach-pass", "outdoor"
    ]
    assert [t.name for t in caption.on_screen] == ["caller_waiting"]
    assert len(caption.off_screen) == 3


def test_paper_example_2_fields() -> None:
    caption = parse_caption(PAPER_EXAMPLE_2)
    assert "energetic, high-pitched tonal bursts" in caption.hint
    assert caption.hint.endswith("cold environment.")
    assert caption.grounding.startswith("This video captures a first-person perspective")
    assert "chaotic scraping and rushing sound" in caption.grounding
    assert caption.grounding.endswith("the initially distant environmental sounds.")
    # Bare word lists stay one keyword: their phrase boundaries are unknown.
    assert caption.tracks[0].keywords == ["broadband noise turbulent rushing"]
    assert caption.tracks[2].keywords == ["close_mic effort grunt breathy exhale"]
    assert [t.name for t in caption.on_screen] == ["sliding_on_snow"]
    assert [t.name for t in caption.off_screen] == ["wind", "distant_human_speech", "human_vocalization"]


def test_layout_is_free_and_double_quoted_names_are_canonicalised() -> None:
    text = (
        "\n  <HINT>\n a   hint </HINT>\n\n some\tgrounding \n"
        '<TRACK   name="dog_1"\n screen=on_screen  >\n<KEYWORDS>bark ,  growl\n</KEYWORDS></TRACK>\n'
    )
    caption = parse_caption(text)
    dog = Track("dog_1", "on_screen", ["bark", "growl"])
    assert caption == ThinkCaption("a hint", "some grounding", [dog])
    assert format_caption(caption) == (
        "<HINT>a hint</HINT> some grounding "
        "<TRACK name='dog_1' screen=on_screen> <KEYWORDS> bark, growl </KEYWORDS> </TRACK>"
    )


def test_constructed_caption_round_trips() -> None:
    caption = ThinkCaption(
        hint="  rain\non a roof ",
        grounding="",
        tracks=[
            Track("rain", "on_screen", ["steady  patter", "drip"]),
            Track("thunder", "off_screen", ["rumble"]),
        ],
    )
    assert caption.hint == "rain on a roof"
    assert caption.tracks[0].keywords == ["steady patter", "drip"]
    assert parse_caption(format_caption(caption)) == caption


def test_dict_round_trip_through_json() -> None:
    caption = parse_caption(PAPER_EXAMPLE_2)
    restored = ThinkCaption.from_dict(json.loads(json.dumps(caption.to_dict())))
    assert restored == caption
    assert caption.to_dict()["tracks"][3] == {
        "name": "sliding_on_snow",
        "screen": "on_screen",
        "keywords": ["friction scraping turbulent rush granular"],
    }


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a hint</HINT> " + _track("a"), "caption must start with <HINT>"),
        ("<HINT>a hint " + _track("a"), "missing </HINT>"),
        ("<HINT> </HINT> " + _track("a"), "empty <HINT>"),
        ("<HINT>a hint</HINT> grounding only", "no <TRACK> found"),
        (_caption(_track("a"), grounding="see <b>this</b>"),
         "unexpected tag in the grounding paragraph"),
        (_caption(_track("a"), _track("b", screen="onscreen")),
         "TRACK 2: screen must be on_screen or off_screen, got 'onscreen'"),
        (_caption(_track("a b")), "TRACK 1: name 'a b' must match [A-Za-z0-9_]+"),
        (_caption(_track("a-b")), "TRACK 1: name 'a-b' must match [A-Za-z0-9_]+"),
        (_caption("<TRACK name='a'> <KEYWORDS> x </KEYWORDS> </TRACK>"), "TRACK 1: malformed tag"),
        (_caption("<TRACK name='a' screen=on_screen <KEYWORDS> x </KEYWORDS> </TRACK>"),
         "TRACK 1: opening tag is not closed with '>'"),
        (_caption("<TRACK name='a' screen=on_screen> <KEYWORDS> x </KEYWORDS>", _track("b")),
         "TRACK 1 (a): unclosed <TRACK>"),
        (_caption("<TRACK name='a' screen=on_screen> <KEYWORDS> x </KEYWORDS>"),
         "TRACK 1 (a): unclosed <TRACK>"),
        (_caption("<TRACK name='a' screen=on_screen> x </TRACK>"), "TRACK 1 (a): missing <KEYWORDS>"),
        (_caption("<TRACK name='a' screen=on_screen> <KEYWORDS> x </TRACK>"),
         "TRACK 1 (a): missing </KEYWORDS>"),
        (_caption("<TRACK name='a' screen=on_screen> y <KEYWORDS> x </KEYWORDS> </TRACK>"),
         "TRACK 1 (a): unexpected content in track body"),
        (_caption(_track("a", keywords=" ")), "TRACK 1 (a): empty <KEYWORDS>"),
        (_caption(_track("a", keywords="x,, y")), "TRACK 1 (a): empty keyword"),
        (_caption(_track("a"), _track("b"), _track("a")),
         "duplicate track name 'a' (TRACK 1 and TRACK 3)"),
        (_caption(_track("a"), "stray words"), "text outside tags after the last TRACK: 'stray words'"),
        (_caption(_track("a"), "stray", _track("b")), "text outside tags between TRACK 1 and TRACK 2"),
    ],
)
def test_malformed_captions_are_rejected_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(CaptionFormatError) as info:
        parse_caption(text)
    assert reason in str(info.value)


def test_caption_format_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="missing </HINT>"):
        parse_caption("<HINT>x")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"name": "a b", "screen": "on_screen", "keywords": ["x"]},
         "TRACK name 'a b' must match [A-Za-z0-9_]+"),
        ({"name": "a", "screen": "visible", "keywords": ["x"]},
         "screen must be on_screen or off_screen, got 'visible'"),
        ({"name": "a", "screen": "on_screen", "keywords": []}, "no keywords"),
        ({"name": "a", "screen": "on_screen", "keywords": ["x, y"]}, "keyword 'x, y' contains a comma"),
        ({"name": "a", "screen": "on_screen", "keywords": ["<x>"]}, "must not contain '<' or '>'"),
        ({"name": "a", "screen": "on_screen", "keywords": [" "]}, "empty keyword"),
        ({"name": "a", "screen": "on_screen", "keywords": [3]}, "keyword must be a string, got 3"),
    ],
)
def test_invalid_tracks_cannot_be_constructed(kwargs: dict, reason: str) -> None:
    with pytest.raises(CaptionFormatError) as info:
        Track(**kwargs)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"grounding": "", "tracks": []}, "missing key 'hint'"),
        ({"hint": "h", "grounding": "", "tracks": "wind"}, "tracks must be a list of Track"),
        ({"hint": "h", "grounding": "", "tracks": []}, "no <TRACK> found"),
        ({"hint": "h", "grounding": "", "tracks": ["wind"]}, "a track must be a dict"),
        ({"hint": "h", "grounding": "", "tracks": [{"name": "w", "screen": "on_screen"}]},
         "missing key 'keywords'"),
        ({"hint": "h", "grounding": "",
          "tracks": [{"name": "w", "screen": "on_screen", "keywords": "x"}]},
         "TRACK 'w': keywords must be a list"),
        ({"hint": None, "grounding": "", "tracks": []}, "HINT must be a string"),
    ],
)
def test_from_dict_rejects_bad_dicts(data: dict, reason: str) -> None:
    with pytest.raises(CaptionFormatError) as info:
        ThinkCaption.from_dict(data)
    assert reason in str(info.value)
