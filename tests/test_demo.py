"""`make demo` at toy size: every step connects, reruns reuse finished steps, partial steps are redone."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from reasonaudio.demo import main

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "demo"
    args = ["--out", str(out), "--num-clips", "4", "--heldout-clips", "2", "--duration", "2", "--vae-steps", "2", "--vocoder-steps", "2",
            "--pretrain-steps", "2", "--sample-steps", "2", "--reward-steps", "2", "--candidates", "2",
            "--post-train-steps", "2", "--sync-steps", "0",  # 2 s clips cannot hold the ±1.2 s offset grid,
            "--reward", "classifier"]  # nor the synchrony reward's
    assert main(args) == 0
    first = capsys.readouterr().out
    assert re.search(r"decode check +6/6 mp4 files ok", first) and re.search(r"mel VAE +2 steps", first)
    assert re.search(r"BigVGAN vocoder +2 steps", first) and re.search(r"Flow-DPO \(LoRA 64\) +2 steps", first)
    state = json.loads((out / "steps.json").read_text())
    assert list(state)[:2] == ["_settings", "_ran"] and set(state["_ran"]) == set(list(state)[2:])
    assert list(state)[2:] == ["corpus", "heldout", "check", "vocoder", "vae", "latent_stats", "features_corpus",
                           "features_heldout", "mllm", "prefix_kv_corpus", "prefix_kv_heldout", "pretrain", "reward", "preference_data", "post_train", "generate",
                           "evaluate"]
    assert "held-out synthetic metrics" in first and "pretrained" in first
    summary = json.loads((out / "summary.json").read_text())  # read by scripts: the shape
    rows = summary["rows"]
    assert set(rows) == {"untrained", "pretrained", "post_trained", "vocoded_gt", "chance"}
    # 2 s clips cannot hold the sync stage's offset grid (--sync-steps 0): no encoder, so no DeSync is claimed
    assert summary["sync_offset_acc"] is None and not any("desync_s" in row for row in rows.values())
    for row in rows.values():
        assert 0 <= row["onset_f1"] <= 1 and row["onset_error_ms"] >= 0
    assert rows["vocoded_gt"]["fd_latent"] == 0.0 and rows["untrained"]["fd_latent"] > 0
    # the post-trained model is the pretrained one plus a trained LoRA: its samples differ from the pretrained ones
    assert rows["post_trained"]["fd_latent"] != rows["pretrained"]["fd_latent"]
    per_clip = json.loads((out / "generate" / "metrics.json").read_text())["rows"]
    for key, row in rows.items():  # the summary's means are the per-clip scores' means
        clips = per_clip[key]["clips"]
        assert [c["id"] for c in clips] == ["synth_000000", "synth_000001"]
        assert row["onset_f1"] == pytest.approx(sum(c["onset_f1"] for c in clips) / 2)
        assert row["onset_error_ms"] == pytest.approx(500 * sum(c["onset_error"] for c in clips))
    chance = rows["chance"]  # random onsets at the true rate: computed, and printed as in the file
    assert 0 < chance["onset_f1"] < 0.5
    assert re.search(rf"chance \(random onsets\) +{chance['onset_error_ms']:.1f} +{chance['onset_f1']:.3f}", first)
    assert state["preference_data"]["kept"] + state["preference_data"]["dropped"] == 4
    # every candidate was decoded and scored against the corpus's ground truth: the summary's winners and losers
    # are the kept groups' arg-max / arg-min candidates on those scores
    from reasonaudio.data_modules.preference_groups import PreferenceStore
    kept = [PreferenceStore.load(p) for p in sorted((out / "preference_data" / "groups" / "groups").glob("*.pt"))]
    truth = state["preference_data"]["ground_truth"]
    assert len(kept) == state["preference_data"]["kept"] == truth["pairs"] >= 1
    assert all(g["gt_onset_error"].shape == (2,) and (g["gt_onset_f1"] <= 1).all() for g in kept)
    assert truth["winner_onset_error_s"] == pytest.approx(
        sum(float(g["gt_onset_error"][g["rewards"].argmax()]) for g in kept) / len(kept))
    assert re.search(r"on the ground truth, winners vs losers: onset error \d+ vs \d+ ms", first)
    assert (out / "post_train" / "export" / "model.safetensors").is_file()
    assert (out / "post_train" / "export" / "adapter" / "adapter_config.json").is_file()
    assert (out / "reward" / "export" / "reward.safetensors").is_file()
    evaluation = json.loads((out / "evaluate" / "results.json").read_text())
    assert evaluation["metrics"]["fd_panns"]["status"].startswith("weights not found")
    assert "weights not found: Cnn14_16k_mAP=0.438.pth" in first
    from reasonaudio.media import probe
    info = probe(out / "generate" / "post_trained" / "synth_000000.mp4")
    assert info.video.codec == "h264" and info.audio.codec == "aac"
    assert abs(info.audio.duration - info.video.duration) < 0.07  # same length as the video (±1 AAC frame)
    assert not (out / "heldout_heldout").exists() and not (out / "corpus_heldout").exists()
    from reasonaudio.data_modules.features import FeatureCache
    assert FeatureCache(out / "features_heldout").done.tolist() == [1, 1]
    stores = [out / f"features_{c}" / "prefix_kv" / "demo" for c in ("corpus", "heldout")]
    assert [len(list(s.glob("*.safetensors"))) for s in stores] == [4, 2]  # pretraining read these
    assert "prefix_kv: demo" in (out / "pretrain" / "pretrain" / "version_0" / "config.yaml").read_text()
    assert len((out / "corpus" / "manifest.jsonl").read_text().splitlines()) == 4
    assert all(json.loads(line)["ok"] for line in (out / "check" / "check.jsonl").read_text().splitlines())
    assert list((out / "vae" / "vae").glob("version_0/checkpoints/last.ckpt"))
    assert state["vae"]["val/l1"] > 0

    # An interrupted step leaves only a .partial folder and no record: the rerun redoes that step and the
    # ones after it, and reuses every step before it.
    (out / "post_train").rename(out / "post_train.partial")
    for later in ("post_train", "generate", "evaluate"):
        del state[later]
    (out / "steps.json").write_text(json.dumps(state))
    assert main(args) == 0
    second = capsys.readouterr().out
    for step in ("corpus", "heldout", "check", "vocoder", "vae", "pretrain", "reward", "preference_data"):
        assert f"[demo] {step}: done earlier" in second
    for step in ("post_train", "generate", "evaluate"):
        assert f"[demo] {step}: running" in second
    assert not (out / "post_train.partial").exists() and (out / "post_train" / "export" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="was built with"):
        main([*args[:-3], "3", "--reward", "classifier"])  # other arguments (--sync-steps 3) would mix artifacts

    # The paper tables' toy smoke runs read this demo: every Table 5 conditioner trains and evaluates through the
    # row's paper eval config; rows that train the same model share it across tables
    from reasonaudio.experiments.paper_tables import TABLES
    from reasonaudio.experiments.paper_tables import main as paper_tables
    toy = tmp_path / "tables"
    for table in ("table5", "table3", "table8"):
        assert paper_tables([table, "--toy", "--demo", str(out), "--out", str(toy), "--toy-steps", "2"]) == 0
    steps = json.loads((toy / "toy" / "steps.json").read_text())
    models = [k for k in steps if k.startswith("model_")]
    assert len(models) == 5  # the 5 conditioners of Table 5; Tables 3 and 8 evaluate its "mllm" model
    text5 = (toy / "toy" / "table5.md").read_text()
    for row in TABLES["table5"].rows.values():
        f1 = re.search(rf"^\| {re.escape(row.label)} \|.*", text5, re.M).group(0).split(" | ")[-4]
        assert 0 <= float(f1) <= 1  # onset F1 against the synthetic ground truth, one per row
    # Table 3 evaluates Table 5's "mllm" checkpoint text-to-audio: the validation noise is seeded, so the loss
    # differs only by the condition (after 2 steps the conditions barely move the output: by ~1e-5)
    from reasonaudio.experiments.pipeline import last_scalars
    v2a, t2a = (last_scalars(toy / "toy" / step / name) for step, name in (("table5_mllm", "eval_vggsound_think"),
                                                                            ("table3_small", "eval_audiocaps")))
    assert v2a["val/loss"] > 0 and t2a["val/loss"] > 0 and v2a["val/loss"] != t2a["val/loss"]
    assert "video: false" in next((toy / "toy" / "table3_small").rglob("config.yaml")).read_text()
    assert "not run: no toy counterpart" in (toy / "toy" / "table3.md").read_text()
    labels = last_scalars(toy / "toy" / "table8_vggsound" / "eval_vggsound")["val/loss"]
    assert labels != v2a["val/loss"]  # the same model read with the class labels instead of the captions
    assert "text: label" in next((toy / "toy" / "table8_vggsound").rglob("config.yaml")).read_text()
    configs = {m: (toy / "toy" / m / "pretrain" / "version_0" / "config.yaml").read_text() for m in models}
    assert sum("OmniThinkerQueryConditioner" in c for c in configs.values()) == 1
    assert sum("num_queries: 77" in c for c in configs.values()) == 4  # all but CLIP (77 tokens, no queries)
