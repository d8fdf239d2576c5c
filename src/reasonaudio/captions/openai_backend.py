"""Any OpenAI-compatible chat-completions endpoint over HTTP (standard library ``urllib`` only).

Request: ``POST {base_url}/chat/completions`` with ``{"model", "messages", <max_tokens_field>,
"temperature", **extra_body}``. The first user message is a list of content parts: one
``image_url`` part per frame (a base64 ``data:`` URL, JPEG or PNG), an ``input_audio`` part
(``{"data": base64 wav, "format": "wav"}``) when ``send_audio`` is set, then the prompt as a
``text`` part. Later turns are plain strings. Headers: ``Authorization: Bearer <key>`` (when a key
is set) and ``X-Client-Request-Id: <clip>:<step>:<attempt>`` for tracing.

Reply: ``choices[0].message.content`` (a string, or a list of parts whose ``text`` is joined) and
``usage.prompt_tokens`` / ``usage.completion_tokens``.

Retries: a timeout (``timeout`` seconds without a byte from the server), a dropped connection, an
unparsable 200 answer and HTTP 408, 409, 429, 500, 502, 503, 504 are retried up to
``max_retries`` times, waiting ``backoff · 2**k`` seconds (at most ``max_backoff``) before retry
``k + 1``, or the server's ``Retry-After`` (seconds or an HTTP date, at most ``max_retry_after``)
when a 429/503 carries one. HTTP 401, 403 and 404 raise :class:`FatalBackendError` (bad key or
model: every request would fail); other 4xx answers fail the request at once.
"""
from __future__ import annotations

import base64
import email.utils
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from datetime import timezone
from typing import Any, Sequence

from reasonaudio.captions.attachments import IMAGE_FORMATS, ClipMedia, MediaSpec, data_url, encode_image, encode_wav
from reasonaudio.captions.backends import BackendError, ChatBackend, FatalBackendError, Reply, Turn, _check_turns

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403, 404})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class OpenAIChatBackend(ChatBackend):
    """An OpenAI-compatible chat-completions server.

    Args:
        base_url: API root, e.g. ``https://api.openai.com/v1`` (``/chat/completions`` is appended).
        model: model name sent in each request.
        api_key: the key; default the environment variable ``api_key_env``.
        api_key_env: environment variable holding the key.
        timeout: seconds without data from the server before a request is abandoned and retried.
        max_retries: retries per request after the first try.
        backoff: first retry wait in seconds; doubles each retry.
        max_backoff: longest exponential wait.
        max_retry_after: longest wait a ``Retry-After`` header can impose.
        concurrency: requests in flight at once.
        max_tokens: answer length limit.
        max_tokens_field: request key of that limit (``max_completion_tokens`` for newer models).
        temperature: sampling temperature.
        frames: frames per clip.
        max_side: longest frame side in pixels.
        image_format: ``jpeg`` (needs Pillow) or ``png``.
        image_detail: the ``image_url.detail`` value (``auto``, ``low``, ``high``).
        send_audio: attach the audio as an ``input_audio`` wav part (audio-capable models only).
        audio_sample_rate: rate of the attached wav.
        price_per_1k_prompt: cost per 1000 prompt tokens.
        price_per_1k_completion: cost per 1000 completion tokens.
        extra_body: more request fields (e.g. ``{"seed": 0}``).
    """

    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 5, backoff: float = 1.0, max_backoff: float = 60.0,
                 max_retry_after: float = 300.0, concurrency: int = 4, max_tokens: int = 1024,
                 max_tokens_field: str = "max_tokens", temperature: float = 0.0, frames: int = 8,
                 max_side: int = 512, image_format: str = "jpeg", image_detail: str = "auto",
                 send_audio: bool = False, audio_sample_rate: int = 16000, price_per_1k_prompt: float = 0.0,
                 price_per_1k_completion: float = 0.0, extra_body: dict[str, Any] | None = None):
        super().__init__(MediaSpec(frames, max_side, send_audio, audio_sample_rate), concurrency,
                         price_per_1k_prompt, price_per_1k_completion)
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model must be a non-empty model name")
        if timeout <= 0 or max_retries < 0 or backoff < 0 or max_backoff < 0 or max_retry_after < 0:
            raise ValueError(f"need timeout > 0 and non-negative retry settings, got timeout={timeout}, "
                             f"max_retries={max_retries}, backoff={backoff}, max_backoff={max_backoff}")
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.base_url = base_url
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.max_tokens = max_tokens
        self.max_tokens_field = max_tokens_field
        self.temperature = temperature
        self.image_format = image_format
        self.image_detail = image_detail
        self.extra_body = dict(extra_body or {})

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "base_url": self.base_url, "model": self.model,
                "api_key_set": self.api_key is not None, "api_key_env": self.api_key_env, "timeout": self.timeout,
                "max_retries": self.max_retries, "backoff": self.backoff, "max_backoff": self.max_backoff,
                "max_retry_after": self.max_retry_after, "concurrency": self.concurrency,
                "max_tokens": self.max_tokens, "max_tokens_field": self.max_tokens_field,
                "temperature": self.temperature, "frames": self.media.num_frames, "max_side": self.media.max_side,
                "image_format": self.image_format, "image_detail": self.image_detail,
                "send_audio": self.media.send_audio, "audio_sample_rate": self.media.sample_rate,
                "price_per_1k_prompt": self.price_per_1k_prompt,
                "price_per_1k_completion": self.price_per_1k_completion, "extra_body": self.extra_body}

    def messages(self, media: ClipMedia, turns: Sequence[Turn]) -> list[dict[str, Any]]:
        """The ``messages`` array of a request (module docstring)."""
        _check_turns(turns)
        mime = "image/jpeg" if self.image_format == "jpeg" else "image/png"
        parts: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": data_url(encode_image(frame, self.image_format), mime),
                                                "detail": self.image_detail}}
            for frame in media.frames]
        if media.wav is not None:
            parts.append({"type": "input_audio", "input_audio": {
                "data": base64.b64encode(encode_wav(media.wav, media.sample_rate)).decode("ascii"), "format": "wav"}})
        parts.append({"type": "text", "text": turns[0].text})
        return [{"role": "user", "content": parts}] + [{"role": t.role, "content": t.text} for t in turns[1:]]

    def _wait(self, retry: int, retry_after: float | None) -> float:
        """Seconds to sleep before retry number ``retry`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.backoff * 2 ** (retry - 1), self.max_backoff)

    def chat(self, media: ClipMedia, turns: Sequence[Turn], request_id: str) -> Reply:
        body = {"model": self.model, "messages": self.messages(media, turns), self.max_tokens_field: self.max_tokens,
                "temperature": self.temperature, **self.extra_body}
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "X-Client-Request-Id": request_id}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        problems: list[str] = []
        retry_after: float | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._wait(attempt, retry_after))
            retry_after = None
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as error:
                detail = error.read()[:300].decode("utf-8", "replace")
                error.close()
                message = f"HTTP {error.code} from {self.url}: {detail}"
                if error.code in FATAL_STATUS:
                    raise FatalBackendError(message) from None
                if error.code not in RETRY_STATUS:
                    raise BackendError(f"{request_id}: {message}") from None
                retry_after = parse_retry_after(error.headers.get("Retry-After")) \
                    if error.code in (429, 503) else None
                problems.append(f"HTTP {error.code}")
                continue
            except (TimeoutError, socket.timeout):
                problems.append(f"timeout after {self.timeout} s")
                continue
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as error:
                reason = getattr(error, "reason", error)
                if isinstance(reason, (TimeoutError, socket.timeout)):
                    problems.append(f"timeout after {self.timeout} s")
                else:
                    problems.append(f"connection error: {reason}")
                continue
            try:
                return self._reply(payload, attempt)
            except ValueError as error:
                problems.append(str(error))
        raise BackendError(f"{request_id}: gave up after {self.max_retries + 1} tries to {self.url}: "
                           + "; ".join(problems))

    @staticmethod
    def _reply(payload: bytes, retries: int) -> Reply:
        """Reads a chat-completions response body.

        Raises:
            ValueError: a body that is not a chat completion.
        """
        try:
            answer = json.loads(payload)
            content = answer["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ValueError(f"unreadable chat completion: {payload[:200]!r}") from None
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ValueError(f"unreadable chat completion content: {content!r}")
        usage = answer.get("usage") or {}

        def count(key: str) -> int | None:
            value = usage.get(key)
            return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        return Reply(text=content, prompt_tokens=count("prompt_tokens"),
                     completion_tokens=count("completion_tokens"), retries=retries)

