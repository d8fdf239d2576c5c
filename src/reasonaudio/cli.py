"""`reasonaudio` — the LightningCLI entry point (`fit`, `validate`, `test`, `predict`).

Systems and data modules are chosen by full ``class_path`` in ``lightning_configs/<stage>.yaml``
(subclass mode), models are injected into systems as ``net: nn.Module``, and every ``fit`` first
reads ``lightning_configs/defaults.yaml`` (seed, TensorBoard logger under ``runs/<stage>/``,
checkpointing); ``validate``, ``test`` and ``predict`` read it too, so a stage YAML works unchanged
with every subcommand. Lightning's ``SaveConfigCallback`` writes the resolved ``config.yaml`` into each
run directory, so ``reasonaudio fit --config runs/<stage>/version_N/config.yaml`` re-runs it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from callbacks.nonfinite import NonFiniteGuard
from callbacks.resume import ExactResume

CONFIG_DIR = Path(__file__).resolve().parents[2] / "lightning_configs"
"""The committed configs (an editable install keeps them next to the package)."""
DEFAULTS = CONFIG_DIR / "defaults.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class ReasonAudioCLI(LightningCLI):
    """LightningCLI with always-present, configurable ``checkpoint``, ``resume`` and ``nonfinite`` callbacks.

    They are forced argument groups rather than entries of ``trainer.callbacks`` because YAML lists
    replace each other across ``--config`` files: a stage that adds its own callbacks would silently drop
    callbacks set in defaults. ``resume`` (``callbacks.resume.ExactResume``) makes every stage's resume
    exact and handles preemption signals; ``nonfinite`` (``callbacks.nonfinite.NonFiniteGuard``) skips
    steps with a NaN/Inf loss or gradient. ``fit --ckpt_path last`` resumes the newest ``last.ckpt`` of
    the stage's runs, in that run's own ``version_N`` folder (``resolve_last``).
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.filename": "step{step:07d}",
                             "checkpoint.auto_insert_metric_name": False})
        parser.add_lightning_class_args(ExactResume, "resume")
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite")

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit":
            resolve_last(self.config["fit"])


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


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> LightningCLI:
    """Build the CLI (``run=False`` only instantiates, as the config tests do)."""
    if not DEFAULTS.exists():
        raise FileNotFoundError(f"{DEFAULTS} not found: install the suite editable (pip install -e .) from its checkout")
    defaults = [str(DEFAULTS)]
    return ReasonAudioCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=ResumeConfigCallback,
        parser_kwargs={cmd: {"default_config_files": defaults} for cmd in SUBCOMMANDS} if run
        else {"default_config_files": defaults},
        args=list(args) if args is not None else None,
        run=run,
    )


def main(args: Sequence[str] | None = None) -> None:
    """Console-script entry: parse ``args`` (default ``sys.argv``) and run the subcommand."""
    build_cli(args, run=True)


if __name__ == "__main__":
    main()
