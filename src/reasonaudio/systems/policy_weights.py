"""The weights of LoRA post-training and fine-tuning: adapters on the DiT, exports, and loading a policy back.

An export folder holds ``adapter/`` (peft ``save_pretrained``: ``adapter_config.json`` whose
``base_model_name_or_path`` is the pretrained export, ``adapter_model.safetensors``) and ``model.safetensors`` +
``config.yaml``, the adapter merged into the DiT in the layout of the EMA export
(:mod:`reasonaudio.callbacks.ema`), so ``FlowMatchingPretrain.load_ema`` and ``reasonaudio-generate`` read it like
a pretrained export. :func:`load_policy_weights` reads either form. :class:`StartsFromExport` is the mixin of the
systems that start from an export (post-training, fine-tuning).
"""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from reasonaudio.systems.flow_matching import FlowMatchingPretrain

ADAPTER_CONFIG = "adapter_config.json"
MERGED = "model.safetensors"
LORA_PREFIX = "base_model.model."

def lora_target_names(net: nn.Module, pattern: str | None = None) -> list[str]:
    """Names of the ``nn.Linear`` modules of ``net`` (those fully matching the regex ``pattern`` if given)."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)
             and (pattern is None or re.fullmatch(pattern, n))]
    if not names:
        raise ValueError(f"no linear layer of {type(net).__name__} matches lora_targets={pattern!r}")
    return names


def add_lora(net: nn.Module, rank: int = 64, alpha: float | None = None, targets: str | None = None) -> nn.Module:
    """Freeze ``net`` and wrap it in a peft LoRA model (B = 0: the wrapped network computes what ``net`` did)."""
    if rank < 1:
        raise ValueError(f"lora_rank must be positive, got {rank}")
    net.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=0.0,
                        target_modules=lora_target_names(net, targets), init_lora_weights=True)
    return get_peft_model(net, config)


def base_key(key: str) -> str | None:
    """The unwrapped network's name for a key of the LoRA-wrapped network's state dict (None for LoRA weights)."""
    if ".lora_" in key:
        return None
    return key.removeprefix(LORA_PREFIX).replace(".base_layer.", ".")


def _export_file(path: Path) -> Path:
    return path / MERGED if path.is_dir() else path


def export_state(system: FlowMatchingPretrain, merge: bool) -> dict[str, torch.Tensor]:
    """A system's weights in the EMA export's layout: ``net.*`` (its LoRA merged when ``merge``) and
    ``conditioner.*``."""
    net = copy.deepcopy(system.net).merge_and_unload() if merge else system.net
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state.update({f"conditioner.{k}": v for k, v in system.conditioner.state_dict().items()})
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def write_export(system: FlowMatchingPretrain, folder: str | Path, state: dict[str, torch.Tensor],
                 adapter: bool) -> Path:
    """Write ``state`` as ``model.safetensors`` + ``config.yaml`` (the system's hyperparameters) into ``folder``,
    and, with ``adapter``, the peft ``adapter/`` whose base is the system's ``pretrained`` export.

    Each file is written under a temporary name and renamed, so an export is never half-written.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if adapter:
        if system.hparams.pretrained:
            system.net.peft_config["default"].base_model_name_or_path = str(Path(system.hparams.pretrained).resolve())
        tmp = out / ".adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        system.net.save_pretrained(str(tmp))
        shutil.rmtree(out / "adapter", ignore_errors=True)
        tmp.rename(out / "adapter")
    save_file(state, str(out / f".{MERGED}.tmp"))
    (out / f".{MERGED}.tmp").replace(out / MERGED)
    plain = json.loads(json.dumps(dict(system.hparams), default=repr))  # configs stay, objects become their repr
    (out / "config.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))
    return out


def load_export_into(system: FlowMatchingPretrain, path: str | Path) -> None:
    """Load an EMA / merged export (``model.safetensors`` or its folder) into a system, LoRA-wrapped or not.

    Every weight of the (unwrapped) DiT and every conditioner weight the export format holds must be
    in the file, and nothing else.
    """
    file = _export_file(Path(path))
    if not file.is_file():
        raise FileNotFoundError(f"pretrained export not found: {file}")
    state = load_file(str(file))
    net_state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    cond_state = {k[len("conditioner."):]: v for k, v in state.items() if k.startswith("conditioner.")}
    other = sorted(set(state) - {f"net.{k}" for k in net_state} - {f"conditioner.{k}" for k in cond_state})
    wanted = {k: base_key(k) for k in system.net.state_dict()}
    wanted = {k: b for k, b in wanted.items() if b is not None}
    missing = sorted(b for b in wanted.values() if b not in net_state)
    unexpected = sorted(set(net_state) - set(wanted.values())) + other
    if missing or unexpected:
        raise ValueError(f"{file} does not fit this model: missing {missing[:10]}, unexpected {unexpected[:10]}")
    result = system.net.load_state_dict({k: net_state[b] for k, b in wanted.items()}, strict=False)
    assert all(".lora_" in k for k in result.missing_keys), result.missing_keys
    system.conditioner.load_state_dict(cond_state, strict=True)


def load_policy_weights(system: FlowMatchingPretrain, path: str | Path, base: str | Path | None = None) -> str:
    """Load sampling weights into an unwrapped system: an export (file or folder) or a LoRA adapter folder.

    An adapter folder (``adapter_config.json``) is applied on top of ``base`` (an export; default: the
    one its ``base_model_name_or_path`` names) and merged into the DiT. A post-training export folder
    holding both ``model.safetensors`` and ``adapter/`` loads the merged file.

    Returns:
        ``"export"`` or ``"adapter"``, what was loaded.
    """
    p = Path(path)
    if p.is_dir() and (p / ADAPTER_CONFIG).is_file() and not (p / MERGED).is_file():
        base = base or json.loads((p / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if not base or not _export_file(Path(base)).is_file():
            raise FileNotFoundError(f"{p / ADAPTER_CONFIG}: base export {base!r} not found (give the pretrained "
                                    "export explicitly)")
        system.load_ema(str(_export_file(Path(base))))
        system.net = PeftModel.from_pretrained(system.net, str(p)).merge_and_unload()
        return "adapter"
    file = _export_file(p)
    if not file.is_file():
        raise FileNotFoundError(f"no weights at {p}: expected model.safetensors (an export) or adapter_config.json "
                                "(a LoRA adapter folder)")
    system.load_ema(str(file))
    return "export"


class StartsFromExport:
    """Mixin of the systems that start from a pretrained export (``hparams.pretrained``): it is loaded when
    the stage starts, not in ``__init__``, so configs instantiate without weights; a resumed fit then
    overwrites everything with its checkpoint."""

    _pretrained_loaded = False

    def load_pretrained(self, path: str | None = None) -> None:
        """Load the pretrained export into the DiT (under the adapters, with LoRA) and the conditioner."""
        load_export_into(self, path or self.hparams.pretrained)
        self._pretrained_loaded = True

    def setup(self, stage: str) -> None:
        if self.hparams.pretrained and not self._pretrained_loaded:
            self.load_pretrained()
        super().setup(stage)  # after loading: stored prefix KV stores, if used, must be this backbone's
