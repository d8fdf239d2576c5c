"""Synchformer: shapes, window arithmetic, preprocessing, checkpoint key names and loading.

Random-weight tiny models (``SYNCHFORMER_TINY``: 32² frames, width 64, depth 2) keep the tests
fast; the official sizes are built on the meta device (no memory) and checked against the key
names, shapes and parameter counts of notes/pretrained-components.md §2 and §7. Three parts are
checked against independent references: the divided space-time attention against a transcription
of MotionFormer's einops code, the AST encoder against transformers' ``ASTModel`` (whose v5 module
names differ, hence a key map), and the audio windows against av-benchmark's recipe on
torchaudio's ``MelSpectrogram``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
from einops import rearrange, repeat

from reasonaudio.config import SYNC_FPS, SequenceConfig
from reasonaudio.media import load_audio, load_video, resize_short_side_crop
from reasonaudio.models.synchformer import (AUDIO_HOP, AUDIO_WINDOW, MEL_MEAN, MEL_STD, SYNCHFORMER_TINY, ASTEncoder,
                                            DividedAttention, Synchformer, SynchformerConfig, SynchformerMel,
                                            SynchformerVisualEncoder, audio_window_count, offset_grid, predicted_offset,
                                            synchformer_visual, video_window_count)

TINY = SYNCHFORMER_TINY
SIDE = TINY.image_size


@pytest.fixture(scope="module")
def tiny() -> Synchformer:
    torch.manual_seed(0)
    return Synchformer(TINY).eval()


@pytest.fixture(scope="module")
def official_meta() -> Synchformer:
    """The official sizes, parameters on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return Synchformer()


def random_frames(batch: int, frames: int, side: int = SIDE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, frames, side, side, 3), dtype=torch.uint8, generator=g)


def random_wav(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, samples, generator=g)


# --------------------------------------------------------------------------- official key names


def _wb(*names: str) -> set[str]:
    return {f"{n}.{p}" for n in names for p in ("weight", "bias")}


def _pooling_keys(prefix: str) -> set[str]:
    """Synchformer's BaseEncoderLayer: nn.TransformerEncoderLayer + cls_token."""
    return ({prefix + "cls_token", prefix + "self_attn.in_proj_weight", prefix + "self_attn.in_proj_bias"}
            | _wb(*(prefix + m for m in ("self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"))))


def official_visual_keys() -> set[str]:
    """notes §7.2: the ``vfeat_extractor.`` keys of synchformer_state_dict.pth."""
    p = "vfeat_extractor."
    keys = {p + "cls_token", p + "pos_embed", p + "temp_embed"} | _wb(p + "patch_embed.proj", p + "patch_embed_3d.proj",
                                                                       p + "norm")
    for i in range(12):
        keys |= _wb(*(f"{p}blocks.{i}.{m}" for m in ("norm1", "norm2", "norm3", "attn.qkv", "attn.proj",
                                                      "timeattn.qkv", "timeattn.proj", "mlp.fc1", "mlp.fc2")))
    return keys | _pooling_keys(p + "spatial_attn_agg.")


def official_full_keys() -> set[str]:
    """notes §2.2, §2.4 and §7.3: the whole synchformer_state_dict.pth."""
    a = "afeat_extractor.ast."
    keys = {a + "embeddings.cls_token", a + "embeddings.distillation_token", a + "embeddings.position_embeddings"}
    keys |= _wb(a + "embeddings.patch_embeddings.projection", a + "layernorm")
    for i in range(12):
        keys |= _wb(*(f"{a}encoder.layer.{i}.{m}" for m in (
            "attention.attention.query", "attention.attention.key", "attention.attention.value",
            "attention.output.dense", "intermediate.dense", "output.dense", "layernorm_before", "layernorm_after")))
    keys |= _pooling_keys("afeat_extractor.freq_attn_agg.")
    t = "transformer."
    keys |= {t + "OFF_tok", t + "MOD_tok", t + "pos_emb_cfg.pos_emb"}
    keys |= _wb("vproj", "aproj", t + "vis_in_lnorm", t + "aud_in_lnorm", t + "ln_f", t + "off_head")
    for i in range(3):
        keys |= _wb(*(f"{t}blocks.{i}.{m}" for m in ("ln1", "ln2", "attn.key", "attn.query", "attn.value",
                                                     "attn.proj", "mlp.0", "mlp.2")))
    return official_visual_keys() | keys


def test_official_key_set_shapes_and_parameter_counts(official_meta):
    state = official_meta.state_dict()
    assert set(state) == official_full_keys()
    with torch.device("meta"):
        visual = SynchformerVisualEncoder()
        motionformer = synchformer_visual()
    assert set(visual.state_dict()) == official_visual_keys()
    assert {k: tuple(v.shape) for k, v in motionformer.state_dict().items()} == \
        {k.removeprefix("vfeat_extractor."): tuple(v.shape) for k, v in visual.state_dict().items()}
    shapes = {"vfeat_extractor.pos_embed": (1, 197, 768), "vfeat_extractor.temp_embed": (1, 8, 768),
              "vfeat_extractor.patch_embed.proj.weight": (768, 3, 16, 16),
              "vfeat_extractor.patch_embed_3d.proj.weight": (768, 3, 2, 16, 16),
              "vfeat_extractor.blocks.11.timeattn.qkv.weight": (2304, 768),
              "vfeat_extractor.spatial_attn_agg.self_attn.in_proj_weight": (2304, 768),
              "afeat_extractor.ast.embeddings.position_embeddings": (1, 74, 768),
              "afeat_extractor.ast.embeddings.patch_embeddings.projection.weight": (768, 1, 16, 16),
              "afeat_extractor.ast.encoder.layer.11.intermediate.dense.weight": (3072, 768),
              "transformer.pos_emb_cfg.pos_emb": (1, 198, 768), "transformer.blocks.2.mlp.0.weight": (3072, 768),
              "transformer.off_head.weight": (21, 768), "transformer.off_head.bias": (21,)}
    assert {k: tuple(state[k].shape) for k in shapes} == shapes

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    # notes §2: visual 122.44M, AST 92.4M, head + transformer 21.44M, full 237.46M
    assert count(official_meta.vfeat_extractor) == count(visual) == 122_440_704
    assert count(official_meta.afeat_extractor) == 92_400_384
    assert count(official_meta.transformer) == 21_437_973
    assert count(official_meta) == 237_460_245


# --------------------------------------------------------------------------- windows and preprocessing


@pytest.mark.parametrize("duration, windows", [(8.0, 24), (4.0, 11), (10.0, 30), (4.8, 14), (0.64, 1)])
def test_video_tokens_for_durations(tiny, duration, windows):
    seq = SequenceConfig(duration=duration)
    assert video_window_count(seq.sync_frames) == seq.sync_windows == windows
    with torch.no_grad():
        tokens = tiny.encode_video(random_frames(1, seq.sync_frames))
    assert tokens.shape == (1, seq.sync_len, TINY.dim) == (1, 8 * windows, TINY.dim)
    assert torch.isfinite(tokens).all()


def test_visual_encoder_8s_shape_and_layouts(tiny):
    frames = random_frames(2, 200)  # 8 s at 25 fps, [B, T, H, W, 3]
    encoder = SynchformerVisualEncoder(TINY).eval()
    encoder.load_state_dict({k: v for k, v in tiny.state_dict().items() if k.startswith("vfeat_extractor.")})
    with torch.no_grad():
        channels_last = encoder(frames)
        channels_first = encoder(frames.permute(0, 1, 4, 2, 3))  # [B, T, 3, H, W]
        floats = encoder(encoder.preprocess_video(frames))
    assert channels_last.shape == (2, 192, TINY.dim)
    torch.testing.assert_close(channels_first, channels_last)
    torch.testing.assert_close(floats, channels_last)
    # windows are encoded independently: the first window's tokens depend on frames 0–15 only
    with torch.no_grad():
        alone = encoder(frames[:1, :16])
    torch.testing.assert_close(alone, channels_last[:1, :8])


def test_too_short_inputs_are_rejected(tiny):
    with pytest.raises(ValueError, match="15 frames are shorter"):
        tiny.encode_video(random_frames(1, 15))
    with pytest.raises(ValueError, match="10239 samples are shorter"):
        tiny.audio_windows(random_wav(1, AUDIO_WINDOW - 1))
    with pytest.raises(ValueError, match="shorter than one Synchformer window"):
        SequenceConfig(duration=0.5).sync_windows


def test_video_windows_take_16_frames_every_8(tiny):
    index = torch.arange(100.0).view(1, 100, 1)  # frame t holds t
    windows = tiny.video_windows(index)
    assert windows.shape == (1, 11, 16, 1)
    for s in range(11):
        assert windows[0, s, :, 0].tolist() == list(range(8 * s, 8 * s + 16))


def test_preprocess_values_layouts_and_resize(tiny):
    white = torch.full((1, 2, SIDE, SIDE, 3), 255, dtype=torch.uint8)
    x = tiny.preprocess_video(white)
    assert x.shape == (1, 2, 3, SIDE, SIDE) and x.dtype == torch.float32
    assert torch.equal(x, torch.ones_like(x))
    assert torch.equal(tiny.preprocess_video(torch.zeros_like(white)), -torch.ones_like(x))
    mid = tiny.preprocess_video(torch.full_like(white, 128))
    torch.testing.assert_close(mid, torch.full_like(x, (128 / 255 - 0.5) / 0.5))

    frames = torch.randint(0, 256, (1, 3, 40, 56, 3), dtype=torch.uint8)  # not square, not 32²
    out = tiny.preprocess_video(frames)
    assert out.shape == (1, 3, 3, SIDE, SIDE)
    expected = resize_short_side_crop(frames[0], SIDE).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    torch.testing.assert_close(out[0], expected)
    torch.testing.assert_close(tiny.preprocess_video(frames.permute(0, 1, 4, 2, 3)), out)

    with pytest.raises(ValueError, match="uint8"):
        tiny.preprocess_video(frames.float())
    with pytest.raises(ValueError, match="RGB axis"):
        tiny.preprocess_video(torch.zeros(1, 2, 4, 5, 6, dtype=torch.uint8))


@pytest.mark.parametrize("seconds, windows", [(8.0, 24), (4.8, 14), (10.0, 30), (0.64, 1)])
def test_audio_window_arithmetic(tiny, seconds, windows):
    samples = round(seconds * 16000)
    assert audio_window_count(samples) == windows == (samples - 10240) // 5120 + 1
    assert (AUDIO_WINDOW, AUDIO_HOP) == (10240, 5120)
    mel = tiny.audio_windows(random_wav(2, samples))
    assert mel.shape == (2, windows, 128, 66)
    # frame 66 is the zero padding of the 65 mel frames, normalised like the rest
    torch.testing.assert_close(mel[..., 65], torch.full_like(mel[..., 65], (0 - MEL_MEAN) / (2 * MEL_STD)))
    if seconds == 8.0:  # audio and video windows line up for whole 0.32 s steps
        assert windows == SequenceConfig(duration=seconds).sync_windows


def test_audio_windows_match_av_benchmark_recipe(tiny):
    wav = random_wav(2, 16000 * 2)
    # av-benchmark encode_audio_with_sync, with torchaudio's MelSpectrogram
    mel_ref = torchaudio.transforms.MelSpectrogram(sample_rate=16000, win_length=400, hop_length=160, n_fft=1024,
                                                   n_mels=128)
    segments = torch.stack([wav[:, i * 5120:i * 5120 + 10240] for i in range((wav.shape[1] - 10240) // 5120 + 1)],
                           dim=1)
    ref = torch.log(mel_ref(segments) + 1e-6)
    ref = torch.nn.functional.pad(ref, (0, 66 - ref.shape[-1]))
    ref = (ref - -4.2677393) / (2 * 4.5689974)
    torch.testing.assert_close(tiny.audio_windows(wav), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(SynchformerMel()(segments), mel_ref(segments), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- references


def reference_divided_attention(attn: DividedAttention, x: torch.Tensor, einops_from: str, einops_to: str,
                                **dims: int) -> torch.Tensor:
    """MotionFormer ``vit_helper.DividedAttention.forward`` (no mask), transcribed."""
    h = attn.heads
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    q, k, v = (rearrange(t, "b n (h d) -> (b h) n d", h=h) for t in (q, k, v))
    q = q * q.shape[-1] ** -0.5
    (cls_q, q_), (cls_k, k_), (cls_v, v_) = ((t[:, 0:1], t[:, 1:]) for t in (q, k, v))
    cls_out = (cls_q @ k.transpose(1, 2)).softmax(-1) @ v
    q_, k_, v_ = (rearrange(t, f"{einops_from} -> {einops_to}", **dims) for t in (q_, k_, v_))
    r = q_.shape[0] // cls_k.shape[0]
    cls_k, cls_v = (repeat(t, "b () d -> (b r) () d", r=r) for t in (cls_k, cls_v))
    k_, v_ = torch.cat((cls_k, k_), dim=1), torch.cat((cls_v, v_), dim=1)
    out = (q_ @ k_.transpose(1, 2)).softmax(-1) @ v_
    out = rearrange(out, f"{einops_to} -> {einops_from}", **dims)
    out = rearrange(torch.cat((cls_out, out), dim=1), "(b h) n d -> b n (h d)", h=h)
    return attn.proj(out)


def test_divided_attention_matches_motionformer_reference():
    torch.manual_seed(1)
    attn = DividedAttention(32, heads=4)
    frames, patches = 8, 6
    x = torch.randn(3, 1 + frames * patches, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, frames, "time"),
                                   reference_divided_attention(attn, x, "b (f n) d", "(b n) f d", n=patches))
        torch.testing.assert_close(attn(x, frames, "space"),
                                   reference_divided_attention(attn, x, "b (f n) d", "(b f) n d", f=frames))


def test_ast_matches_transformers_ast_model():
    from transformers import ASTConfig, ASTModel

    torch.manual_seed(2)
    ours = ASTEncoder(dim=64, depth=2, heads=2).eval()
    hf = ASTModel(ASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                            max_length=66, num_mel_bins=128)).eval()
    renames = [("encoder.layer.", "layers."), ("attention.attention.query", "attention.q_proj"),
               ("attention.attention.key", "attention.k_proj"), ("attention.attention.value", "attention.v_proj"),
               ("attention.output.dense", "attention.o_proj"), ("intermediate.dense", "mlp.fc1"),
               ("output.dense", "mlp.fc2")]
    state = {}
    for key, value in ours.ast.state_dict().items():
        for old, new in renames:
            key = key.replace(old, new)
        state[key] = value
    hf.load_state_dict(state, strict=True)
    mel = torch.randn(3, 128, 66)
    with torch.no_grad():
        expected = hf(mel.transpose(1, 2)).last_hidden_state  # HF takes [B, time, mel bins]
        torch.testing.assert_close(ours.ast(mel), expected, atol=1e-5, rtol=1e-4)
        assert ours(mel).shape == (3, 6, 64)


# --------------------------------------------------------------------------- full model


def test_full_model_shapes_offsets_and_desync(tiny):
    with torch.no_grad():
        video = tiny.encode_video(random_frames(2, 200))
        audio = tiny.encode_audio(random_wav(2, 128000))
        assert video.shape == (2, 192, TINY.dim) and audio.shape == (2, 144, TINY.dim)
        logits = tiny.offset_logits(video[:, :112], audio[:, :84])
        assert logits.shape == (2, 21)
        torch.testing.assert_close(tiny(random_frames(2, 200)[:, :120], random_wav(2, 128000)[:, :76800]),
                                   logits)
        desync = tiny.desync(video, audio)
        last = tiny.offset_logits(video[:, -112:], audio[:, -84:])
    expected = (predicted_offset(logits).abs() + predicted_offset(last).abs()) / 2
    torch.testing.assert_close(desync, expected)
    assert desync.shape == (2,) and ((desync >= 0) & (desync <= 2)).all()
    with pytest.raises(ValueError, match="14 windows"):
        tiny.offset_logits(video, audio)
    with pytest.raises(ValueError, match="same number"):
        tiny.desync(video, audio[:, :-6])


def test_predicted_offset_on_one_hot_logits():
    grid = offset_grid()
    assert grid.tolist() == torch.from_numpy(np.linspace(-2, 2, 21)).float().tolist()  # Synchformer's make_class_grid
    logits = torch.eye(21) * 5 - 1  # row k is one-hot on class k
    expected = torch.tensor([-2 + 0.2 * k for k in range(21)])
    torch.testing.assert_close(predicted_offset(logits), expected)
    assert predicted_offset(logits[10]).item() == 0.0
    assert predicted_offset(logits[20]).item() == pytest.approx(2.0)
    assert predicted_offset(logits.view(3, 7, 21)).shape == (3, 7)


# --------------------------------------------------------------------------- checkpoints


def test_state_dict_round_trip_and_visual_only_load(tiny, tmp_path):
    path = tmp_path / "synchformer_state_dict.pth"
    torch.save(tiny.state_dict(), path)
    torch.manual_seed(123)  # a fresh model starts from other weights
    loaded = Synchformer.from_checkpoint(path, TINY)
    assert not loaded.training
    assert loaded.state_dict().keys() == tiny.state_dict().keys()
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in loaded.state_dict().items())
    frames, wav = random_frames(1, 120), random_wav(1, 76800)
    with torch.no_grad():
        torch.testing.assert_close(loaded(frames, wav), tiny(frames, wav), rtol=0, atol=0)

    wrapped = tmp_path / "run.pt"  # Synchformer's own layout: {"model": state_dict, ...}
    torch.save({"model": tiny.state_dict(), "epoch": 3}, wrapped)
    assert torch.equal(Synchformer.from_checkpoint(wrapped, TINY).transformer.off_head.weight,
                       tiny.transformer.off_head.weight)

    visual = SynchformerVisualEncoder.from_checkpoint(path, TINY)
    assert set(visual.state_dict()) == {k for k in tiny.state_dict() if k.startswith("vfeat_extractor.")}
    injected = SynchformerVisualEncoder(TINY).train()  # a system's module, loaded when the stage starts
    assert injected.load_checkpoint(path) is injected and not injected.training
    with torch.no_grad():
        torch.testing.assert_close(visual(frames), tiny.encode_video(frames), rtol=0, atol=0)
        torch.testing.assert_close(injected(frames), tiny.encode_video(frames), rtol=0, atol=0)


def test_checkpoint_errors_name_the_file_and_keys(tiny, tmp_path):
    missing = tmp_path / "nowhere" / "synchformer_state_dict.pth"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Synchformer.from_checkpoint(missing, TINY)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SynchformerVisualEncoder(TINY).load_checkpoint(missing)

    def save(state: dict, name: str) -> Path:
        torch.save(state, tmp_path / name)
        return tmp_path / name

    state = dict(tiny.state_dict())
    state["vfeat_extractor.temp_embed"] = torch.zeros(1, 9, TINY.dim)
    path = save(state, "shape.pth")
    for cls in (Synchformer, SynchformerVisualEncoder):
        with pytest.raises(ValueError, match=r"shape mismatches \(1\): vfeat_extractor\.temp_embed: checkpoint "
                                             r"\(1, 9, 64\) vs model \(1, 8, 64\)"):
            cls.from_checkpoint(path, TINY)

    state = dict(tiny.state_dict())
    del state["transformer.off_head.bias"]
    state["transformer.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \(1\): transformer\.off_head\.bias.*"
                                         r"unexpected keys \(1\): transformer\.extra"):
        Synchformer.from_checkpoint(save(state, "keys.pth"), TINY)
    # the visual loader only reads the vfeat_extractor keys, so the head does not matter to it
    SynchformerVisualEncoder.from_checkpoint(tmp_path / "keys.pth", TINY)

    audio_only = {k: v for k, v in tiny.state_dict().items() if not k.startswith("vfeat_extractor.")}
    with pytest.raises(ValueError, match=r"missing keys \(\d+\): vfeat_extractor\."):
        SynchformerVisualEncoder.from_checkpoint(save(audio_only, "audio_only.pth"), TINY)
    with pytest.raises(ValueError, match="not hold a state dict"):
        Synchformer.from_checkpoint(save([1, 2, 3], "list.pth"), TINY)
    with pytest.raises(ValueError, match="does not match"):
        Synchformer.from_checkpoint(tmp_path / "shape.pth", SynchformerConfig(**{**TINY.to_dict(), "dim": 32}))


# --------------------------------------------------------------------------- real media


def test_real_clip_through_the_media_policy(tiny, fixtures_dir):
    clip = fixtures_dir / "media" / "vggsound" / "1aDnyPubxdY_000118.mp4"  # 320x240
    full = load_video(clip, SYNC_FPS, duration=4.8).frames  # [120, 240, 320, 3]
    cropped = load_video(clip, SYNC_FPS, duration=4.8, size=SIDE).frames  # media's decode-time policy
    assert full.shape[0] == 120
    x = tiny.preprocess_video(full[None])
    assert torch.equal(x, tiny.preprocess_video(cropped[None]))  # same policy before or after decoding
    wav = load_audio(clip, 16000, duration=4.8).wav[None]
    with torch.no_grad():
        video, audio = tiny.encode_video(full[None]), tiny.encode_audio(wav)
        desync = tiny.desync(video, audio)
    assert video.shape == (1, 112, TINY.dim) and audio.shape == (1, 84, TINY.dim)  # 14 windows each
    assert math.isclose(desync.item() * 10, round(desync.item() * 10), abs_tol=1e-4)  # a multiple of 0.1 s
