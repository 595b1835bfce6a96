#!/usr/bin/env bash
# Create .venv and install sparseopt with its test and CLI extras.
#
# - The venv sees the system site-packages, so a torch that is already installed
#   (system-wide or in the base interpreter) is reused and never replaced.
# - Only when no torch can be imported is torch pinned to 2.13.0, which on this
#   kind of machine resolves to the local CPU wheel: an unpinned `torch` would
#   pull several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet "torch==${SPARSEOPT_TORCH_VERSION:-2.13.0}"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
"$VENV/bin/python" -c "import torch, sparseopt; print(f'sparseopt {sparseopt.__version__} with torch {torch.__version__} in $VENV')"
