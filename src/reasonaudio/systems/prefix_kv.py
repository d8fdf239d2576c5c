"""PrefixKVExtraction: the ``prefix_kv`` stage — each clip's MLLM prompt run once, its keys/values kept.

``reasonaudio predict --config lightning_configs/prefix_kv.yaml`` reads a feature cache's prompts
(``reasonaudio.data_modules.features.CachePromptDataModule``: caption + MLLM frames per clip), runs the frozen
conditioner backbone over each full prompt (video and caption, as the clip has them) and returns one
:class:`~reasonaudio.models.prefix_kv.StoredPrefix` per clip; ``reasonaudio.callbacks.prefix_kv_writer.PrefixKVWriter``
stores them under ``<cache>/prefix_kv/<name>/``. Pretraining with ``data.prefix_kv: <name>`` then runs
only the learnable queries (and, for dropped conditions, a few template tokens) per step.
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule

from reasonaudio.models.conditioners import QueryConditioner
from reasonaudio.models.prefix_kv import clip_stamp
from reasonaudio.systems.hparams import save_system_hparams


class PrefixKVExtraction(LightningModule):
    """Predict-only system producing stored prefixes.

    Args:
        conditioner: the query conditioner training will use (same backbone folder, fps, template);
            only its frozen backbone runs here. Its queries and connector are irrelevant: the
            stored prompt does not depend on them.
    """

    def __init__(self, conditioner: QueryConditioner):
        super().__init__()
        save_system_hparams(self, ["conditioner"])
        if not isinstance(conditioner, QueryConditioner):
            raise TypeError(f"the prefix_kv stage needs a query conditioner (MLLM, omni or text LLM), "
                            f"got {type(conditioner).__name__}")
        self.conditioner = conditioner.eval()

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        stored = self.conditioner.store_prefix(batch["mllm_video"], batch["caption"], batch["has_video"],
                                               batch["has_text"])
        for s, clip_id, caption, frames in zip(stored, batch["id"], batch["caption"], batch["mllm_video"]):
            s.clip = clip_stamp(clip_id, caption, frames)  # what training checks the file against
        return {"id": batch["id"], "row": batch["row"], "prefix": stored}
