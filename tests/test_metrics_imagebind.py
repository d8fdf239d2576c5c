"""IBScore: key compatibility with imagebind_huge.pth, loading, av-benchmark inputs, and the score itself."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi

from reasonaudio.metrics.imagebind import (CHECKPOINT_NAME, IMAGEBIND_HUGE, IMAGEBIND_TINY, IBScore, ImageBindAV,
                                           audio_clip_bounds, load_video_frames)


def official_tower_keys() -> dict[str, tuple[int, ...]]:
    """Vision and audio entries of imagebind_huge.pth with their shapes, written out from the official source.

    facebookresearch/ImageBind ``imagebind/models/imagebind_model.py`` (``imagebind_huge``: vision 1280 × 32
    blocks, audio 768 × 12 blocks, out 1024; vision trunk with a pre-LayerNorm, audio trunk with
    ``add_bias_kv``; vision stem ``[PadIm2Video, Conv3d(kernel (2, 14, 14), bias=False)]``, audio stem
    ``Conv2d(16, stride 10, bias=False)`` + LayerNorm; heads ``[LayerNorm, SelectElement, Linear(bias=False)]``;
    audio postprocessor ``[Normalize, LearnableLogitScaling(learnable=False)]`` whose ``log_logit_scale`` is a
    buffer), ``multimodal_preprocessors.py`` (``cls_token``, ``pos_embedding_helper.pos_embed``) and
    ``transformer.py`` (``BlockWithMasking``: ``attn`` = ``nn.MultiheadAttention``, ``norm_1``, ``mlp.fc1/fc2``,
    ``norm_2``). The names agree with the rename table of the transformers ImageBind conversion script
    (huggingface/transformers PR #30690).
    """
    v, a, out = 1280, 768, 1024
    keys = {
        "modality_preprocessors.vision.cls_token": (1, 1, v),
        "modality_preprocessors.vision.rgbt_stem.proj.1.weight": (v, 3, 2, 14, 14),
        "modality_preprocessors.vision.pos_embedding_helper.pos_embed": (1, 1 + 16 * 16, v),
        "modality_preprocessors.audio.cls_token": (1, 1, a),
        "modality_preprocessors.audio.rgbt_stem.proj.weight": (a, 1, 16, 16),
        "modality_preprocessors.audio.rgbt_stem.norm_layer.weight": (a,),
        "modality_preprocessors.audio.rgbt_stem.norm_layer.bias": (a,),
        "modality_preprocessors.audio.pos_embedding_helper.pos_embed": (1, 1 + 12 * 19, a),
        "modality_trunks.vision.pre_transformer_layer.0.weight": (v,),
        "modality_trunks.vision.pre_transformer_layer.0.bias": (v,),
        "modality_postprocessors.audio.1.log_logit_scale": (),
    }
    for modality, dim, depth in (("vision", v, 32), ("audio", a, 12)):
        for i in range(depth):
            p = f"modality_trunks.{modality}.blocks.{i}."
            keys.update({p + "attn.in_proj_weight": (3 * dim, dim), p + "attn.in_proj_bias": (3 * dim,),
                         p + "attn.out_proj.weight": (dim, dim), p + "attn.out_proj.bias": (dim,),
                         p + "norm_1.weight": (dim,), p + "norm_1.bias": (dim,), p + "norm_2.weight": (dim,),
                         p + "norm_2.bias": (dim,), p + "mlp.fc1.weight": (4 * dim, dim),
                         p + "mlp.fc1.bias": (4 * dim,),
                         p + "mlp.fc2.weight": (dim, 4 * dim), p + "mlp.fc2.bias": (dim,)})
            if modality == "audio":
                keys.update({p + "attn.bias_k": (1, 1, dim), p + "attn.bias_v": (1, 1, dim)})
        keys.update({f"modality_heads.{modality}.0.weight": (dim,), f"modality_heads.{modality}.0.bias": (dim,),
                     f"modality_heads.{modality}.2.weight": (out, dim)})
    return keys


def test_huge_towers_have_the_official_keys_and_shapes():
    with torch.device("meta"):
        model = ImageBindAV(IMAGEBIND_HUGE)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_tower_keys()
    vision = sum(p.numel() for n, p in model.named_parameters() if ".vision." in n)
    audio = sum(p.numel() for n, p in model.named_parameters() if ".audio." in n)
    assert 632e6 < vision < 634e6 and 85e6 < audio < 87e6  # ViT-H/14 and ViT-B/16-sized towers


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random model saved like the official file: a plain state dict with other modalities' keys too."""
    torch.manual_seed(0)
    model = ImageBindAV(IMAGEBIND_TINY)
    state = dict(model.state_dict())
    state["modality_trunks.text.blocks.0.attn.in_proj_weight"] = torch.zeros(6, 2)
    state["modality_postprocessors.text.1.log_logit_scale"] = torch.tensor(2.0)
    path = tmp_path_factory.mktemp("ib") / CHECKPOINT_NAME
    torch.save(state, path)
    return path, model


def test_loads_the_towers_from_a_full_checkpoint(tiny_checkpoint, tmp_path):
    path, model = tiny_checkpoint
    metric = IBScore(str(path), size="tiny")
    loaded = metric.imagebind.state_dict()
    assert set(loaded) == set(model.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match=CHECKPOINT_NAME) as info:
        IBScore(str(tmp_path / "weights" / CHECKPOINT_NAME), size="tiny")
    assert info.value.filename == str(tmp_path / "weights" / CHECKPOINT_NAME)
    broken = dict(torch.load(path, weights_only=True))
    broken["modality_heads.audio.2.weight"] = torch.zeros(3, 3)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="broken.pth.*wrong shapes.*modality_heads.audio.2.weight"):
        IBScore(str(tmp_path / "broken.pth"), size="tiny")


def test_audio_clips_follow_constant_clips_per_video_sampler():
    assert audio_clip_bounds(8 * 16000) == [(0, 32000), (32000, 64000), (64000, 96000)]  # the last 2 s unused
    assert audio_clip_bounds(4 * 16000) == [(0, 32000), (10666, 42666), (21333, 53333)]
    assert audio_clip_bounds(16000) == [(0, 32000)] * 3  # shorter than a clip: three copies, padded later


# --------------------------------------------------------------------------- an independent forward pass


def _vit(sd: dict, modality: str, tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """The trunk and head written out with plain tensor ops from the state dict. [N, L, D] → [N, out]"""
    def ln(x, p, eps):
        return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)

    x = tokens
    if modality == "vision":
        x = ln(x, "modality_trunks.vision.pre_transformer_layer.0", 1e-6)
    i = 0
    while f"modality_trunks.{modality}.blocks.{i}.norm_1.weight" in sd:
        p = f"modality_trunks.{modality}.blocks.{i}."
        h = ln(x, p + "norm_1", 1e-6)
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        if p + "attn.bias_k" in sd:  # one extra key/value token
            k = torch.cat([k, sd[p + "attn.bias_k"].expand(k.shape[0], 1, -1)], dim=1)
            v = torch.cat([v, sd[p + "attn.bias_v"].expand(v.shape[0], 1, -1)], dim=1)
        n, l, d = q.shape
        split = lambda t: t.reshape(n, t.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
        att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // heads), dim=-1) @ split(v)
        x = x + att.transpose(1, 2).reshape(n, l, d) @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = ln(x, p + "norm_2", 1e-6)
        h = F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]) @ sd[p + "mlp.fc2.weight"].T
        x = x + h + sd[p + "mlp.fc2.bias"]
        i += 1
    x = ln(x, f"modality_heads.{modality}.0", 1e-6)[:, 0]
    return x @ sd[f"modality_heads.{modality}.2.weight"].T


def _independent_score(sd: dict, wav16k: torch.Tensor, frames: torch.Tensor) -> float:
    """av-benchmark's inputs and ImageBind's forward, from scratch, for 8 s of audio and 4 frames."""
    clips = []
    for a, b in ((0, 32000), (32000, 64000), (64000, 96000)):
        c = wav16k[a:b] - wav16k[a:b].mean()
        fb = kaldi.fbank(c[None], htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
                         num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10).T
        clips.append((F.pad(fb, (0, 204 - fb.shape[1])) + 4.268) / 9.138)
    x = torch.stack(clips)[:, None]  # [3, 1, 128, 204]
    pre = "modality_preprocessors.audio."
    t = F.conv2d(x, sd[pre + "rgbt_stem.proj.weight"], stride=10).flatten(2).transpose(1, 2)
    t = F.layer_norm(t, t.shape[-1:], sd[pre + "rgbt_stem.norm_layer.weight"], sd[pre + "rgbt_stem.norm_layer.bias"])
    t = torch.cat([sd[pre + "cls_token"].expand(3, 1, -1), t], 1) + sd[pre + "pos_embedding_helper.pos_embed"]
    audio = (20 * F.normalize(_vit(sd, "audio", t, IMAGEBIND_TINY.audio_heads), dim=-1)).mean(0)

    h, w = frames.shape[1:3]  # landscape: short side h → 224, long side int(224 · w / h), crops along w
    img = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(224, int(224 * w / h)), mode="bicubic",
                        align_corners=False, antialias=True).round().clamp(0, 255) / 255.0
    img = (img - torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]) / \
        torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    width = img.shape[-1]
    vclips = [img[i:i + 2, :, :, left:left + 224].transpose(0, 1) for i in range(3)
              for left in (0, math.ceil((width - 224) / 2), width - 224)]
    pre = "modality_preprocessors.vision."
    t = F.conv3d(torch.stack(vclips), sd[pre + "rgbt_stem.proj.1.weight"], stride=(2, 14, 14))
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([sd[pre + "cls_token"].expand(9, 1, -1), t], 1) + sd[pre + "pos_embedding_helper.pos_embed"]
    video = F.normalize(_vit(sd, "vision", t, IMAGEBIND_TINY.vision_heads), dim=-1).mean(0)
    return float(F.cosine_similarity(video, audio, dim=0))


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(8 * 16000) / 16000
    wav = 0.3 * torch.sin(2 * math.pi * (200 + 100 * seed) * t) * (t % 1.0 < 0.3)
    wav = wav + 0.02 * torch.randn(t.numel(), generator=g)
    frames = torch.randint(0, 256, (4, 48, 64, 3), generator=g, dtype=torch.uint8)
    return wav, frames


def test_score_equals_an_independent_computation(tiny_checkpoint):
    path, model = tiny_checkpoint
    sd = {k: v.float() for k, v in model.state_dict().items()}
    pairs = [_inputs(seed) for seed in range(3)]
    expected = [_independent_score(sd, wav, frames) for wav, frames in pairs]
    metric = IBScore(str(path), size="tiny", batch_size=2)
    sims = metric.similarities(torch.stack([w for w, _ in pairs]), 16000, [f for _, f in pairs])
    assert sims.tolist() == pytest.approx(expected, abs=1e-5)
    assert len(set(np.round(expected, 4))) == 3  # distinct pairs give distinct scores
    metric.update(torch.stack([w for w, _ in pairs[:2]]), 16000, [f for _, f in pairs[:2]])
    metric.update(pairs[2][0][None], 16000, [pairs[2][1]])
    assert float(metric.compute()) == pytest.approx(float(np.mean(expected)), abs=1e-5)

    wav, frames = pairs[0]
    longer = torch.cat([wav, torch.randn(16000)])  # audio past audio_length (8 s) is cut
    late = wav.clone()
    late[96000:] = 0.5  # the sampler's clips end at 6 s
    same = metric.similarities(torch.stack([longer[:128000], late]), 16000, [frames, frames])
    assert same.tolist() == pytest.approx([expected[0]] * 2, abs=1e-5)
    assert float(metric.similarities([longer], 16000, [frames])[0]) == pytest.approx(expected[0], abs=1e-5)


def test_video_file_is_sampled_at_half_a_frame_per_second(tiny_checkpoint, make_video):
    frames = np.broadcast_to(np.arange(200, dtype=np.uint8)[:, None, None, None], (200, 48, 64, 3)).copy()
    path = make_video("clip.mp4", frames=frames, fps=25.0)
    sampled = load_video_frames(path, 8.0)
    assert sampled.shape == (4, 48, 64, 3)
    assert [round(float(f.float().mean())) for f in sampled] == [0, 50, 100, 150]  # t = 0, 2, 4, 6 s
    metric = IBScore(str(tiny_checkpoint[0]), size="tiny")
    wav = _inputs(0)[0]
    assert float(metric.similarities([wav], 16000, [path])[0]) == pytest.approx(
        float(metric.similarities([wav], 16000, [sampled])[0]), abs=1e-6)
    with pytest.raises(ValueError, match="1 waveforms but 2 videos"):
        metric.update(wav[None], 16000, [path, path])
