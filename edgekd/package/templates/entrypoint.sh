#!/usr/bin/env bash
# Container entrypoint of an edgekd bundle for a TensorRT target. On the first start (or when the
# GPU or TensorRT version changed) it builds the engine from the ONNX model ON THIS DEVICE, into
# $EDGEKD_ENGINE_DIR (mount a volume there to keep it between runs); then it runs infer.py.
# An engine only fits the GPU model and TensorRT version it was built with, so none is shipped.
set -euo pipefail
APP="$(cd "$(dirname "$0")" && pwd)"
ENGINE_DIR="${EDGEKD_ENGINE_DIR:-/cache}"
ENGINE="$ENGINE_DIR/model.engine"
case "${1:-}" in
  -h|--help|--runtime=onnxruntime) exec python3 "$APP/infer.py" "$@" ;;
esac
mkdir -p "$ENGINE_DIR"
if ! python3 - "$APP" "$ENGINE" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from infer import engine_fits
reason = engine_fits(Path(sys.argv[2]))
if reason:
    print(f"entrypoint: building the TensorRT engine ({reason})", file=sys.stderr)
sys.exit(1 if reason else 0)
PY
then
  ENGINE="$ENGINE" "$APP/build_engine.sh"
fi
exec python3 "$APP/infer.py" --engine "$ENGINE" "$@"
