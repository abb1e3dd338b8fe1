"""``build_engine.sh`` of a bundle: ``trtexec`` on the device, then a sidecar naming where it ran.

For an INT8 (Q/DQ) model the script is ``edgekd.export.tensorrt.build_engine_script`` (flags per
TensorRT version, from the INT8 export work). An FP32 model (a target without INT8, such as the
Jetson Nano, or a run without the quantize stage) must not get ``--int8``, which without Q/DQ
nodes or a calibrator builds with placeholder scales; it gets ``--fp16`` when the target's
precision is fp16 or int8 and no precision flag for fp32. Either way the engine goes to
``engine/model.engine`` and a sidecar ``engine/model.engine.json`` records the TensorRT version and
GPU it was built with; ``infer.py`` uses an engine only when both match the machine it runs on.
"""

from __future__ import annotations

import shlex

from edgekd.targets.profile import TargetProfile

ENGINE = "engine/model.engine"

_SIDECAR = """
set +x
# Record where this engine was built: infer.py refuses an engine from another GPU or TensorRT version.
python3 - "$ENGINE" "$ONNX" <<'PY'
import hashlib, json, sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
import tensorrt
from infer import _gpu_name
engine, onnx = Path(sys.argv[1]), Path(sys.argv[2])
info = {"tensorrt": tensorrt.__version__, "gpu": _gpu_name(), "onnx": onnx.name,
        "onnx_sha256": hashlib.sha256(onnx.read_bytes()).hexdigest()}
Path(str(engine) + ".json").write_text(json.dumps(info, indent=2) + "\\n")
print(f"built {engine} with TensorRT {info['tensorrt']} on {info['gpu']}")
PY
"""


def engine_script(
    onnx_name: str, profile: TargetProfile, *, int8: bool, input_name: str, input_shape: tuple[int, int, int]
) -> str:
    if int8:
        from edgekd.export.tensorrt import build_engine_script

        text = build_engine_script(
            onnx_name, profile, input_name=input_name, input_shape=input_shape, engine_name=ENGINE
        )
    else:
        text = _float_script(onnx_name, profile, input_name=input_name, input_shape=input_shape)
    text = text.replace('cd "$(dirname "$0")"\n', 'cd "$(dirname "$0")"\nmkdir -p engine\n', 1)
    return text.rstrip("\n") + "\n" + _SIDECAR


def _float_script(onnx_name: str, profile: TargetProfile, *, input_name: str, input_shape) -> str:
    chw = "x".join(str(int(d)) for d in input_shape)
    q = shlex.quote
    flag = "" if profile.precision == "fp32" else "--fp16"
    return f"""#!/usr/bin/env bash
# Build a TensorRT engine for {profile.display_name} from the FP32 ONNX ({flag or "FP32"}).
# Written by edgekd. Run it ON THE TARGET: engines are specific to the GPU model and TensorRT version.
# Override: TRTEXEC=/path/to/trtexec, EXTRA_FLAGS="...".
set -euo pipefail
cd "$(dirname "$0")"

ONNX={q(onnx_name)}
ENGINE={q(ENGINE)}
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if [ ! -x "$TRTEXEC" ]; then
  echo "trtexec not found: install TensorRT (JetPack ships /usr/src/tensorrt/bin/trtexec) or set TRTEXEC=" >&2
  exit 2
fi
set -x
"$TRTEXEC" --onnx="$ONNX" --saveEngine="$ENGINE" {flag} \\
  --minShapes={q(f"{input_name}:1x{chw}")} --optShapes={q(f"{input_name}:1x{chw}")} \\
  --maxShapes={q(f"{input_name}:{profile.max_batch}x{chw}")} ${{EXTRA_FLAGS:-}}
"""
