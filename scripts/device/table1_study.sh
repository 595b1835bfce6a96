#!/usr/bin/env bash
# AdaBreg candidates on the Table 1 ConvNet (full Fashion-MNIST) on a lent GPU, several at once on the one device, plus
# the CUDA step benchmark first (alone, so that the training runs do not disturb its
# timings). Results are gathered into a few files under $OUT while the runs go, so that a
# timeout still brings back what finished.
#
#   OUT=/tmp/out DATA=devdata/fmnist bash scripts/device/table1_study.sh
#
# Environment: PY (python, default python3), DEVICE (cuda), EPOCHS (20), CANDIDATES (lines
# "name flags...", unique names, each run with every seed; empty and # lines skipped), EXTRA (more train flags for every run, e.g.
# "--limit-batches 5" for a smoke run), STEPS (1: run the step benchmark),
# STUDY_LIMIT (seconds the study may run, default 330), SEEDS ("0 1 2"), ROUNDS_CONVNET and
# ROUNDS_RESNET (interleaved rounds of the step benchmark: 30 and 20, each model's run
# limited to STEPS_LIMIT seconds, default 240).
set -u
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-20}
EXTRA=${EXTRA:-}
STEPS=${STEPS:-1}
STUDY_LIMIT=${STUDY_LIMIT:-330}
SEEDS=${SEEDS:-0 1 2}
DATA=${DATA:-devdata/fmnist}
ROUNDS_CONVNET=${ROUNDS_CONVNET:-30}
ROUNDS_RESNET=${ROUNDS_RESNET:-20}
STEPS_LIMIT=${STEPS_LIMIT:-240}
WORK=$(mktemp -d)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor}
mkdir -p "$OUT"
{
  date -u
  git rev-parse HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  lscpu | grep -m1 'Model name' || true
  $PY -c 'import torch, sparseopt; print(torch.__version__, torch.cuda.is_available(), sparseopt.__version__)'
} > "$OUT/env.txt" 2>&1

if [ "$STEPS" = 1 ]; then
  for m in convnet resnet18; do
    rounds=$ROUNDS_CONVNET; [ $m = resnet18 ] && rounds=$ROUNDS_RESNET
    timeout "$STEPS_LIMIT" $PY benchmarks/step_overhead.py --device "$DEVICE" --models $m \
      --rounds "$rounds" --out "$WORK/steps_${DEVICE}_$m" >> "$OUT/steps_log.txt" 2>&1
    echo "$m exit $?" >> "$OUT/steps_log.txt"
    cp "$WORK/steps_${DEVICE}_$m.json" "$OUT/" 2>/dev/null
  done
fi

# candidates, one per line: a name, then its train flags (chosen before any run; ranked
# by validation accuracy); CANDIDATES replaces the default list, the 2026-11-27 Table 1 study
CANDIDATES=${CANDIDATES:-"base --target-density 0.0205
init005 --target-density 0.0205 --init-density 0.005
init0025 --target-density 0.0205 --init-density 0.0025
lr005 --target-density 0.0205 --lr 0.005"}
RUNS=$WORK/runs
mkdir -p "$RUNS"
start=$(date +%s)
echo "$CANDIDATES" > "$OUT/candidates.txt"  # the names of the results, with their flags
while read -r name flags; do
  case "$name" in ''|'#'*) continue ;; esac
  for s in $SEEDS; do
    d="$RUNS/$name-s$s"
    # shellcheck disable=SC2086  # flags are words
    $PY -m sparseopt train -d fashion-mnist --data-dir "$DATA" -m convnet -o adabreg \
      --epochs "$EPOCHS" --seed "$s" --device "$DEVICE" --threads 1 \
      --no-tensorboard --quiet $flags $EXTRA --out "$d" > "$RUNS/$name-s$s.log" 2>&1 \
      < /dev/null &  # not the list's stdin
  done
done <<< "$CANDIDATES"

gather() {
  $PY - "$RUNS" "$OUT" <<'PYEOF'
import csv, json, os, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
rows, curves = [], []
for d in sorted(p for p in runs.iterdir() if p.is_dir()):
    row = {"run": d.name}
    s = d / "summary.json"
    if s.exists():
        j = json.loads(s.read_text())
        m = j["metrics"]
        keys = ("epoch", "val_acc", "test_acc", "train_acc", "density", "weight_density",
                "layer_density", "elapsed")
        row.update(status=j.get("status"), reason=j.get("reason"), **{k: m.get(k) for k in keys})
    rows.append(row)
    mc = d / "metrics.csv"
    if mc.exists():
        with mc.open() as f:
            for r in csv.DictReader(f):
                curves.append({"run": d.name, **{k: r.get(k) for k in ("epoch", "val_acc", "train_loss", "density", "epoch_time")}})
tmp = out / "table1.jsonl.tmp"
tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
os.replace(tmp, out / "table1.jsonl")
tmp = out / "curves.jsonl.tmp"
tmp.write_text("".join(json.dumps(r) + "\n" for r in curves))
os.replace(tmp, out / "curves.jsonl")
PYEOF
}
while [ -n "$(jobs -r)" ] && [ $(( $(date +%s) - start )) -lt "$STUDY_LIMIT" ]; do
  sleep 15; gather
done
kill $(jobs -p) 2>/dev/null
gather
tail -n 3 "$RUNS"/*.log > "$OUT/logs.txt" 2>&1
echo "study wall $(( $(date +%s) - start )) s" >> "$OUT/env.txt"
