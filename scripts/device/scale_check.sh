#!/usr/bin/env bash
# The robustness matrix's Fashion-MNIST tasks at full scale (54 000 training images, 6 000
# validation, the 10 000 test images; the matrix uses a 12 000-image subset):
# `benchmarks/robustness.py --tasks fmnist-lenet5-full fmnist-mlp-full` — every optimizer
# with its defaults beside the dense baselines and magnitude pruning — on CPU, one thread
# per run, each compare training its runs side by side (`--jobs`). Meant for the lent
# machine's 16 CPU cores (or any many-core host); the GPU is not used, so the figures do
# not depend on it.
#
#   OUT=/tmp/out SEEDS="1 2" bash scripts/device/scale_check.sh
#
# The seeds run side by side too. Results (each comparison's comparison.md/.json and
# robustness.md, each run's summary.json, metrics.csv and log.txt; no checkpoints) are
# gathered into $OUT/scale.tar.gz while the runs go, so that a time-out still brings back
# what finished.
#
# Environment: PY (python, default python3), DATA (devdata/fmnist), TASKS
# ("fmnist-lenet5-full fmnist-mlp-full"), SEEDS ("0"), JOBS (9: the eight optimizers and
# the dense run the baselines prune), EXTRA (more robustness.py flags, e.g. --smoke),
# LIMIT (seconds before the runs are stopped, default 560), WORK (where the runs go,
# default a new temporary directory: WORK/sSEED/TASK).
set -u
: "${OUT:?set OUT, the folder for the results}"
PY=${PY:-python3}
DATA=${DATA:-devdata/fmnist}
TASKS=${TASKS:-fmnist-lenet5-full fmnist-mlp-full}
SEEDS=${SEEDS:-0}
JOBS=${JOBS:-9}
EXTRA=${EXTRA:-}
LIMIT=${LIMIT:-560}
WORK=${WORK:-$(mktemp -d)}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1
mkdir -p "$OUT" "$WORK"
{
  date -u
  git rev-parse HEAD 2>/dev/null || true
  lscpu | grep -m1 'Model name' || true
  $PY -c 'import os, torch, sparseopt; print(os.cpu_count(), "CPUs", torch.__version__, sparseopt.__version__)'
} > "$OUT/env.txt" 2>&1

gather() {
  (cd "$WORK" && tar czf "$OUT/scale.tar.gz.tmp" --exclude='*.pt' --exclude='*.pt.tmp' . \
    2>/dev/null && mv "$OUT/scale.tar.gz.tmp" "$OUT/scale.tar.gz")
}

start=$(date +%s)
for s in $SEEDS; do
  # shellcheck disable=SC2086  # TASKS and EXTRA are words
  $PY benchmarks/robustness.py --tasks $TASKS --seed "$s" --jobs "$JOBS" --device cpu \
    --data-dir "$DATA" --out "$WORK/s$s" $EXTRA > "$WORK/s$s.log" 2>&1 < /dev/null &
done
while [ -n "$(jobs -r)" ] && [ $(( $(date +%s) - start )) -lt "$LIMIT" ]; do
  sleep 20; gather
done
# stop what still runs: robustness.py passes SIGTERM to its compare, which stops its runs
# with checkpoints (the same robustness.py command resumes them); wait until they have
pkill -TERM -P $$ 2>/dev/null
wait
gather
echo "wall $(( $(date +%s) - start )) s" >> "$OUT/env.txt"
