"""Validation rules of the three annotation answers and of assembled captions (paper Appendix D.1, F)."""
from __future__ import annotations

import pytest
from test_captions_format import PAPER_EXAMPLE_1

from reasonaudio.captions.format import format_caption, parse_caption
from reasonaudio.captions.prompts import STEPS, judge_prompt, read_word_list, repair_prompt, step_prompt
from reasonaudio.captions.validate import (ValidationError, ValidationRules, check_gist, check_grounding,
                                           count_sentences, keyword_units, parse_structured, validate_caption)

# Appendix F, verbatim (shared with the format tests).
EXAMPLE_1 = PAPER_EXAMPLE_1.strip()

EXAMPLE_2 = """<HINT>Crisp, granular crunching under pressure is followed by a series of brief, energetic, high-
pitched tonal bursts and indistinct murmurs. A powerful and sustained rush of air builds, suggesting
rapid movement through an open, cold environment. </HINT> This video captures a first-person
perspective of someone standing on and then tumbling down a snowy mountain slope. The audio
begins with faint, distant shouts and wind, which are abruptly replaced by a loud, chaotic scrap-
ing and rushing sound as the person slides down the hill. This intense sound of friction and tur-
bulence continues until the person comes to a stop, followed by a close-up, heavy exhale. The
overall acoustics are dominated by the near-field, high-energy turbulent noise of the slide, contrast-
ing with the initially distant environmental sounds. <TRACK name='wind' screen=off_screen>
<KEYWORDS> broadband noise turbulent rushing </KEYWORDS> </TRACK> <TRACK
name='distant_human_speech' screen=off_screen> <KEYWORDS> distant muffled indistinct
chatter </KEYWORDS> </TRACK> <TRACK name='human_vocalization' screen=off_screen>
<KEYWORDS> close_mic effort grunt breathy exhale </KEYWORDS> </TRACK> <TRACK
name='sliding_on_snow' screen=on_screen> <KEYWORDS> friction scraping turbulent rush
granular </KEYWORDS> </TRACK>"""

# Appendix D.2, GPT-4o's structured answer for the fire-truck clip.
D2_ANSWER = """<Object 'mechanical_siren' screen=on_screen> wailing rise_fall; reverberant
<Object 'human_speech' screen=on_screen> faint; brief; reverberant
<Object 'antique_fire_truck_engine' screen=on_screen> idling rumble; chugging"""

RULES = ValidationRules()


def test_prompts_are_the_papers_verbatim():
    gist = step_prompt("gist")
    assert gist.startswith("You are given a video (frames) and its audio. Write a *single-sentence* coarse acoustic")
    assert "(e.g., avoid “car”, “dog”, “siren”)" in gist and gist.endswith("Output only the one sentence.")
    grounding = step_prompt("grounding")
    assert "**one concise paragraph** (2–4 sentences)" in grounding and "(do NOT invent objects)" in grounding
    structured = step_prompt("structured")
    assert "`<Object '{object_id}' screen={on_screen/off_screen}> {audio_keywords}`" in structured
    assert "- Provide 3–8 terse keywords/phrases separated by spaces." in structured
    assert "`masked_by_X` or `overlaps_with_X`" in structured
    assert len(STEPS) == 3 and all(step_prompt(s).startswith("You are given a video (frames) and its audio.")
                                   for s in STEPS)
    assert "got 2 sentences" in repair_prompt("write a single sentence, got 2 sentences")
    assert "Caption 1: AAA" in judge_prompt("AAA", "BBB") and "Caption 2: BBB" in judge_prompt("AAA", "BBB")
    with pytest.raises(ValueError, match="unknown annotation step"):
        step_prompt("summary")


@pytest.mark.parametrize("example", [EXAMPLE_1, EXAMPLE_2])
def test_appendix_f_examples_pass(example):
    caption = validate_caption(example, RULES)
    assert len(caption.tracks) == 4
    assert validate_caption(format_caption(caption), RULES) == caption


def test_appendix_f_keyword_counts():
    one, two = parse_caption(EXAMPLE_1), parse_caption(EXAMPLE_2)
    assert [len(keyword_units(t.keywords)[0]) for t in one.tracks] == [4, 4, 4, 4]  # comma phrases
    assert [len(keyword_units(t.keywords)[0]) for t in two.tracks] == [4, 4, 5, 5]  # space-separated words
    assert count_sentences(two.hint) == 2 and count_sentences(two.grounding) == 4


def _swap(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def _only_tracks(example: str, keep: int) -> str:
    head, *tracks = example.split("<TRACK")
    return head + "".join("<TRACK" + t for t in tracks[:keep])


CORRUPTIONS = {
    "object in hint": (_swap(EXAMPLE_1, "Someone calls 911", "A dog barks as someone calls 911"),
                       "gist", "names sound-producing objects ('dog')"),
    "camelCase id": (_swap(EXAMPLE_1, "'caller_waiting'", "'callerWaiting'"),
                     "structured", "'callerWaiting' is not snake_case"),
    "double underscore": (_swap(EXAMPLE_2, "'wind'", "'wind__gust'"), "structured", "'wind__gust' is not snake_case"),
    "duplicate id": (_swap(EXAMPLE_2, "'distant_human_speech'", "'wind'"), "caption",
                     "duplicate track name 'wind' (TRACK 1 and TRACK 2)"),
    "bad screen": (_swap(EXAMPLE_1, "screen=on_screen", "screen=onscreen"), "caption",
                   "TRACK 1: screen must be on_screen or off_screen, got 'onscreen'"),
    "two keywords": (_swap(EXAMPLE_1, "quiet room, anxious\npacing, soft rustle, handset handling",
                           "quiet room, pacing"), "structured", "keywords of 'caller_waiting': expected 3–8, got 2"),
    "nine keywords": (_swap(EXAMPLE_2, "broadband noise turbulent rushing", "a b c d e f g h i"),
                      "structured", "keywords of 'wind': expected 3–8, got 9"),
    "one track": (_only_tracks(EXAMPLE_1, 1), "structured", "number of objects: expected 2–6, got 1"),
    "seven tracks": (EXAMPLE_2 + "".join(f" <TRACK name='extra_{i}' screen=off_screen> <KEYWORDS> a b c </KEYWORDS>"
                                         " </TRACK>" for i in range(3)), "structured",
                     "number of objects: expected 2–6, got 7"),
    "cue to a missing id": (_swap(EXAMPLE_2, "broadband noise turbulent rushing",
                                  "broadband noise turbulent rushing masked_by_engine"), "structured",
                            "cue 'masked_by_engine' of 'wind' refers to 'engine', which is not an object id"),
    "one-sentence grounding": (_swap(EXAMPLE_2, " The audio\nbegins", " <TRACK").split(" <TRACK")[0] + " <TRACK"
                               + EXAMPLE_2.split("<TRACK", 1)[1], "grounding",
                               "sentences in the paragraph: expected 2–4, got 1"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupted_examples_fail_with_the_reason(name):
    text, step, reason = CORRUPTIONS[name]
    with pytest.raises(ValidationError) as error:
        validate_caption(text, RULES)
    assert error.value.step == step and reason in error.value.message


def test_cue_to_an_existing_id_is_accepted_and_not_counted():
    text = _swap(EXAMPLE_2, "broadband noise turbulent rushing", "broadband noise turbulent masked_by_sliding_on_snow")
    caption = validate_caption(text, RULES)
    assert keyword_units(caption.tracks[0].keywords) == (["broadband", "noise", "turbulent"],
                                                          ["masked_by_sliding_on_snow"])


def test_papers_structured_answer_parses_into_tracks():
    tracks = parse_structured(D2_ANSWER, RULES)
    assert [(t.name, t.screen) for t in tracks] == [("mechanical_siren", "on_screen"), ("human_speech", "on_screen"),
                                                    ("antique_fire_truck_engine", "on_screen")]
    assert tracks[0].keywords == ["wailing rise_fall; reverberant"]  # kept verbatim
    assert [len(keyword_units(t.keywords)[0]) for t in tracks] == [3, 3, 3]


def test_structured_answer_tolerates_a_step_one_list_and_fences_but_not_broken_object_lines():
    chatty = ("Step 1: mechanical_siren, human_speech\n```\n- <Object 'mechanical_siren' screen=on_screen> wailing "
              "rise_fall reverberant overlaps_with_human_speech\n"
              "2. `<Object \"human_speech\" screen=off_screen> faint, brief, muffled`\n```")
    tracks = parse_structured(chatty, RULES)
    assert [(t.name, t.screen, t.keywords) for t in tracks] == [
        ("mechanical_siren", "on_screen", ["wailing rise_fall reverberant overlaps_with_human_speech"]),
        ("human_speech", "off_screen", ["faint", "brief", "muffled"])]
    cases = {
        "<Object 'a_b' screen=on_screen> x y z\n<Object 'c' on_screen> x y z": "line 2 does not follow the format",
        "<Object 'a_b' screen=visible> x y z\n<Object 'c' screen=on_screen> x y z": "screen must be on_screen or "
                                                                                    "off_screen, got 'visible'",
        "<Object 'a_b' screen=on_screen> x, , z\n<Object 'c' screen=on_screen> x y z": "line 1 (a_b): empty keyword",
        "<Object 'a_b' screen=on_screen> x y z masked_by_a_b\n<Object 'c' screen=on_screen> x y z": "refers to itself",
        "<Object 'a' screen=on_screen> x y z masked_by_b overlaps_with_b\n<Object 'b' screen=on_screen> x y z":
            "has 2 interaction cues",
        "The siren wails.": "no <Object 'object_id' screen=on_screen|off_screen> keywords line found",
        "<Object 'a' screen=on_screen> x y z\n<Object 'a' screen=off_screen> u v w": "must be unique, repeated: a",
    }
    for answer, reason in cases.items():
        with pytest.raises(ValidationError, match=None) as error:
            parse_structured(answer, RULES)
        assert reason in error.value.message, (answer, error.value.message)


def test_gist_and_grounding_rules():
    assert check_gist("  Steady   low rumble.  ", RULES) == "Steady low rumble."
    for text, reason in {"": "the answer is empty", "A <b>loud</b> hum.": "without '<' or '>'",
                         "One. Two. Three.": "at most 2 sentences, got 3",
                         "Barking DOGS and buses.": "('buses', 'dogs')",
                         "A fire\n truck passes.": "('fire truck')"}.items():
        with pytest.raises(ValidationError) as error:
            check_gist(text, RULES)
        assert reason in error.value.message, (text, error.value.message)
    strict = ValidationRules(gist_max_sentences=1, object_names=("hum",))
    with pytest.raises(ValidationError, match="write a single sentence, got 2"):
        check_gist("Low. High.", strict)
    assert check_gist("A dog barks.", strict) == "A dog barks."  # the configured list replaces the default
    assert check_grounding("A truck is shown. Its engine rumbles!", RULES).endswith("rumbles!")
    with pytest.raises(ValidationError, match="expected 2–4, got 5"):
        check_grounding("A. B. C. D. E.", RULES)


def test_sentence_counting():
    texts = ("", "no stop", "One. Two", "“Quoted.” Next!", "Pitch is 3.5 kHz. Ok?")
    assert [count_sentences(t) for t in texts] == [0, 1, 2, 2, 2]


def test_word_lists_and_rule_arguments(tmp_path):
    names = read_word_list()
    assert {"car", "dog", "siren"} <= set(names) and "drone" not in names
    custom = tmp_path / "names.txt"
    custom.write_text("# comment\nGoat\n\nsea lion\n")
    assert read_word_list(custom) == ("goat", "sea lion")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.txt: the word list is empty"):
        read_word_list(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="missing.txt: cannot read"):
        read_word_list(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="tracks must be"):
        ValidationRules(tracks=(5, 2))
