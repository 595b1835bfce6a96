#!/usr/bin/env bash
# Create .venv and install sparseopt with its test and CLI extras, then the integration
# extras (lightning, hf, onnx).
#
# - The venv sees the system site-packages, so a torch that is already installed
#   (system-wide or in the base interpreter) is reused and never replaced: every pip
#   call below runs with a constraint file pinning the torch that is there.
# - Only when no torch can be imported is torch pinned to 2.13.0, which on this
#   kind of machine resolves to the local CPU wheel: an unpinned `torch` would
#   pull several GB of CUDA wheels.
# - The integration extras are optional: SPARSEOPT_EXTRAS (default "lightning hf onnx";
#   empty: none) picks them. One that fails to install is reported and skipped; its
#   tests then skip with the reason (the setup itself does not fail).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${SPARSEOPT_EXTRAS-lightning hf onnx}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet "torch==${SPARSEOPT_TORCH_VERSION:-2.13.0}"
fi
TORCH=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$TORCH" >"$CONSTRAINTS"
pip_install() { "$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" "$@"; }

pip_install -e ".[dev]"
if [ -n "$EXTRAS" ]; then
    all=$(echo "$EXTRAS" | tr ' ' ',')
    if ! pip_install -e ".[dev,$all]"; then
        for extra in $EXTRAS; do  # one by one: keep those that install
            pip_install -e ".[$extra]" ||
                echo "note: the '$extra' extra did not install; its tests will be skipped" >&2
        done
    fi
fi
AFTER=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
if [ "$AFTER" != "$TORCH" ]; then
    echo "error: torch changed from $TORCH to $AFTER during setup" >&2
    exit 1
fi
"$VENV/bin/python" -c "import torch, sparseopt; print(f'sparseopt {sparseopt.__version__} with torch {torch.__version__} in $VENV')"
