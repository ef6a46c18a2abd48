"""The plugin manager and the registry of everything plugins provide.

Entry points of group ``fbench`` load lazily, on the first call that needs them, so that
``fbench --help`` imports nothing heavy. The built-in plugins are entry points of the ``fbench``
distribution itself: they come through the same door as a third party's.

``FBENCH_LOAD_PLUGINS`` (comma-separated distribution names) restricts which *external*
packages load; set it empty to load the built-ins only (the test suite does).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import threading
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


class Registry:
    """Loads plugins once and indexes their specs by name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("fbench")
        self.pm.add_hookspecs(hookspecs)
        self._lock = threading.RLock()
        self._entry_points_loaded = False
        self._dist_of: dict[str, tuple[str | None, str | None]] = {}
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
        with self._lock:
            if self._entry_points_loaded:
                return
            self._entry_points_loaded = True
            seen: set[str] = set()
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist = getattr(ep, "dist", None)
                dist_name = dist.metadata["Name"] if dist is not None else None
                key = f"{dist_name}:{ep.name}"
                # An editable install can list the same entry point twice; load it once.
                if key in seen or not self._allowed(dist_name):
                    continue
                seen.add(key)
                try:
                    plugin = ep.load()
                except Exception as exc:  # a broken third-party package must not hide the rest
                    raise FbenchError(
                        f"plugin {ep.name!r} from package {dist_name!r} failed to import: "
                        f"{type(exc).__name__}: {exc}",
                        f"fix or uninstall {dist_name!r}, or exclude it with "
                        f"{ENV_LOAD_PLUGINS}=<the packages to load>.",
                    ) from exc
                name = ep.name if dist_name == BUILTIN_DISTRIBUTION else f"{dist_name}:{ep.name}"
                if self.pm.get_plugin(name) is None:
                    self.pm.register(plugin, name=name)
                    self._dist_of[name] = (dist_name, dist.version if dist else None)
            self._invalidate()

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
            impl.function(register=_registrar(table, kind, spec_type, key, impl.plugin_name))
        return table

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
            ))
        return infos

    @property
    def hook(self) -> Any:
        self.load_entry_points()
        return self.pm.hook


def _registrar(table: dict[str, tuple[Any, str]], kind: str, spec_type: type, key: str,
               plugin: str) -> Callable[[Any], None]:
    """The ``register`` callback one plugin's hook receives: the core, not the plugin, checks
    each spec's type and that its name is not another plugin's."""

    def register(spec: Any) -> None:
        if not isinstance(spec, spec_type):
            raise FbenchError(
                f"plugin {plugin!r} registered a {type(spec).__name__} as a {kind}; "
                f"expected fbench.{spec_type.__name__}.")
        name = getattr(spec, key)
        if name in table:
            raise FbenchError(
                f"{kind} name {name!r} is registered by two plugins: "
                f"{table[name][1]!r} and {plugin!r}.",
                f"uninstall one of them, or restrict loading with {ENV_LOAD_PLUGINS}.")
        table[name] = (spec, plugin)

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
