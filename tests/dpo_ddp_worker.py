"""Worker of ``test_preference.test_dpo_batch_without_pairs_under_ddp`` (run by torchrun, 2 processes, gloo).

Two Flow-DPO steps under Lightning's DDP strategy; rank 1's batches have no pair (every reward of a group
tied). Each rank writes its LoRA weights and the losses it returned to ``OUT/rank<r>.pt``.
Usage: ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dpo_ddp_worker.py OUT MLLM``.
"""
from __future__ import annotations

import os
import sys

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from reasonaudio.models.conditioners import MLLMQueryConditioner
from reasonaudio.models.dit import dit_tiny
from reasonaudio.preference_objectives import DPO
from reasonaudio.systems.post_train import PreferencePostTrain

STEPS = 2


class Groups(Dataset):
    """One batch of 2 groups of 4 candidates per step; the groups' rewards tie on rank 1."""

    def __init__(self, rank: int):
        self.rank = rank

    def __len__(self) -> int:
        return STEPS

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(100 * self.rank + i)
        rewards = torch.full((2, 4), 0.5) if self.rank == 1 else torch.rand(2, 4, generator=g)
        return {"latents": torch.randn(2, 4, 63, 8, generator=g), "rewards": rewards,
                "sync": torch.randn(2, 40, 768, generator=g), "caption": ["a ball bounces", "a bell rings"],
                "mllm_video": [None, None], "has_text": torch.ones(2, dtype=torch.bool),
                "has_video": torch.zeros(2, dtype=torch.bool), "id": [f"r{self.rank}_{i}_0", f"r{self.rank}_{i}_1"]}


class Recorded(PreferencePostTrain):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.returned.append(float(loss.detach()))
        return loss


def main(out: str, mllm: str) -> None:
    rank = int(os.environ["RANK"])
    torch.manual_seed(0)
    net = dit_tiny(duration=2.0, query_dim=64)
    with torch.no_grad():  # the zero-initialised layers random, so the velocity and its LoRA gradient are not 0
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    system = Recorded(net, MLLMQueryConditioner(mllm, out_dim=64, num_queries=4), DPO(beta=5.0),
                      text_drop=0.0, video_drop=0.0, optimizer=lambda params: torch.optim.SGD(params, lr=1e-4))
    system.returned = []
    with torch.no_grad():  # LoRA B starts at 0: make it random so A receives gradients too
        for name, p in system.net.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.001)
    init = {n: p.detach().clone() for n, p in system.net.named_parameters() if p.requires_grad}
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=STEPS, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, use_distributed_sampler=False)
    trainer.fit(system, DataLoader(Groups(rank), batch_size=None))
    trainable = {n: p.detach().clone() for n, p in system.net.named_parameters() if p.requires_grad}
    torch.save({"init": init, "weights": trainable, "returned": system.returned, "steps": trainer.global_step},
               os.path.join(out, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
