"""edgekd's TensorRT code against the real TensorRT 10.3 and 11.4 Python bindings (no GPU needed).

The pinned ``tensorrt-cu12-bindings`` wheels (about 1.2 MB each) are downloaded by ``make venv`` into
``.venv/trt-wheels/`` (``EDGEKD_TRT_WHEELS`` names another folder); nothing downloads at test time,
and the tests skip, saying so, when the wheels are absent. Each wheel is unpacked into a temporary
folder next to placeholder ``libnvinfer``/``libnvonnxparser``/``libnvinfer_plugin`` libraries compiled
here with ``cc`` (the extension needs nine C symbols from them to load: ``nm -D --undefined-only``),
so the real extension module imports, and ``tests/trt_shadow.py`` runs edgekd's engine build,
grid-profiling build, bench runtime and the bundle's ``infer.py`` against it in a subprocess (one
per version: the two extensions cannot share a process). See that file for how calls are checked.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WHEELS = {"10.3": "tensorrt_cu12_bindings-10.3.0-*.whl", "11.4": "tensorrt_cu12_bindings-11.4.0.106-*.whl"}
STUB_SYMBOLS = (
    "createInferBuilder_INTERNAL createInferRefitter_INTERNAL createInferRuntime_INTERNAL getBuilderPluginRegistry "
    "getPluginRegistry createNvOnnxParser_INTERNAL createNvOnnxParserRefitter_INTERNAL getNvOnnxParserVersion "
    "initLibNvInferPlugins"
).split()


def _wheel_dirs() -> list[Path]:
    env = os.environ.get("EDGEKD_TRT_WHEELS")
    return [Path(env)] if env else [Path(sys.prefix) / "trt-wheels", REPO / ".venv" / "trt-wheels"]


def _wheel(version: str) -> Path | None:
    for folder in _wheel_dirs():
        found = sorted(folder.glob(WHEELS[version])) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def _binding(version: str, root: Path) -> Path:
    wheel = _wheel(version)
    if wheel is None:
        pytest.skip(
            f"no tensorrt-cu12-bindings {version} wheel in {' or '.join(map(str, _wheel_dirs()))}: run make venv"
        )
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the placeholder TensorRT libraries")
    folder = root / version
    with zipfile.ZipFile(wheel) as z:
        z.extractall(folder)
    package = folder / "tensorrt_bindings"
    source = root / "stubs.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in STUB_SYMBOLS))
    major = version.split(".")[0]
    for lib in ("nvinfer", "nvonnxparser", "nvinfer_plugin"):
        out = package / f"lib{lib}.so.{major}"
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(source)], check=True, capture_output=True)
    return folder


@pytest.fixture(scope="module", params=sorted(WHEELS))
def shadow_run(request, tmp_path_factory) -> dict:
    """The JSON that tests/trt_shadow.py writes for one TensorRT version."""
    root = tmp_path_factory.mktemp("trt")
    folder = _binding(request.param, root)
    out = root / "result.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "trt_shadow.py"), str(folder), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["version"].startswith(request.param)
    return result


def _ok(result: dict, scenario: str) -> dict:
    record = result[scenario]
    assert record["ok"], f"TensorRT {result['version']}, {scenario}: {record['error']}"
    return record


def test_export_engine_build_runs_on_the_real_binding(shadow_run):
    record = _ok(shadow_run, "export")
    major = int(shadow_run["version"].split(".")[0])
    assert record["default"]["strongly_typed"] and "IBuilderConfig.set_flag" not in record["default"]["calls"]
    int8 = record["int8=True,fp16=True"]
    assert int8["strongly_typed"] and int8["builder_flags"] == []  # INT8 from Q/DQ, FP16 from the ONNX
    assert "IBuilderConfig.set_flag" not in int8["calls"]
    assert int8["layers_written"] and "EngineInspector.get_engine_information" in int8["calls"]
    fp32_as_fp16 = record["int8=False,fp16=True"]
    if major >= 11:  # no precision flags exist: an FP32 ONNX builds an FP32 engine
        assert fp32_as_fp16["strongly_typed"] and fp32_as_fp16["builder_flags"] == []
    else:
        assert not fp32_as_fp16["strongly_typed"] and fp32_as_fp16["builder_flags"] == ["FP16"]
    assert record["int8=False,fp16=False"]["builder_flags"] == []


def test_grid_profiling_build_runs_on_the_real_binding(shadow_run):
    record = _ok(shadow_run, "calibrate")
    for precision in ("fp32", "fp16", "int8"):  # precisions in the ONNX types: no flags, no dynamic ranges
        calls = record[precision]["calls"]
        assert "Builder.build_serialized_network" in calls
        assert "IBuilderConfig.set_flag" not in calls and "ITensor.set_dynamic_range" not in calls


def test_bench_runtime_runs_on_the_real_binding(shadow_run):
    record = _ok(shadow_run, "bench")
    assert record["inputs"] == ["input"] and record["outputs"] == ["logits"]
    assert "IExecutionContext.execute_async_v3" in record["calls"]


def test_bundle_infer_runs_on_its_own_cuda_stream(shadow_run):
    record = _ok(shadow_run, "infer")
    assert record["shape"] == [2, 10]
    assert record["stream"], "execute_async_v3 must not run on the legacy default stream (0)"
    names = [c[0] for c in record["cuda"]]
    assert "stream" in names and "stream_sync" in names and "sync" not in names
    assert "IExecutionContext.execute_async_v3" in record["calls"]


def _trt_chains() -> set[tuple[str, str]]:
    """(file, "trt.A.B") for every attribute chain on the tensorrt module in edgekd's sources."""
    chains = set()
    for path in sorted((REPO / "edgekd").rglob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = {"tensorrt"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases |= {a.asname or a.name for a in node.names if a.name == "tensorrt"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                parts, cur = [], node
                while isinstance(cur, ast.Attribute):
                    parts.append(cur.attr)
                    cur = cur.value
                if isinstance(cur, ast.Name) and cur.id in aliases:
                    chains.add((str(path.relative_to(REPO)), ".".join(["tensorrt", *reversed(parts)])))
    return chains


def test_every_module_symbol_edgekd_names_exists(shadow_run, tmp_path):
    """Static half: every ``trt.X.Y`` in edgekd's sources (including the bundle templates) resolves on
    the real module. Instance members (``builder.platform_has_fast_fp16``) are checked by the runs above."""
    chains = sorted({c for _, c in _trt_chains()})
    assert "tensorrt.Builder" in chains
    folder = _binding(shadow_run["version"][:4], tmp_path)
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import tensorrt_bindings as t\n"
        "missing = []\n"
        "for chain in json.loads(sys.argv[2]):\n"
        "    obj = t\n"
        "    for part in chain.split('.')[1:]:\n"
        "        if part == '__version__': break\n"
        "        if not hasattr(obj, part): missing.append(chain); break\n"
        "        obj = getattr(obj, part)\n"
        "print(json.dumps(missing))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder), json.dumps(chains)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    missing = json.loads(done.stdout)
    where = {c: f for f, c in _trt_chains()}
    assert not missing, f"TensorRT {shadow_run['version']} lacks " + ", ".join(f"{c} ({where[c]})" for c in missing)
