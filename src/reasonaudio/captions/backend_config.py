"""The CONFIG file that picks an annotation / judge backend, and building the backend it names.

CONFIG is a YAML or JSON mapping::

    backend: openai            # openai (any OpenAI-compatible chat-completions server) or hf
    base_url: https://api.openai.com/v1
    model: gpt-4o
    ...                        # the constructor arguments of OpenAIChatBackend / HFChatBackend
    rules:                     # optional, ValidationRules fields (object_names: a word-list file)
      gist_max_sentences: 1
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import yaml

from reasonaudio.captions.backends import ChatBackend
from reasonaudio.captions.openai_backend import OpenAIChatBackend


def read_config(path: str | Path) -> dict[str, Any]:
    """Reads a CONFIG file (YAML or JSON mapping).

    Raises:
        ValueError: naming the file when it is missing, unparsable or not a mapping.
    """
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
    # lazy: the hf backend imports torch and transformers (most of the CLI's start-up, measured); an OpenAI-compatible
    # endpoint needs neither
    from reasonaudio.captions.hf_backend import HFChatBackend

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
