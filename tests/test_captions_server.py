"""A real chat-completions server on loopback with scripted answers, and the HTTP backend against it.

``ScriptedServer`` (imported by the other ``test_captions_*`` files) is a ``ThreadingHTTPServer`` on
127.0.0.1 speaking the OpenAI chat-completions protocol: ``POST /v1/chat/completions`` with a bearer
key, answers ``{"choices": [{"message": {"content": …}}], "usage": {…}}``. A ``script(request)``
callable decides each answer: text, an HTTP error with headers (429 + Retry-After), a delay longer
than the client's timeout, or a body that is not a chat completion. Every request is logged with its
arrival time, the ``X-Client-Request-Id`` header and the decoded body.

Usage the server reports (so tests can check the client's accounting exactly): prompt tokens =
words of all text parts + 85 per image + 10 per audio part; completion tokens = words of the answer.
"""
from __future__ import annotations

import base64
import io
import json
import threading
import time
import wave
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np
import pytest

from reasonaudio.captions.attachments import ClipMedia, encode_png
from reasonaudio.captions.backends import BackendError, FatalBackendError, Turn
from reasonaudio.captions.openai_backend import OpenAIChatBackend, parse_retry_after

API_KEY = "test-key"


@dataclass
class Request:
    """One request the server received."""

    request_id: str
    body: dict[str, Any]
    headers: dict[str, str]
    time: float

    @property
    def first_text(self) -> str:
        """The prompt of the first user message."""
        content = self.body["messages"][0]["content"]
        return next(p["text"] for p in content if p["type"] == "text")

    def parts(self, kind: str) -> list[dict[str, Any]]:
        """The content parts of type ``kind`` of the first user message."""
        return [p for p in self.body["messages"][0]["content"] if p["type"] == kind]


@dataclass
class Answer:
    """What the server does with one request."""

    text: str | None = None
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a 200 body that is not a chat completion


def words(text: str) -> int:
    return len(text.split())


def usage_of(body: dict[str, Any], answer: str) -> tuple[int, int]:
    """(prompt, completion) tokens the server reports (module docstring)."""
    prompt = 0
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            prompt += words(content)
            continue
        for part in content:
            prompt += {"text": lambda p: words(p["text"]), "image_url": lambda p: 85,
                       "input_audio": lambda p: 10}[part["type"]](part)
    return prompt, words(answer)


class ScriptedServer:
    """The loopback chat-completions server (module docstring).

    Args:
        script: ``script(request) -> Answer``; called once per authorised request, under a lock, in arrival
            order (a wrong key gets 401, another path 404, without calling it).
    """

    def __init__(self, script: Callable[[Request], Answer]):
        self.script = script
        self.log: list[Request] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = Request(self.headers.get("X-Client-Request-Id", ""), body, dict(self.headers),
                                  time.monotonic())
                with server.lock:
                    server.log.append(request)
                    if self.path != "/v1/chat/completions":
                        answer = Answer(status=404)
                    elif self.headers.get("Authorization") != f"Bearer {API_KEY}":
                        answer = Answer(status=401)
                    else:
                        answer = server.script(request)
                time.sleep(answer.delay)
                if answer.status != 200:
                    return self._send(answer.status, json.dumps({"error": {"message": "scripted"}}).encode(),
                                      answer.headers)
                if answer.raw is not None:
                    return self._send(200, answer.raw, answer.headers)
                prompt, completion = usage_of(body, answer.text)
                payload = {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                           "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": answer.text}}],
                           "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                     "total_tokens": prompt + completion}}
                self._send(200, json.dumps(payload).encode(), answer.headers)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests(self, prefix: str = "") -> list[Request]:
        """Logged requests whose request id starts with ``prefix``."""
        with self.lock:
            return [r for r in self.log if r.request_id.startswith(prefix)]


def backend(url: str, **kwargs: Any) -> OpenAIChatBackend:
    """The HTTP backend with test-friendly settings (short timeout and backoff)."""
    settings = dict(api_key=API_KEY, timeout=0.3, max_retries=3, backoff=0.01, frames=2, max_side=32,
                    image_format="png")
    settings.update(kwargs)
    return OpenAIChatBackend(url, "scripted-vlm", **settings)


def media(frames: int = 2, seconds: float = 0.25, rate: int = 16000) -> ClipMedia:
    """A small clip: ``frames`` random 24x32 images and a sine."""
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * rate)) / rate
    return ClipMedia(frames=rng.integers(0, 256, (frames, 24, 32, 3), dtype=np.uint8),
                     times=tuple((k + 0.5) / frames for k in range(frames)),
                     wav=(0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate=rate)


# --------------------------------------------------------------------------- protocol


def test_request_carries_frames_audio_prompt_key_and_request_id():
    clip = media()
    with ScriptedServer(lambda r: Answer("a b c")) as server:
        client = backend(server.url, send_audio=True)
        reply = client.chat(clip, [Turn("user", "describe it")], "clip_1:gist:1")
    (request,) = server.log
    assert request.request_id == "clip_1:gist:1" and request.headers["Authorization"] == "Bearer test-key"
    assert request.body["model"] == "scripted-vlm" and request.body["max_tokens"] == 1024
    images = request.parts("image_url")
    assert len(images) == 2
    for image, frame in zip(images, clip.frames):
        url = image["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        from PIL import Image
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
        np.testing.assert_array_equal(decoded, frame)  # PNG is lossless
    (audio,) = request.parts("input_audio")
    assert audio["input_audio"]["format"] == "wav"
    with wave.open(io.BytesIO(base64.b64decode(audio["input_audio"]["data"]))) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    np.testing.assert_array_equal(pcm, np.round(clip.wav.astype(np.float64) * 32767).astype(np.int16))
    assert request.first_text == "describe it"
    # 2 words + 2 images × 85 + 10 for audio; completion = 3 words.
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens, reply.retries) == ("a b c", 182, 3, 0)


def test_repair_turns_follow_as_plain_messages():
    with ScriptedServer(lambda r: Answer("ok")) as server:
        backend(server.url).chat(media(), [Turn("user", "q"), Turn("assistant", "bad"), Turn("user", "fix")], "x")
    messages = server.log[0].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1:] == [{"role": "assistant", "content": "bad"}, {"role": "user", "content": "fix"}]


def test_png_encoder_matches_pillow_decoding():
    from PIL import Image
    image = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(image)))), image)


# --------------------------------------------------------------------------- retries


def test_timeout_is_retried_and_counted():
    calls = []

    def script(request: Request) -> Answer:
        calls.append(request)
        return Answer("late", delay=1.0) if len(calls) == 1 else Answer("on time")

    with ScriptedServer(script) as server:
        started = time.monotonic()
        reply = backend(server.url, timeout=0.3).chat(media(), [Turn("user", "q")], "t")
        elapsed = time.monotonic() - started
    assert reply.text == "on time" and reply.retries == 1 and len(server.log) == 2
    assert 0.3 <= elapsed < 1.0  # gave up on the slow answer after the timeout, did not wait for it


def test_429_waits_for_retry_after_then_succeeds():
    answers = iter([Answer(status=429, headers={"Retry-After": "0.5"}), Answer("fine")])
    with ScriptedServer(lambda r: next(answers)) as server:
        reply = backend(server.url, backoff=0.01).chat(media(), [Turn("user", "q")], "r")
    first, second = server.log
    assert reply.text == "fine" and reply.retries == 1
    assert second.time - first.time >= 0.5  # the header, not the 10 ms backoff, set the wait


def test_exponential_backoff_then_give_up_with_reasons():
    with ScriptedServer(lambda r: Answer(status=503)) as server:
        with pytest.raises(BackendError, match=r"gave up after 4 tries.*HTTP 503; HTTP 503; HTTP 503; HTTP 503"):
            backend(server.url, backoff=0.05, max_retries=3).chat(media(), [Turn("user", "q")], "g")
    gaps = np.diff([r.time for r in server.log])
    assert len(server.log) == 4
    assert all(gap >= wait for gap, wait in zip(gaps, (0.05, 0.1, 0.2)))  # backoff · 2**k


def test_malformed_body_is_retried():
    answers = iter([Answer(raw=b"<html>proxy error</html>"), Answer(raw=b'{"choices": []}'), Answer("good")])
    with ScriptedServer(lambda r: next(answers)) as server:
        reply = backend(server.url).chat(media(), [Turn("user", "q")], "m")
    assert reply.text == "good" and reply.retries == 2 and len(server.log) == 3


def test_bad_key_is_fatal_and_not_retried():
    with ScriptedServer(lambda r: Answer("never")) as server:
        with pytest.raises(FatalBackendError, match="HTTP 401"):
            backend(server.url, api_key="wrong").chat(media(), [Turn("user", "q")], "k")
    assert len(server.log) == 1  # no retry


def test_other_client_errors_fail_at_once():
    with ScriptedServer(lambda r: Answer(status=400)) as server:
        with pytest.raises(BackendError, match="HTTP 400") as error:
            backend(server.url).chat(media(), [Turn("user", "q")], "b")
    assert not isinstance(error.value, FatalBackendError) and len(server.log) == 1


def test_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with ScriptedServer(lambda r: Answer("yes")) as server:
        client = OpenAIChatBackend(server.url, "m", frames=1, image_format="png")
        assert client.chat(media(1), [Turn("user", "q")], "e").text == "yes"
    assert client.describe()["api_key_set"] and API_KEY not in json.dumps(client.describe())


def test_retry_after_accepts_seconds_and_http_dates():
    now = 1_700_000_000.0
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.25") == 0.25
    assert parse_retry_after(formatdate(now + 7, usegmt=True), now=now) == pytest.approx(7.0)
    assert parse_retry_after(formatdate(now - 7, usegmt=True), now=now) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
