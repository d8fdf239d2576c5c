"""Saved configs and checkpoints from before the 2026-12 restructuring keep loading (docs/architecture.md).

Every old module name of ``reasonaudio.moved.MOVED`` imports the new module itself, with a DeprecationWarning;
a pickle that names a class by its old module unpickles to the same class; a saved config with the old class paths
still builds; and the one-line migration of docs/architecture.md rewrites such a config to names that import
without any warning.
"""
from __future__ import annotations

import importlib
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from reasonaudio.cli import CONFIG_DIR
from reasonaudio.moved import MOVED, new_name
from reasonaudio.preference_objectives import DPO

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("old", sorted(m for m in MOVED if "." in m))
def test_an_old_module_name_gives_the_new_module_objects(old):
    new = importlib.import_module(MOVED[old])
    names = [n for n in vars(new) if not n.startswith("_")]
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} moved to {MOVED[old]}")):
        module = importlib.import_module(old)
        assert names and all(getattr(module, n) is getattr(new, n) for n in names)
        star: dict = {}
        exec(f"from {old} import *", star)  # noqa: S102 - the star import of an old name is what is tested
    assert {n for n in star if not n.startswith("_")} >= set(getattr(new, "__all__", names))


def test_the_old_top_level_names_outside_the_checkout(tmp_path):
    """``callbacks`` / ``data_modules`` name the new packages (and their submodules load once) wherever the
    checkout's folders are not on ``sys.path`` themselves — as for the console scripts and any other folder.
    (Run from the checkout with ``python -m``, the folder itself is found first: the ambiguity these names had.)"""
    code = ("import warnings; warnings.simplefilter('ignore'); import reasonaudio, callbacks, callbacks.ema, "
            "data_modules.features, reasonaudio.callbacks.ema as new; "
            "print(callbacks.__name__, callbacks.ema is new, data_modules.features.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["reasonaudio.callbacks", "True", "reasonaudio.data_modules.features"]
    assert new_name("data_modules.features") == "reasonaudio.data_modules.features"
    assert new_name("reasonaudio.flow") is None  # not moved: the finders leave it to the normal import


def test_a_pickle_naming_the_old_module_loads_the_same_class():
    """Checkpoints pickle hyperparameter objects by module path: an old checkpoint names ``reasonaudio.preference``."""
    data = pickle.dumps(DPO(beta=2.0), protocol=2)  # names classes as "c<module>\n<name>\n": safe to rewrite
    old = data.replace(b"reasonaudio.preference_objectives", b"reasonaudio.preference")
    assert old != data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        restored = pickle.loads(old)
    assert type(restored) is DPO and restored.beta == 2.0


def _old_config(tmp_path: Path) -> Path:
    """The committed DPO config as a run from before the restructuring saved it: old class paths."""
    text = (CONFIG_DIR / "post_train_dpo.yaml").read_text()
    text = (text.replace("reasonaudio.systems.post_train.", "reasonaudio.systems.preference.")
            .replace("reasonaudio.preference_objectives.", "reasonaudio.preference.")
            .replace("reasonaudio.data_modules.preference_groups.", "data_modules.preference.")
            .replace("reasonaudio.callbacks.", "callbacks.")
            .replace("audio: audio.yaml", f"audio: {CONFIG_DIR / 'audio.yaml'}"))
    assert "data_modules.preference.PreferenceDataModule" in text and "reasonaudio.preference.DPO" in text
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def _print_config(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``--print_config`` of ``path`` in a fresh process that shows every DeprecationWarning."""
    env = {**os.environ, "PYTHONWARNINGS": "default::DeprecationWarning"}
    return subprocess.run([sys.executable, "-m", "reasonaudio", "fit", "--config", str(path), "--print_config"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)


def test_an_old_saved_config_builds_and_the_migration_removes_every_old_name(tmp_path):
    old = _old_config(tmp_path)
    before = _print_config(old, tmp_path)
    assert before.returncode == 0, before.stderr
    printed = yaml.safe_load(before.stdout)
    assert printed["model"]["init_args"]["objective"]["class_path"] == "reasonaudio.preference.DPO"
    assert "reasonaudio.preference moved to reasonaudio.preference_objectives" in before.stderr

    line = re.search(r"^sed -i -E '(.*)' config\.yaml$", (ROOT / "docs" / "architecture.md").read_text(), re.M)
    assert line, "docs/architecture.md gives the migration as one sed line"
    subprocess.run(["sed", "-i", "-E", line.group(1), str(old)], check=True)
    migrated = old.read_text()
    assert "reasonaudio.preference_objectives.DPO" in migrated
    assert "reasonaudio.data_modules.preference_groups.PreferenceDataModule" in migrated
    assert "reasonaudio.reasonaudio" not in migrated
    other = tmp_path / "other.yaml"  # the moved names that no stage config of the suite names
    other.write_text("a: reasonaudio.parallel.FSDP2Strategy\nb: reasonaudio.metrics.backbones_panns.Cnn14\n"
                     "c: reasonaudio.models.reward.GroundTruthOnsetReward\nd: callbacks.ema.EMA\n"
                     "e: reasonaudio.callbacks.ema.EMA\n")
    subprocess.run(["sed", "-i", "-E", line.group(1), str(other)], check=True)
    assert yaml.safe_load(other.read_text()) == {
        "a": "reasonaudio.models.parallel.FSDP2Strategy", "b": "reasonaudio.metrics.backbones.panns.Cnn14",
        "c": "reasonaudio.metrics.synthetic.GroundTruthOnsetReward", "d": "reasonaudio.callbacks.ema.EMA",
        "e": "reasonaudio.callbacks.ema.EMA"}
    after = _print_config(old, tmp_path)
    assert after.returncode == 0, after.stderr
    assert " moved to " not in after.stderr
    assert yaml.safe_load(after.stdout)["model"]["class_path"] == "reasonaudio.systems.post_train.PreferencePostTrain"


def test_lightning_accepts_a_checkpoint_that_names_the_old_class_path(tmp_path):
    """``load_from_checkpoint`` checks a checkpoint's ``_class_path`` against ``sys.modules`` only (it never imports):
    the old path of a renamed system must resolve there as soon as the new module is imported."""
    code = ("import sys; from lightning.pytorch.core.saving import _is_imported_subclass as ok; "
            "from reasonaudio.systems.post_train import PreferencePostTrain as P; "
            "from reasonaudio.systems.preference_builder import PreferenceDataBuilder as B; "
            "print(ok('reasonaudio.systems.preference.PreferencePostTrain', P), "
            "ok('reasonaudio.systems.preference_data.PreferenceDataBuilder', B), "
            "ok('reasonaudio.systems.preference.Nothing', P))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "False"]
