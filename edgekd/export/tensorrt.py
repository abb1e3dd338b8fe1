"""TensorRT engines from the INT8 (Q/DQ) ONNX: the ``trtexec`` script and the Python-API build.

Engines are specific to one GPU model and one TensorRT version (REFERENCES.md, "Engines are
specific to the GPU model and TensorRT version: build on the target"), so the export stage always
writes ``build_engine.sh`` for the user to run on the device, and builds an engine here only when
``tensorrt`` imports and a GPU is present.

Flags by TensorRT version (decided from NVIDIA's docs; none of this can run on the development
machines, which have no GPU):

- TensorRT 8.x: the network is weakly typed, and TensorRT 8 honours Q/DQ layers only when the INT8
  builder flag is set, so the script passes ``--int8`` (explicit quantization: the scales come from
  the Q/DQ nodes, no calibrator) and ``--fp16`` so that layers left un-quantized by the mixed
  precision search (and the float glue between Q/DQ pairs) may run in FP16 instead of FP32.
  ``--buildOnly`` before 8.6, ``--skipInference`` from 8.6 (where ``--buildOnly`` was deprecated).
- TensorRT 10 and later: NVIDIA's guidance is "use explicit quantization with strong typing;
  precision-control build flags are not required and should not be specified" (REFERENCES.md: "With
  TensorRT 10, prefer strongly typed networks and no precision flags"). A strongly typed network
  runs every un-quantized layer in the type the ONNX gives it (FP32 here), so when the model keeps
  layers out of INT8 (``fp16_fallback=True``, the default: the safe choice when the caller does not
  know) the script builds weakly typed with ``--int8 --fp16`` as on TensorRT 8 (still supported on
  10.x), and with ``fp16_fallback=False`` (every weighted layer quantized) it builds with
  ``--stronglyTyped`` and no precision flags.

The script detects the installed TensorRT version from ``trtexec`` itself at run time (the banner
``[TensorRT v8502]`` / ``[TensorRT v100300]``), because a profile may list several JetPack stacks;
``TRT_MAJOR=10 ./build_engine.sh`` overrides the detection. The optimisation profile covers batch
1..max_batch with the optimum at batch 1 (edge inference is latency-bound); a timing cache next to
the engine makes rebuilds fast.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import EdgekdError

if TYPE_CHECKING:
    from edgekd.targets.profile import TargetProfile


def _major(version: str) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def build_engine_script(
    onnx_name: str,
    profile: TargetProfile,
    *,
    input_name: str,
    input_shape: tuple[int, int, int],
    max_batch: int | None = None,
    engine_name: str = "model.engine",
    fp16_fallback: bool = True,
) -> str:
    """The text of a bash script that builds ``engine_name`` from ``onnx_name`` with ``trtexec``.

    Both files are named relative to the script's own folder (the script ``cd``s there first), so the
    export folder can be copied to the device as a whole. ``input_shape`` is (C, H, W) without the
    batch; the optimisation profile spans batch 1..``max_batch`` (default ``profile.max_batch``).
    """
    batch = int(max_batch if max_batch is not None else profile.max_batch)
    if batch < 1:
        raise EdgekdError(f"max_batch must be >= 1 for the TensorRT optimisation profile, got {batch}")
    if len(input_shape) != 3:
        raise EdgekdError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    chw = "x".join(str(int(d)) for d in input_shape)
    cache_name = Path(engine_name).stem + ".timing.cache"
    majors = sorted({m for m in (_major(v) for v in profile.tensorrt) if m is not None})
    default_major = majors[-1] if majors else 10
    stacks = (
        ", ".join(f"JetPack {j} / TensorRT {t}" for j, t in zip(profile.jetpack, profile.tensorrt, strict=False))
        if profile.jetpack
        else (", ".join(f"TensorRT {t}" for t in profile.tensorrt) or "any TensorRT >= 8.2")
    )
    q = shlex.quote
    shapes = (
        f"--minShapes={q(f'{input_name}:1x{chw}')} "
        f"--optShapes={q(f'{input_name}:1x{chw}')} "
        f"--maxShapes={q(f'{input_name}:{batch}x{chw}')}"
    )
    ten_flags = "--int8 --fp16" if fp16_fallback else "--stronglyTyped"
    ten_why = "un-quantized layers kept: FP16 fallback" if fp16_fallback else "strongly typed, no precision flags"
    return f"""#!/usr/bin/env bash
# Build a TensorRT engine for {profile.display_name} from the INT8 Q/DQ ONNX (explicit quantization).
# Written by edgekd. Run it ON THE TARGET: engines are specific to the GPU model and TensorRT version.
# Stacks of this target: {stacks}.
# TensorRT 8.x: --int8 (needed for Q/DQ) --fp16 (fallback for layers left un-quantized).
# TensorRT >= 10: {ten_flags} ({ten_why}).
# Override: TRTEXEC=/path/to/trtexec, TRT_MAJOR=8|10, EXTRA_FLAGS="--useDLACore=0 --allowGPUFallback".
set -euo pipefail
cd "$(dirname "$0")"

ONNX={q(onnx_name)}
ENGINE={q(engine_name)}
CACHE={q(cache_name)}
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if [ ! -x "$TRTEXEC" ]; then
  echo "trtexec not found: install TensorRT (JetPack ships /usr/src/tensorrt/bin/trtexec) or set TRTEXEC=" >&2
  exit 2
fi
[ -f "$ONNX" ] || {{ echo "missing $ONNX next to this script" >&2; exit 2; }}

# Version from trtexec's banner: [TensorRT v8502] is 8.5.2, [TensorRT v100300] is 10.3.0.
if [ -z "${{TRT_MAJOR:-}}" ]; then
  V=$("$TRTEXEC" --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -n1 | tr -dc '0-9' || true)
  if [ -n "$V" ]; then
    if [ "$V" -ge 100000 ]; then TRT_MAJOR=$((V / 10000)); TRT_MINOR=$(((V / 100) % 100));
    else TRT_MAJOR=$((V / 1000)); TRT_MINOR=$(((V / 100) % 10)); fi
  else
    TRT_MAJOR={default_major}; TRT_MINOR=0
    echo "could not read the TensorRT version from trtexec; assuming TensorRT $TRT_MAJOR" >&2
  fi
fi
TRT_MINOR=${{TRT_MINOR:-0}}

if [ "$TRT_MAJOR" -ge 10 ]; then
  PRECISION="{ten_flags}"
  SKIP="--skipInference"
else
  PRECISION="--int8 --fp16"
  if [ "$TRT_MAJOR" -eq 8 ] && [ "$TRT_MINOR" -lt 6 ]; then SKIP="--buildOnly"; else SKIP="--skipInference"; fi
fi

set -x
"$TRTEXEC" --onnx="$ONNX" --saveEngine="$ENGINE" $PRECISION \\
  {shapes} \\
  --timingCacheFile="$CACHE" $SKIP ${{EXTRA_FLAGS:-}}
"""


def tensorrt_available() -> tuple[bool, str]:
    """(True, "") when ``tensorrt`` imports and a CUDA GPU is present, else (False, the reason)."""
    try:
        import tensorrt  # noqa: F401
    except Exception as err:  # ImportError, or a broken install that fails on import
        return False, f"tensorrt does not import ({type(err).__name__}: {err})"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU is visible (TensorRT needs an NVIDIA GPU to build or run an engine)"
    except Exception as err:
        return False, f"cannot query CUDA ({err})"
    return True, ""


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    input_name: str,
    input_shape: tuple[int, int, int],
    max_batch: int = 1,
    fp16_fallback: bool = True,
    timing_cache: str | Path | None = None,
    workspace_mib: int = 1024,
) -> dict[str, Any]:
    """Build a serialized engine with the TensorRT Python API (explicit quantization from Q/DQ).

    Same precision rules as :func:`build_engine_script`. Returns facts about the build (TensorRT
    version, seconds, engine bytes). Raises ``EdgekdError`` (one line) when TensorRT or a GPU is
    missing, or when the parser or the builder fails.
    """
    import time

    ok, why = tensorrt_available()
    if not ok:
        raise EdgekdError(f"cannot build a TensorRT engine here: {why}; run build_engine.sh on the target instead")
    import tensorrt as trt

    from edgekd.io import atomic_write_bytes

    major = _major(trt.__version__) or 0
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly = major >= 10 and not fp16_fallback
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgekdError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if not strongly:
        config.set_flag(trt.BuilderFlag.INT8)
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    c, h, w = (int(d) for d in input_shape)
    profile.set_shape(input_name, (1, c, h, w), (1, c, h, w), (int(max_batch), c, h, w))
    config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None and Path(timing_cache).exists():
        cache = config.create_timing_cache(Path(timing_cache).read_bytes())
    else:
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EdgekdError(f"TensorRT failed to build an engine from {onnx_path}; run build_engine.sh to see its log")
    data = bytes(serialized)
    atomic_write_bytes(engine_path, data)
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return {
        "tensorrt": trt.__version__,
        "strongly_typed": strongly,
        "fp16": (not strongly) and bool(builder.platform_has_fast_fp16),
        "build_seconds": round(seconds, 3),
        "engine_bytes": len(data),
        "max_batch": int(max_batch),
    }
