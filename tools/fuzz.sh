#!/usr/bin/env bash
# Builds the libFuzzer targets (build-asan/, ASan + UBSan), makes their seed
# corpora, replays the saved reproducers and fuzzes each target for a while.
#
#   tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 30 s, all targets)
#
# Corpora grow in build-asan/fuzz-corpus/<target>; findings (crash, sanitizer
# report, leak, timeout, out-of-memory) land in build-asan/fuzz-findings/<target>.
# Exits non-zero on any finding, printing the reproducer's path.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-30}"
[ $# -gt 0 ] && shift
case "$secs" in '' | *[!0-9]*) echo "usage: tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;; esac
all=(fuzz_spnl fuzz_onnx fuzz_tokenizer fuzz_tokenizer_json fuzz_text_input fuzz_fasta)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi

max_len() {
  case "$1" in
    fuzz_spnl | fuzz_onnx) echo 200000 ;;
    fuzz_tokenizer_json) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

B="$ROOT/build-asan"
echo "== building ${targets[*]} (build-asan)"
"$ROOT/tools/build_sanitized.sh" asan spinel "${targets[@]}"

echo "== seeds"
seeds="$B/fuzz-seeds"
rm -rf "$seeds"
"$ROOT/.venv/bin/python" "$ROOT/tests/fuzz/make_seeds.py" "$seeds" --spinel "$B/spinel"

export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

failed=()
for t in "${targets[@]}"; do
  bin="$B/tests/fuzz/$t"
  corpus="$B/fuzz-corpus/$t"
  findings="$B/fuzz-findings/$t"
  mkdir -p "$corpus" "$findings"

  # Saved reproducers of earlier findings must pass before anything else.
  reg="$ROOT/tests/fuzz/regressions/$t"
  if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
    echo "== $t: replaying $reg"
    for f in "$reg"/*; do
      rlog="$findings/replay-$(basename "$f").log"
      if ! "$bin" "$f" >"$rlog" 2>&1; then
        grep -E 'ERROR|runtime error|INVARIANT|SUMMARY' "$rlog" | head -5 || true
        echo "FINDING ($t): saved reproducer still fails: $f (log: $rlog)"
        failed+=("$t")
      fi
    done
  fi

  echo "== $t: fuzzing ${secs}s"
  args=(-max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len="$(max_len "$t")"
        -print_final_stats=1 -print_funcs=0 -artifact_prefix="$findings/")
  [ -f "$ROOT/tests/fuzz/$t.dict" ] && args+=(-dict="$ROOT/tests/fuzz/$t.dict")
  log="$findings/fuzz.log"
  if "$bin" "${args[@]}" "$corpus" "$seeds/$t" >"$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)|DONE' "$log" | tr '\n' ' '
    echo
  else
    grep -E 'ERROR|runtime error|INVARIANT|SUMMARY|Test unit written' "$log" | head -8 || true
    repro="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
    echo "FINDING ($t): reproducer: ${repro:-none written} (log: $log)"
    echo "  replay: $bin ${repro:-<input>}"
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: findings in: $(printf '%s\n' "${failed[@]}" | sort -u | tr '\n' ' ')" >&2
  exit 1
fi
echo "fuzz.sh: no findings"
