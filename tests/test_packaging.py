"""The suite works from a non-editable install: configs ship as package data and the card's folders install
under the project's namespace (setup.cfg ``package_dir``).

The install goes into a temporary venv whose only other path is this environment's site-packages (a ``.pth``
line), with ``--no-deps --no-build-isolation``, so nothing is downloaded and the editable install of the
checkout is not on the path: ``reasonaudio`` is imported from the built wheel.
"""
from __future__ import annotations

import configparser
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from test_architecture import modules

from reasonaudio.cli import CONFIG_DIR, packaged_configs

ROOT = Path(__file__).resolve().parents[1]


def configparser_packages() -> list[str]:
    """The ``packages`` that setup.cfg installs."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config["options"]["packages"].split()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with the suite installed from a wheel built from this checkout; returns its ``bin`` folder."""
    venv = tmp_path_factory.mktemp("wheel") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                                   "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()] or [sysconfig.get_paths()["purelib"]]
    (purelib / "parent_env.pth").write_text("\n".join(ours) + "\n")
    build = tmp_path_factory.mktemp("build")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                    "--no-cache-dir", "--target", str(purelib), "--upgrade", str(ROOT)],
                   check=True, cwd=build, env=env, capture_output=True)
    return venv / "bin"


def _run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    return subprocess.run([str(bin_dir / "python"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_every_package_folder_is_installed():
    listed = set(configparser_packages())
    folders = {module for module, path in modules().items() if path.name == "__init__.py"}
    assert folders == listed


def test_the_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    every = ", ".join(m for m in modules() if not m.endswith("__main__"))
    out = _run(installed, tmp_path, "-c", f"import {every}; import reasonaudio.data_modules.synthetic as s; "
               "from reasonaudio.cli import CONFIG_DIR; print(reasonaudio.__file__); "
               "print(s.__file__); print(CONFIG_DIR); print(len(list(CONFIG_DIR.rglob('*.yaml'))))")
    assert out.returncode == 0, out.stderr
    package, synthetic, configs, count = out.stdout.split()
    for path in (package, synthetic, configs):
        assert str(ROOT) not in path and "site-packages" in path, path
    assert int(count) == len(list((ROOT / "lightning_configs").rglob("*.yaml")))


def test_print_config_from_outside_the_checkout(installed, tmp_path):
    """``reasonaudio fit --config pretrain.yaml --print_config`` in an empty folder: the shipped stage config
    and defaults.yaml are found as package data, and the printed config is the checkout's."""
    out = _run(installed, tmp_path, "-m", "reasonaudio", "fit", "--config", "pretrain.yaml", "--print_config")
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    committed = yaml.safe_load((ROOT / "lightning_configs" / "pretrain.yaml").read_text())
    assert printed["model"]["class_path"] == committed["model"]["class_path"]
    assert printed["model"]["init_args"]["net"]["class_path"] == committed["model"]["init_args"]["net"]["class_path"]
    assert printed["trainer"]["logger"]["init_args"]["save_dir"] == "runs"  # from the shipped defaults.yaml
    missing = _run(installed, tmp_path, "-m", "reasonaudio", "fit", "--config", "no_such_stage.yaml", "--print_config")
    assert missing.returncode != 0 and "no_such_stage.yaml" in missing.stderr


def test_config_names_resolve_to_the_shipped_files_unless_a_local_file_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = CONFIG_DIR / "pretrain.yaml"
    assert packaged_configs(["fit", "--config", "pretrain.yaml"]) == ["fit", "--config", str(shipped)]
    paper = CONFIG_DIR / "paper" / "pretrain_m.yaml"
    assert packaged_configs(["--config=paper/pretrain_m.yaml"]) == [f"--config={paper}"]
    assert packaged_configs(["--config", "lightning_configs/vae.yaml"]) == ["--config", str(CONFIG_DIR / "vae.yaml")]
    (tmp_path / "pretrain.yaml").write_text("seed_everything: 3\n")
    assert packaged_configs(["--config", "pretrain.yaml"]) == ["--config", "pretrain.yaml"]  # the local file wins
    inline = "model:\n  init_args:\n    lr: 1.0\n"
    unknown = ["--config", "no_such.yaml", "--config", inline, "--model.init_args.x=pretrain.yaml"]
    assert packaged_configs(unknown) == unknown  # unknown names, inline YAML and other values are left alone


def test_short_flag_and_paths_outside_the_package_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert packaged_configs(["-c", "vae.yaml"]) == ["-c", str(CONFIG_DIR / "vae.yaml")]
    outside = ["--config", "../lightning_configs/vae.yaml", "--config", str(tmp_path / "missing" / "vae.yaml")]
    assert packaged_configs(outside) == outside  # `..` and absolute paths are never redirected into the package
