"""The examples run in --smoke mode (each skips when its extra is not installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lightning_example(tmp_path) -> None:
    pytest.importorskip(
        "lightning.pytorch",
        reason='PyTorch Lightning is not installed: pip install "sparseopt[lightning]"',
    )
    pytest.importorskip("sklearn", reason='the digits data needs pip install "sparseopt[cli]"')
    result = _load("lightning_sparse").main(["--smoke", "--out", str(tmp_path)])
    assert 0 < result["weight_density"] < 1 and result["params_after"] <= result["params_before"]
    assert (tmp_path / "logs" / "version_0" / "path.json").exists()


def test_hf_example(tmp_path) -> None:
    pytest.importorskip(
        "transformers", reason='transformers is not installed: pip install "sparseopt[hf]"'
    )
    pytest.importorskip(
        "accelerate", reason='accelerate is not installed: pip install "sparseopt[hf]"'
    )
    result = _load("hf_sparse_trainer").main(["--smoke", "--out", str(tmp_path)])
    assert 0 < result["weight_density"] < 1 and 0 <= result["eval_acc"] <= 1
    assert (tmp_path / "path.json").exists()
