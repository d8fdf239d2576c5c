"""A local Hugging Face multimodal chat model (Qwen2.5-VL, Qwen2-VL, Qwen2.5-Omni) from a folder.

The folder must hold the model (``config.json`` + weights) and its processor (tokenizer with a chat
template, image/video processor; Omni also a feature extractor), as released model folders do.
Nothing is downloaded.

A request renders the conversation with the processor's chat template (the first user turn holds
a ``video`` part, an ``audio`` part when ``send_audio`` is set, then the prompt), passes the clip's
frames as one video (with its real frame rate as ``video_metadata``, so Qwen's temporal positions
are right) and the audio at the feature extractor's rate, and runs ``generate`` (greedy by
default). Usage counts are the prompt length and the number of generated tokens. One model serves
one request at a time (a lock); ``concurrency`` above 1 only overlaps media decoding.

Qwen2.5-Omni answers with its thinker only (text; the talker and token2wav are never built): a
thinker folder (``qwen2_5_omni_thinker``) loads directly, a whole-model folder (``qwen2_5_omni``)
loads its ``thinker.*`` weights. It is the model to use with ``send_audio``.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from transformers import (AutoConfig, AutoModelForImageTextToText, AutoProcessor,
                          Qwen2_5OmniThinkerForConditionalGeneration)

from reasonaudio.captions.attachments import ClipMedia, MediaSpec
from reasonaudio.captions.backends import BackendError, ChatBackend, Reply, Turn, _check_turns
from reasonaudio.models.conditioners.omni import _load_prefixed_safetensors

SUPPORTED = ("qwen2_5_vl", "qwen2_vl", "qwen2_5_omni", "qwen2_5_omni_thinker")
OMNI = ("qwen2_5_omni", "qwen2_5_omni_thinker")


def _load_model(folder: Path, config: Any, dtype: torch.dtype) -> torch.nn.Module:
    """The generating model of a folder (module docstring)."""
    if config.model_type == "qwen2_5_omni_thinker":
        return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(folder, dtype=dtype)
    if config.model_type == "qwen2_5_omni":
        thinker = Qwen2_5OmniThinkerForConditionalGeneration._from_config(config.thinker_config, dtype=dtype)
        _load_prefixed_safetensors(thinker, folder, "thinker.")
        return thinker
    return AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype)


class HFChatBackend(ChatBackend):
    """A local transformers model folder.

    Args:
        model: the model folder.
        max_new_tokens: answer length limit.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature (with ``do_sample``).
        seed: ``torch.manual_seed`` before each generation, so sampled answers are reproducible.
        frames: frames per clip.
        max_side: longest frame side in pixels before the processor's own resizing.
        send_audio: pass the audio track (Qwen2.5-Omni).
        audio_sample_rate: rate of the audio; default the feature extractor's.
        device: torch device (default ``cuda`` when available, else ``cpu``).
        dtype: torch dtype name (default bfloat16 on CUDA, float32 on CPU).
        concurrency: clips prepared at once (generation itself is serialised).
        price_per_1k_prompt: cost per 1000 prompt tokens (0 for a local model).
        price_per_1k_completion: cost per 1000 completion tokens.

    Raises:
        ValueError: a missing folder or file, an unsupported model type.
    """

    kind = "hf"

    def __init__(self, model: str, max_new_tokens: int = 512, do_sample: bool = False, temperature: float = 1.0,
                 seed: int = 0, frames: int = 8, max_side: int = 448, send_audio: bool = False,
                 audio_sample_rate: int | None = None, device: str | None = None, dtype: str | None = None,
                 concurrency: int = 1, price_per_1k_prompt: float = 0.0, price_per_1k_completion: float = 0.0):
        folder = Path(model)
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder}: not a model folder (no config.json)")
        config = AutoConfig.from_pretrained(folder)
        if config.model_type not in SUPPORTED:
            raise ValueError(f"{folder}: model_type {config.model_type!r} is not supported; "
                             f"expected one of {SUPPORTED}")
        try:
            processor = AutoProcessor.from_pretrained(folder)
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"{folder}: cannot load the processor (tokenizer, chat template, image/video "
                             f"processor files): {error}") from None
        if getattr(processor, "chat_template", None) is None:
            raise ValueError(f"{folder}: the processor has no chat template")
        is_omni = config.model_type in OMNI
        if send_audio and not is_omni:
            raise ValueError(f"{folder}: send_audio needs an audio-capable model (Qwen2.5-Omni), got "
                             f"{config.model_type!r}")
        extractor_rate = getattr(getattr(processor, "feature_extractor", None), "sampling_rate", None)
        rate = audio_sample_rate or extractor_rate or 16000
        super().__init__(MediaSpec(frames, max_side, send_audio, rate), concurrency, price_per_1k_prompt,
                         price_per_1k_completion)
        self.folder = folder
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        default = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.dtype = getattr(torch, dtype) if dtype else default
        self.model = _load_model(folder, config, self.dtype).to(self.device).eval()
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.do_sample = do_sample
        self.temperature = temperature
        self.seed = seed
        self.model_type = config.model_type
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": str(self.folder), "model_type": self.model_type,
                "max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample, "temperature": self.temperature,
                "seed": self.seed, "frames": self.media.num_frames, "max_side": self.media.max_side,
                "send_audio": self.media.send_audio, "audio_sample_rate": self.media.sample_rate,
                "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "concurrency": self.concurrency, "price_per_1k_prompt": self.price_per_1k_prompt,
                "price_per_1k_completion": self.price_per_1k_completion}

    def conversation(self, media: ClipMedia, turns: Sequence[Turn]) -> list[dict[str, Any]]:
        """The chat-template messages of a request (module docstring)."""
        _check_turns(turns)
        first = [{"type": "video"}] + ([{"type": "audio"}] if media.wav is not None else [])
        first.append({"type": "text", "text": turns[0].text})
        return [{"role": "user", "content": first}] + [
            {"role": t.role, "content": [{"type": "text", "text": t.text}]} for t in turns[1:]]

    def inputs(self, media: ClipMedia, turns: Sequence[Turn]) -> dict[str, torch.Tensor]:
        """Processor outputs (token ids, video patches, audio features) of a request."""
        text = self.processor.apply_chat_template(self.conversation(media, turns), tokenize=False,
                                                  add_generation_prompt=True)
        times = media.times
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 1.0
        kwargs: dict[str, Any] = {"videos": [np.asarray(media.frames)],
                                  "video_metadata": [{"total_num_frames": len(times), "fps": fps}]}
        if media.wav is not None:
            kwargs["audio"] = [np.asarray(media.wav, np.float32)]
        return self.processor(text=[text], return_tensors="pt", **kwargs)

    def chat(self, media: ClipMedia, turns: Sequence[Turn], request_id: str) -> Reply:
        try:
            inputs = self.inputs(media, turns)
        except (ValueError, TypeError, RuntimeError) as error:
            raise BackendError(f"{request_id}: the processor rejected the inputs: {error}") from None
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        # Pixels and audio features take the model's dtype; grid timings (second_per_grid_ts) stay float32.
        for key in [k for k in inputs if k.startswith(("pixel_values", "input_features"))]:
            inputs[key] = inputs[key].to(self.dtype)
        prompt_length = inputs["input_ids"].shape[1]
        options: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            options["temperature"] = self.temperature
        with self._lock, torch.no_grad():
            torch.manual_seed(self.seed)
            output = self.model.generate(**inputs, **options)
        output = output.sequences if hasattr(output, "sequences") else output
        new_tokens = output[0, prompt_length:]  # [N]
        text = self.processor.batch_decode(new_tokens[None], skip_special_tokens=True)[0]
        return Reply(text=text, prompt_tokens=int(prompt_length), completion_tokens=int(new_tokens.shape[0]))
