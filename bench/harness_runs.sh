#!/usr/bin/env bash
# The `spinel bench` figures of bench/RESULTS.md ("Latency-constrained
# throughput"): all-MiniLM-L6-v2 INT8 and FP32 at seq 128 (single stream,
# offline, server --tune at p90 <= 50 ms and <= 20 ms), a --pin A/B, and
# BERT-base 90% INT8 when its pruned ONNX exists (bench/e2e_int8.py builds it).
#
#   bench/harness_runs.sh [OUT_DIR]     (default work/bench-harness)
#
# Writes OUT_DIR/*.json, *.txt (the tables), *.err (progress) and the PNGs.
# Takes about 30-40 minutes on 2 cores. Run it on a quiet machine: every
# figure is a latency.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="${SPINEL_BIN:-$ROOT/build/spinel}"
PY="$ROOT/.venv/bin/python"
OUT="${1:-$ROOT/work/bench-harness}"
BERT_ONNX="${BERT_ONNX:-$ROOT/work/bench-dnabert2/bert-base-ref/bert-base-90/model.onnx}"
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE

run() {  # name, spinel bench arguments...
  local name=$1
  shift
  echo "== $name: $(uptime)"
  "$B" bench "$@" --json "$OUT/$name.json" > "$OUT/$name.txt" 2> "$OUT/$name.err"
  tail -n 1 "$OUT/$name.txt"
}

"$B" convert "$ROOT/work/minilm/model.onnx" -o "$OUT/minilm-int8.spnl" --quant int8 > /dev/null
"$B" convert "$ROOT/work/minilm/model.onnx" -o "$OUT/minilm-fp32.spnl" > /dev/null

for m in int8 fp32; do
  M="$OUT/minilm-$m.spnl"
  run "minilm-$m-single" "$M" --scenario single --seq 128 --duration 10s --warmup 1s --tune
  run "minilm-$m-offline" "$M" --scenario offline --seq 128 --max-batch 8 --duration 10s --warmup 1s --tune
  for budget in 50 20; do
    run "minilm-$m-server-${budget}ms" "$M" --seq 128 --latency-budget ${budget}ms --percentile 90 \
      --max-batch 8 --max-wait 2ms --tune --duration 5s --warmup 1s --max-trials 6
  done
done

# Pinning: 2 instances x 1 thread, offline batch 8, alternating unpinned and pinned.
for r in 1 2 3; do
  run "pin-ab-$r-free" "$OUT/minilm-int8.spnl" --scenario offline --seq 128 --max-batch 8 --instances 2 \
    --threads 1 --duration 5s --warmup 1s
  run "pin-ab-$r-pinned" "$OUT/minilm-int8.spnl" --scenario offline --seq 128 --max-batch 8 --instances 2 \
    --threads 1 --duration 5s --warmup 1s --pin
done

if [ -f "$BERT_ONNX" ]; then
  "$B" convert "$BERT_ONNX" -o "$OUT/bert-base-90-int8.spnl" --quant int8 > /dev/null
  M="$OUT/bert-base-90-int8.spnl"
  run bert-base-90-int8-single "$M" --scenario single --seq 128 --duration 10s --warmup 1s
  run bert-base-90-int8-offline "$M" --scenario offline --seq 128 --max-batch 8 --duration 10s --warmup 1s
  for budget in 50 20; do
    run "bert-base-90-int8-server-${budget}ms" "$M" --seq 128 --latency-budget ${budget}ms --percentile 90 \
      --max-batch 8 --tune --duration 5s --warmup 1s --max-trials 6
  done
fi

for budget in 50 20; do
  "$PY" "$ROOT/tools/plot_bench.py" "$OUT/minilm-int8-server-${budget}ms.json" \
    "$OUT/minilm-fp32-server-${budget}ms.json" -o "$OUT/minilm-server-${budget}ms.png"
done
echo "== done: $(uptime)"
