#!/usr/bin/env python3
"""Run the model of this bundle (written by `edgekd package`; needs only numpy, Pillow and a runtime).

    python3 infer.py IMAGE [IMAGE ...]          # top-k classes of image files
    python3 infer.py --npz val.npz              # x: uint8 images (N,H,W[,C] or N,C,H,W); with y: accuracy
    python3 infer.py --npz val.npz --bench      # also time batch 1 (p50/p90/p99 ms) and --batch throughput

Runtime: TensorRT when the `tensorrt` package is importable and an engine built on THIS device
exists (see build_engine.sh; the engine's .json sidecar must name this GPU and TensorRT version),
else ONNX Runtime. Force one with --runtime. Preprocessing (size, layout, mean, std) is read from
preprocess.json, the same as edgekd used when it measured the accuracy in manifest.json.

Written for Python 3.6+ (JetPack 4 ships 3.6): no newer syntax, no type-annotation generics.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# Where build_engine.sh and entrypoint.sh put the engine: $EDGEKD_ENGINE_DIR (the Dockerfile sets it to
# its volume, /app/engine), else engine/ beside this file.
ENGINE_DIR = Path(os.environ.get("EDGEKD_ENGINE_DIR") or HERE / "engine")


def load_preprocess(path):
    return json.loads(path.read_text())


def resize_center_crop(image, size_hw):
    """Shorter side to the model's side (bilinear), then the central crop, as edgekd's ImageFolder does."""
    from PIL import Image

    h_out, w_out = size_hw
    w, h = image.size
    scale = max(h_out / h, w_out / w)
    nw, nh = max(w_out, round(w * scale)), max(h_out, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), getattr(Image, "Resampling", Image).BILINEAR)
    left, top = (nw - w_out) // 2, (nh - h_out) // 2
    return image.crop((left, top, left + w_out, top + h_out))


def read_images(paths, pre):
    """Image files -> uint8 (N, C, H, W)."""
    from PIL import Image

    c, h, w = pre["shape"]
    out = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("L" if c == 1 else "RGB")
            arr = np.asarray(resize_center_crop(im, (h, w)), dtype=np.uint8)
        out.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(out)


def fail(message):
    """A problem with the input: one line on stderr, exit code 2 (as edgekd's own errors)."""
    print("infer.py: error: " + " ".join(str(message).split()), file=sys.stderr)
    sys.exit(2)


def read_npz(path, pre):
    """``x`` as uint8 (N, C, H, W) (accepts N,H,W / N,H,W,C / N,C,H,W; floats in [0, 1]) and ``y`` if present."""
    import zipfile

    c = pre["shape"][0]
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                fail(
                    "{}: no array x (it has: {}); save images as x (and labels as y)".format(
                        path, ", ".join(data.files) or "none"
                    )
                )
            x = data["x"]
            y = data["y"] if "y" in data.files else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        fail(
            "cannot read {} as an .npz of numeric arrays ({}); save it with np.savez(path, x=uint8 images, "
            "y=int labels), without object arrays".format(path, first)
        )
    for name, arr in (("x", x), ("y", y)):
        if arr is not None and not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            fail(
                "{}: {} has dtype {}; expected numbers (x: uint8 pixels or floats in [0, 1], y: int labels)".format(
                    path, name, arr.dtype
                )
            )
    if y is not None:
        y = y.astype(np.int64).reshape(-1)
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] != c and x.shape[-1] == c:
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(pre["shape"]):
        fail(f"{path}: x has shape {x.shape}, expected (N, {', '.join(map(str, pre['shape']))})")
    return np.ascontiguousarray(x), y


def normalize(x, pre):
    mean = np.asarray(pre["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(pre["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return ((x.astype(np.float32) / np.float32(255.0)) - mean) / std


class OnnxRuntimeRunner:
    name = "onnxruntime"

    def __init__(self, model, threads):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        first = self.session.get_inputs()[0].shape[0]
        self.fixed = first if isinstance(first, int) else None
        self.detail = f"onnxruntime {ort.__version__} CPU, {model.name}"

    def __call__(self, x):
        if self.fixed is None or self.fixed == x.shape[0]:
            return self.session.run(None, {self.input: x})[0]
        outs = []
        for i in range(0, x.shape[0], self.fixed):
            chunk = x[i : i + self.fixed]
            pad = self.fixed - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            outs.append(self.session.run(None, {self.input: chunk})[0][: self.fixed - pad])
        return np.concatenate(outs)


class _CudaRT:
    """The few CUDA runtime calls TensorRT needs, through ctypes (no pycuda / cuda-python needed)."""

    def __init__(self):
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("cudart") or "libcudart.so"
        self.lib = ctypes.CDLL(name)
        self.ctypes = ctypes

    def _check(self, code, what):
        if code != 0:
            raise RuntimeError(f"{what} failed with CUDA error {code}")

    def malloc(self, nbytes):
        ptr = self.ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(self.ctypes.byref(ptr), self.ctypes.c_size_t(nbytes)), "cudaMalloc")
        return ptr.value

    def copy(self, dst, src, nbytes, kind):  # kind 1: host->device, 2: device->host
        c = self.ctypes
        code = self.lib.cudaMemcpy(c.c_void_p(dst), c.c_void_p(src), c.c_size_t(nbytes), c.c_int(kind))
        self._check(code, "cudaMemcpy")

    def sync(self):
        self._check(self.lib.cudaDeviceSynchronize(), "cudaDeviceSynchronize")

    def stream(self):
        """A new CUDA stream (TensorRT's enqueue should not run on the legacy default stream)."""
        handle = self.ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(self.ctypes.byref(handle)), "cudaStreamCreate")
        return handle.value

    def copy_async(self, dst, src, nbytes, kind, stream):  # kind 1: host->device, 2: device->host
        c = self.ctypes
        args = (c.c_void_p(dst), c.c_void_p(src), c.c_size_t(nbytes), c.c_int(kind), c.c_void_p(stream))
        code = self.lib.cudaMemcpyAsync(*args)
        self._check(code, "cudaMemcpyAsync")

    def stream_sync(self, stream):
        self._check(self.lib.cudaStreamSynchronize(self.ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def free(self, ptr):
        self.lib.cudaFree(self.ctypes.c_void_p(ptr))


class TensorRTRunner:
    """A TensorRT engine: the tensor-name API of TensorRT >= 8.5, the binding API before it."""

    name = "tensorrt"

    def __init__(self, engine_path):
        import tensorrt as trt

        self.trt = trt
        self.cuda = _CudaRT()
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load {engine_path}; rebuild it on this device (build_engine.sh)")
        self.context = self.engine.create_execution_context()
        self.named = hasattr(self.engine, "num_io_tensors")
        if self.named:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            is_input = [self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names]
        else:
            names = [self.engine.get_binding_name(i) for i in range(self.engine.num_bindings)]
            is_input = [self.engine.binding_is_input(i) for i in range(self.engine.num_bindings)]
        self.input = names[is_input.index(True)]
        self.output = names[is_input.index(False)]
        self.names = names
        self.stream = self.cuda.stream() if self.named else None  # execute_async_v3 runs on its own stream
        self.buffers = {}  # name -> (device pointer, bytes)
        self.detail = f"tensorrt {trt.__version__}, {engine_path.name}"

    def _buffer(self, name, nbytes):
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cuda.free(ptr)
            ptr, size = self.cuda.malloc(nbytes), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def __call__(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.named:
            self.context.set_input_shape(self.input, x.shape)
            out_shape = tuple(self.context.get_tensor_shape(self.output))
        else:
            self.context.set_binding_shape(self.names.index(self.input), x.shape)
            out_shape = tuple(self.context.get_binding_shape(self.names.index(self.output)))
        out = np.empty(out_shape, dtype=np.float32)
        d_in, d_out = self._buffer(self.input, x.nbytes), self._buffer(self.output, out.nbytes)
        if self.named:
            self.cuda.copy_async(d_in, x.ctypes.data, x.nbytes, 1, self.stream)
            self.context.set_tensor_address(self.input, d_in)
            self.context.set_tensor_address(self.output, d_out)
            ok = self.context.execute_async_v3(self.stream)
            if ok:
                self.cuda.copy_async(out.ctypes.data, d_out, out.nbytes, 2, self.stream)
            self.cuda.stream_sync(self.stream)
            if not ok:
                raise RuntimeError("TensorRT execution failed")
            return out
        self.cuda.copy(d_in, x.ctypes.data, x.nbytes, 1)
        bindings = [0] * len(self.names)
        bindings[self.names.index(self.input)], bindings[self.names.index(self.output)] = d_in, d_out
        ok = self.context.execute_v2(bindings)
        self.cuda.sync()
        if not ok:
            raise RuntimeError("TensorRT execution failed")
        self.cuda.copy(out.ctypes.data, d_out, out.nbytes, 2)
        return out


def engine_fits(engine):
    """None when ``engine`` was built here (its sidecar names this GPU and TensorRT version), else why not."""
    sidecar = engine.with_suffix(engine.suffix + ".json")
    if not engine.is_file():
        return f"no engine at {engine}; build it on this device with build_engine.sh"
    if not sidecar.is_file():
        return f"{engine} has no {sidecar.name}, so where it was built is unknown; rebuild it with build_engine.sh"
    import tensorrt as trt

    info = json.loads(sidecar.read_text())
    if str(info.get("tensorrt")) != trt.__version__:
        return f"{engine} was built with TensorRT {info.get('tensorrt')}, this is {trt.__version__}; rebuild it"
    gpu = _gpu_name()
    if gpu and info.get("gpu") and info["gpu"] != gpu:
        return f"{engine} was built on {info['gpu']}, this is {gpu}; rebuild it with build_engine.sh"
    return None


def _gpu_name():
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    model = Path("/proc/device-tree/model")  # Jetson modules have no nvidia-smi
    return model.read_text(errors="replace").strip("\x00\n ") if model.is_file() else None


def make_runner(args, manifest):
    engine = Path(args.engine)
    if args.runtime in ("auto", "tensorrt"):
        try:
            import tensorrt  # noqa: F401

            reason = engine_fits(engine)
        except ImportError:
            reason = "the tensorrt Python package is not installed"
        if reason is None:
            return TensorRTRunner(engine)
        if args.runtime == "tensorrt":
            fail(f"cannot use TensorRT: {reason}")
        print(f"infer.py: using ONNX Runtime ({reason})", file=sys.stderr)
    return OnnxRuntimeRunner(HERE / (args.model or manifest["model"]["file"]), args.threads)


def topk(logits, k):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(p, idx, axis=1)


def bench(runner, x, batch, runs, warmup):
    out = {}
    for b in sorted({1, batch}):
        reps = np.resize(x, (b, *x.shape[1:])) if x.shape[0] < b else x[:b]
        for _ in range(warmup):
            runner(reps)
        ms = []
        for _ in range(runs):
            t = time.perf_counter()
            runner(reps)
            ms.append((time.perf_counter() - t) * 1e3)
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        out[str(b)] = {
            "batch": b,
            "runs": runs,
            "p50_ms": p50,
            "p90_ms": p90,
            "p99_ms": p99,
            "throughput_ips": b / p50 * 1e3,
        }
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("images", nargs="*", help="image files (png, jpg, ...)")
    ap.add_argument("--npz", help="an .npz with x (uint8 images) and optionally y (labels)")
    ap.add_argument("--model", help="ONNX file for ONNX Runtime (default: the bundle's model)")
    ap.add_argument("--engine", default=str(ENGINE_DIR / "model.engine"), help="TensorRT engine built on this device")
    ap.add_argument("--runtime", choices=("auto", "tensorrt", "onnxruntime"), default="auto")
    ap.add_argument("--top-k", type=int, default=None, help="classes to print per image")
    ap.add_argument("--batch", type=int, default=32, help="batch size for inference and --bench throughput")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    ap.add_argument("--bench", action="store_true", help="time batch 1 and --batch (p50/p90/p99 ms, img/s)")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per batch size for --bench")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args(argv)

    manifest = json.loads((HERE / "manifest.json").read_text())
    pre = load_preprocess(HERE / "preprocess.json")
    labels = (HERE / "labels.txt").read_text().splitlines()
    k = min(args.top_k or manifest.get("top_k", 5), len(labels))
    if args.npz:
        x, y = read_npz(args.npz, pre)
        names = [f"{args.npz}[{i}]" for i in range(x.shape[0])]
    elif args.images:
        try:
            x, y, names = read_images(args.images, pre), None, list(args.images)
        except (OSError, ValueError) as err:  # a missing file, or not an image Pillow can read
            fail(f"cannot read the image {getattr(err, 'filename', None) or ''} ({err}); pass png/jpg files")
    else:
        ap.error("give image files or --npz FILE")
    runner = make_runner(args, manifest)
    xf = normalize(x, pre)
    logits = np.concatenate([runner(xf[i : i + args.batch]) for i in range(0, xf.shape[0], args.batch)])
    idx, prob = topk(logits.reshape(logits.shape[0], -1), k)
    result = {
        "runtime": runner.name,
        "detail": runner.detail,
        "images": int(x.shape[0]),
        "predictions": [
            {"input": n, "top_k": [{"label": labels[j], "index": int(j), "p": float(q)} for j, q in zip(i, p)]}
            for n, i, p in zip(names, idx, prob)
        ],
    }
    if y is not None:
        result["top1"] = float(np.mean(idx[:, 0] == y))
        result["samples"] = int(y.shape[0])
    if args.bench:
        result["bench"] = bench(runner, xf, args.batch, args.runs, warmup=10)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"runtime: {runner.detail}")
    for pred in result["predictions"][:20]:
        print(pred["input"] + ": " + ", ".join(f"{t['label']} {100 * t['p']:.1f}%" for t in pred["top_k"]))
    if len(result["predictions"]) > 20:
        print(f"... {len(result['predictions']) - 20} more")
    if y is not None:
        print(f"top-1 accuracy: {100 * result['top1']:.2f}% on {result['samples']} images")
    for rec in result.get("bench", {}).values():
        print(
            f"batch {rec['batch']}: p50 {rec['p50_ms']:.3f} ms, p90 {rec['p90_ms']:.3f} ms, "
            f"p99 {rec['p99_ms']:.3f} ms, {rec['throughput_ips']:.0f} img/s (measured here, {rec['runs']} runs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
