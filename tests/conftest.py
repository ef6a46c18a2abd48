"""Test isolation: only fbench's built-in plugins load (whatever else is installed), and the
registry is rebuilt for every test, so an inline plugin never leaks into the next test."""

from __future__ import annotations

import os

import pytest

os.environ["FBENCH_LOAD_PLUGINS"] = ""


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch, tmp_path_factory):
    from fbench.plugins.registry import reset_registry

    monkeypatch.setenv("FBENCH_LOAD_PLUGINS", "")
    # rich takes these for a terminal: CLI tests expect what a pipe gets
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    # Synthetic datasets are cached per session, not in the user's home.
    monkeypatch.setenv("FBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "fbench-cache"))
    reset_registry()
    yield
    reset_registry()


@pytest.fixture(autouse=True, scope="session")
def _threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def module_env(tmp_path_factory):
    """The same isolation for a module-scoped fixture (e.g. one training run shared by a
    module's tests), undone when the module ends."""
    from fbench.plugins.registry import reset_registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FBENCH_LOAD_PLUGINS", "")
        mp.setenv("FBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        reset_registry()
        yield mp
    reset_registry()
