"""The three-step annotation pipeline end to end: scripted HTTP server, repairs, rejections, resume, data modules."""
from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path

import pytest
from test_captions_server import Answer, Request, ScriptedServer, backend, usage_of

from reasonaudio.captions.attachments import MediaSpec, load_clip_media
from reasonaudio.captions.format import Track, parse_caption
from reasonaudio.captions.inputs import read_clips
from reasonaudio.captions.pipeline import run_annotation
from reasonaudio.captions.prompts import repair_prompt, step_prompt
from reasonaudio.captions.store import ResultStore, read_records, rejected_path
from reasonaudio.captions.validate import ValidationError, ValidationRules, check_grounding
from reasonaudio.data_modules.synthetic import synthesize_corpus
from reasonaudio.data_modules.vggsound import VGGSoundThinkDataModule
from reasonaudio.media import MediaError

RULES = ValidationRules()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Eight rendered synthetic clips (1 s, 32 px); their manifest captions are the scripted model's answers."""
    return synthesize_corpus(tmp_path_factory.mktemp("synth") / "corpus", num_clips=8, seed=0, duration=1.0, size=32,
                             progress=False)


def manifest_captions(manifest: Path) -> dict[str, str]:
    return {row["id"]: row["caption"] for row in map(json.loads, manifest.read_text().splitlines())}


def structured_answer(tracks: list[Track]) -> str:
    """The structured step's answer format for given tracks."""
    return "\n".join(f"<Object '{t.name}' screen={t.screen}> {', '.join(t.keywords)}" for t in tracks)


class SyntheticVLM:
    """Answers each step from the clip's ground-truth caption after ``delay`` seconds; ``overrides[request_id]``
    are served first."""

    def __init__(self, manifest: Path, overrides: dict[str, list[Answer]] | None = None, delay: float = 0.0):
        self.captions = {k: parse_caption(v) for k, v in manifest_captions(manifest).items()}
        self.overrides = {k: list(v) for k, v in (overrides or {}).items()}
        self.delay = delay

    def correct(self, clip_id: str, step: str) -> str:
        caption = self.captions[clip_id]
        return {"gist": caption.hint, "grounding": caption.grounding,
                "structured": structured_answer(caption.tracks)}[step]

    def __call__(self, request: Request) -> Answer:
        clip_id, step, _ = request.request_id.split(":")
        assert request.first_text == step_prompt(step)  # the paper's prompt, verbatim, in every request
        queue = self.overrides.get(request.request_id)
        if queue:
            return queue.pop(0)
        return Answer(self.correct(clip_id, step), delay=self.delay)


def test_synthetic_corpus_end_to_end_with_repairs_rejections_timeouts_and_429s(corpus, tmp_path):
    captions = manifest_captions(corpus)
    first_tracks = parse_caption(captions["synth_000002"]).tracks
    bad_screen = structured_answer(first_tracks).replace("screen=on_screen", "screen=onscreen", 1)
    chatty = ("Step 1: objects listed.\n```\n" + structured_answer(parse_caption(captions["synth_000006"]).tracks)
              + "\n```")
    vlm = SyntheticVLM(corpus, {
        "synth_000001:gist:1": [Answer("A bell rings over a barking dog.")],  # names objects → repaired
        "synth_000002:structured:1": [Answer(bad_screen)],  # malformed twice → rejected
        "synth_000002:structured:2": [Answer(bad_screen)],
        "synth_000003:grounding:1": [Answer("too late", delay=0.8)],  # > 0.3 s client timeout → retried
        "synth_000004:gist:1": [Answer(status=429, headers={"Retry-After": "0.2"})],
        "synth_000006:structured:1": [Answer(chatty)],  # extra lines around valid object lines: accepted
    })
    out = tmp_path / "think.jsonl"
    with ScriptedServer(vlm) as server:
        client = backend(server.url, frames=2, max_side=32, price_per_1k_prompt=0.5, price_per_1k_completion=2.0)
        summary = run_annotation(read_clips(corpus), client, out, RULES, workers=3, progress=False)

    accepted = {r["id"]: r for r in read_records(out)}
    rejected = {r["id"]: r for r in read_records(rejected_path(out))}
    assert sorted(accepted) == ["synth_000000", "synth_000001", "synth_000003", "synth_000004", "synth_000005",
                                "synth_000006"]
    assert sorted(rejected) == ["synth_000002", "synth_000007"]
    # Accepted captions are the model's three answers assembled, nothing else: here the ground truth exactly.
    for clip_id, record in accepted.items():
        assert record["caption"] == captions[clip_id] and record["status"] == "accepted"
        assert record["video"] == str((corpus.parent / "videos" / f"{clip_id}.mp4").resolve())
    assert accepted["synth_000001"]["repairs"] == 1
    assert accepted["synth_000001"]["answers"]["gist"][0] == "A bell rings over a barking dog."
    # The repair round-trip sent the answer and the validator's message back in the same conversation.
    (repair,) = server.requests("synth_000001:gist:2")
    reason = "the gist names sound-producing objects ('bell', 'dog'); describe sound attributes instead"
    assert repair.body["messages"][1:] == [
        {"role": "assistant", "content": "A bell rings over a barking dog."},
        {"role": "user", "content": repair_prompt(reason)}]
    assert rejected["synth_000002"]["step"] == "structured" and rejected["synth_000002"]["reason"] == \
        "line 1 (bouncing_ball): screen must be on_screen or off_screen, got 'onscreen'"
    assert "caption" not in rejected["synth_000002"]  # nothing invented for a rejected clip
    five = parse_caption(captions["synth_000007"]).grounding  # the corpus's own 5-sentence grounding
    with pytest.raises(ValidationError) as error:
        check_grounding(five, RULES)
    assert rejected["synth_000007"]["reason"] == error.value.message == \
        "sentences in the paragraph: expected 2–4, got 5"
    assert len(rejected["synth_000007"]["answers"]["grounding"]) == 2 and \
        "structured" not in rejected["synth_000007"]["answers"]  # stopped at the failing step

    # Requests: 3 steps per accepted clip (+1 repair), the rejections stop early, transport retries repeat an id.
    ids = Counter(r.request_id for r in server.log)
    assert ids["synth_000003:grounding:1"] == 2 and ids["synth_000004:gist:1"] == 2
    assert sum(ids.values()) == 6 * 3 + 1 + (3 + 1) + (2 + 1) + 2  # accepted, repair, clip 2, clip 7, retries
    gaps = [b.time - a.time for a, b in zip(server.requests("synth_000004:gist:1"),
                                            server.requests("synth_000004:gist:1")[1:])]
    assert gaps[0] >= 0.2
    # Every request showed 2 PNG frames of at most 32 px.
    assert all(len(r.parts("image_url")) == 2 for r in server.log)

    # Token and cost accounting equals the server's own usage numbers.
    answered = [r for r in server.log if r.request_id not in ("synth_000003:grounding:1", "synth_000004:gist:1")
                or r is not server.requests(r.request_id)[0]]
    prompt = completion = 0
    for request in answered:
        text = vlm.correct(*request.request_id.split(":")[:2])
        overridden = {"synth_000001:gist:1": "A bell rings over a barking dog.",
                      "synth_000002:structured:1": bad_screen, "synth_000002:structured:2": bad_screen,
                      "synth_000006:structured:1": chatty}
        p, c = usage_of(request.body, overridden.get(request.request_id, text))
        prompt, completion = prompt + p, completion + c
    usage = summary.usage
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens, usage.retries) == \
        (len(answered), prompt, completion, 2)
    assert usage.cost == pytest.approx(prompt / 1000 * 0.5 + completion / 1000 * 2.0)
    assert sum(r["usage"]["cost"] for r in [*accepted.values(), *rejected.values()]) == pytest.approx(usage.cost)
    assert (summary.accepted, summary.rejected, summary.failed, summary.repaired_clips, summary.repairs) == \
        (6, 2, 0, 3, 3)

    # The data modules load the output unchanged.
    dm = VGGSoundThinkDataModule(media_root=str(tmp_path), train_jsonl=str(out), duration=1.0, audio_preset="tiny",
                                 load_sync_video=False, batch_size=2)
    dataset = dm.dataset("train")
    assert [r.id for r in dataset.records] == list(accepted)
    item = dataset[1]
    assert item["caption"] == captions[item["id"]] and item["wav"].abs().max() > 0.1 and item["has_text"]

    # A second run finds every clip finished and asks nothing.
    with ScriptedServer(vlm) as again:
        rerun = run_annotation(read_clips(corpus), backend(again.url), out, RULES, progress=False)
    assert again.log == [] and (rerun.skipped, rerun.accepted, rerun.rejected) == (8, 0, 0)
    # --retry-rejected runs the two rejected clips again (now answered correctly) and keeps ids unique.
    with ScriptedServer(SyntheticVLM(corpus)) as third:
        retried = run_annotation(read_clips(corpus), backend(third.url), out,
                                 ValidationRules(grounding_sentences=(2, 5)), retry_rejected=True, progress=False)
    assert {r.request_id.split(":")[0] for r in third.log} == {"synth_000002", "synth_000007"}
    assert (retried.accepted, retried.rejected) == (2, 0) and read_records(rejected_path(out)) == []
    assert sorted(r["id"] for r in read_records(out)) == sorted(captions)


def test_transport_failures_leave_clips_unfinished(corpus, tmp_path, capsys):
    vlm = SyntheticVLM(corpus, {"synth_000001:gist:1": [Answer(status=503)] * 4})
    out = tmp_path / "out.jsonl"
    clips = read_clips(corpus)[:3]
    with ScriptedServer(vlm) as server:
        summary = run_annotation(clips, backend(server.url, max_retries=3), out, RULES, workers=2, progress=False)
    assert (summary.accepted, summary.failed) == (2, 1) and "synth_000001" in summary.failures[0]
    assert sorted(r["id"] for r in read_records(out)) == ["synth_000000", "synth_000002"]
    assert read_records(rejected_path(out)) == []  # a transport failure is no rejection
    with ScriptedServer(SyntheticVLM(corpus)) as server:
        summary = run_annotation(clips, backend(server.url), out, RULES, progress=True)
    assert summary.accepted == 1 and {r.request_id.split(":")[0] for r in server.log} == {"synth_000001"}
    bar = capsys.readouterr().err.split("\r")[-1]  # the progress bar's final state: 2 resumed + 1 done
    assert bar.startswith("annotate: 100%") and "3/3" in bar and "done=1" in bar and "rejected=0" in bar
    assert "retried=0" in bar and "failed=0" in bar


def test_undecodable_media_is_rejected_with_the_decoders_reason(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    manifest = tmp_path / "videos.jsonl"
    manifest.write_text(json.dumps({"id": "x", "video": "broken.mp4", "duration": 1.0}) + "\n")
    with ScriptedServer(lambda r: Answer("unused")) as server:
        summary = run_annotation(read_clips(manifest), backend(server.url), tmp_path / "o.jsonl", RULES,
                                 progress=False)
    (record,) = read_records(tmp_path / "o.rejected.jsonl")
    assert summary.rejected == 1 and server.log == []
    assert record["step"] == "media" and record["reason"].startswith(str(broken))


def test_videos_manifests(fixtures_dir, tmp_path):
    vgg = fixtures_dir / "media" / "vggsound"
    clips = read_clips(vgg / "vggsound.csv")  # VGGSound's headerless csv; media <root>/<ytid>_<start:06d>.mp4
    assert len(clips) == 6 and clips[0].id == "0nib7bMm8BA_000015" and clips[0].label == "canary calling"
    assert all(Path(c.video).is_file() and c.video == str((vgg / f"{c.id}.mp4").resolve()) for c in clips)
    media = load_clip_media(clips[0].video, None, MediaSpec(num_frames=3, max_side=64, send_audio=True), None)
    assert media.frames.shape[0] == 3 and max(media.frames.shape[1:3]) <= 64 and media.wav.shape == (160_000,)
    assert media.times == pytest.approx((10 / 6, 5.0, 50 / 6))  # centres of three equal slices of a 10 s clip

    (tmp_path / "a.wav").touch()
    cases = {
        '{"id": "a", "audio": "a.wav"}\n': None,
        '{"id": "zz"}\n': "line 1: no media file for id 'zz'",
        '{"id": "b", "audio": "a.wav"}\n{"id": "b", "audio": "a.wav"}\n': "line 2: clip id 'b' repeats",
        '{"video": "x.mp4"}\n': "line 1: expected a JSON object with a non-empty string 'id'",
        '{"id": "a", "audio": "a.wav", "duration": -1}\n': "line 1, column 'duration': expected a positive number",
        '\n': "manifest is empty",
    }
    for text, error in cases.items():
        manifest = tmp_path / "videos.jsonl"
        manifest.write_text(text)
        if error is None:
            (clip,) = read_clips(manifest)
            assert clip.video is None and clip.audio == str((tmp_path / "a.wav").resolve())
            with pytest.raises(MediaError, match="no video file for this clip"):
                load_clip_media(clip.video, clip.audio, MediaSpec(), 1.0)
            continue
        with pytest.raises(ValueError, match=re.escape(error)):
            read_clips(manifest)


# --------------------------------------------------------------------------- store


def test_store_cuts_a_torn_line_and_resumes(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text('{"id": "a", "caption": "x"}\n{"id": "b", "caption": "y"}\n{"id": "c", "capt')
    with ResultStore(out) as store:
        assert store.finished == {"a", "b"} and store.repaired_bytes == len('{"id": "c", "capt')
        store.write({"id": "c", "caption": "z"}, accepted=True)
    assert [r["id"] for r in read_records(out)] == ["a", "b", "c"] and out.read_text().endswith("\n")


def test_store_is_exclusive_and_refuses_duplicates(tmp_path):
    out = tmp_path / "o.jsonl"
    with ResultStore(out) as store:
        with pytest.raises(ValueError, match="another annotate run is writing"):
            ResultStore(out).open()
        store.write({"id": "a"}, accepted=False)
        with pytest.raises(AssertionError, match="duplicate result for a"):
            store.write({"id": "a"}, accepted=True)
    out.write_text('{"id": "a", "caption": "x"}\n')
    with pytest.raises(ValueError, match="clip id 'a' already has a result"):
        ResultStore(out).open()
    rejected_path(out).unlink()  # the failed open released the lock, so the next one succeeds
    with ResultStore(out) as store:
        assert store.finished == {"a"}
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: invalid JSON"):
        ResultStore(tmp_path / "bad.jsonl").open()


def test_concurrent_writers_never_interleave(tmp_path):
    out = tmp_path / "o.jsonl"
    payload = "x" * 20_000  # far above PIPE_BUF: interleaving would show up
    with ResultStore(out) as store:
        def write(worker: int) -> None:
            for index in range(25):
                store.write({"id": f"{worker}-{index}", "caption": payload}, accepted=index % 3 != 0)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    records = read_records(out) + read_records(rejected_path(out))
    assert len(records) == 200 and len({r["id"] for r in records}) == 200
    assert all(r["caption"] == payload for r in records)

