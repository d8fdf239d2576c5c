"""LightningCLI: every committed YAML parses, prints and instantiates; a stage fits end to end."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from reasonaudio.cli import CONFIG_DIR, build_cli, main

REPO = Path(__file__).resolve().parents[1]
STAGES = sorted(p for p in CONFIG_DIR.glob("*.yaml") if p.name not in ("defaults.yaml", "audio.yaml"))
"""Every stage config; not ``audio.yaml``, the value of the toy stages' ``audio`` group."""
OVERLAYS = sorted(p for p in CONFIG_DIR.glob("*/*.yaml") if p != CONFIG_DIR / "paper" / "audio.yaml")
"""Every config under a folder; not ``paper/audio.yaml``, the value of the paper configs' ``audio`` group."""
BASE = CONFIG_DIR / "vae.yaml"


def _cli(monkeypatch, *args: str):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["reasonaudio"])
    return build_cli(["--config", str(CONFIG_DIR / "defaults.yaml"), *args, "--trainer.accelerator=cpu"], run=False)


BUILT_ON = {"finetune.yaml": "pretrain.yaml"}
"""Stages that take their model's architecture from another stage's config (finetune: the pretrained model's
``net`` and ``conditioner``, which ``reasonaudio.experiments.finetune`` copies from the pretraining run)."""


def _config_args(path: Path) -> list[str]:
    """A stage alone (on the stage it is built on), a paper stage alone; an overlay on the stage its folder is named
    after (generic overlays, and the Table 5 ones, on ``vae``)."""
    if path in STAGES:
        base = ["--config", str(CONFIG_DIR / BUILT_ON[path.name])] if path.name in BUILT_ON else []
        return [*base, "--config", str(path)]
    if path.parent.name == "paper":  # the paper's stages, whole configs (with their own audio shape)
        return ["--config", str(path)]
    stage = CONFIG_DIR / f"{path.parent.name}.yaml"
    return ["--config", str(stage if stage.exists() else BASE), "--config", str(path)]


@pytest.fixture(scope="module")
def tiny_mllm(tmp_path_factory) -> Path:
    """Stages with a live MLLM conditioner load it from a folder when they are built."""
    from reasonaudio.models.tiny_mllm import write_tiny_qwen_vl

    return write_tiny_qwen_vl(tmp_path_factory.mktemp("mllm"), ["a dog barks"])


@pytest.mark.parametrize("path", STAGES + OVERLAYS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_yaml_instantiates(monkeypatch, path, tiny_mllm):
    needs_mllm = any("conditioner" in Path(a).read_text() for a in _config_args(path) if a.endswith(".yaml"))
    extra = [f"--model.init_args.conditioner.init_args.model={tiny_mllm}"] if needs_mllm else []
    cli = _cli(monkeypatch, *_config_args(path), *extra)
    assert cli.model is not None and cli.datamodule is not None and cli.trainer is not None


@pytest.mark.parametrize("path", STAGES + OVERLAYS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_yaml_prints_full_class_paths(monkeypatch, capsys, path):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_info:
        monkeypatch.setattr(sys, "argv", ["reasonaudio"])
        main(["fit", *_config_args(path), "--print_config"])
    assert exit_info.value.code in (None, 0)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("reasonaudio.systems.")
    assert printed["data"]["class_path"].startswith("reasonaudio.data_modules.")


@pytest.mark.parametrize("path", STAGES, ids=lambda p: p.stem)
def test_stage_logs_under_its_own_name(path):
    """Stage names agree across the YAML file, the Makefile target and the TensorBoard run."""
    cfg = yaml.safe_load(path.read_text())
    assert cfg["trainer"]["logger"]["init_args"]["name"] == path.stem
    assert f"\n{path.stem}:" in (REPO / "Makefile").read_text()


def test_defaults_apply_to_fit(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        monkeypatch.setattr(sys, "argv", ["reasonaudio"])
        main(["fit", "--config", str(BASE), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed_everything"] == 1234
    assert printed["trainer"]["logger"]["init_args"]["save_dir"] == "runs"
    assert printed["checkpoint"]["save_last"] is True
