"""Run edgekd's TensorRT code against the real TensorRT Python bindings, without a GPU.

    python tests/trt_shadow.py BINDING_DIR OUT_JSON

``BINDING_DIR`` holds a ``tensorrt_bindings`` package unpacked from a pinned
``tensorrt-cu12-bindings`` wheel, next to placeholder ``libnvinfer``/``libnvonnxparser``/
``libnvinfer_plugin`` libraries built by the test (``tests/test_tensorrt_versions.py``): the real
extension module imports, so its classes, methods, properties, enums and pybind11 signatures are
the real ones of that TensorRT version, but nothing that needs the real libraries (or a GPU) can run.

So ``tensorrt`` is replaced by a *shadow* of the real module. Every attribute edgekd reads is looked
up on the real class (a missing one raises ``AttributeError`` exactly as the real module would);
every call is checked against the real pybind11 signature (argument count, keyword names, enum
arguments must be members of the real enum, interface arguments must be shadows of a compatible
real class); every property write must hit a real writable property. Return values are shadows of
the declared return class (``-> tensorrt.IBuilderConfig``), neutral values of plain types, or a
value a scenario supplies for one ``Class.member`` (an engine's tensor names, say). Enum values
are the real enum members. Nothing here is written per API: the real binding is the only source.

Each scenario runs edgekd code and records what it called; the JSON written to ``OUT_JSON`` maps
scenario names to ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import traceback
from pathlib import Path

CALLS: list[str] = []  # "Class.member" of every call, in order
OVERRIDES: dict[str, object] = {}  # "Class.member" -> value or callable(*args) for the return value


def _split_params(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([<{":
            depth += 1
        elif ch in ")]>}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def signatures(doc: str | None, name: str) -> list[tuple[list[tuple[str, str, bool]], str]]:
    """[(params [(name, type, has_default)] without self, return type)] parsed from a pybind11 docstring."""
    sigs = []
    for line in (doc or "").splitlines():
        m = re.match(r"^\s*(?:\d+\.\s*)?" + re.escape(name) + r"\((.*)\)\s*->\s*(.+?)\s*$", line)
        if not m:
            continue
        params = []
        for p in _split_params(m.group(1)):
            pname, _, rest = p.partition(":")
            ptype, eq, _ = rest.partition("=")
            params.append((pname.strip(), ptype.strip(), bool(eq)))
        if params and params[0][0] in ("self", "arg0") and "Overloaded" not in line:
            params = params[1:]
        sigs.append((params, m.group(2).strip()))
    return sigs


class Opaque:
    """A value of a type the binding declares but this harness does not model (printed, compared)."""

    def __init__(self, what: str):
        self.what = what

    def __str__(self) -> str:
        return f"<{self.what}>"


class Shadow:
    """An instance of a real TensorRT class, checked against it on every use."""

    def __init__(self, mod, cls: type):
        object.__setattr__(self, "_mod", mod)
        object.__setattr__(self, "_cls", cls)

    def __repr__(self) -> str:
        return f"Shadow({self._cls.__name__})"

    def __getattr__(self, name: str):
        cls = self._cls
        try:
            attr = getattr(cls, name)
        except AttributeError:
            raise AttributeError(
                f"TensorRT {self._mod.__version__}: {cls.__name__} has no attribute {name!r}"
            ) from None
        key = f"{cls.__name__}.{name}"
        if isinstance(attr, property):
            CALLS.append(key)
            sig = signatures(attr.fget.__doc__, "") if attr.fget else []
            ret = sig[0][1] if sig else "object"
            return self._mod._value(key, ret, ())
        if callable(attr):
            return self._mod._method(cls, name, attr)
        return attr

    def __setattr__(self, name: str, value) -> None:
        attr = getattr(self._cls, name, None)
        if not isinstance(attr, property) or attr.fset is None:
            raise AttributeError(
                f"TensorRT {self._mod.__version__}: {self._cls.__name__}.{name} is not a writable property"
            )
        CALLS.append(f"{self._cls.__name__}.{name}=")
        sig = signatures(attr.fset.__doc__, "")
        if sig and len(sig[0][0]) >= 1:
            self._mod._check_arg(f"{self._cls.__name__}.{name}", sig[0][0][-1][1], value)

    def __bytes__(self) -> bytes:
        if hasattr(self._cls, "nbytes"):  # IHostMemory: a serialized engine or timing cache
            return b"\0" * 16
        raise TypeError(f"{self._cls.__name__} is not a buffer")


class ShadowClass:
    """A real TensorRT class: attribute reads go to it; calling it checks ``__init__``'s signature."""

    def __init__(self, mod, cls: type):
        self._mod, self._cls = mod, cls

    def __getattr__(self, name: str):
        attr = getattr(self._cls, name)  # AttributeError as the real class raises it
        if isinstance(attr, type):
            return self._mod._wrap(attr)
        return attr

    def __call__(self, *args, **kwargs):
        self._mod._check_call(self._cls, "__init__", self._cls.__init__, args, kwargs)
        return Shadow(self._mod, self._cls)


class ShadowModule:
    """The ``tensorrt`` module as edgekd imports it, backed by the real binding module ``real``."""

    def __init__(self, real):
        self._real = real
        self.__version__ = real.__version__

    def __getattr__(self, name: str):
        attr = getattr(self._real, name)
        if isinstance(attr, type):
            return self._wrap(attr)
        return attr

    def _wrap(self, cls: type):
        return cls if hasattr(cls, "__members__") else ShadowClass(self, cls)  # enums: the real class

    def _real_class(self, type_text: str):
        m = re.fullmatch(r"tensorrt(?:_bindings)?\.tensorrt\.(\w+)", type_text)
        return getattr(self._real, m.group(1), None) if m else None

    def _value(self, key: str, ret: str, args: tuple):
        if key in OVERRIDES:
            v = OVERRIDES[key]
            return v(*args) if callable(v) else v
        if ret in ("None",):
            return None
        if ret == "bool":
            return True
        if ret in ("int", "typing.SupportsInt"):
            return 0
        if ret == "float":
            return 0.0
        if ret == "str":
            return ""
        cls = self._real_class(ret)
        if cls is None:
            return Opaque(ret)
        if hasattr(cls, "__members__"):
            return next(iter(cls.__members__.values()))
        return Shadow(self, cls)

    def _check_arg(self, where: str, type_text: str, value) -> None:
        cls = self._real_class(type_text)
        if cls is None:
            return
        if hasattr(cls, "__members__"):
            if not isinstance(value, cls):
                raise TypeError(f"TensorRT {self.__version__}: {where} takes a {cls.__name__}, got {value!r}")
        elif isinstance(value, Shadow):
            if not issubclass(value._cls, cls):
                raise TypeError(f"TensorRT {self.__version__}: {where} takes a {cls.__name__}, got {value!r}")
        elif re.fullmatch(r"I[A-Z]\w*", cls.__name__) and value is not None:
            raise TypeError(f"TensorRT {self.__version__}: {where} takes a {cls.__name__}, got {type(value).__name__}")

    def _check_call(self, cls: type, name: str, func, args: tuple, kwargs: dict):
        key = f"{cls.__name__}.{name}"
        sigs = signatures(func.__doc__, name)
        if not sigs:
            return "object"
        errors = []
        for params, ret in sigs:
            try:
                if len(args) > len(params):
                    raise TypeError(f"{len(args)} positional arguments, at most {len(params)}")
                names = [p[0] for p in params]
                for k in kwargs:
                    if k not in names[len(args) :]:
                        raise TypeError(f"no keyword argument {k!r} (has {names})")
                for i, (pname, ptype, has_default) in enumerate(params):
                    if i < len(args):
                        self._check_arg(key, ptype, args[i])
                    elif pname in kwargs:
                        self._check_arg(key, ptype, kwargs[pname])
                    elif not has_default:
                        raise TypeError(f"missing argument {pname!r}")
                return ret
            except TypeError as err:
                errors.append(str(err))
        raise TypeError(f"TensorRT {self.__version__}: {key}{tuple(args)} matches no signature: {'; '.join(errors)}")

    def _method(self, cls: type, name: str, func):
        def call(*args, **kwargs):
            ret = self._check_call(cls, name, func, args, kwargs)
            key = f"{cls.__name__}.{name}"
            CALLS.append(key)
            return self._value(key, ret, args)

        return call


# ---- scenarios ------------------------------------------------------------------------------------
def scenario_export(trt, tmp: Path) -> dict:
    """edgekd.runtimes.tensorrt.build.build_engine for every kind of model the export stage builds."""
    import edgekd.runtimes.tensorrt.build as export_trt

    export_trt.tensorrt_available = lambda: (True, "")
    OVERRIDES["EngineInspector.get_engine_information"] = '{"Layers": []}'
    onnx_path = tmp / "model.onnx"
    onnx_path.write_bytes(b"onnx")
    out = {}
    # first the call as the export stage made it before TensorRT 11 (defaults only), then each kind
    for key, kwargs in (
        ("default", {}),
        ("int8=True,fp16=True", {"int8": True, "fp16": True}),
        ("int8=False,fp16=True", {"int8": False, "fp16": True}),
        ("int8=False,fp16=False", {"int8": False, "fp16": False}),
    ):
        CALLS.clear()
        engine = tmp / f"{len(out)}.engine"
        common = {"input_name": "input", "input_shape": (3, 32, 32), "max_batch": 4}
        info = export_trt.build_engine(onnx_path, engine, timing_cache=tmp / "m.timing.cache", **common, **kwargs)
        out[key] = {
            "strongly_typed": info["strongly_typed"],
            "builder_flags": info.get("builder_flags"),
            "layers_written": (tmp / f"{len(out)}.layers.json").is_file(),
            "calls": list(CALLS),
        }
    return out


def scenario_calibrate(trt, tmp: Path) -> dict:
    """edgekd.targets.calibrate.build_grid_engine (``edgekd profile`` on a GPU) for each precision."""
    import onnx

    from edgekd.runtimes.tensorrt.grid import build_grid_engine
    from edgekd.targets.calibrate import GridPoint, build_point

    path = tmp / "layer.onnx"
    onnx.save(build_point(GridPoint("conv", 16, 16, 16)), str(path))
    logger = trt.Logger(trt.Logger.ERROR)
    out = {}
    for precision in ("fp32", "fp16", "int8"):
        CALLS.clear()
        build_grid_engine(trt, logger, path, precision)
        out[precision] = {"calls": list(CALLS)}
    return out


def scenario_bench(trt, tmp: Path) -> dict:
    """edgekd.runtimes.tensorrt.engine._Engine: deserialise an engine, find its inputs and outputs."""
    import edgekd.runtimes.tensorrt.engine as runtime

    _io_overrides(trt)
    runtime.tensorrt_available = lambda: (True, "")
    engine = tmp / "b.engine"
    engine.write_bytes(b"plan")
    CALLS.clear()

    class _Torch:  # the CUDA side is torch's, not TensorRT's: only a stream handle is needed here
        class cuda:  # noqa: N801
            class Stream:
                cuda_stream = 1234

    sys.modules["torch"], real_torch = _Torch, sys.modules.get("torch")
    try:
        eng = runtime._Engine(engine)
    finally:
        if real_torch is not None:
            sys.modules["torch"] = real_torch
    eng.execute()
    return {"inputs": eng.inputs, "outputs": eng.outputs, "calls": list(CALLS)}


def scenario_infer(trt, tmp: Path) -> dict:
    """The bundle's infer.py TensorRTRunner with a recording stand-in for the CUDA runtime."""
    import importlib.util

    import numpy as np

    _io_overrides(trt)
    OVERRIDES["IExecutionContext.get_tensor_shape"] = (2, 10)
    template = Path(__file__).resolve().parents[1] / "edgekd" / "package" / "templates" / "infer.py"
    spec = importlib.util.spec_from_file_location("bundle_infer", template)
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    cuda_calls: list[list] = []

    class FakeCuda:
        def __getattr__(self, name):
            def call(*args):
                cuda_calls.append([name, *[a if isinstance(a, int) else None for a in args]])
                return 4096 + len(cuda_calls) if name in ("malloc", "stream") else None

            return call

    infer._CudaRT = FakeCuda
    engine = tmp / "model.engine"
    engine.write_bytes(b"plan")
    CALLS.clear()
    runner = infer.TensorRTRunner(engine)
    y = runner(np.zeros((2, 1, 8, 8), np.float32))
    return {"shape": list(y.shape), "calls": list(CALLS), "cuda": cuda_calls, "stream": runner.stream}


def _io_overrides(trt) -> None:
    names = ["input", "logits"]
    mode = trt.TensorIOMode
    OVERRIDES["ICudaEngine.num_io_tensors"] = 2
    OVERRIDES["ICudaEngine.get_tensor_name"] = lambda i: names[i]
    OVERRIDES["ICudaEngine.get_tensor_mode"] = lambda n: mode.INPUT if n == "input" else mode.OUTPUT
    OVERRIDES["ICudaEngine.get_tensor_dtype"] = trt.DataType.FLOAT


def main() -> None:
    binding_dir, out_path = sys.argv[1], sys.argv[2]
    sys.path.insert(0, binding_dir)
    import tensorrt_bindings as real

    trt = ShadowModule(real)
    sys.modules["tensorrt"] = trt
    results = {"version": real.__version__}
    for name, fn in (
        ("export", scenario_export),
        ("calibrate", scenario_calibrate),
        ("bench", scenario_bench),
        ("infer", scenario_infer),
    ):
        OVERRIDES.clear()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                results[name] = {"ok": True, **fn(trt, Path(tmp))}
            except Exception as err:  # reported to the test, which names the scenario and version
                last = traceback.extract_tb(err.__traceback__)[-1]
                where = f"{Path(last.filename).name}:{last.lineno}"
                results[name] = {"ok": False, "error": f"{type(err).__name__}: {err} (at {where})"}
    Path(out_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
