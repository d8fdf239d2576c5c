"""The review page in headless Chromium: it loads its media, Accept/Reject clicks register, the CSV exports.

Chromium is driven through the Chrome DevTools Protocol (``--remote-debugging-port``) with the
``websocket-client`` package: real mouse events at the buttons' positions, real keyboard text, and
the export button's real download into a folder.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from reasonaudio.captions.cli import main
from reasonaudio.data_modules.synthetic import synthesize_corpus

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class DevTools:
    """A minimal CDP client: one browser websocket, one page session (flattened)."""

    def __init__(self, url: str):
        import websocket

        self.ws = websocket.create_connection(url, timeout=30)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def call(self, method: str, params: dict | None = None, page: bool = False) -> dict[str, Any]:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                           page=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real left click at the centre of the element."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                      " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                      " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1}, page=True)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url}, page=True)
        self.wait_event("Page.loadEventFired")


@pytest.fixture
def browser(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (Debian package 'chromium')")
    process = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--no-default-browser-check", "--remote-debugging-port=0",
                                f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                raise RuntimeError(f"chromium exited with {process.returncode}")
            if "DevTools listening on " in line:
                url = line.split("DevTools listening on ", 1)[1].strip()
        assert url, "chromium printed no DevTools address"
        tools = DevTools(url)
        tools.call("Page.enable", page=True)
        tools.call("Runtime.enable", page=True)
        yield tools
        tools.ws.close()
    finally:
        process.kill()
        process.wait(10)


@pytest.fixture
def captions(tmp_path) -> Path:
    manifest = synthesize_corpus(tmp_path / "corpus", num_clips=4, seed=0, duration=1.0, size=32, progress=False)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    path = tmp_path / "think.jsonl"
    path.write_text("".join(json.dumps({**row, "video": str(manifest.parent / row["video"]),
                                        "audio": str(manifest.parent / row["audio"])}) + "\n" for row in rows))
    return path


def test_review_page_clicks_and_csv_export(browser, captions, tmp_path, capsys):
    page = tmp_path / "review" / "review.html"
    assert main(["review", str(captions), "--fraction", "0.5", "--seed", "1", "--out", str(page)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 2 and report["csv"] == "review.csv"
    records = {r["id"]: r for r in map(json.loads, captions.read_text().splitlines())}
    first, second = report["ids"]

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.call("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads),
                                                 "eventsEnabled": True})
    browser.navigate(page.as_uri())
    assert browser.js("document.querySelectorAll('.clip').length") == 2
    assert browser.js("[...document.querySelectorAll('.clip')].map(c => c.dataset.id)") == [first, second]
    assert browser.js("document.querySelector('.hint').textContent") in records[first]["caption"]
    # The media elements point at the clip files and decode (metadata: duration of the 1 s clips).
    durations = browser.js("""Promise.all([...document.querySelectorAll('video, audio')].map(m => new Promise(done => {
        const report = () => done([m.tagName, m.error ? 'error ' + m.error.code : m.duration]);
        if (m.readyState >= 1 || m.error) report();
        else { m.addEventListener('loadedmetadata', report); m.addEventListener('error', report); }
    })))""")
    assert [tag for tag, _ in durations] == ["VIDEO", "AUDIO", "VIDEO", "AUDIO"]
    assert all(isinstance(value, (int, float)) and abs(value - 1.0) < 0.1 for _, value in durations), durations

    browser.click(f".clip[data-id='{first}'] button.accept")
    browser.click(f".clip[data-id='{second}'] button.reject")
    browser.click(f".clip[data-id='{second}'] textarea.note")
    browser.call("Input.insertText", {"text": 'muffled, "wrong" source'}, page=True)
    assert browser.js("[document.getElementById('n-accept').textContent, document.getElementById('n-reject')"
                      ".textContent, document.getElementById('n-open').textContent]") == ["1", "1", "0"]
    browser.click("#export")
    browser.wait_event("Browser.downloadWillBegin")
    deadline = time.monotonic() + 20
    while not (downloads / "review.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with (downloads / "review.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], r["decision"], r["note"]) for r in rows] == [(first, "accept", ""),
                                                                   (second, "reject", 'muffled, "wrong" source')]
    assert [r["caption"] for r in rows] == [records[first]["caption"], records[second]["caption"]]
    assert rows[0]["label"] == records[first]["label"]

    # Decisions survive a reload (localStorage), and a decision can be changed.
    browser.navigate(page.as_uri())
    assert browser.js("[...document.querySelectorAll('.decision')].map(d => d.textContent)") == ["accept", "reject"]
    browser.click(f".clip[data-id='{second}'] button.accept")
    assert "\r\n" + second + ",accept," in browser.js("window.reviewCsv()")


def test_review_rejects_bad_arguments(captions, tmp_path, capsys):
    assert main(["review", str(captions), "--fraction", "0", "--out", str(tmp_path / "r.html")]) == 2
    assert "fraction must lie in (0, 1]" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "a", "status": "rejected"}\n')
    assert main(["review", str(empty), "--out", str(tmp_path / "r.html")]) == 2
    assert "no captioned clip to review" in capsys.readouterr().err
