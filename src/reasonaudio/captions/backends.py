"""The one interface every annotation / judge model sits behind (``backend_config`` picks one from a file).

A backend answers a short conversation about one clip: the first user turn carries the clip's
media (:class:`~reasonaudio.captions.attachments.ClipMedia`) and a prompt; later turns are the
model's previous answer and a repair request. It reports token usage, from which the pipeline
counts cost with the backend's prices.

Errors: :class:`BackendError` is a failure of one request after its retries (the clip is left
unfinished and retried by the next run); :class:`FatalBackendError` is a configuration problem
(authentication, unknown model) that stops the run.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
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
