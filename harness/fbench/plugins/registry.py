"""The plugin manager and the registry of everything plugins provide.

Entry points of group ``fbench`` load lazily, on the first call that needs them, so that
``fbench --help`` imports nothing heavy. The built-in plugins are entry points of the ``fbench``
distribution itself: they come through the same door as a third party's.

``FBENCH_LOAD_PLUGINS`` (comma-separated distribution names) restricts which *external*
packages load; set it empty to load the built-ins only (the test suite does).

A broken plugin is one plugin's problem: an entry point that fails to import, or a
``register_*`` hook that raises, is skipped with one warning naming it, and every other plugin
(the built-ins included) still loads. ``Registry.plugins()`` lists the broken ones with their
error. Breaking the core's own rules (a spec of the wrong type, a name two plugins claim)
still stops with an FbenchError, because which plugin to believe is the user's choice.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from fbench.errors import FbenchError, UnknownNameError
from fbench.plugins import hookspecs
from fbench.plugins.specs import (
    AblationSpec,
    DatasetSpec,
    DetectorSpec,
    ProbeFeatureSpec,
    Recipe,
    TransformSpec,
)

ENTRY_POINT_GROUP = "fbench"
BUILTIN_DISTRIBUTION = "fbench"
ENV_LOAD_PLUGINS = "FBENCH_LOAD_PLUGINS"

_KINDS: dict[str, tuple[str, type]] = {
    "dataset": ("register_datasets", DatasetSpec),
    "transform": ("register_transforms", TransformSpec),
    "detector": ("register_detectors", DetectorSpec),
    # feature families of the shortcut probe (fbench.data.probe); same name rules as the rest
    "probe feature": ("register_probe_features", ProbeFeatureSpec),
}


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin: its name, where it came from, and what it registered."""

    name: str
    distribution: str | None
    version: str | None
    builtin: bool
    datasets: tuple[str, ...]
    transforms: tuple[str, ...]
    detectors: tuple[str, ...]
    probe_features: tuple[str, ...] = ()
    # why the plugin failed to import (it registered nothing) or which hook of it raised
    error: str | None = None


class _ContractError(FbenchError):
    """A plugin broke the core's registration rules; raised through, not skipped."""


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, so a warning stays one line whatever the plugin raised."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _package(dist_name: str | None, version: str | None) -> str:
    return f"package {dist_name!r}" + (f" {version}" if version else "")


class Registry:
    """Loads plugins once and indexes their specs by name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("fbench")
        self.pm.add_hookspecs(hookspecs)
        self._lock = threading.RLock()
        self._entry_points_loaded = False
        self._dist_of: dict[str, tuple[str | None, str | None]] = {}
        # plugins whose entry point failed to load: name -> (distribution, version, error)
        self._import_errors: dict[str, tuple[str | None, str | None, str]] = {}
        # plugins with a hook that raised: name -> the first such hook and its error
        self._hook_errors: dict[str, str] = {}
        self._warned: set[str] = set()  # each failure is said once per registry
        self._specs: dict[str, dict[str, tuple[Any, str]]] | None = None
        self._ablations: dict[str, tuple[AblationSpec, str]] | None = None
        self._recipes: dict[str, tuple[Any, str]] | None = None

    # -- loading --------------------------------------------------------------------------
    def _allowed(self, dist_name: str | None) -> bool:
        if dist_name == BUILTIN_DISTRIBUTION:
            return True
        wanted = os.environ.get(ENV_LOAD_PLUGINS)
        if wanted is None:
            return True
        names = {n.strip().lower().replace("_", "-") for n in wanted.split(",") if n.strip()}
        return (dist_name or "").lower().replace("_", "-") in names

    def load_entry_points(self) -> None:
        """Load each entry point of group ``fbench`` on its own (not pluggy's
        ``load_setuptools_entrypoints``, which stops at the first failure), so one that fails
        is skipped with a warning and the rest still register."""
        with self._lock:
            if self._entry_points_loaded:
                return
            # Marked first so a plugin module that touches the registry while importing does
            # not start a second load; nothing below lets one entry point's failure escape.
            self._entry_points_loaded = True
            seen: set[str] = set()
            try:
                for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                    self._load_entry_point(ep, seen)
            finally:
                self._invalidate()

    def _load_entry_point(self, ep: metadata.EntryPoint, seen: set[str]) -> None:
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        version = dist.version if dist is not None else None
        key = f"{dist_name}:{ep.name}"
        # An editable install can list the same entry point twice; load it once.
        if key in seen or not self._allowed(dist_name):
            return
        seen.add(key)
        name = ep.name if dist_name == BUILTIN_DISTRIBUTION else key
        if self.pm.get_plugin(name) is not None:
            return
        try:
            plugin = ep.load()
            # pluggy refuses a malformed hook implementation here: also this plugin's problem
            self.pm.register(plugin, name=name)
        except Exception as exc:  # a broken package must not hide the others
            error = _one_line(exc)
            self._import_errors[name] = (dist_name, version, error)
            self._warn(name, f"skipping plugin {ep.name!r} ({ep.value}) of "
                             f"{_package(dist_name, version)}: it failed to load: {error}. "
                             f"Fix or uninstall {dist_name!r}, or name only the packages to "
                             f"load in {ENV_LOAD_PLUGINS}.")
            return
        self._dist_of[name] = (dist_name, version)

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=4)

    def _invalidate(self) -> None:
        self._specs = None
        self._ablations = None
        self._recipes = None

    def register_plugin(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object or module directly (tests, notebooks)."""
        with self._lock:
            self.load_entry_points()
            registered = self.pm.register(plugin, name=name)
            if registered is None:
                raise FbenchError(f"plugin {name!r} is already registered.")
            self._invalidate()
            return registered

    def unregister_plugin(self, plugin: Any = None, name: str | None = None) -> None:
        with self._lock:
            # a later plugin of the same name starts with a clean record
            self._hook_errors.pop(name or self.pm.get_name(plugin) or "", None)
            self.pm.unregister(plugin=plugin, name=name)
            self._invalidate()

    # -- collecting specs ------------------------------------------------------------------
    def _collect(self) -> None:
        self.load_entry_points()
        self._specs = {kind: self._collect_table(hook, kind, spec_type)
                       for kind, (hook, spec_type) in _KINDS.items()}
        self._ablations = self._collect_table("register_ablations", "ablation family",
                                              AblationSpec, key="family")
        self._recipes = self._collect_table("register_recipes", "recipe", Recipe)

    def _collect_table(self, hook_name: str, kind: str, spec_type: type,
                       key: str = "name") -> dict[str, tuple[Any, str]]:
        """Call every plugin's ``hook_name`` with a ``register`` that files specs of
        ``spec_type`` under their ``key``, with the plugin's name beside each."""
        table: dict[str, tuple[Any, str]] = {}
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            # Staged per plugin: a hook that raises halfway leaves none of its specs behind.
            staged: dict[str, tuple[Any, str]] = {}
            try:
                impl.function(register=_registrar(table, staged, kind, spec_type, key,
                                                  impl.plugin_name))
            except _ContractError:
                raise
            except Exception as exc:  # one plugin's failing hook must not stop the others
                self._skip_hook(impl.plugin_name, hook_name, exc)
                continue
            table.update(staged)
        return table

    def call_each(self, hook_name: str, **kwargs: Any) -> None:
        """Call every plugin's ``hook_name`` (e.g. ``register_commands``) on its own: one that
        raises is skipped with a warning naming it, and the rest still run. (``hook.<name>()``
        instead stops at the first plugin that raises.)"""
        with self._lock:
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                try:
                    impl.function(**kwargs)
                except Exception as exc:  # one plugin's failing hook must not stop the others
                    self._skip_hook(impl.plugin_name, hook_name, exc)

    def _skip_hook(self, plugin: str, hook_name: str, exc: Exception) -> None:
        error = _one_line(exc)
        self._hook_errors.setdefault(plugin, f"{hook_name} raised {error}")
        dist_name, version = self._dist_of.get(plugin, (None, None))
        package = f" of {_package(dist_name, version)}" if dist_name else ""
        self._warn(f"{plugin}:{hook_name}",
                   f"skipping {hook_name} of plugin {plugin!r}{package}: it raised {error}. "
                   f"Fix or uninstall it, or name only the packages to load in "
                   f"{ENV_LOAD_PLUGINS}.")

    def specs(self, kind: str) -> dict[str, tuple[Any, str]]:
        with self._lock:
            if self._specs is None:
                self._collect()
            assert self._specs is not None
            return self._specs[kind]

    def ablations(self) -> dict[str, tuple[AblationSpec, str]]:
        with self._lock:
            if self._ablations is None:
                self._collect()
            assert self._ablations is not None
            return self._ablations

    def recipes(self) -> dict[str, tuple[Any, str]]:
        with self._lock:
            if self._recipes is None:
                self._collect()
            assert self._recipes is not None
            return self._recipes

    def recipe(self, name: str) -> Any:
        table = self.recipes()
        if name not in table:
            raise UnknownNameError("recipe", name, sorted(table))
        return table[name][0]

    def get(self, kind: str, name: str) -> Any:
        table = self.specs(kind)
        if name not in table:
            raise UnknownNameError(kind, name, sorted(table))
        return table[name][0]

    def names(self, kind: str, pattern: str | None = None) -> list[str]:
        names = sorted(self.specs(kind))
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def provider(self, kind: str, name: str) -> str:
        self.get(kind, name)
        return self.specs(kind)[name][1]

    def plugins(self) -> list[PluginInfo]:
        self.load_entry_points()
        for kind in _KINDS:  # collects first, so hook failures are known below
            self.specs(kind)
        infos = []
        for name, _plugin in sorted(self.pm.list_name_plugin()):
            dist, version = self._dist_of.get(name, (None, None))

            def owned(kind: str, _name=name) -> tuple[str, ...]:
                return tuple(sorted(n for n, (_, p) in self.specs(kind).items() if p == _name))

            infos.append(PluginInfo(
                name=name, distribution=dist, version=version,
                builtin=dist == BUILTIN_DISTRIBUTION,
                datasets=owned("dataset"), transforms=owned("transform"),
                detectors=owned("detector"), probe_features=owned("probe feature"),
                error=self._hook_errors.get(name),
            ))
        for name, (dist, version, error) in sorted(self._import_errors.items()):
            infos.append(PluginInfo(
                name=name, distribution=dist, version=version,
                builtin=dist == BUILTIN_DISTRIBUTION, datasets=(), transforms=(), detectors=(),
                error=f"failed to load: {error}"))
        return infos

    @property
    def hook(self) -> Any:
        self.load_entry_points()
        return self.pm.hook


def _registrar(table: dict[str, tuple[Any, str]], staged: dict[str, tuple[Any, str]],
               kind: str, spec_type: type, key: str, plugin: str) -> Callable[[Any], None]:
    """The ``register`` callback one plugin's hook receives: the core, not the plugin, checks
    each spec's type and that its name is not another plugin's. Accepted specs go to
    ``staged`` until the plugin's hook returns."""

    def register(spec: Any) -> None:
        if not isinstance(spec, spec_type):
            raise _ContractError(
                f"plugin {plugin!r} registered a {type(spec).__name__} as a {kind}; "
                f"expected fbench.{spec_type.__name__}.")
        name = getattr(spec, key)
        if name in table or name in staged:
            first = table[name][1] if name in table else plugin
            raise _ContractError(
                f"{kind} name {name!r} is registered by two plugins: "
                f"{first!r} and {plugin!r}.",
                f"uninstall one of them, or restrict loading with {ENV_LOAD_PLUGINS}.")
        staged[name] = (spec, plugin)

    return register


_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry (created on first use)."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = Registry()
        return _registry


def reset_registry() -> None:
    """Forget every loaded plugin; the next call reloads entry points (tests use this)."""
    global _registry
    with _registry_lock:
        _registry = None


@contextlib.contextmanager
def registered(plugin: Any, name: str | None = None) -> Iterator[str]:
    """Register ``plugin`` for the duration of a ``with`` block, then unregister it."""
    registry = get_registry()
    plugin_name = registry.register_plugin(plugin, name=name)
    try:
        yield plugin_name
    finally:
        registry.unregister_plugin(name=plugin_name)
