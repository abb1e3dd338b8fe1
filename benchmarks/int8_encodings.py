"""The CPU flavour's INT8 encodings against FP32: correctness on x86 with and without VNNI, speed here.

    python benchmarks/int8_encodings.py --run demo/run [--qemu] [--threads 2]

From a run directory's ``quantize/student_int8.pt`` it writes, with edgekd's own export functions,
the BN-folded FP32 model, the TensorRT flavour (S8S8: int8 activations and weights), and the CPU
flavour in both encodings of the same grid (U8S8 and U8U8; ``edgekd/runtimes/onnxruntime/int8_encoding.py``), and
7-bit weights in U8S8 (``quantize.weight_bits=7``, calibrated the same way, no retraining). Then:

- top-1 agreement of each with the PyTorch fake-quant model on the run's validation split, on this
  host and, with ``--qemu``, under QEMU's Haswell model (AVX2, no AVX-512, no VNNI: ONNX Runtime
  dispatches its non-VNNI kernels there; its timings mean nothing, its answers are the real ones);
- ONNX Runtime latency on this host at batch 1 and 32 (fresh interleaved sessions, medians) for the
  run's model and, with ``--arch``, an untrained CIFAR-shaped model of that architecture.

Writes ``benchmarks/results/int8_encodings.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import untrained_int8  # noqa: E402

from edgekd.bench import host_description  # noqa: E402
from edgekd.data import BatchIterator, load_data  # noqa: E402
from edgekd.export.int8_onnx import export_fp32_folded, export_int8  # noqa: E402
from edgekd.quant.checkpoint import load_int8  # noqa: E402
from edgekd.runtimes.onnxruntime.int8_encoding import ENCODING_KEY, ISA_DESCRIPTIONS, apply_encoding, host_isa  # noqa: E402
from edgekd.runtimes.onnxruntime.session import measure_latency  # noqa: E402
from edgekd.stages.common import normalization_from_teacher_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("FP32 (BN folded)", "S8S8 (TensorRT flavour)", "U8S8", "U8U8", "U8S8, 7-bit weights")

_AGREEMENT_SCRIPT = """
import json, sys
import numpy as np, onnxruntime as ort
x = np.load(sys.argv[1]); ref = np.load(sys.argv[2]).argmax(1); out = {}
for name, path in json.loads(sys.argv[3]).items():
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = s.run(None, {s.get_inputs()[0].name: x})[0]
    out[name] = float(np.mean(y.argmax(1) == ref))
print(json.dumps(out))
"""


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _untagged(path: Path) -> Path:
    """The file without edgekd's encoding tag, so that ONNX Runtime runs it exactly as stored
    (edgekd would re-encode a tagged U8S8 file on a CPU where it saturates)."""
    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key != ENCODING_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.save(model, str(path))
    return path


def export_all(qm, out: Path, shape: tuple[int, int, int]) -> dict[str, Path]:
    """The five files of ``MODELS`` from one calibrated QuantizedModel (7-bit weights re-derived)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = dict(zip(MODELS, [out / f"{n}.onnx" for n in ("fp32", "s8s8", "u8s8", "u8u8", "u8s8_w7")], strict=True))
    export_fp32_folded(qm, paths[MODELS[0]], input_shape=shape)
    export_int8(qm, paths[MODELS[1]], paths[MODELS[2]], input_shape=shape, cpu_isa=("x86-64-vnni", "benchmark"))
    u8s8 = onnx.load(str(paths[MODELS[2]]))
    onnx.save(apply_encoding(u8s8, "u8u8"), str(paths[MODELS[3]]))
    _untagged(paths[MODELS[2]])
    bits = qm.weight_bits
    qm.set_weight_bits(7)
    try:
        export_int8(qm, out / "w7_trt.onnx", paths[MODELS[4]], input_shape=shape, cpu_isa=("x86-64-vnni", "benchmark"))
    finally:
        qm.set_weight_bits(bits)
    _untagged(paths[MODELS[4]])
    return paths


def agreement(paths: dict[str, Path], x: np.ndarray, ref: np.ndarray, qemu: str | None) -> dict[str, float]:
    """Top-1 agreement of each file with ``ref`` (fake-quant logits), natively or under ``qemu``."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", x)
        np.save(f"{tmp}/ref.npy", ref)
        script = Path(tmp) / "agree.py"
        script.write_text(_AGREEMENT_SCRIPT)
        cmd = [
            sys.executable,
            str(script),
            f"{tmp}/x.npy",
            f"{tmp}/ref.npy",
            json.dumps({k: str(v) for k, v in paths.items()}),
        ]
        if qemu:
            cmd = [qemu, "-cpu", "Haswell", *cmd]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1])


def latency(paths: dict[str, Path], shape, threads: int, sessions: int) -> dict:
    out = {}
    for batch, runs in ((1, 200), (32, 40)):
        _log(f"latency batch {batch}: {sessions} sessions x {len(paths)} models")
        res = measure_latency(
            {k: str(v) for k, v in paths.items()},
            batch_size=batch,
            input_shape=shape,
            threads=threads,
            warmup=10 if batch == 1 else 3,
            runs=runs,
            sessions=sessions,
        )
        out[f"batch{batch}"] = {
            k: {"p50_ms": v["p50_ms"], "session_p50_ms": v["session_p50_ms"]} for k, v in res.items()
        }
    return out


def markdown(res: dict) -> str:
    isa = res["host_isa"]
    lines = [
        "# INT8 CPU encodings against FP32 (issue 15)",
        "",
        f"Run: `{res['run']}` ({res['arch']}, input {tuple(res['input_shape'])}, {res['samples']} validation images).",
        "",
        "## Top-1 agreement with the PyTorch fake-quant model",
        "",
        "| model | " + " | ".join(f"{ISA_DESCRIPTIONS[k]} ({src})" for k, src in res["agreement_hosts"]) + " |",
        "|---|" + "---:|" * len(res["agreement_hosts"]),
    ]
    for name in MODELS[1:]:
        lines.append(
            f"| {name} | "
            + " | ".join(f"{100 * res['agreement'][k][name]:.2f}%" for k, _ in res["agreement_hosts"])
            + " |"
        )
    lines += [
        "",
        f"## ONNX Runtime latency on this host ({ISA_DESCRIPTIONS[isa]}; {res['threads']} threads, "
        "medians over fresh interleaved sessions)",
        "",
    ]
    for label, per in res["latency"].items():
        lines += [
            f"### {label}",
            "",
            "| model | host ISA | batch 1 p50 (ms) | x FP32 | batch 32 p50 (ms) | x FP32 |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for name in MODELS:
            cells = []
            for b in ("batch1", "batch32"):
                v = per[b][name]["p50_ms"]
                cells += [f"{v:.3f}", f"{v / per[b][MODELS[0]]['p50_ms']:.2f}"]
            lines.append(f"| {name} | {isa} | " + " | ".join(cells) + " |")
        lines.append("")
    h = res["host"]
    lines += [
        f"Machine: {h['cpu']}, {h['logical_cores']} logical cores, onnxruntime {h['onnxruntime']}, "
        f"Python {platform.python_version()}. Load average at the start: {res['load']}.",
        "QEMU columns: the same ONNX Runtime build under `qemu-x86_64 -cpu Haswell` (user-mode emulation); "
        "answers only, no timings.",
        "",
        f"Command: `{res['command']}`",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run directory with quantize/student_int8.pt")
    parser.add_argument("--arch", default=None, help="also time an untrained CIFAR-shaped model of this architecture")
    parser.add_argument("--qemu", action="store_true", help="also check answers under qemu-x86_64 -cpu Haswell")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=5)
    args = parser.parse_args()

    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    qm, meta = load_int8(args.run / "quantize" / "student_int8.pt")
    shape = tuple(meta["input"]["shape"])
    work = Path(tempfile.mkdtemp(prefix="int8_encodings_"))
    paths = export_all(qm, work / "run", shape)
    config = yaml.safe_load((args.run / "config.yaml").read_text())
    data = load_data(config["data"]["source"], seed=config["seed"])
    normalization = normalization_from_teacher_json(args.run / "teacher")
    x = torch.cat([b for b, _ in BatchIterator(data.val, 256, shuffle=False, seed=0, normalization=normalization)])
    with torch.no_grad():
        ref = qm.eval()(x).numpy()
    int8_paths = {k: v for k, v in paths.items() if k != MODELS[0]}
    isa = host_isa()
    res = {
        "run": str(args.run),
        "arch": meta["arch"].get("name"),
        "input_shape": list(shape),
        "samples": int(x.shape[0]),
        "host_isa": isa,
        "host": host_description(),
        "threads": args.threads,
        "load": load,
        "command": "python " + " ".join(sys.argv),
        "agreement": {isa: agreement(int8_paths, x.numpy(), ref, None)},
        "agreement_hosts": [(isa, "this host")],
    }
    if args.qemu:
        qemu = shutil.which("qemu-x86_64")
        if qemu is None:
            raise SystemExit("--qemu needs qemu-x86_64 (Debian: apt-get install qemu-user)")
        _log("agreement under qemu-x86_64 -cpu Haswell")
        res["agreement"]["x86-64-avx2"] = agreement(int8_paths, x.numpy(), ref, qemu)
        res["agreement_hosts"].append(("x86-64-avx2", "QEMU Haswell"))
    res["latency"] = {f"{res['arch']} from {args.run}": latency(paths, shape, args.threads, args.sessions)}
    if args.arch:
        extra = export_all(untrained_int8(args.arch)[0], work / args.arch, (3, 32, 32))
        res["latency"][f"{args.arch}, 3x32x32, untrained weights (latency only)"] = latency(
            extra, (3, 32, 32), args.threads, args.sessions
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "int8_encodings.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "int8_encodings.md").write_text(markdown(res))
    shutil.rmtree(work, ignore_errors=True)
    print(markdown(res))


if __name__ == "__main__":
    main()
