#!/usr/bin/env bash
# A/B of two or more builds of bench_spmm_s8 (or of any Google Benchmark
# binary): runs them in turn, REPS rounds, and prints per benchmark the
# minimum and median real time of each binary over the rounds.
#   bench/ab_kernels.sh FILTER REPS BINARY_A BINARY_B [...]
# SPINEL_BENCH_THREADS is passed through (default 1 here).
# Example: bench/ab_kernels.sh 'BM_Sparse/.*/M:128/sparsity:90/' 7 /tmp/old/bench_spmm_s8 build/bench_spmm_s8
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 FILTER REPS BINARY_A BINARY_B [...]" >&2
  exit 2
fi
filter="$1" reps="$2"
shift 2
for b in "$@"; do [ -x "$b" ] || { echo "$0: not an executable: $b" >&2; exit 2; }; done
for _ in $(seq "$reps"); do
  i=0
  for b in "$@"; do
    SPINEL_BENCH_THREADS="${SPINEL_BENCH_THREADS:-1}" "$b" --benchmark_filter="$filter" \
      --benchmark_min_time=0.1 --benchmark_format=csv 2>/dev/null |
      awk -F, -v b="$i:$b" 'NR > 1 && $1 ~ /^"BM_/ {print $1, b, $3}'
    i=$((i + 1))
  done
done | python3 -c '
import collections, statistics, sys
d = collections.defaultdict(list); order = []
for line in sys.stdin:
    name, b, t = line.split()
    name = name.strip("\"").replace("/real_time", "")
    d[(name, b)].append(float(t))
    if b not in order: order.append(b)
print("%-48s" % "benchmark (min / median)" + "".join("%26s" % b.split(":", 1)[1][-26:] for b in order))
for name in sorted({k for k, _ in d}):
    print("%-48s" % name + "".join("%26s" % ("%.1f / %.1f" % (min(d[(name, b)]), statistics.median(d[(name, b)])))
                                   for b in order))
'
