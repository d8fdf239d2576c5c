"""Caption diversity: mean pairwise cosine distance of caption embeddings within classes (paper §3.3).

The paper picks 10 classes at random, samples 20 captions per class and averages the pairwise
cosine distance ``1 - cos(e_i, e_j)`` of their T5 embeddings (Table 1: VGGSound 0.51,
VGGSound-Think 0.87). Here:

- classes are the distinct values of ``class_field`` (default ``label``) among records with a
  caption; a class needs at least two captions to have a pair. ``classes`` of the eligible classes
  are drawn with ``random.Random(seed)``, then ``min(per_class, n)`` captions of each (a class with
  fewer than ``per_class`` captions contributes all of them, and the report says how many);
- the embedding of a caption is the attention-masked mean of the encoder's last hidden states
  (``T5EncoderModel`` for a T5 folder, the encoder of any other encoder-decoder, ``AutoModel`` for
  an encoder such as a sentence-embedding model), from a local folder, no download;
- the score of a class is the mean over its ``n (n - 1) / 2`` pairs; the reported score is the
  mean over the chosen classes (each class weighs the same, as "within randomly chosen classes").

Captions are embedded as written in ``field`` (default ``caption``: the full VGGSound-Think text,
tags included, so both caption sets of Table 1 are embedded the same way they are stored).
"""
from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

from reasonaudio.captions.store import read_records


def load_embedder(folder: str | Path, device: str = "cpu") -> tuple[Any, torch.nn.Module]:
    """Loads a tokenizer and text encoder from a local folder.

    Raises:
        ValueError: naming the folder when it lacks a config or a tokenizer.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder}: not a model folder (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder}: cannot load the tokenizer: {error}") from None
    config = AutoConfig.from_pretrained(folder)
    if config.model_type in ("t5", "mt5", "umt5"):
        model = T5EncoderModel.from_pretrained(folder)
    else:
        model = AutoModel.from_pretrained(folder)
        if getattr(config, "is_encoder_decoder", False):
            model = model.get_encoder()
    return tokenizer, model.to(device).eval()


def embed(texts: Sequence[str], tokenizer: Any, model: torch.nn.Module, batch_size: int = 16,
          max_length: int = 512) -> np.ndarray:
    """Mean-pooled encoder embeddings.

    Returns:
        ``[N, D]`` float64, one row per text; padding positions do not contribute.
    """
    device = next(model.parameters()).device
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            mask = batch["attention_mask"].to(device)  # [B, L]
            hidden = model(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state  # [B, L, D]
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            rows.append((hidden * weights).sum(1) / weights.sum(1).clamp(min=1))  # [B, D]
    return torch.cat(rows).double().cpu().numpy()


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float:
    """Mean of ``1 - cos`` over all unordered pairs of rows of ``[N, D]`` (N ≥ 2)."""
    n = embeddings.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 embeddings for a pair, got {n}")
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-12)
    cosine = unit @ unit.T  # [N, N]
    upper = np.triu_indices(n, k=1)
    return float(np.mean(1.0 - cosine[upper]))


def sample_classes(records: Sequence[dict[str, Any]], classes: int, per_class: int, seed: int,
                   field: str = "caption", class_field: str = "label") -> dict[str, list[str]]:
    """Draws ``classes`` classes and up to ``per_class`` ids in each (module docstring).

    Returns:
        ``{class: [ids]}`` in the order drawn.

    Raises:
        ValueError: fewer eligible classes than requested, or bad counts.
    """
    if classes < 1 or per_class < 2:
        raise ValueError(f"need classes >= 1 and per_class >= 2, got classes={classes}, per_class={per_class}")
    members: dict[str, list[str]] = defaultdict(list)
    for record in records:
        text, label = record.get(field), record.get(class_field)
        if isinstance(text, str) and text.strip() and isinstance(label, str) and label.strip():
            members[label].append(record["id"])
    eligible = sorted(label for label, ids in members.items() if len(ids) >= 2)
    if len(eligible) < classes:
        raise ValueError(f"only {len(eligible)} classes have at least 2 captions ({class_field!r} field), "
                         f"cannot draw {classes}")
    rng = random.Random(seed)
    chosen = rng.sample(eligible, classes)
    return {label: rng.sample(sorted(members[label]), min(per_class, len(members[label]))) for label in chosen}


def run_diversity(path: str | Path, classes: int, per_class: int, embedder: str | Path, seed: int = 0,
                  field: str = "caption", class_field: str = "label", batch_size: int = 16,
                  device: str = "cpu") -> dict[str, Any]:
    """Caption diversity of a caption JSONL.

    Returns:
        The report: ``mean_distance``, per class its ids and ``mean_distance``, the seed and settings.
    """
    records = read_records(path)
    by_id = {r["id"]: r for r in records}
    drawn = sample_classes(records, classes, per_class, seed, field, class_field)
    tokenizer, model = load_embedder(embedder, device)
    per_class_report = {}
    for label, ids in drawn.items():
        vectors = embed([by_id[i][field] for i in ids], tokenizer, model, batch_size)
        per_class_report[label] = {"ids": ids, "captions": len(ids), "pairs": len(ids) * (len(ids) - 1) // 2,
                                   "mean_distance": mean_pairwise_cosine_distance(vectors)}
    scores = [c["mean_distance"] for c in per_class_report.values()]
    return {"file": str(path), "embedder": str(embedder), "seed": seed, "classes": classes, "per_class": per_class,
            "field": field, "class_field": class_field, "mean_distance": float(np.mean(scores)),
            "per_class_report": per_class_report}
