"""The scripts under benchmarks/ loaded as modules, for the tests that run them small."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` as module ``name`` for a fixture's lifetime (yield from it):
    registered in ``sys.modules`` while it lives, as dataclasses look their module up by name."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)
