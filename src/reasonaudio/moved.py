"""Old import paths of moved modules, kept importable so saved configs and checkpoints still load.

The architecture change of 2026-12 (docs/architecture.md) renamed or moved the modules below. An old name gives
the new module's objects (the same classes, so pickles and class paths resolve) with a ``DeprecationWarning``.
:func:`install` (called by ``import reasonaudio``) does two things:

- each renamed ``reasonaudio.*`` module gets a stand-in in ``sys.modules`` whose attributes are the new module's,
  imported on first use; its parent package registers it (:func:`install_under`), so it is there as soon as
  the new module's package is: Lightning's ``load_from_checkpoint`` accepts a checkpoint's class path only when
  ``sys.modules`` already resolves it, and never imports;
- the card's old top-level names ``callbacks`` / ``data_modules`` are found by a finder consulted after every
  other one, so a module of that name from another distribution wins; it returns the new package itself, and
  its submodules (``callbacks.ema``) are resolved before the path finder, so they are not loaded twice. Run
  with ``python -m`` from the checkout, whose folder is then on ``sys.path``, the old top-level names find the
  checkout's folders themselves and load second copies: the ambiguity these names had.

docs/architecture.md lists every move, and the one-line migration that rewrites a saved config to the new names.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED: dict[str, str] = {
    "callbacks": "reasonaudio.callbacks",
    "data_modules": "reasonaudio.data_modules",
    "data_modules.preference": "reasonaudio.data_modules.preference_groups",
    "reasonaudio.data_modules.preference": "reasonaudio.data_modules.preference_groups",
    "reasonaudio.preference": "reasonaudio.preference_objectives",
    "reasonaudio.systems.preference": "reasonaudio.systems.post_train",
    "reasonaudio.systems.preference_data": "reasonaudio.systems.preference_builder",
    "reasonaudio.metrics.synthetic_metrics": "reasonaudio.metrics.synthetic",
    "reasonaudio.metrics.backbones_panns": "reasonaudio.metrics.backbones.panns",
    "reasonaudio.metrics.backbones_passt": "reasonaudio.metrics.backbones.passt",
    "reasonaudio.metrics.backbones_vggish": "reasonaudio.metrics.backbones.vggish",
    "reasonaudio.parallel": "reasonaudio.models.parallel",
}
"""Old module name → new module name (a package's submodules follow their package: ``callbacks.ema``)."""

_TOP_LEVEL = ("callbacks", "data_modules")


def new_name(old: str) -> str | None:
    """The module that ``old`` now is, or None when ``old`` was not moved."""
    if old in MOVED:
        return MOVED[old]
    top, _, rest = old.partition(".")
    if top in _TOP_LEVEL and rest:
        return f"{MOVED[top]}.{rest}"
    return None


class _MovedModule(ModuleType):
    """Stands in ``sys.modules`` for an old module name; its attributes are those of the new module."""

    def __init__(self, old: str, new: str):
        super().__init__(old, f"Moved to {new} (reasonaudio.moved).")
        self.__dict__["_new"] = new
        self.__spec__ = importlib.machinery.ModuleSpec(old, None)

    def _target(self) -> ModuleType:
        warnings.warn(f"{self.__name__} moved to {self._new}; import it from there (docs/architecture.md)",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(self._new)

    def __getattr__(self, name: str):
        if name == "__all__":  # ``from old import *``
            target = self._target()
            return getattr(target, "__all__", [n for n in vars(target) if not n.startswith("_")])
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._target(), name)

    def __dir__(self) -> list[str]:
        return dir(self._target())


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new}; import it from there (docs/architecture.md)",
                      DeprecationWarning, stacklevel=3)
        module = importlib.import_module(self.new)
        self.spec = module.__spec__  # the import machinery sets the alias spec on it next; exec_module undoes that
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The new module is already executed: only its own spec is put back (``reload``, ``find_spec``)."""
        module.__spec__ = self.spec


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, submodules_of_aliases: bool):
        self.submodules_of_aliases = submodules_of_aliases

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        top, dot, _ = fullname.partition(".")
        if self.submodules_of_aliases:  # only under a top-level name that already resolved to our package
            parent = sys.modules.get(top)
            if not (dot and top in _TOP_LEVEL and getattr(parent, "__name__", None) == MOVED[top]):
                return None
        new = new_name(fullname)
        return importlib.util.spec_from_loader(fullname, _Alias(new)) if new else None


def install_under(package: str) -> None:
    """Register the stand-ins of the old modules of ``package`` (called by that package's ``__init__``, so a
    stand-in exists from the moment its parent does: ``import`` then finds it, and its parent has it as an
    attribute)."""
    parent = sys.modules[package]
    for old, new in MOVED.items():
        if old.rpartition(".")[0] == package:
            standin = sys.modules.setdefault(old, _MovedModule(old, new))
            setattr(parent, old.rpartition(".")[2], standin)


def install() -> None:
    """The stand-ins directly under ``reasonaudio`` and the finders on ``sys.meta_path``, once (module
    docstring); ``reasonaudio.systems``, ``reasonaudio.metrics`` and ``reasonaudio.data_modules`` register theirs
    with :func:`install_under`."""
    install_under("reasonaudio")
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(submodules_of_aliases=True))
        sys.meta_path.append(_Finder(submodules_of_aliases=False))
