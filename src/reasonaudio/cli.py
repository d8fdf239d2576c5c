"""`reasonaudio` — the LightningCLI entry point (`fit`, `validate`, `test`, `predict`).

Systems and data modules are chosen by full ``class_path`` in ``lightning_configs/<stage>.yaml``
(subclass mode), models are injected into systems as ``net: nn.Module``, and every ``fit`` first
reads ``lightning_configs/defaults.yaml`` (seed, TensorBoard logger under ``runs/<stage>/``,
checkpointing); ``validate``, ``test`` and ``predict`` read it too, so a stage YAML works unchanged
with every subcommand. Lightning's ``SaveConfigCallback`` writes the resolved ``config.yaml`` into each
run directory, so ``reasonaudio fit --config runs/<stage>/version_N/config.yaml`` re-runs it. The configs
ship as package data (:data:`CONFIG_DIR`): ``--config pretrain.yaml`` or ``--config paper/pretrain_m.yaml``
finds them from any folder when no such local file exists.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from reasonaudio.callbacks.nonfinite import NonFiniteGuard
from reasonaudio.callbacks.resume import ExactResume, FinalStepCheckpoint
from reasonaudio.config import audio_preset

CONFIG_DIR = Path(str(resources.files("reasonaudio.lightning_configs")))
"""The committed configs: package data (setup.cfg maps the checkout's ``lightning_configs/`` into the package), so a
wheel or a non-editable install finds them as a source checkout does."""
DEFAULTS = CONFIG_DIR / "defaults.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class AudioShape:
    """The audio shape of a run, declared once: ``audio: {duration: 8.0, preset: paper}`` in a config (or a path
    to such a file: ``audio: audio.yaml``, relative to the config), or ``--audio.duration`` / ``--audio.preset``.

    Before the classes are built, every class of ``model``, ``data`` and ``trainer.callbacks`` (nested ones
    included) whose constructor takes ``duration`` gets ``duration``, and every one taking ``audio_preset`` gets
    ``preset`` (:func:`apply_audio_shape`); the saved ``config.yaml`` holds the applied values. A value set
    elsewhere that is neither the shape's nor the class's default is an error, never silently replaced.
    ``--print_config`` shows the ``audio`` section, not yet applied (as jsonargparse shows links).

    Args:
        duration: clip length in seconds (None: each class keeps its own).
        preset: audio preset name of ``reasonaudio.config`` (sample rate, hop, mels; None: each class keeps its own).
    """

    def __init__(self, duration: float | None = None, preset: str | None = None):
        self.duration, self.preset = duration, preset


SHAPE_PARAMETERS = {"duration": "duration", "audio_preset": "preset"}
"""Constructor parameter → the :class:`AudioShape` field it receives."""


def _parameters(class_path: str) -> dict[str, inspect.Parameter]:
    """Named constructor parameters of a class (through ``**kwargs`` into its bases) or of a factory function."""
    module, _, name = class_path.rpartition(".")
    target = getattr(importlib.import_module(module), name)
    if not inspect.isclass(target):
        return dict(inspect.signature(target).parameters)
    found: dict[str, inspect.Parameter] = {}
    for cls in target.__mro__:
        if "__init__" not in vars(cls):
            continue
        params = inspect.signature(vars(cls)["__init__"]).parameters
        found.update({k: v for k, v in params.items() if k not in found and k != "self"})
        if not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
            break
    return found


def apply_audio_shape(config: Namespace) -> list[str]:
    """Give the declared :class:`AudioShape` to every class that takes it (see there); returns the paths set."""
    audio = config.get("audio")
    values = {param: audio.get(field) for param, field in SHAPE_PARAMETERS.items()} if audio else {}
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return []
    if "audio_preset" in values:
        audio_preset(values["audio_preset"])  # an unknown name fails here, naming the presets
    applied: list[str] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                visit(item, f"{path}[{i}]")
            return
        if not isinstance(node, (Namespace, dict)):
            return
        items = vars(node) if isinstance(node, Namespace) else node
        class_path = items.get("class_path")
        if isinstance(class_path, str):
            params = _parameters(class_path)
            init = items.get("init_args")
            if init is None:
                init = items["init_args"] = Namespace() if isinstance(node, Namespace) else {}
            for param, value in values.items():
                if param not in params:
                    continue
                given = init.get(param) if hasattr(init, "get") else None
                if given is not None and given != value and given != params[param].default:
                    raise ValueError(f"{path}.init_args.{param} is {given!r} but audio.{SHAPE_PARAMETERS[param]} is "
                                     f"{value!r}: declare the audio shape in one place")
                init[param] = value
                applied.append(f"{path}.init_args.{param}")
        for key, child in list(items.items()):
            if key != "class_path":
                visit(child, f"{path}.{key}" if path else key)

    for section in ("model", "data"):
        visit(config.get(section), section)
    visit(config.get("trainer", {}).get("callbacks"), "trainer.callbacks")
    return applied


class ReasonAudioCLI(LightningCLI):
    """LightningCLI with always-present, configurable ``checkpoint``, ``resume`` and ``nonfinite`` callbacks.

    They are forced argument groups rather than entries of ``trainer.callbacks`` because YAML lists
    replace each other across ``--config`` files: a stage that adds its own callbacks would silently drop
    callbacks set in defaults. ``resume`` (``reasonaudio.callbacks.resume.ExactResume``) makes every stage's resume
    exact and handles preemption signals; ``nonfinite`` (``reasonaudio.callbacks.nonfinite.NonFiniteGuard``) skips
    steps with a NaN/Inf loss or gradient. ``fit --ckpt_path last`` resumes the newest ``last.ckpt`` of
    the stage's runs, in that run's own ``version_N`` folder (``resolve_last``).
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(FinalStepCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.filename": "step{step:07d}",
                             "checkpoint.auto_insert_metric_name": False})
        parser.add_lightning_class_args(ExactResume, "resume")
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite")
        parser.add_class_arguments(AudioShape, "audio")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        apply_audio_shape(config)
        if self.subcommand == "fit":
            resolve_last(config)


def resolve_last(config) -> None:
    """``ckpt_path: last`` → the newest ``last.ckpt`` of this stage's runs, and the logger continues that run's folder.

    Lightning alone looks for ``last.ckpt`` only in the folder of the new ``version_N`` its logger picks,
    finds none and starts from step 0. Here the candidates are ``checkpoint.dirpath/last.ckpt`` when a
    fixed folder is configured, else ``<logger save_dir>/<name>/*/checkpoints/last.ckpt``; the newest by
    modification time wins (Lightning's rule), and ``trainer.logger.init_args.version`` is set to its
    folder, so logs, checkpoints and TensorBoard curves continue in one run directory. Nothing found:
    ``last`` stays, and Lightning warns and starts from scratch (a first SLURM submission).
    """
    if config.get("ckpt_path") != "last":
        return
    dirpath = config.get("checkpoint", {}).get("dirpath")
    if dirpath:
        found = [Path(dirpath) / "last.ckpt"]
    else:
        logger = config.get("trainer", {}).get("logger")
        args = logger.get("init_args") if hasattr(logger, "get") else None
        if not args or args.get("save_dir") is None or args.get("name") is None:
            return
        found = list((Path(args["save_dir"]) / args["name"]).glob("*/checkpoints/last.ckpt"))
    found = [p for p in found if p.is_file()]
    if not found:
        return
    last = max(found, key=lambda p: p.stat().st_mtime)
    config["ckpt_path"] = str(last)
    if not dirpath:
        logger["init_args"]["version"] = last.parent.parent.name


class ResumeConfigCallback(SaveConfigCallback):
    """Writes the resolved config as ``config.yaml``; a resumed run whose folder has one writes
    ``config.resume<N>.yaml`` next to it instead (the first run's config is never rewritten)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir and self.config.get("ckpt_path") and trainer.log_dir:
            folder, n = Path(trainer.log_dir), 1
            while (folder / self.config_filename).exists():
                self.config_filename, n = f"config.resume{n}.yaml", n + 1
        super().setup(trainer, pl_module, stage)


def packaged_configs(args: Sequence[str]) -> list[str]:
    """``--config NAME`` (or ``-c NAME``) of a relative file name that does not exist here but is a shipped config
    (``pretrain.yaml``, ``paper/pretrain_m.yaml``, or ``lightning_configs/...`` run outside the checkout) → that
    file in :data:`CONFIG_DIR`. Paths that exist are kept as they are, so a local file always wins, and so are
    absolute paths, paths with ``..`` and inline YAML strings (jsonargparse takes a config as text too)."""
    out, args = [], list(args)
    for i, arg in enumerate(args):
        name, prefix = None, ""
        if arg.startswith("--config="):
            name, prefix = arg[len("--config="):], "--config="
        elif i > 0 and args[i - 1] in ("--config", "-c"):
            name = arg
        shippable = (name is not None and name.endswith((".yaml", ".yml")) and "\n" not in name
                     and not Path(name).is_absolute() and ".." not in Path(name).parts)
        if shippable and not Path(name).exists():
            shipped = CONFIG_DIR / Path(name).as_posix().removeprefix("lightning_configs/")
            if shipped.is_file():
                arg = prefix + str(shipped)
        out.append(arg)
    return out


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> LightningCLI:
    """Build the CLI (``run=False`` only instantiates, as the config tests do)."""
    if not DEFAULTS.exists():
        raise FileNotFoundError(f"{DEFAULTS} not found: the package data is missing; reinstall the suite "
                                "(pip install . or pip install -e . from its checkout)")
    defaults = [str(DEFAULTS)]
    if args is None:  # the console script: Lightning reads sys.argv itself (and warns when given both)
        sys.argv[1:] = packaged_configs(sys.argv[1:])
    else:
        args = packaged_configs(args)
    return ReasonAudioCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=ResumeConfigCallback,
        parser_kwargs={cmd: {"default_config_files": defaults} for cmd in SUBCOMMANDS} if run
        else {"default_config_files": defaults},
        args=args,
        run=run,
    )


def main(args: Sequence[str] | None = None) -> None:
    """Console-script entry: parse ``args`` (default ``sys.argv``) and run the subcommand."""
    build_cli(args, run=True)


if __name__ == "__main__":
    main()
