#!/usr/bin/env bash
# Container entrypoint of an edgekd bundle for a TensorRT target. On the first start (or when the
# GPU or TensorRT version changed) it builds the engine from the ONNX model ON THIS DEVICE, into
# $EDGEKD_ENGINE_DIR: the Dockerfile sets it to /app/engine, its VOLUME, so a volume mounted there
# keeps the engine between starts (outside a container the default is engine/ beside this file,
# where build_engine.sh and infer.py look too); then it runs infer.py.
# `--build-engine` only builds (or checks) the engine and exits: fill the volume before the first real start.
# An engine only fits the GPU model and TensorRT version it was built with, so none is shipped.
set -euo pipefail
APP="$(cd "$(dirname "$0")" && pwd)"
ENGINE_DIR="${EDGEKD_ENGINE_DIR:-$APP/engine}"
export EDGEKD_ENGINE_DIR="$ENGINE_DIR"
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
else:
    print(f"entrypoint: reusing the TensorRT engine {sys.argv[2]} (built on this GPU and TensorRT version)",
          file=sys.stderr)
sys.exit(1 if reason else 0)
PY
then
  "$APP/build_engine.sh"
fi
if [ "${1:-}" = "--build-engine" ]; then
  exit 0
fi
exec python3 "$APP/infer.py" --engine "$ENGINE" "$@"
