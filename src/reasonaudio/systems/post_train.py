"""PreferencePostTrain: SFT / RWR / Flow-DPO post-training of the pretrained MM-DiT through LoRA (paper §4.4).

Legend: G groups per batch (one condition each), K candidates per group, P pairs, N samples.

* **Model.** The pretrained weights (an EMA export) are loaded into the DiT and the conditioner when
  the stage starts; everything is frozen and peft LoRA adapters (rank 64 by default, α = rank, B = 0
  at initialisation) are put on the DiT's linear layers (all of them by default). The reference
  velocity v_ref is the same network with the adapter disabled (``disable_adapter``), computed
  without gradients: there is no second copy of the model, and at step 0 policy = reference exactly.
* **Batches** are preference groups (``reasonaudio.data_modules.preference_groups.PreferenceDataModule``): latents
  ``[G, K, T, C]`` sampled from the pretrained model, rewards ``[G, K]`` and the conditions.
  Condition dropout for CFG (``text_drop`` / ``video_drop``) is drawn once per group and shared by
  all its samples, so a winner and its loser always see the same condition; the conditioner runs
  once per group, without gradients.
* **Objectives** (``reasonaudio.preference_objectives``, chosen in YAML): pointwise ones (SFT, RWR) regress the
  candidates with non-zero weight, each with its own noise and t; pairwise ones (DPO, β-DPO) draw one
  noise and one t per pair and use them for winner and loser, policy and reference.
* **Logged** every step: ``train/loss``; ``train/reward_margin`` (mean reward gap of the pairs, or of
  max − min per group for pointwise objectives); ``train/err_*`` (mean-reduced squared velocity errors:
  ``err_w``/``err_l`` of the policy and ``ref_err_w``/``ref_err_l`` of the reference on winners and
  losers for DPO; ``err``/``ref_err`` on the weighted samples otherwise); ``train/v_norm_ratio``
  ‖v_θ‖/‖v_ref‖ over the batch; and for DPO ``train/implicit_acc``, ``train/inside_abs``,
  ``train/beta``. Validation: the flow loss at the fixed t grid on held-out clips (``val/loss``) and,
  with ``reasonaudio.callbacks.generation_metrics.GenerationMetrics``, the synthetic synchrony metrics of
  generated audio (``val/onset_error``, ``val/onset_f1``, ...).
* **Export** (``export``): ``<export>/adapter/`` (peft ``save_pretrained``: ``adapter_config.json``
  whose ``base_model_name_or_path`` is the pretrained export, ``adapter_model.safetensors``) and
  ``<export>/model.safetensors`` + ``config.yaml``, the adapter merged into the DiT in the layout of
  ``callbacks/ema.py``'s export, so ``FlowMatchingPretrain.load_ema`` and ``reasonaudio-generate``
  read it like a pretrained export. :func:`load_policy_weights` reads either form. With
  ``snapshot_every`` = N the same pair is also written every N steps to ``<export>/snapshots/step_<step>/``.
* **Online mode** (``online_every`` = N > 0): every N steps the current policy samples new groups for
  every condition of the cache, scored with ``reward``, into ``<groups>/online/step_<step>/``, and
  training continues on them. An epoch is then exactly N steps: the data module must draw
  ``groups_per_epoch = N × batch_size`` groups and the trainer reload dataloaders every epoch
  (``reload_dataloaders_every_n_epochs: 1``); both are checked when fitting starts.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from reasonaudio import flow
from reasonaudio.data_modules.preference_groups import (PreferenceDataModule, PreferenceStore, _RowDataset,
                                                        collate_groups)
from reasonaudio.metrics.synthetic import score_synthetic
from reasonaudio.preference_objectives import per_sample_error
from reasonaudio.synthetic_world import ground_truth_files
from reasonaudio.systems.flow_matching import FlowMatchingPretrain
from reasonaudio.systems.hparams import save_system_hparams
from reasonaudio.systems.policy_weights import StartsFromExport, add_lora, export_state, write_export
from reasonaudio.systems.preference_builder import (candidate_seeds, make_decoder, sample_candidates, score_candidates,
                                                    write_groups)


class PreferencePostTrain(StartsFromExport, FlowMatchingPretrain):
    """Preference post-training with LoRA (module docstring).

    Args:
        net: the DiT architecture of the pretrained model.
        conditioner: its conditioner (frozen here).
        objective: ``reasonaudio.preference_objectives.SFT`` / ``RWR`` / ``DPO`` / ``BetaDPO``.
        pretrained: the pretrained EMA export (``model.safetensors``), loaded when the stage starts.
        lora_rank: LoRA rank.
        lora_alpha: LoRA α (default: the rank, scale 1).
        lora_targets: regex over module names selecting the linear layers to adapt (default: all).
        text_drop: per-group probability of dropping the caption (CFG).
        video_drop: per-group probability of dropping the video.
        t_mean: mean of the logit-normal t.
        t_std: std of the logit-normal t.
        val_t_grid: flow times of the validation loss.
        val_noise_seed: seed of the validation noise.
        optimizer: optimiser factory (applied to the LoRA weights only).
        lr_scheduler: schedule stepped every optimisation step.
        export: folder for the adapter and the merged export at the end of training.
        reward: reward for the online mode.
        online_every: regenerate the groups with the current policy every this many steps (0: offline).
        online_candidates: K of the online groups.
        online_min_spread: online groups with reward spread ≤ this are dropped.
        sample_steps: sampler steps of the online mode.
        sample_cfg: guidance of the online mode.
        val_ground_truth: synthetic corpus folders (``gt/<id>.json``) of the validation clips: score samples
            of the policy and of the reference at each validation (needs the decoders below).
        val_items: validation clips sampled for those metrics (from the first batch).
        vae: VAE architecture of the feature cache (validation metrics; online mode with a waveform reward).
        vae_checkpoint: its checkpoint.
        vocoder: vocoder checkpoint or BigVGAN folder.
        audio_preset: ``AudioConfig`` preset of the codec (the sample rate of decoded audio).
        snapshot_every: also write the export every this many steps into ``<export>/snapshots/step_<step>/``
            (0: only the final one), for curves of any metric against the training step (paper Figure 4).
        compile: compile the DiT blocks, adapters included (True, or a dict of ``torch.compile`` options).
    """

    def __init__(self, net: nn.Module, conditioner: nn.Module, objective: nn.Module, pretrained: str | None = None,
                 lora_rank: int = 64, lora_alpha: float | None = None, lora_targets: str | None = None,
                 text_drop: float = 0.1, video_drop: float = 0.1, t_mean: float = 0.0, t_std: float = 1.0,
                 val_t_grid: Sequence[float] = flow.DEFAULT_T_GRID, val_noise_seed: int = 0,
                 optimizer: OptimizerCallable = torch.optim.AdamW, lr_scheduler: LRSchedulerCallable | None = None,
                 export: str | None = None, reward: nn.Module | None = None, online_every: int = 0,
                 online_candidates: int = 8, online_min_spread: float = 0.0, sample_steps: int = 25,
                 sample_cfg: float = 4.5, val_ground_truth: list[str] | None = None, val_items: int = 4,
                 vae: nn.Module | None = None, vae_checkpoint: str | None = None, vocoder: str | None = None,
                 audio_preset: str = "tiny", snapshot_every: int = 0, compile: bool | dict[str, Any] = False):
        with warnings.catch_warnings():  # the parent records its own argument subset; replaced just below
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            super().__init__(net, conditioner, text_drop, video_drop, t_mean, t_std, val_t_grid, val_noise_seed,
                             optimizer, lr_scheduler, compile)
        self.hparams.clear()  # record this system's arguments, not the parent's subset
        save_system_hparams(self, ["net", "conditioner", "objective", "optimizer", "lr_scheduler", "reward", "vae"])
        if online_every < 0 or (online_every and reward is None):
            raise ValueError(f"online_every must be >= 0 and needs a reward, got {online_every}, reward={reward}")
        if snapshot_every < 0 or (snapshot_every and not export):
            raise ValueError(f"snapshot_every must be >= 0 and needs export, got {snapshot_every}, export={export}")
        self.objective = objective
        self.conditioner.requires_grad_(False)
        self.net = add_lora(net, lora_rank, lora_alpha, lora_targets)
        self.reward = reward.requires_grad_(False) if reward is not None else None
        self.vae = vae.requires_grad_(False) if vae is not None else None
        self._decoder = None

    # ----------------------------------------------------------------- weights

    def merged_state(self) -> dict[str, torch.Tensor]:
        """The merged policy in the EMA export's layout (``net.*`` and the conditioner's saved weights)."""
        return export_state(self, merge=True)

    def save_export(self, folder: str | Path) -> Path:
        """Write ``adapter/`` (peft) and the merged ``model.safetensors`` + ``config.yaml`` into ``folder``."""
        return write_export(self, folder, self.merged_state(), adapter=True)

    def snapshot_folder(self, step: int) -> Path:
        """Where the snapshot of ``step`` goes (``snapshot_every``)."""
        return Path(self.hparams.export) / "snapshots" / f"step_{step:07d}"

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        every, step = self.hparams.snapshot_every, self.global_step
        if every and step % every == 0 and step < self.trainer.max_steps and self.trainer.is_global_zero:
            self.save_export(self.snapshot_folder(step))

    def on_train_end(self) -> None:
        if self.hparams.export and self.trainer.is_global_zero:
            self.save_export(self.hparams.export)

    # ----------------------------------------------------------------- training

    def _conditions(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-group conditions ``[G, ...]`` with dropout drawn per group (frozen conditioner, no gradients)."""
        cond_batch = dict(batch, latent=batch["latents"][:, 0])
        with torch.no_grad():
            return self.conditions(cond_batch, *self._dropped_flags(cond_batch))

    def _velocities(self, x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Policy and reference velocities at ``x_t`` and the target ``x1 − x0``."""
        xt = flow.interpolate(x0, x1, t)
        v = self.net(xt, t, **cond)
        with torch.no_grad(), self.net.disable_adapter():
            v_ref = self.net(xt, t, **cond)
        return v, v_ref, flow.target_velocity(x0, x1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        cond = self._conditions(batch)
        if self.objective.pairwise:
            return self._pairwise_step(batch["latents"], batch["rewards"], cond)
        return self._pointwise_step(batch["latents"], batch["rewards"], cond)

    def _pointwise_step(self, latents: torch.Tensor, rewards: torch.Tensor, cond: dict[str, torch.Tensor]
                        ) -> torch.Tensor:
        weights = self.objective.weights(rewards)  # [G, K]
        gi, ki = self.objective.select(weights).nonzero(as_tuple=True)
        x1 = latents[gi, ki]  # [N, T, C]
        x0 = torch.randn_like(x1)
        t = flow.sample_t(x1.shape[0], self.hparams.t_mean, self.hparams.t_std, device=x1.device)
        v, v_ref, target = self._velocities(x1, x0, t, {k: c[gi] for k, c in cond.items()})
        err = per_sample_error(v, target)
        loss = self.objective(err, weights[gi, ki])
        n = x1.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({"train/err": err.mean().detach(), "train/ref_err": per_sample_error(v_ref, target).mean(),
                       "train/v_norm_ratio": v.detach().norm() / v_ref.norm().clamp_min(1e-12),
                       "train/reward_margin": (rewards.max(1).values - rewards.min(1).values).mean(),
                       "train/weight_max": weights.max()}, batch_size=n)
        return loss

    def _pairwise_step(self, latents: torch.Tensor, rewards: torch.Tensor, cond: dict[str, torch.Tensor]
                       ) -> torch.Tensor:
        pairs = self.objective.pairs(rewards)
        p = len(pairs)
        if p == 0:  # no pair above the margin in this batch: nothing to prefer
            return self._no_pair_loss()
        x1 = torch.cat([latents[pairs.group, pairs.winner], latents[pairs.group, pairs.loser]])  # [2P, T, C]
        x0 = torch.randn_like(x1[:p]).repeat(2, 1, 1)  # one noise per pair
        t = flow.sample_t(p, self.hparams.t_mean, self.hparams.t_std, device=x1.device).repeat(2)  # one t per pair
        v, v_ref, target = self._velocities(x1, x0, t, {k: c[pairs.group].repeat(2, *[1] * (c.dim() - 1))
                                                         for k, c in cond.items()})
        red = self.objective.reduction
        err_w, err_l = per_sample_error(v, target, red).chunk(2)
        ref_w, ref_l = per_sample_error(v_ref, target, red).chunk(2)
        gap = rewards[pairs.group, pairs.winner] - rewards[pairs.group, pairs.loser]
        out = self.objective(err_w, err_l, ref_w, ref_l, gap)
        mean_err = per_sample_error(v.detach(), target).chunk(2)
        mean_ref = per_sample_error(v_ref, target).chunk(2)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=p)
        self.log_dict({"train/implicit_acc": out.implicit_acc, "train/inside_abs": out.inside.abs().mean(),
                       "train/beta": float(out.beta), "train/reward_margin": gap.mean(),
                       "train/err_w": mean_err[0].mean(), "train/err_l": mean_err[1].mean(),
                       "train/ref_err_w": mean_ref[0].mean(), "train/ref_err_l": mean_ref[1].mean(),
                       "train/v_norm_ratio": v.detach().norm() / v_ref.norm().clamp_min(1e-12),
                       "train/pairs": float(p)}, batch_size=p)
        return out.loss

    def _no_pair_loss(self) -> torch.Tensor:
        """A zero loss that reaches every trainable parameter, so that the step still runs its backward.

        Returning ``None`` would make Lightning skip the step on this rank only; under DDP its peers would
        then wait in the gradient all-reduce (or fail). With zero gradients here, the all-reduce runs and the
        other ranks' pairs are averaged with this rank's zeros, as any rank's small batch would be.
        """
        self.log("train/pairs", 0.0)
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    # ----------------------------------------------------------------- validation

    def decoder(self):
        """Latents → waveforms with the configured VAE and vocoder (loaded on first use)."""
        if self._decoder is None:
            self._decoder = make_decoder(self.vae, self.hparams.vae_checkpoint, self.hparams.vocoder,
                                         self.hparams.audio_preset)
            if self._decoder is None:
                raise ValueError("decoding needs vae, vae_checkpoint and vocoder")
        return self._decoder

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if batch_idx == 0 and self.hparams.val_ground_truth and not self.trainer.sanity_checking:
            self._validation_synchrony(batch)

    @torch.no_grad()
    def _validation_synchrony(self, batch: dict[str, Any]) -> None:
        """Synthetic metrics (onset error, F1, ...) of samples of the policy and of the reference, same noise."""
        n = min(self.hparams.val_items, batch["latent"].shape[0])
        sub = {k: v[:n] for k, v in batch.items()}
        gts = ground_truth_files(self.hparams.val_ground_truth, sub["id"])
        sr = self.decoder().sample_rate
        for tag, adapter_on in (("", True), ("_ref", False)):
            if adapter_on:
                latents = self.generate(sub, steps=self.hparams.sample_steps, cfg=self.hparams.sample_cfg, seed=0)
            else:
                with self.net.disable_adapter():
                    latents = self.generate(sub, steps=self.hparams.sample_steps, cfg=self.hparams.sample_cfg, seed=0)
            scores = score_synthetic(self.decoder()(latents), sr, gts)
            self.log_dict({f"val/{k}{tag}": v for k, v in scores.items()}, batch_size=n)

    # ----------------------------------------------------------------- online mode

    def on_fit_start(self) -> None:
        if not self.hparams.online_every:
            return
        dm = self.trainer.datamodule
        every = self.hparams.online_every
        if not isinstance(dm, PreferenceDataModule):
            raise ValueError("online post-training needs "
                             "reasonaudio.data_modules.preference_groups.PreferenceDataModule")
        if self.trainer.reload_dataloaders_every_n_epochs != 1 or dm.groups_per_epoch != every * dm.batch_size:
            raise ValueError(f"online_every={every} needs trainer.reload_dataloaders_every_n_epochs=1 and "
                             f"data groups_per_epoch={every * dm.batch_size} (online_every × batch_size); got "
                             f"{self.trainer.reload_dataloaders_every_n_epochs} and {dm.groups_per_epoch}")
        self.reward.prepare()
        self._online_root = Path(dm.store.root) / "online"
        rounds = sorted(self._online_root.glob("step_*"))
        done = [r for r in rounds if int(r.name[5:]) <= self.global_step and (r / "summary.json").is_file()]
        if done:  # a resumed run continues on the groups of its last finished round
            dm.use_store(done[-1])

    def on_train_epoch_end(self) -> None:
        if self.hparams.online_every and self.global_step < self.trainer.max_steps:
            self.regenerate()

    @torch.no_grad()
    def regenerate(self) -> Path:
        """Sample and score new groups for every condition with the current policy; train on them next."""
        dm = self.trainer.datamodule
        h = self.hparams
        store = PreferenceStore(self._online_root / f"step_{self.global_step:07d}")
        seed = 10_000_000 * (self.global_step + 1)  # apart from the offline seeds while rows × K < 10⁷
        store.check_settings({"policy_step": self.global_step, "num_candidates": h.online_candidates,
                              "steps": h.sample_steps, "cfg": h.sample_cfg, "seed": seed,
                              "min_spread": h.online_min_spread, "reward": type(self.reward).__name__})
        prefix_kv = getattr(dm, "prefix_kv", None)  # stored prompts, as offline sampling and training use them
        rows = sorted(set(_RowDataset(dm.cache, prefix_kv=prefix_kv).valid.tolist()) - store.finished_rows())
        loader = torch.utils.data.DataLoader(_RowDataset(dm.cache, rows, prefix_kv), batch_size=dm.batch_size,
                                             collate_fn=collate_groups)
        was_training = self.training
        self.eval()
        for batch in loader:
            batch = dm.transfer_batch_to_device(batch, self.device, 0)
            seeds = candidate_seeds(batch["row"], h.online_candidates, seed)
            latents = sample_candidates(self, batch, seeds, h.sample_steps, h.sample_cfg)
            rewards = score_candidates(self.reward, latents, batch, self.decoder() if self.reward.audio_input == "wav"
                                       else None)
            write_groups(store, batch, seeds, rewards, latents, h.online_min_spread)
        self.train(was_training)
        summary = store.summary()
        self.log_dict({"online/kept": float(summary["kept"]), "online/reward_mean": summary["reward_mean"]})
        if summary["kept"]:  # a round without any preference keeps training on the previous groups
            dm.use_store(store.root)
        return store.root
