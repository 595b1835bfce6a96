"""The worked example of head and neuron removal runs in --smoke mode."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "transformer_heads.py"


def test_transformer_heads_example() -> None:
    pytest.importorskip("transformers", reason='pip install "sparseopt[hf]"')
    pytest.importorskip("sklearn", reason='the digits data needs pip install "sparseopt[cli]"')
    spec = importlib.util.spec_from_file_location("example_transformer_heads", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--smoke", "--method", "splitlbi"])
    assert result["heads"] == 4 and result["neurons"] == 64
    # 1 epoch of split LBI: Γ's support is still small, so groups were removed
    assert result["heads_removed"] + result["neurons_removed"] > 0
    assert result["params_after"] < result["params_before"]
    assert result["max_abs_diff"] <= 1e-5
    assert result["shrunk_test_acc"] == result["test_acc"]
