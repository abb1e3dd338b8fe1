"""TensorRT engines from the INT8 (Q/DQ) or FP32 ONNX: the ``trtexec`` script and the Python-API build.

Engines are specific to one GPU model and one TensorRT version (REFERENCES.md, "Engines are
specific to the GPU model and TensorRT version: build on the target"), so the export stage always
writes ``build_engine.sh`` for the user to run on the device, and builds an engine here only when
``tensorrt`` imports and a GPU is present.

One precision rule for both paths, :func:`build_plan`, by TensorRT major version:

- TensorRT 11: every network is strongly typed and the precision flags are gone (the Python
  bindings 11.4 have no ``BuilderFlag.INT8``/``FP16``, no ``Builder.platform_has_fast_fp16``, no
  ``ITensor.set_dynamic_range``; trtexec 11 has no ``--int8``/``--fp16``/``--best``, and
  ``--stronglyTyped`` is a deprecated no-op). The ONNX says it all: INT8 from its Q/DQ nodes, FP16
  from the FP16 types and Casts the export stage writes around the layers kept out of INT8
  (edgekd/export/fp16_fallback.py). No precision flag is passed.
- TensorRT 10 (and 9): the same ONNX, built strongly typed (``--stronglyTyped``, the network flag
  ``STRONGLY_TYPED``) with no precision flags, NVIDIA's advice for Q/DQ networks (REFERENCES.md:
  "With TensorRT 10, prefer strongly typed networks and no precision flags"). Only an FP32 ONNX
  for an FP16 target is built weakly typed with ``--fp16`` (``BuilderFlag.FP16``), which 10.x still
  has.
- TensorRT 8: no strong typing; Q/DQ layers are honoured only with the INT8 flag, so the build is
  weakly typed with ``--int8 --fp16`` (``--fp16`` alone for an FP32 ONNX on an FP16 target).
  ``--buildOnly`` before 8.6, ``--skipInference`` from 8.6.

A Python build sets a builder flag only when the installed module still has it and the network is
weakly typed. The script detects the installed TensorRT version from ``trtexec`` itself at run time
(the banner ``[TensorRT v8502]`` / ``[TensorRT v100300]`` / ``[TensorRT v110400]``), because a
profile may list several JetPack stacks; ``TRT_MAJOR=10 ./build_engine.sh`` overrides the detection.
Which flags each trtexec accepts was read from its option parser (samples/common/sampleOptions.cpp
of NVIDIA/TensorRT at release/8.2, release/8.5, v8.6.1, v10.3.0 and v11.1; tests/data/trtexec_flags.json).

The optimisation profile covers batch 1..max_batch with the optimum at batch 1 (edge inference is
latency-bound); a timing cache next to the engine makes rebuilds fast. The build keeps detailed
profiling information in the engine and exports its layer information (``--exportLayerInfo``, or
the engine inspector in the Python build); the script then times each layer once at batch 1
(``--dumpProfile --exportProfile``; ``PROFILE=0`` skips it), and ``layer_report.py`` (shipped next to
the script) summarises which layers run in INT8, FP16 and FP32 and for how long.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import EdgekdError

if TYPE_CHECKING:
    from edgekd.targets.profile import TargetProfile


@dataclass(frozen=True)
class BuildPlan:
    """How to build one ONNX on one TensorRT major version (see the module docstring)."""

    strongly_typed: bool
    builder_flags: tuple[str, ...]  # names in trt.BuilderFlag, set only on a weakly typed network
    trtexec_flags: tuple[str, ...]
    why: str


def _major(version: str) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def build_plan(major: int, *, int8: bool, fp16: bool) -> BuildPlan:
    """The precision settings for TensorRT ``major``: ``int8`` when the ONNX has Q/DQ nodes, ``fp16``
    when the target may run FP16 (its precision is fp16 or int8)."""
    if major >= 11:
        return BuildPlan(True, (), (), "strongly typed: precisions from the ONNX types and Q/DQ")
    if major >= 9 and (int8 or not fp16):
        return BuildPlan(True, (), ("--stronglyTyped",), "strongly typed: precisions from the ONNX types and Q/DQ")
    if major >= 9:
        return BuildPlan(False, ("FP16",), ("--fp16",), "FP32 ONNX: weakly typed FP16 engine")
    names = (("INT8",) if int8 else ()) + (("FP16",) if fp16 else ())
    why = "weakly typed: --int8 honours the Q/DQ nodes" if int8 else "weakly typed"
    return BuildPlan(False, names, tuple("--" + n.lower() for n in names), why)


def layer_files(engine_name: str) -> dict[str, str]:
    """Names of the layer-report files that go next to ``engine_name`` (same folder, same stem)."""
    stem = str(Path(engine_name).with_suffix(""))
    return {
        "layers": stem + ".layers.json",  # trtexec --exportLayerInfo / the engine inspector
        "profile": stem + ".profile.json",  # trtexec --exportProfile: ms per layer
        "log": stem + ".profile.log",  # trtexec's output of the profiling run (--dumpProfile)
        "report": stem + ".layer_report.json",  # layer_report.py: precision and time per layer
        "report_md": stem + ".layer_report.md",
    }


def build_engine_script(
    onnx_name: str,
    profile: TargetProfile,
    *,
    input_name: str,
    input_shape: tuple[int, int, int],
    max_batch: int | None = None,
    engine_name: str = "model.engine",
    int8: bool = True,
    fp16: bool | None = None,
) -> str:
    """The text of a bash script that builds ``engine_name`` from ``onnx_name`` with ``trtexec``.

    Both files are named relative to the script's own folder (the script ``cd``s there first), so the
    export folder can be copied to the device as a whole. ``input_shape`` is (C, H, W) without the
    batch; the optimisation profile spans batch 1..``max_batch`` (default ``profile.max_batch``).
    ``int8``: the ONNX has Q/DQ nodes; ``fp16`` (default: the target's precision is not fp32): an FP32
    ONNX may be built as FP16 where the TensorRT version still has the flag.
    """
    batch = int(max_batch if max_batch is not None else profile.max_batch)
    if batch < 1:
        raise EdgekdError(f"max_batch must be >= 1 for the TensorRT optimisation profile, got {batch}")
    if len(input_shape) != 3:
        raise EdgekdError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    if fp16 is None:
        fp16 = profile.precision != "fp32"
    chw = "x".join(str(int(d)) for d in input_shape)
    cache_name = Path(engine_name).stem + ".timing.cache"
    files = layer_files(engine_name)
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
    plans = {m: build_plan(m, int8=int8, fp16=fp16) for m in (8, 10, 11)}
    flags = {m: " ".join(p.trtexec_flags) for m, p in plans.items()}
    what = "the INT8 Q/DQ ONNX (explicit quantization)" if int8 else "the FP32 ONNX"
    return f"""#!/usr/bin/env bash
# Build a TensorRT engine for {profile.display_name} from {what}, then report its layers.
# Written by edgekd. Run it ON THE TARGET: engines are specific to the GPU model and TensorRT version.
# Stacks of this target: {stacks}.
# TensorRT 8.x: {flags[8] or "no precision flag"} ({plans[8].why}).
# TensorRT 9.x/10.x: {flags[10] or "no precision flag"} ({plans[10].why}).
# TensorRT >= 11: {flags[11] or "no precision flag"} ({plans[11].why}; 11.x has no --int8/--fp16).
# Layer report: {files["layers"]}, {files["profile"]}, {files["report_md"]} (PROFILE=0 skips the timing run).
# Override: TRTEXEC=/path/to/trtexec, TRT_MAJOR=8|10|11, EXTRA_FLAGS="--useDLACore=0 --allowGPUFallback".
set -euo pipefail
cd "$(dirname "$0")"

ONNX={q(onnx_name)}
ENGINE={q(engine_name)}
CACHE={q(cache_name)}
LAYERS={q(files["layers"])}
PROFILE_JSON={q(files["profile"])}
PROFILE_LOG={q(files["log"])}
REPORT={q(files["report"])}
REPORT_MD={q(files["report_md"])}
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if [ ! -x "$TRTEXEC" ]; then
  echo "trtexec not found: install TensorRT (JetPack ships /usr/src/tensorrt/bin/trtexec) or set TRTEXEC=" >&2
  exit 2
fi
[ -f "$ONNX" ] || {{ echo "missing $ONNX next to this script" >&2; exit 2; }}

# Version from trtexec's banner: [TensorRT v8502] is 8.5.2, [TensorRT v100300] is 10.3.0, [TensorRT v110400] 11.4.0.
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

SKIP="--skipInference"
if [ "$TRT_MAJOR" -ge 11 ]; then
  PRECISION="{flags[11]}"
elif [ "$TRT_MAJOR" -ge 9 ]; then
  PRECISION="{flags[10]}"
else
  PRECISION="{flags[8]}"
  if [ "$TRT_MAJOR" -eq 8 ] && [ "$TRT_MINOR" -lt 6 ]; then SKIP="--buildOnly"; fi
fi

set -x
"$TRTEXEC" --onnx="$ONNX" --saveEngine="$ENGINE" $PRECISION \\
  {shapes} \\
  --timingCacheFile="$CACHE" --profilingVerbosity=detailed --exportLayerInfo="$LAYERS" $SKIP ${{EXTRA_FLAGS:-}}
set +x

# Layer report: time every layer once at batch 1, then summarise precision and time per layer.
if [ "${{PROFILE:-1}}" != 0 ]; then
  if "$TRTEXEC" --loadEngine="$ENGINE" --shapes={q(f"{input_name}:1x{chw}")} --profilingVerbosity=detailed \\
      --exportLayerInfo="$LAYERS" --dumpProfile --exportProfile="$PROFILE_JSON" > "$PROFILE_LOG" 2>&1; then
    echo "layer timings: $PROFILE_JSON (trtexec output in $PROFILE_LOG)"
  else
    echo "the layer timing run failed (see $PROFILE_LOG); the engine is built, the report has no times" >&2
    rm -f "$PROFILE_JSON"
  fi
fi
if [ -f layer_report.py ] && command -v python3 > /dev/null; then
  python3 layer_report.py "$LAYERS" "$PROFILE_JSON" --json "$REPORT" > "$REPORT_MD" && cat "$REPORT_MD" \\
    || echo "layer_report.py could not summarise $LAYERS" >&2
fi
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


def network_flags(trt: Any, strongly_typed: bool) -> int:
    """``create_network`` flags: EXPLICIT_BATCH before TensorRT 10, STRONGLY_TYPED on 9.x/10.x when
    asked; none on 11.x, where every network is strongly typed and the flag is a deprecated no-op."""
    major = _major(trt.__version__) or 0
    members = trt.NetworkDefinitionCreationFlag.__members__
    flags = 0
    if major < 10 and "EXPLICIT_BATCH" in members:
        flags |= 1 << int(members["EXPLICIT_BATCH"])
    if strongly_typed and major < 11:
        if "STRONGLY_TYPED" not in members:
            raise EdgekdError(f"TensorRT {trt.__version__} has no strongly typed networks; use TensorRT >= 9")
        flags |= 1 << int(members["STRONGLY_TYPED"])
    return flags


def set_precision_flags(trt: Any, builder: Any, config: Any, plan: BuildPlan) -> list[str]:
    """Set the plan's builder flags that this TensorRT still has (FP16 only where the GPU has fast
    FP16, on versions that can say so); returns the names set."""
    if plan.strongly_typed:
        return []
    done = []
    for name in plan.builder_flags:
        flag = trt.BuilderFlag.__members__.get(name)
        if flag is None:
            continue
        if name == "FP16" and not getattr(builder, "platform_has_fast_fp16", True):
            continue
        config.set_flag(flag)
        done.append(name)
    return done


def engine_layer_info(trt: Any, logger: Any, serialized: bytes) -> str:
    """The engine's layer information as JSON text (the engine inspector; the build asked for
    detailed profiling verbosity). Empty when the engine cannot be deserialised here."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None:
        return ""
    inspector = engine.create_engine_inspector()
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    input_name: str,
    input_shape: tuple[int, int, int],
    max_batch: int = 1,
    int8: bool = True,
    fp16: bool = True,
    timing_cache: str | Path | None = None,
    workspace_mib: int = 1024,
) -> dict[str, Any]:
    """Build a serialized engine with the TensorRT Python API (explicit quantization from Q/DQ).

    Same precision rules as :func:`build_engine_script` (:func:`build_plan`). Writes the engine, and
    its layer information next to it (``layer_files``). Returns facts about the build (TensorRT
    version, typing, flags, seconds, engine bytes). Raises ``EdgekdError`` (one line) when TensorRT
    or a GPU is missing, or when the parser or the builder fails.
    """
    import time

    ok, why = tensorrt_available()
    if not ok:
        raise EdgekdError(f"cannot build a TensorRT engine here: {why}; run build_engine.sh on the target instead")
    import tensorrt as trt

    from edgekd.io import atomic_write_bytes, atomic_write_text

    plan = build_plan(_major(trt.__version__) or 0, int8=int8, fp16=fp16)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, plan.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgekdError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    flags = set_precision_flags(trt, builder, config, plan)
    profile = builder.create_optimization_profile()
    c, h, w = (int(d) for d in input_shape)
    profile.set_shape(input_name, (1, c, h, w), (1, c, h, w), (int(max_batch), c, h, w))
    config.add_optimization_profile(profile)
    blob = b""
    if timing_cache is not None and Path(timing_cache).exists():
        blob = Path(timing_cache).read_bytes()
    config.set_timing_cache(config.create_timing_cache(blob), False)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EdgekdError(f"TensorRT failed to build an engine from {onnx_path}; run build_engine.sh to see its log")
    data = bytes(serialized)
    atomic_write_bytes(engine_path, data)
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    layers = engine_layer_info(trt, logger, data)
    layers_path = Path(layer_files(str(engine_path))["layers"])
    if layers:
        atomic_write_text(layers_path, layers)
    return {
        "tensorrt": trt.__version__,
        "strongly_typed": plan.strongly_typed,
        "builder_flags": flags,
        "build_seconds": round(seconds, 3),
        "engine_bytes": len(data),
        "max_batch": int(max_batch),
        "layers": layers_path.name if layers else None,
    }
