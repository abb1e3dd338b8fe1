"""``build_engine.sh`` of a bundle: ``trtexec`` on the device, a layer report, then a sidecar naming where it ran.

The script is ``edgekd.runtimes.tensorrt.build.build_engine_script`` for both an INT8 (Q/DQ) model and an
FP32 one (a target without INT8, such as the Jetson Nano, or a run without the quantize stage): it
detects the TensorRT version on the device and passes only the flags that version accepts
(``build_plan``). An FP32 model never gets ``--int8``, which without Q/DQ nodes or a calibrator
builds with placeholder scales; it gets ``--fp16`` where the target's precision is fp16 or int8 and
the TensorRT version still has the flag (8.x, 10.x; on 11.x an FP32 ONNX builds an FP32 engine).
The engine goes to ``$EDGEKD_ENGINE_DIR/model.engine`` (default ``engine/`` beside the script; the
container sets ``/app/engine``, its volume), its timing cache and layer report next to it (``engine/model.layers.json``,
``model.profile.json``, ``model.layer_report.md``, summarised by the bundle's ``layer_report.py``),
and a sidecar ``engine/model.engine.json`` records the TensorRT version and GPU it was built with;
``infer.py`` uses an engine only when both match the machine it runs on."""

from __future__ import annotations

import re

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
    from edgekd.runtimes.tensorrt.build import build_engine_script

    text = build_engine_script(
        onnx_name, profile, input_name=input_name, input_shape=input_shape, engine_name=ENGINE, int8=int8
    )
    head = 'cd "$(dirname "$0")"\n'
    text = text.replace(head, head + 'ENGINE_DIR="${EDGEKD_ENGINE_DIR:-engine}"\nmkdir -p "$ENGINE_DIR"\n', 1)
    # the engine, its timing cache and its layer report all live in ENGINE_DIR (a volume in the container)
    text = re.sub(r"^(?!ONNX=)([A-Z_]+)=(?:engine/)?(model\.[\w.]+)$", r'\1="$ENGINE_DIR"/\2', text, flags=re.M)
    return text.rstrip("\n") + "\n" + _SIDECAR
