"""The listening-test kit: build the page, rate and export in headless Chromium, aggregate with `mos`."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from reasonaudio.metrics.listening import listening_test_main, mos_main, mulberry32, presentation_order

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

SYSTEMS = {"reference": (90, 85), "model": (60, 70)}  # base MOS-Q, MOS-F of each system's ratings
CLIPS = ("clip_a", "clip_b", "clip_c")


@pytest.fixture(scope="module")
def test_folder(tmp_path_factory) -> Path:
    """Two systems × three 0.4 s clips (video + audio), built into a listening-test folder with seed 3."""
    from conftest import write_video_file

    src = tmp_path_factory.mktemp("clips")
    for s, system in enumerate(SYSTEMS):
        (src / system).mkdir()
        for c, clip in enumerate(CLIPS):
            t = np.arange(6400) / 16000
            write_video_file(src / system / f"{clip}.mp4", n_frames=10, size=(32, 32),
                             audio=0.3 * np.sin(2 * np.pi * (300 + 100 * c + 50 * s) * t))
    out = tmp_path_factory.mktemp("page") / "listening"
    assert listening_test_main(["--clips", str(src), "--out", str(out), "--seed", "3"]) == 0
    return out


def _key(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "key.csv").open()))


def test_folder_is_blind_and_self_contained(test_folder):
    key = _key(test_folder)
    assert len(key) == 6 and [r["item"] for r in key] == [f"item_{i:03d}" for i in range(1, 7)]
    assert {(r["system"], r["clip"]) for r in key} == {(s, c) for s in SYSTEMS for c in CLIPS}
    assert [r["system"] for r in key] != sorted(r["system"] for r in key)  # numbering is shuffled
    for r in key:
        assert (test_folder / "clips" / f"{r['item']}.mp4").read_bytes() == Path(r["source"]).read_bytes()
    page = (test_folder / "index.html").read_text()
    assert "reference" not in page and "clip_a" not in page  # nothing in the page names a system or clip
    settings = json.loads((test_folder / "listening.json").read_text())
    assert settings["seed"] == 3 and settings["test_id"] == key[0]["test_id"]


def test_bad_inputs_are_reported(tmp_path, test_folder, capsys):
    (tmp_path / "clips" / "sys").mkdir(parents=True)
    (tmp_path / "clips" / "sys" / "broken.mp4").write_text("not a video")
    with pytest.raises(SystemExit):
        listening_test_main(["--clips", str(tmp_path / "clips"), "--out", str(tmp_path / "out")])
    assert "broken.mp4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        listening_test_main(["--clips", str(tmp_path / "clips"), "--out", str(test_folder)])
    assert "not empty" in capsys.readouterr().err


def test_mulberry32_matches_the_reference_values():
    # The page's JavaScript mulberry32, run in node 18 (Debian 12): seeds 1 and 2**32 - 1.
    rng, top = mulberry32(1), mulberry32(4294967295)
    assert [next(rng) for _ in range(3)] == [0.6270739405881613, 0.002735721180215478, 0.5274470399599522]
    assert [next(top) for _ in range(2)] == [0.8964226141106337, 0.189478256739676]
    assert sorted(presentation_order(7, 42)) == list(range(7))


# --------------------------------------------------------------------------- headless Chromium


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``)."""

    def __init__(self, download_dir: Path):
        ours_r, chrome_w = os.pipe()
        chrome_r, ours_w = os.pipe()

        def to_fds_3_and_4():  # the pipe Chromium expects: it reads fd 3 and writes fd 4
            a, b = os.dup(chrome_r), os.dup(chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.profile = tempfile.mkdtemp()
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
             "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={self.profile}", "about:blank"],
            close_fds=False, preexec_fn=to_fds_3_and_4, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(chrome_r)
        os.close(chrome_w)
        self.read_fd, self.write_fd, self.buffer, self.next_id = ours_r, ours_w, b"", 0
        self.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(download_dir))
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)

    def _message(self) -> dict:
        while b"\0" not in self.buffer:
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)
        deadline = time.time() + 20
        while self.js("document.readyState") != "complete" or not self.js("document.querySelectorAll('.item').length"):
            if time.time() > deadline:
                raise TimeoutError(f"page did not load: {url}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.read_fd)
            os.close(self.write_fd)
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package `chromium`); the page test needs it")
    downloads = tmp_path_factory.mktemp("downloads")
    chrome = Chromium(downloads)
    chrome.downloads = downloads
    yield chrome
    chrome.close()


def _wait_for(path_glob, folder: Path, timeout: float = 20.0) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [p for p in folder.glob(path_glob) if not p.name.endswith(".crdownload")]
        if found:
            return found[0]
        time.sleep(0.05)
    raise TimeoutError(f"no {path_glob} in {folder}")


def _rate(browser: Chromium, folder: Path, rater: str, seed: int, offsets: dict[str, int]) -> Path:
    """Open the page with an order seed, check the order, move every slider, download the CSV."""
    key = {r["item"]: r for r in _key(folder)}
    browser.open((folder / "index.html").as_uri() + f"?seed={seed}")
    shown = browser.js("[...document.querySelectorAll('.item')].map(b => b.id.slice(4))")
    items = sorted(key)
    assert shown == [items[i] for i in presentation_order(len(items), seed)]  # Python reproduces the page's order
    assert browser.js("document.getElementById('seed').textContent") == str(seed)
    rng = mulberry32(seed)
    assert browser.js(f"(() => {{ const r = mulberry32({seed}); return [r(), r(), r(), r()]; }})()") == \
        [next(rng) for _ in range(4)]
    durations = browser.js("Promise.all([...document.querySelectorAll('video')].map(v => v.readyState >= 1 ? "
                           "v.duration : new Promise((ok, fail) => { v.onloadedmetadata = () => ok(v.duration); "
                           "v.onerror = () => fail(v.error.code); })))")
    assert all(d == pytest.approx(0.4, abs=0.05) for d in durations)  # the copied mp4s load and play

    browser.js("document.getElementById('export').click()")
    assert browser.js("document.getElementById('status').textContent") == "Enter your rater id first."
    browser.js(f"document.getElementById('rater').value = {json.dumps(rater)}")
    browser.js("document.getElementById('export').click()")
    assert "6 clips still need both ratings" in browser.js("document.getElementById('status').textContent")
    assert browser.js("document.querySelector('.unrated').textContent") == "not rated"
    for item, row in key.items():
        q, f = SYSTEMS[row["system"]]
        for kind, value in (("mos_q", q + offsets[row["clip"]]), ("mos_f", f - offsets[row["clip"]])):
            browser.js(f"(() => {{ const s = document.getElementById('{item}-{kind}'); s.value = {value}; "
                       "s.dispatchEvent(new Event('input', {bubbles: true})); })()")
    assert browser.js("document.getElementById('status').textContent") == "6 of 6 clips rated"
    browser.js("document.getElementById('export').click()")
    path = _wait_for(f"ratings_{rater}_*.csv", browser.downloads)
    assert path.read_text() == browser.js("document.getElementById('csv').value")  # the shown copy is the file
    return path


def test_rate_export_and_aggregate_in_chromium(browser, test_folder, tmp_path, capsys):
    offsets_a = {"clip_a": 4, "clip_b": -2, "clip_c": 1}
    offsets_b = {"clip_a": -5, "clip_b": 3, "clip_c": 7}
    files = [_rate(browser, test_folder, "rater_a", 12345, offsets_a),
             _rate(browser, test_folder, "rater_b", 77, offsets_b)]
    rows = list(csv.DictReader(files[0].open()))
    key = {r["item"]: r for r in _key(test_folder)}
    assert [int(r["position"]) for r in rows] == list(range(1, 7)) and {r["order_seed"] for r in rows} == {"12345"}
    assert all(r["test_id"] == key[r["item"]]["test_id"] and r["rater"] == "rater_a" for r in rows)

    out = tmp_path / "mos.csv"
    assert mos_main([*map(str, files), "--key", str(test_folder / "key.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = {r["system"]: r for r in csv.DictReader(out.open())}
    t975_df5 = 2.5705818356363146  # Student t, 97.5 % quantile, 5 degrees of freedom (tables: 2.571)
    for system, (q0, f0) in SYSTEMS.items():
        q = [q0 + o for offsets in (offsets_a, offsets_b) for o in offsets.values()]
        f = [f0 - o for offsets in (offsets_a, offsets_b) for o in offsets.values()]
        for column, values in (("mos_q", q), ("mos_f", f)):
            mean = sum(values) / 6
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 5)
            assert float(result[system][column]) == pytest.approx(mean, rel=1e-12)
            assert float(result[system][f"{column}_sd"]) == pytest.approx(sd, rel=1e-12)
            assert float(result[system][f"{column}_ci95"]) == pytest.approx(t975_df5 * sd / math.sqrt(6), rel=1e-9)
        assert result[system]["ratings"] == "6" and result[system]["raters"] == "2"
        mean_q = sum(q) / 6
        assert f"| {system} | {mean_q:.1f} ± " in printed
    assert out.with_suffix(".md").read_text() == printed


def test_mos_rejects_bad_ratings(tmp_path, test_folder, capsys):
    key = _key(test_folder)
    header = "test_id,rater,order_seed,position,item,mos_q,mos_f,submitted_at\n"
    good = f"{key[0]['test_id']},r,1,1,{key[0]['item']},50,60,x\n"
    cases = {"scale.csv": (header + f"{key[0]['test_id']},r,1,1,{key[0]['item']},101,60,x\n", "101 is outside 20–100"),
             "unknown.csv": (header + f"{key[0]['test_id']},r,1,1,item_999,50,60,x\n", "item_999"),
             "twice.csv": (header + good + good, "already rated"),
             "text.csv": (header + f"{key[0]['test_id']},r,1,1,{key[0]['item']},good,60,x\n", "expected a number")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SystemExit):
            mos_main([str(tmp_path / name), "--key", str(test_folder / "key.csv")])
        err = capsys.readouterr().err
        assert message in err and name in err, name
    (tmp_path / "ok.csv").write_text(header + good)
    with pytest.raises(SystemExit):
        mos_main([str(tmp_path / "ok.csv")])
    assert "--key" in capsys.readouterr().err
