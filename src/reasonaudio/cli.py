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
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

CONFIG_DIR = Path(__file__).resolve().parents[2] / "lightning_configs"
"""The committed configs (an editable install keeps them next to the package)."""
DEFAULTS = CONFIG_DIR / "defaults.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class ReasonAudioCLI(LightningCLI):
    """LightningCLI with one always-present, configurable ``checkpoint`` callback.

    The checkpoint callback is a forced argument group rather than an entry of
    ``trainer.callbacks`` because YAML lists replace each other across ``--config`` files: a stage
    that adds its own callbacks would silently drop a checkpoint callback set in defaults.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.filename": "step{step:07d}",
                             "checkpoint.auto_insert_metric_name": False})


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
