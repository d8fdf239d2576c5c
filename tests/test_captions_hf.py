"""The local Hugging Face backend on tiny random Qwen2.5-VL and Qwen2.5-Omni thinker folders: real chat
template, real processor, real ``generate``.

A random model answers garbage, so the clip must come out rejected with the validator's reason; every
answer must equal an independent ``generate`` call on the same conversation (the repair turn included).
The Omni thinker also hears the clip's audio (``send_audio``).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sine

from reasonaudio.captions.attachments import load_clip_media
from reasonaudio.captions.backend_config import build_backend
from reasonaudio.captions.backends import Turn
from reasonaudio.captions.hf_backend import HFChatBackend
from reasonaudio.captions.inputs import ClipInput
from reasonaudio.captions.pipeline import annotate_clip
from reasonaudio.captions.prompts import STEPS, repair_prompt, step_prompt
from reasonaudio.captions.validate import (ValidationError, ValidationRules, check_gist, check_grounding,
                                           parse_structured)
from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl

RULES = ValidationRules()
MAX_NEW = 12


@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-VL folder with a saved processor (image + video processor, chat template)."""
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    texts = [step_prompt(s) for s in STEPS] + [repair_prompt("x"), "dog car siren . rumble hum"]
    folder = write_tiny_qwen_vl(tmp_path_factory.mktemp("tiny") / "qwen_vl", texts, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    pixels = dict(min_pixels=28 * 28, max_pixels=56 * 56)
    Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels),
                        video_processor=Qwen2VLVideoProcessor(**pixels), tokenizer=tokenizer,
                        chat_template=tokenizer.chat_template).save_pretrained(folder)
    return folder


@pytest.fixture
def clip(make_video) -> ClipInput:
    frames = np.random.default_rng(0).integers(0, 256, (25, 32, 48, 3), dtype=np.uint8)
    path = make_video("clip.mp4", frames=frames, audio=sine(440.0, 1.0, 16000))
    return ClipInput(id="clip", video=str(path), duration=1.0)


def reference_answer(folder: Path, frames: np.ndarray, fps: float, turns: list[Turn]) -> tuple[str, int, int]:
    """Greedy generation written out by hand: chat template → processor → generate → decode."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": turns[0].text}]}]
    messages += [{"role": t.role, "content": [{"type": "text", "text": t.text}]} for t in turns[1:]]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], videos=[frames], return_tensors="pt",
                       video_metadata=[{"total_num_frames": len(frames), "fps": fps}])
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    return processor.batch_decode(new[None], skip_special_tokens=True)[0], inputs["input_ids"].shape[1], len(new)


def test_random_model_runs_generate_and_its_garbage_is_rejected_with_a_reason(tiny_vl, clip):
    backend = build_backend({"backend": "hf", "model": str(tiny_vl), "max_new_tokens": MAX_NEW, "frames": 4,
                             "max_side": 48, "device": "cpu"})
    assert isinstance(backend, HFChatBackend) and backend.describe()["model_type"] == "qwen2_5_vl"
    outcome = annotate_clip(clip, backend, RULES)
    record = outcome.record
    assert not outcome.accepted and record["status"] == "rejected" and "caption" not in record

    # The failing step got exactly one repair; its reason is the validator's message on the last answer.
    step = record["step"]
    answers = record["answers"][step]
    assert len(answers) == 2 and outcome.repairs == 1
    check = {"gist": lambda t: check_gist(t, RULES), "grounding": lambda t: check_grounding(t, RULES),
             "structured": lambda t: parse_structured(t, RULES)}[step]
    messages = []
    for answer in answers:
        with pytest.raises(ValidationError) as error:
            check(answer)
        messages.append(error.value.message)
    assert record["reason"] == messages[1]

    # Both answers are what a hand-written generate gives on the same conversation.
    media = load_clip_media(clip.video, None, backend.media, 1.0)
    assert media.frames.shape == (4, 32, 48, 3)
    first = [Turn("user", step_prompt(step))]
    text, prompt_tokens, new_tokens = reference_answer(tiny_vl, media.frames, 4.0, first)
    assert text == answers[0] and 0 < new_tokens <= MAX_NEW
    repair = [*first, Turn("assistant", answers[0]), Turn("user", repair_prompt(messages[0]))]
    assert reference_answer(tiny_vl, media.frames, 4.0, repair)[0] == answers[1]
    # Usage: the backend counts the prompt and generated tokens of every request.
    reply = backend.chat(media, first, "clip:again:1")
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == (text, prompt_tokens, new_tokens)
    assert backend.cost(reply) == 0.0


def test_bad_folders_are_named(tmp_path, tiny_vl):
    with pytest.raises(ValueError, match="no config.json"):
        HFChatBackend(str(tmp_path))
    with pytest.raises(ValueError, match="send_audio needs an audio-capable model"):
        HFChatBackend(str(tiny_vl), send_audio=True)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['base_url'\] for backend 'hf'"):
        build_backend({"backend": "hf", "model": str(tiny_vl), "base_url": "http://x"})


OMNI_SPECIAL = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
                "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
                "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
OMNI_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}"
                 "{% else %}{% for c in m.content %}{% if c.type == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
                 "{% elif c.type == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>{% elif c.type == 'text' %}"
                 "{{ c.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_omni(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-Omni thinker folder with its processor (Whisper features, video processor)."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import (PreTrainedTokenizerFast, Qwen2_5OmniProcessor, Qwen2_5OmniThinkerConfig,
                              Qwen2_5OmniThinkerForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLVideoProcessor,
                              WhisperFeatureExtractor)

    texts = [step_prompt(s) for s in STEPS] + [repair_prompt("x"), "dog car siren . rumble hum user assistant"]
    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text)})
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    specials = ["<|im_start|>", "<|im_end|>", *OMNI_SPECIAL.values()]
    vocab.update({t: len(vocab) + i for i, t in enumerate(specials)})
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    backend.add_special_tokens([AddedToken(t, special=True) for t in specials])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        chat_template=OMNI_TEMPLATE, extra_special_tokens=OMNI_SPECIAL)
    config = Qwen2_5OmniThinkerConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=None,
                         eos_token_id=vocab["<|im_end|>"], pad_token_id=1,
                         rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 10000.0}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        audio_config=dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, output_dim=64,
                          num_mel_bins=16, max_source_positions=1500, n_window=10),
        video_token_index=vocab["<|VIDEO|>"], image_token_index=vocab["<|IMAGE|>"],
        audio_token_index=vocab["<|AUDIO|>"], vision_start_token_id=vocab["<|vision_bos|>"],
        vision_end_token_id=vocab["<|vision_eos|>"], audio_start_token_id=vocab["<|audio_bos|>"],
        audio_end_token_id=vocab["<|audio_eos|>"])
    folder = tmp_path_factory.mktemp("tiny") / "omni_thinker"
    torch.manual_seed(0)
    Qwen2_5OmniThinkerForConditionalGeneration(config).save_pretrained(folder)
    pixels = dict(min_pixels=28 * 28, max_pixels=56 * 56)
    Qwen2_5OmniProcessor(image_processor=Qwen2VLImageProcessor(**pixels),
                         video_processor=Qwen2VLVideoProcessor(**pixels),
                         feature_extractor=WhisperFeatureExtractor(feature_size=16), tokenizer=tokenizer,
                         chat_template=OMNI_TEMPLATE).save_pretrained(folder)
    return folder


def test_omni_thinker_hears_the_audio(tiny_omni, clip):
    from transformers import AutoProcessor, Qwen2_5OmniThinkerForConditionalGeneration

    backend = HFChatBackend(str(tiny_omni), max_new_tokens=MAX_NEW, frames=4, max_side=48, send_audio=True)
    assert backend.media.sample_rate == 16000  # the feature extractor's rate
    media = load_clip_media(clip.video, None, backend.media, 1.0)
    assert media.wav.shape == (16000,) and abs(float(np.abs(media.wav).max()) - 0.5) < 0.02  # the 440 Hz sine
    turns = [Turn("user", step_prompt("gist"))]
    reply = backend.chat(media, turns, "clip:gist:1")

    processor = AutoProcessor.from_pretrained(tiny_omni)
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny_omni, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "audio"},
                                             {"type": "text", "text": turns[0].text}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.count("<|AUDIO|>") == 1 and prompt.count("<|VIDEO|>") == 1
    inputs = processor(text=[prompt], videos=[media.frames], audio=[media.wav], return_tensors="pt",
                       video_metadata=[{"total_num_frames": 4, "fps": 4.0}])
    assert inputs["input_features"].shape[1] == 16  # the audio reached the model as Whisper features
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert reply.text == processor.batch_decode(new[None], skip_special_tokens=True)[0]
    assert (reply.prompt_tokens, reply.completion_tokens) == (inputs["input_ids"].shape[1], len(new))
    silent = type(media)(frames=media.frames, times=media.times, wav=np.zeros_like(media.wav), sample_rate=16000)
    assert backend.inputs(silent, turns)["input_features"].abs().sum() != inputs["input_features"].abs().sum()

    outcome = annotate_clip(clip, backend, RULES)
    assert not outcome.accepted and outcome.record["reason"]
