"""Parallelism for the pretraining system, applied in one place (torchtitan style, DESIGN §9).

Models stay single-device code. :meth:`FlowMatchingPretrain.configure_model` calls :func:`parallelize`,
which does nothing unless the trainer runs a :class:`ModelParallelStrategy` (FSDP2); DDP and single
devices need no change to the model. Under FSDP2 the plan is, in torchtitan's order (activation
checkpointing, then ``fully_shard`` from the innermost unit outwards):

1. **The frozen backbone of the conditioner (the MLLM) is sharded on its own**: one FSDP2 unit per
   layer class the model names in ``_no_split_modules`` (Qwen2.5-VL: decoder layers and vision
   blocks), one per embedding table, then one per tower the conditioner calls directly
   (``visual``, ``language_model``; every child of the backbone with parameters left over). Its units
   hold no trainable parameter, so there is no gradient and no optimizer state for them, and no
   activation checkpointing (the prefix runs without autograd; the query pass saves only the few
   query tokens' activations). The backbone stays out of checkpoints through
   :class:`~reasonaudio.models.conditioners.Conditioner`'s ``state_dict`` hooks and is rebuilt from
   its folder when a checkpoint is loaded.
2. **Every MM-DiT block** (:class:`~reasonaudio.models.dit.MMDiTBlock`) gets composable activation
   checkpointing (``torch.distributed._composable.checkpoint``: hooks, so parameter names and
   checkpoint keys do not change) and its own FSDP2 unit, then the DiT root is sharded. Every unit
   reshards after its forward pass, the last block and the roots included (torchtitan and FSDP2's
   default keep those gathered for the backward pass that follows at once; after a validation or
   sampling pass no backward follows, so their parameters would stay gathered, as plain tensors,
   into whatever reads the weights next: a checkpoint, the EMA swap).
3. The conditioner's trainable parts (queries, connector) form the conditioner's own unit.

**Compilation** (``compile: true`` on the system, any strategy) is regional, as torchtitan's: each DiT block
is compiled in place with :meth:`torch.nn.Module.compile` after activation checkpointing and before
``fully_shard`` (:func:`apply_compile`). In-place compilation keeps every parameter name, so checkpoint keys,
the EMA's shadow, LoRA's adapter keys and the exports are those of the eager network; blocks of one structure
share one compiled graph (a 12-block ``dit_s`` compiles three: joint, joint with pre-only context, audio-only).

Why units follow the modules the code *calls*: FSDP2 gathers a unit's parameters in the forward
pre-hook of the module it was applied to. The conditioner calls ``backbone.visual``,
``backbone.language_model`` and the embedding table directly, never ``backbone.forward``, so a unit
on the backbone root would leave those weights sharded when they are used.

Mixed precision: ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32, cast_forward_inputs=False)``
(parameters gathered in bf16, gradients reduce-scattered in fp32 into fp32 master weights) together
with the trainer's ``precision: bf16-mixed`` (autocast: matmuls in bf16, reductions and norms in
fp32). Inputs are not cast on entry to a unit: the DiT's RoPE tables and timestep features must stay
fp32 (autocast handles the matmuls). bf16 needs no loss scaling, so there is no GradScaler.

:class:`FSDP2Strategy` is Lightning's ``ModelParallelStrategy`` with data parallelism over every
rank, the plan's knobs as typed arguments (so they live in ``lightning_configs/strategy/fsdp.yaml``),
and checkpoint loading that accepts the absent frozen weights strictly: every other key must match.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from lightning.fabric.strategies.model_parallel import _load_checkpoint
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch import LightningModule
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed._composable import checkpoint as checkpoint_activations
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from reasonaudio.models.dit import MMDiTBlock

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ShardingPlan:
    """What :func:`shard_system` applies.

    Attributes:
        param_dtype: dtype parameters are gathered (and computed) in; None keeps their storage dtype.
        reduce_dtype: dtype gradients are reduce-scattered in.
        activation_checkpointing: recompute each DiT block's activations in the backward pass.
    """

    param_dtype: torch.dtype | None = torch.bfloat16
    reduce_dtype: torch.dtype | None = torch.float32
    activation_checkpointing: bool = True

    def mp_policy(self) -> MixedPrecisionPolicy:
        return MixedPrecisionPolicy(param_dtype=self.param_dtype, reduce_dtype=self.reduce_dtype,
                                    cast_forward_inputs=False)


def dit_blocks(net: nn.Module) -> list[nn.Module]:
    """The MM-DiT blocks of ``net`` in forward order (joint blocks, then audio-only blocks)."""
    return [m for m in net.modules() if isinstance(m, MMDiTBlock)]


def frozen_units(backbone: nn.Module) -> list[nn.Module]:
    """FSDP2 units of a frozen transformers model, innermost first.

    The layers named in ``backbone._no_split_modules`` (transformers' own sharding boundaries),
    every embedding table, then every direct child that holds parameters not yet in a unit (the
    towers a conditioner calls, a final norm). Containers without a forward (``ModuleList``) are
    never units; their layers are.
    """
    names = set(getattr(backbone, "_no_split_modules", None) or ())
    depth = {m: name.count(".") + 1 for name, m in backbone.named_modules() if name}
    candidates = [m for m in backbone.modules() if type(m).__name__ in names]
    candidates += [m for m in backbone.modules() if isinstance(m, nn.Embedding) and m not in candidates]
    candidates += [m for m in backbone.children() if m not in candidates]
    units: list[nn.Module] = []
    covered: set[int] = set()
    for module in sorted(candidates, key=lambda m: -depth[m]):  # stable: inner units first
        own = {id(p) for p in module.parameters()} - covered
        if own and not isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            units.append(module)
            covered |= own
    return units


def apply_activation_checkpointing(blocks: Iterable[nn.Module]) -> None:
    """Recompute each block's forward in backward (non-reentrant; module names are unchanged)."""
    for block in blocks:
        checkpoint_activations(block)


RECOMPILE_LIMIT = 64
"""Graphs kept per compiled function (torch's default, 8, is too few here): every block class shares
``MMDiTBlock.forward``, and each structure (3) is compiled per grad mode and, under LoRA post-training, with the
adapters on and off, plus one dynamic-shape graph when the batch or the clip length changes."""


def apply_compile(blocks: Iterable[nn.Module], **options: Any) -> None:
    """Compile each block in place (``nn.Module.compile``: names and checkpoint keys unchanged).

    ``options`` go to :func:`torch.compile` (``mode``, ``fullgraph``, ``dynamic``, ``backend``). A block that is
    already compiled is left as it is, so :meth:`~lightning.pytorch.LightningModule.configure_model` may run twice.
    """
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    for block in blocks:
        if block._compiled_call_impl is None:
            block.compile(**options)


def is_compiled(net: nn.Module) -> bool:
    """Whether :func:`apply_compile` compiled the DiT blocks of ``net``."""
    blocks = dit_blocks(net)
    return bool(blocks) and all(block._compiled_call_impl is not None for block in blocks)


def shard_system(net: nn.Module, conditioner: nn.Module, mesh: DeviceMesh, plan: ShardingPlan,
                 compile_options: dict[str, Any] | None = None) -> None:
    """Apply ``plan`` to a velocity network and its conditioner, in place (see the module docstring).

    Args:
        net: the MM-DiT.
        conditioner: a conditioner; the frozen submodules it (or a conditioner inside it) registered with
            ``Conditioner.freeze`` are sharded on their own.
        mesh: the 1-D data-parallel device mesh.
        plan: dtypes and activation checkpointing.
        compile_options: compile each DiT block with these :func:`torch.compile` options (None: eager).
    """
    mp = plan.mp_policy()
    frozen = [getattr(module, name)  # nested conditioners too (CLIP+LLM)
              for module in conditioner.modules() for name in getattr(module, "_frozen", ())]
    for backbone in frozen:
        for unit in frozen_units(backbone):
            fully_shard(unit, mesh=mesh, mp_policy=mp, reshard_after_forward=True)
    blocks = dit_blocks(net)
    if plan.activation_checkpointing:
        apply_activation_checkpointing(blocks)
    if compile_options is not None:
        apply_compile(blocks, **compile_options)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=True)
    # explicit: FSDP2 otherwise keeps a root unit (here: net, conditioner) gathered after its forward
    fully_shard(net, mesh=mesh, mp_policy=mp, reshard_after_forward=True)
    fully_shard(conditioner, mesh=mesh, mp_policy=mp, reshard_after_forward=True)


def parallelize(system: LightningModule, compile_options: dict[str, Any] | None = None) -> None:
    """Compile and shard ``system.net`` and ``system.conditioner`` as the trainer's strategy asks.

    Under FSDP2 (a :class:`ModelParallelStrategy`): :func:`shard_system`, with the DiT blocks compiled when
    ``compile_options`` is given. Any other strategy (one device, DDP) keeps the model whole; only the
    compilation applies. Called from ``configure_model``, which Lightning may call more than once (fit, then
    validate): what is already sharded or compiled is left as it is.
    """
    trainer = system._trainer
    strategy = trainer.strategy if trainer is not None else None
    if not isinstance(strategy, ModelParallelStrategy):
        if compile_options is not None:
            apply_compile(dit_blocks(system.net), **compile_options)
        return
    if isinstance(system.net, FSDPModule):
        return
    mesh = system.device_mesh
    if mesh["tensor_parallel"].size() != 1:
        raise ValueError(f"tensor parallelism is not implemented for {type(system).__name__}: got a "
                         f"tensor_parallel_size of {mesh['tensor_parallel'].size()}; use "
                         "reasonaudio.models.parallel.FSDP2Strategy (data parallel over every rank)")
    plan = strategy.plan if isinstance(strategy, FSDP2Strategy) else ShardingPlan()
    shard_system(system.net, system.conditioner, mesh["data_parallel"], plan, compile_options)


def _dtype(name: str | None, arg: str) -> torch.dtype | None:
    if name is None:
        return None
    if name not in DTYPES:
        raise ValueError(f"{arg} must be one of {sorted(DTYPES)} or null, got {name!r}")
    return DTYPES[name]


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 (``fully_shard``) over all ranks, with :class:`ShardingPlan`'s knobs.

    Args:
        activation_checkpointing: recompute DiT blocks in the backward pass.
        param_dtype: ``bfloat16`` (default), ``float32`` or ``float16``; null keeps the storage dtype.
        reduce_dtype: gradient reduce-scatter dtype (``float32``).
        save_distributed_checkpoint: False (default) gathers one ``.ckpt`` file on rank 0 that
            loads in a single process (``load_from_checkpoint``, ``reasonaudio-generate``); True
            writes a folder of per-rank shards (torch.distributed.checkpoint), which only sharded
            runs read directly.
        process_group_backend: default ``nccl`` on GPUs, ``gloo`` on CPUs.
    """

    def __init__(self, activation_checkpointing: bool = True, param_dtype: str | None = "bfloat16",
                 reduce_dtype: str | None = "float32", save_distributed_checkpoint: bool = False,
                 process_group_backend: str | None = None):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend)
        self.plan = ShardingPlan(param_dtype=_dtype(param_dtype, "param_dtype"),
                                 reduce_dtype=_dtype(reduce_dtype, "reduce_dtype"),
                                 activation_checkpointing=activation_checkpointing)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> dict[str, Any]:
        """Load a full or sharded checkpoint; the frozen backbone's weights may be absent, nothing else."""
        path = Path(self.broadcast(checkpoint_path))
        module = self.lightning_module
        strict = module.strict_loading
        if path.is_file():
            # Lightning's full-checkpoint loader walks every parameter (frozen ones included), so check
            # the keys here against what the module saves and let the loader skip the frozen ones.
            stored = set(torch.load(path, mmap=True, map_location="cpu", weights_only=weights_only)["state_dict"])
            expected = set(module.state_dict())
            missing, unexpected = sorted(expected - stored), sorted(stored - expected)
            if strict and (missing or unexpected):
                raise RuntimeError(f"{path} does not fit {type(module).__name__}: missing keys {missing[:10]}, "
                                   f"unexpected keys {unexpected[:10]}")
            strict = False
        state = {"state_dict": self.model, **{f"optimizer_{i}": opt for i, opt in enumerate(self.optimizers)}}
        return _load_checkpoint(path=path, state=state, strict=strict, optimizer_states_from_list=True,
                                weights_only=weights_only)
