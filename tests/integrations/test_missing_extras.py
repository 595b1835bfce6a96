"""Without an extra, the integration modules still import and say what to install on use."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
for name in ("lightning", "transformers", "onnx", "onnxscript", "onnxruntime"):
    sys.modules[name] = None  # as if not installed
from sparseopt.integrations import hf, lightning
from sparseopt.prune.onnx import onnx_missing
for make in (lightning.SparsityCallback, hf.SparsityTrainerCallback, hf.SparseTrainer):
    try:
        make()
    except ImportError as err:
        print(err)
print(onnx_missing())
"""


def test_missing_extras_name_the_install_command() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert out[0] == 'SparsityCallback needs PyTorch Lightning: pip install "sparseopt[lightning]"'
    assert out[1] == out[2] and out[1].endswith('pip install "sparseopt[hf]"')
    assert out[3].endswith('pip install "sparseopt[onnx]"')
