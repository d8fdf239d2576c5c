"""The one interface every annotation / judge model sits behind, and the CONFIG file that picks one.

A backend answers a short conversation about one clip: the first user turn carries the clip's
media (:class:`~reasonaudio.captions.attachments.ClipMedia`) and a prompt; later turns are the
model's previous answer and a repair request. It reports token usage, from which the pipeline
counts cost with the backend's prices.

CONFIG is a YAML or JSON mapping::

    backend: openai            # openai (any OpenAI-compatible chat-completions server) or hf
    base_url: https://api.openai.com/v1
    model: gpt-4o
    ...                        # the constructor arguments of OpenAIChatBackend / HFChatBackend
    rules:                     # optional, ValidationRules fields (object_names: a word-list file)
      gist_max_sentences: 1

Errors: :class:`BackendError` is a failure of one request after its retries (the clip is left
unfinished and retried by the next run); :class:`FatalBackendError` is a configuration problem
(authentication, unknown model) that stops the run.
"""
from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from reasonaudio.captions.attachments import ClipMedia, MediaSpec


@dataclass(frozen=True)
class Turn:
    """One message of a conversation: ``user`` or ``assistant`` text."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True)
class Reply:
    """A model answer.

    Args:
        text: the answer text.
        prompt_tokens: input tokens the server counted (None when it did not say).
        completion_tokens: output tokens the server counted (None when it did not say).
        retries: transport retries this request needed (timeouts, 429, 5xx).
    """

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    retries: int = 0


class BackendError(RuntimeError):
    """A request that failed after its retries; the clip stays unfinished."""


class FatalBackendError(BackendError):
    """A failure no retry or other clip can fix (bad key, unknown model); the run stops."""


class ChatBackend(ABC):
    """A chat model that sees a clip's frames (and audio) and answers text.

    Args:
        media: how clips are sampled for this model.
        concurrency: requests in flight at once (the pipeline's thread pool size).
        price_per_1k_prompt: cost per 1000 prompt tokens.
        price_per_1k_completion: cost per 1000 completion tokens.
    """

    kind = ""

    def __init__(self, media: MediaSpec, concurrency: int, price_per_1k_prompt: float,
                 price_per_1k_completion: float):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if price_per_1k_prompt < 0 or price_per_1k_completion < 0:
            raise ValueError(f"prices must be >= 0, got {price_per_1k_prompt}, {price_per_1k_completion}")
        self.media = media
        self.concurrency = concurrency
        self.price_per_1k_prompt = price_per_1k_prompt
        self.price_per_1k_completion = price_per_1k_completion

    @abstractmethod
    def chat(self, media: ClipMedia, turns: Sequence[Turn], request_id: str) -> Reply:
        """Answers the conversation ``turns`` (first turn: user, with ``media`` attached).

        Args:
            media: the clip's decoded frames (and audio).
            turns: alternating user / assistant turns, ending with a user turn.
            request_id: a tracing id (``<clip>:<step>:<attempt>``), sent where the protocol allows.

        Raises:
            BackendError: the request failed after its retries.
            FatalBackendError: a configuration problem.
        """

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The resolved settings, JSON-ready and without secrets, recorded with each run."""

    def cost(self, reply: Reply) -> float:
        """The price of one reply (unknown token counts cost nothing)."""
        return ((reply.prompt_tokens or 0) * self.price_per_1k_prompt
                + (reply.completion_tokens or 0) * self.price_per_1k_completion) / 1000.0


def _check_turns(turns: Sequence[Turn]) -> None:
    """Internal invariant of every backend: user first and last, roles alternating."""
    assert turns and turns[0].role == "user" and turns[-1].role == "user", turns
    assert all(a.role != b.role for a, b in zip(turns, turns[1:])), turns


def read_config(path: str | Path) -> dict[str, Any]:
    """Reads a CONFIG file (YAML or JSON mapping).

    Raises:
        ValueError: naming the file when it is missing, unparsable or not a mapping.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{path}: cannot read the backend config ({error.strerror})") from None
    try:
        config = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: invalid backend config ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the backend config must be a mapping, got {type(config).__name__}")
    return config


def build_backend(config: dict[str, Any], where: str = "backend config") -> ChatBackend:
    """Builds the backend a config mapping names (``rules`` is ignored here).

    Args:
        config: ``backend`` (``openai`` or ``hf``) plus the backend's constructor arguments.
        where: the config's origin, for messages.

    Raises:
        ValueError: an unknown backend, an unknown or missing key, or a bad value.
    """
    from reasonaudio.captions.hf_backend import HFChatBackend
    from reasonaudio.captions.openai_backend import OpenAIChatBackend

    classes = {"openai": OpenAIChatBackend, "hf": HFChatBackend}
    settings = {k: v for k, v in config.items() if k not in ("backend", "rules")}
    kind = config.get("backend", "openai")
    if kind not in classes:
        raise ValueError(f"{where}: backend must be one of {sorted(classes)}, got {kind!r}")
    cls = classes[kind]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for backend {kind!r}; accepted: {sorted(accepted)}")
    try:
        return cls(**settings)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from None
