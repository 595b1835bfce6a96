#!/usr/bin/env bash
# The robustness matrix's Fashion-MNIST tasks at full scale (54 000 training images, 6 000
# validation, the 10 000 test images; the matrix uses a 12 000-image subset): `sparseopt
# compare --prune-baseline` of every optimizer with its defaults, on CPU, one thread per
# run. Meant for the lent machine's 16 CPU cores (or any many-core host); the GPU is not
# used, so the figures do not depend on it.
#
#   OUT=/tmp/out MODELS="lenet5" SEEDS="1 2" bash scripts/device/scale_check.sh
#
# Each (model, seed) is one comparison. Its runs (every optimizer, and the pruning
# baseline's dense run) first train side by side with `sparseopt train` into the
# comparison's directory, then `sparseopt compare --overwrite` with the same flags reuses
# them (it checks that each run's settings are the ones it would use, and retrains
# otherwise) and fine-tunes the pruned networks. The comparisons run side by side too.
# Results (comparison.md/.json and each run's summary.json, metrics.csv and log.txt; no
# checkpoints) are gathered into $OUT/scale.tar.gz while the runs go, so that a time-out
# still brings back what finished.
#
# Environment: PY (python, default python3), DATA (devdata/fmnist), MODELS ("lenet5 mlp"),
# SEEDS ("0"), EPOCHS (20), EXTRA (more flags for every run, e.g. "--limit-batches 2" for
# a smoke run), LIMIT (seconds before the runs are stopped, default 560), WORK (where the
# runs go, default a new temporary directory).
set -u
PY=${PY:-python3}
DATA=${DATA:-devdata/fmnist}
MODELS=${MODELS:-lenet5 mlp}
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-20}
EXTRA=${EXTRA:-}
LIMIT=${LIMIT:-560}
WORK=${WORK:-$(mktemp -d)}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OPTIMIZERS=$($PY -c 'from sparseopt.optim.registry import list_optimizers as f; print(*f())')
export OMP_NUM_THREADS=1
mkdir -p "$OUT" "$WORK"
{
  date -u
  git rev-parse HEAD 2>/dev/null || true
  lscpu | grep -m1 'Model name' || true
  nproc
  $PY -c 'import torch, sparseopt; print(torch.__version__, sparseopt.__version__)'
} > "$OUT/env.txt" 2>&1

# compare's default fine-tuning epochs (a fifth, at least 1): the dense run gets the rest;
# a mismatch costs only time (compare then trains the dense run itself)
ft=$(( EPOCHS / 5 )); [ "$ft" -lt 1 ] && ft=1
common=(-d fashion-mnist --data-dir "$DATA" --epochs "$EPOCHS" --threads 1 --device cpu
        --no-record-path --no-tensorboard --quiet)

group() {  # one comparison: model $1, seed $2
  local m=$1 s=$2 d="$WORK/$1-s$2" o
  mkdir -p "$d"
  # shellcheck disable=SC2086  # EXTRA is words
  $PY -m sparseopt train "${common[@]}" -m "$m" --seed "$s" -o sgd --epochs $(( EPOCHS - ft )) \
    $EXTRA --out "$d/pruning-sgd-dense" > "$d.dense.log" 2>&1 < /dev/null &
  for o in $OPTIMIZERS; do
    # shellcheck disable=SC2086
    $PY -m sparseopt train "${common[@]}" -m "$m" --seed "$s" -o "$o" $EXTRA --out "$d/$o" \
      > "$d.$o.log" 2>&1 < /dev/null &
  done
  wait
  # shellcheck disable=SC2086
  $PY -m sparseopt compare "${common[@]}" -m "$m" --seed "$s" --no-plots --prune-baseline \
    --overwrite $EXTRA --out "$d" > "$d.compare.log" 2>&1 < /dev/null
  echo "exit $?" >> "$d.compare.log"
}

gather() {
  (cd "$WORK" && tar czf "$OUT/scale.tar.gz.tmp" --exclude='*.pt' --exclude='*.pt.tmp' . \
    2>/dev/null && mv "$OUT/scale.tar.gz.tmp" "$OUT/scale.tar.gz")
}

start=$(date +%s)
echo "optimizers: $OPTIMIZERS" >> "$OUT/env.txt"
for m in $MODELS; do
  for s in $SEEDS; do
    group "$m" "$s" &
  done
done
while [ -n "$(jobs -r)" ] && [ $(( $(date +%s) - start )) -lt "$LIMIT" ]; do
  sleep 20; gather
done
pkill -P $$ 2>/dev/null; sleep 1
gather
echo "wall $(( $(date +%s) - start )) s" >> "$OUT/env.txt"
