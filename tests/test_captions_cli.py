"""``reasonaudio-captions``: annotate (config-free and with a CONFIG file), kill-and-resume, judge, diversity."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_captions_pipeline import SyntheticVLM, manifest_captions
from test_captions_server import API_KEY, Answer, Request, ScriptedServer

from reasonaudio.captions.cli import main
from reasonaudio.captions.judge import wilson_interval
from reasonaudio.captions.store import read_records, rejected_path
from reasonaudio.data_modules.manifests import read_think_jsonl
from reasonaudio.data_modules.synthetic import synthesize_corpus

REPO = Path(__file__).resolve().parents[1]
FAST = ["--timeout", "0.3", "--backoff", "0.01", "--frames", "2", "--image-format", "png", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return synthesize_corpus(tmp_path_factory.mktemp("synth") / "corpus", num_clips=8, seed=0, duration=1.0, size=32,
                             progress=False)


@pytest.fixture(scope="module")
def annotated(corpus, tmp_path_factory) -> Path:
    """The synthetic corpus annotated through the CLI without a config file (key from $OPENAI_API_KEY)."""
    out = tmp_path_factory.mktemp("annotated") / "think.jsonl"
    with ScriptedServer(SyntheticVLM(corpus)) as server:
        os.environ["OPENAI_API_KEY"] = API_KEY
        try:
            code = main(["annotate", "--videos", str(corpus), "--out", str(out), "--base-url", server.url,
                         "--model", "scripted", "--workers", "2", *FAST])
        finally:
            del os.environ["OPENAI_API_KEY"]
    assert code == 0
    return out


def test_annotate_without_a_config_file(annotated, corpus, capsys):
    captions = manifest_captions(corpus)
    records = read_records(annotated)
    assert {r["id"]: r["caption"] for r in records} == {k: v for k, v in captions.items() if k != "synth_000007"}
    assert [r["id"] for r in read_records(rejected_path(annotated))] == ["synth_000007"]  # 5-sentence grounding
    rows = read_think_jsonl(annotated)  # the data modules' reader takes the file as it is
    assert len(rows) == 7 and rows[0].label and rows[0].video.endswith(".mp4")
    start, end = map(json.loads, annotated.with_name("think.runs.jsonl").read_text().splitlines())
    settings = start["settings"]
    assert settings["backend"]["model"] == "scripted" and settings["backend"]["api_key_set"]
    assert settings["backend"]["concurrency"] == 2 and settings["rules"]["grounding_sentences"] == [2, 4]
    assert API_KEY not in json.dumps(start) and len(settings["prompts_sha256"]) == 64
    assert end["summary"]["accepted"] == 7 and end["summary"]["rejected"] == 1


def test_annotate_with_a_config_file_and_rules(corpus, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("pings\n")  # every synthetic gist with a ball says "pings"
    config = tmp_path / "backend.yaml"
    config.write_text(f"backend: openai\nbase_url: http://127.0.0.1:9/v1\nmodel: scripted\napi_key: {API_KEY}\n"
                      f"frames: 1\nimage_format: png\ntimeout: 0.3\nbackoff: 0.01\nprice_per_1k_prompt: 1.0\n"
                      f"rules:\n  object_names: {names}\n  grounding_sentences: [1, 5]\n")
    with ScriptedServer(SyntheticVLM(corpus)) as server:
        code = main(["annotate", "--videos", str(corpus), "--out", str(tmp_path / "o.jsonl"), "--backend", str(config),
                     "--base-url", server.url, "--no-progress"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and all(len(r.parts("image_url")) == 1 for r in server.log)
    has_ball = {k for k, v in manifest_captions(corpus).items() if "'bouncing_ball'" in v}
    rejected = {r["id"]: r["reason"] for r in read_records(tmp_path / "o.rejected.jsonl")}
    assert set(rejected) == has_ball and all("('pings')" in reason for reason in rejected.values())
    assert summary["accepted"] == 8 - len(has_ball)  # grounding_sentences [1, 5] admits synth_000007
    assert summary["usage"]["cost"] == pytest.approx(summary["usage"]["prompt_tokens"] / 1000)


def test_usage_errors_exit_2_with_a_message(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["annotate", "--videos", str(corpus), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "give --backend CONFIG, or --base-url URL and --model NAME" in capsys.readouterr().err
    bad = tmp_path / "videos.jsonl"
    bad.write_text('{"id": "a", "video": "missing.mp4"}\n')
    assert main(["annotate", "--videos", str(bad), "--out", str(tmp_path / "o.jsonl"), "--base-url", "http://x",
                 "--model", "m"]) == 2
    assert f"{bad}, line 1, column 'video': media file" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("backend: openai\nbase_url: http://x\nmodel: m\ntemprature: 0\n")
    assert main(["annotate", "--videos", str(corpus), "--out", str(tmp_path / "o.jsonl"),
                 "--backend", str(config)]) == 2
    assert "unknown key(s) ['temprature']" in capsys.readouterr().err
    with ScriptedServer(lambda r: Answer("x")) as server:  # a wrong key stops the run: every request would fail
        code = main(["annotate", "--videos", str(corpus), "--out", str(tmp_path / "k.jsonl"), "--base-url", server.url,
                     "--model", "m", *FAST])
    assert code == 2 and "backend error: HTTP 401" in capsys.readouterr().err


def test_killed_run_resumes_with_exactly_one_line_per_clip(corpus, tmp_path):
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    manifest = tmp_path / "videos.jsonl"  # 16 clips over the 8 rendered videos
    manifest.write_text("".join(json.dumps({**row, "id": f"clip_{i:02d}", "video": str(corpus.parent / row["video"]),
                                            "audio": None}) + "\n" for i, row in enumerate(rows + rows)))
    out = tmp_path / "think.jsonl"
    command = [sys.executable, "-m", "reasonaudio.captions.cli", "annotate", "--videos", str(manifest), "--out",
               str(out), "--model", "scripted", "--workers", "3", *FAST]
    with ScriptedServer(SyntheticVLM(manifest, delay=0.1)) as server:
        env = {**os.environ, "OPENAI_API_KEY": API_KEY}
        process = subprocess.Popen([*command, "--base-url", server.url], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            finished = len(read_records(out)) + len(read_records(rejected_path(out)))
            if finished >= 4:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
        before = {r["id"] for r in read_records(out) + read_records(rejected_path(out))}
        asked_before = {r.request_id.split(":")[0] for r in server.log}
        assert 4 <= len(before) < 16
        killed_log = len(server.log)
        result = subprocess.run([*command, "--base-url", server.url], cwd=REPO, env=env, capture_output=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        asked_after = {r.request_id.split(":")[0] for r in server.log[killed_log:]}
    lines = out.read_text().splitlines() + rejected_path(out).read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]  # every line is complete JSON
    assert sorted(ids) == [f"clip_{i:02d}" for i in range(16)]  # exactly one line per clip
    assert not asked_after & before  # finished clips were not asked again
    assert asked_before - before <= asked_after  # clips in flight at the kill were redone
    assert json.loads(result.stdout)["skipped_finished"] == len(before)


def _judge_script(think_ids: dict[str, str]):
    """Prefers the Think caption, except: synth_000000 always says "1" (a position-biased tie), synth_000001
    prefers the label, synth_000002 first answers prose (repaired), synth_000003 never answers 1 or 2."""

    def script(request: Request) -> Answer:
        _, clip_id, order, _ = request.request_id.split(":")
        text = request.first_text
        first = text.split("Caption 1: ", 1)[1].split("\n\nCaption 2: ", 1)[0]
        think_first = first == think_ids[clip_id]
        repairing = len(request.body["messages"]) > 1
        if clip_id == "synth_000000":
            return Answer("1")
        if clip_id == "synth_000001":
            return Answer("2" if think_first else "1")
        if clip_id == "synth_000002" and not repairing:
            return Answer("Both captions describe the clip well.")
        if clip_id == "synth_000003":
            return Answer("1 or 2")
        return Answer("Caption 1" if think_first else "2.")

    return script


def test_judge_win_rate_counts_both_orders(annotated, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    think = {r["id"]: r for r in read_records(annotated)}
    labels = tmp_path / "vggsound.jsonl"
    labels.write_text("".join(json.dumps({"id": i, "caption": r["label"]}) + "\n" for i, r in think.items()))
    with ScriptedServer(_judge_script({i: r["caption"] for i, r in think.items()})) as server:
        code = main(["judge", str(annotated), str(labels), "--fraction", "1.0", "--base-url", server.url, "--model",
                     "judge", "--out", str(tmp_path / "judge.json"), *FAST])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "judge.json").read_text())
    assert report["sampled"] == 7 and report["ids"] == sorted(think)
    assert (report["valid_pairs"], report["wins_a"], report["wins_b"], report["ties"], report["invalid"]) == \
        (6, 4, 1, 1, 1)
    assert report["win_rate_a"] == pytest.approx(4.5 / 6)
    assert report["ci95"] == pytest.approx(list(wilson_interval(4.5, 6)))
    assert report["first_position_rate"] == pytest.approx(7 / 12)
    votes = {p["id"]: p["votes"] for p in report["pairs"]}
    assert votes["synth_000000"] == {"AB": "A", "BA": "B"} and votes["synth_000001"] == {"AB": "B", "BA": "B"}
    assert votes["synth_000003"] == {"AB": None, "BA": None}
    assert len(server.requests("judge:synth_000002:AB:")) == 2  # prose, then the repaired answer
    assert len(server.log) == 7 * 2 + 2 + 2  # both orders, plus one repair per order for synth_000002 and _000003
    assert {r.first_text.count("Caption 1: ") for r in server.log} == {1}


def test_judge_samples_a_seeded_fraction(annotated, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with ScriptedServer(lambda r: Answer("1")) as server:
        code = main(["judge", str(annotated), str(annotated), "--fraction", "0.5", "--seed", "3", "--base-url",
                     server.url, "--model", "judge", *FAST])
    report = json.loads(capsys.readouterr().out)
    ids = sorted(r["id"] for r in read_records(annotated))
    assert code == 0 and report["ids"] == sorted(random.Random(3).sample(ids, 4))  # round(0.5 · 7) = 4
    assert report["ties"] == 4 and report["win_rate_a"] == 0.5 and report["first_position_rate"] == 1.0


# --------------------------------------------------------------------------- diversity


def _tiny_embedder(folder: Path, kind: str, texts: list[str]) -> Path:
    """A tiny random T5 encoder or BERT folder with a word-level tokenizer covering ``texts``."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

    words = sorted({w for t in texts for w in t.replace("<", " < ").replace(">", " > ").split()})
    vocab = {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>").save_pretrained(folder)
    torch.manual_seed(0)
    if kind == "t5":
        model = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                        pad_token_id=0, decoder_start_token_id=0))
    else:
        model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=512, pad_token_id=0))
    model.save_pretrained(folder)
    return folder


def _hand_distance(folder: Path, kind: str, texts: list[str]) -> float:
    """One caption at a time (no padding), plain mean over tokens, explicit pair loop."""
    from transformers import AutoTokenizer, BertModel, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = (T5EncoderModel if kind == "t5" else BertModel).from_pretrained(folder).eval()
    vectors = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            vectors.append(model(input_ids=ids).last_hidden_state[0].mean(0).double().numpy())
    distances = [1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)
                 for i, a in enumerate(vectors) for b in vectors[i + 1:]]
    return float(np.mean(distances))


@pytest.mark.parametrize("kind", ["t5", "bert"])
def test_diversity_matches_a_hand_computation(tmp_path, capsys, kind):
    rng = random.Random(0)
    vocabulary = "low high bright dull ping knock ringing hum hiss steady short long decay pitch tonal noisy".split()
    records = [{"id": f"{label}_{i}", "label": label,
                "caption": " ".join(rng.choices(vocabulary, k=rng.randint(3, 12)))}
               for label in ("dog", "rain", "siren") for i in range(5)]
    path = tmp_path / "captions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    folder = _tiny_embedder(tmp_path / kind, kind, [r["caption"] for r in records])
    argv = ["diversity", str(path), "--classes", "2", "--per-class", "3", "--embedder", str(folder), "--seed", "5",
            "--batch-size", "4"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    drawn = random.Random(5)
    classes = drawn.sample(["dog", "rain", "siren"], 2)
    assert list(report["per_class_report"]) == classes and report["seed"] == 5
    by_id = {r["id"]: r["caption"] for r in records}
    expected = []
    for label in classes:
        ids = drawn.sample(sorted(r["id"] for r in records if r["label"] == label), 3)
        entry = report["per_class_report"][label]
        assert entry["ids"] == ids and entry["pairs"] == 3
        expected.append(_hand_distance(folder, kind, [by_id[i] for i in ids]))
        assert entry["mean_distance"] == pytest.approx(expected[-1], abs=1e-6)
    assert report["mean_distance"] == pytest.approx(np.mean(expected), abs=1e-6) and report["mean_distance"] > 0
    assert main(argv) == 0 and json.loads(capsys.readouterr().out) == report  # same seed, same sample


def test_diversity_runs_on_the_annotated_corpus(annotated, tmp_path, capsys):
    records = read_records(annotated)
    folder = _tiny_embedder(tmp_path / "t5", "t5", [r["caption"] for r in records])
    assert main(["diversity", str(annotated), "--classes", "1", "--per-class", "20", "--embedder", str(folder),
                 "--out", str(tmp_path / "div.json")]) == 0
    report = json.loads((tmp_path / "div.json").read_text())
    ((label, entry),) = report["per_class_report"].items()  # the one label shared by two synthetic clips
    assert label == "block knocking, bell ringing, electric hum, rain" and entry["ids"] in (
        ["synth_000003", "synth_000004"], ["synth_000004", "synth_000003"])
    by_id = {r["id"]: r["caption"] for r in records}
    assert entry["mean_distance"] == pytest.approx(_hand_distance(folder, "t5", [by_id[i] for i in entry["ids"]]),
                                                   abs=1e-6)
    assert main(["diversity", str(annotated), "--classes", "2", "--embedder", str(folder)]) == 2
    assert "only 1 classes have at least 2 captions" in capsys.readouterr().err
