"""Shared test settings."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

#: The benchmark scripts (not a package: they put their own folder on ``sys.path``).
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# helpers shared by test modules (engine_helpers.py): importable by name
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run every test with one intra-op thread, restoring the setting afterwards.

    The tensors in the tests are small: extra threads only add overhead and
    oversubscribe a shared 2-core machine. Tests that need threads set them.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def load_benchmark() -> Callable[[str], ModuleType]:
    """Import ``benchmarks/NAME.py`` as the module ``NAME`` (registered in
    ``sys.modules``: dataclasses look their module up there)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def run_benchmark() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``benchmarks/NAME.py ARGS...`` in a fresh interpreter (10 min at most)."""

    def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(BENCHMARKS / f"{name}.py"), *args],
            capture_output=True,
            text=True,
            timeout=600,
        )

    return run
