"""Assemble a deployment bundle folder from what a finished run made.

    BUNDLE/
      model_int8.onnx      the model for the target (model_fp32.onnx instead when the target or the
                           run has no INT8; both with package.include_fp32)
      labels.txt           one class name per line, in output order
      preprocess.json      input name, layout, shape, mean, std (pixels / 255 first)
      infer.py             the runner (TensorRT when present, else ONNX Runtime)
      build_engine.sh      TensorRT targets: trtexec on the device (+ entrypoint.sh for the container)
      layer_report.py      TensorRT targets: INT8/FP16/FP32 layers and their times, after the build
      Dockerfile           for the target (L4T/JetPack base, TensorRT base, or slim Python + onnxruntime)
      MODEL_CARD.md        what it is, how well it does, how it was measured, how to run it
      manifest.json        sha256 and size of every other file, versions, metrics

Every file is written atomically; nothing refers to an absolute path of the machine that built it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgekd.io import atomic_write, atomic_write_json, atomic_write_text, sha256_file
from edgekd.package.dockerfiles import base_image, dockerfile
from edgekd.package.engine_script import engine_script
from edgekd.package.model_card import model_card
from edgekd.targets.profile import TargetProfile


@dataclass
class BundleInputs:
    name: str
    profile: TargetProfile
    model_src: Path  # the ONNX file shipped as the bundle's model
    model_file: str  # its name in the bundle: model_int8.onnx or model_fp32.onnx
    model_format: str  # onnx-int8-cpu | tensorrt-int8-qdq | onnx-fp32
    arch: str
    parameters: int
    classes: list[str]
    input_name: str
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    accuracy: dict[str, Any]  # top1, samples, split, measured_with, teacher_top1, student_*_top1
    versions: dict[str, str]
    teacher: dict[str, Any]
    data: dict[str, Any]
    fp32_src: Path | None = None  # also shipped as model_fp32.onnx
    jetpack: str | None = None
    base_image: str | None = None
    top_k: int = 5
    latency: list[dict[str, Any]] = field(default_factory=list)


def _template(name: str) -> bytes:
    return resources.files("edgekd.package").joinpath("templates", name).read_bytes()


def _copy(src: Path, dst: Path, executable: bool = False) -> None:
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
    dst.chmod(0o755 if executable else 0o644)


def build_bundle(folder: Path, b: BundleInputs) -> dict[str, Any]:
    """Write the bundle into ``folder`` (created; must not exist yet); returns its manifest."""
    folder.mkdir(parents=True)
    p = b.profile
    tensorrt = p.runtime == "tensorrt"
    int8 = b.model_file == "model_int8.onnx"
    _copy(b.model_src, folder / b.model_file)
    if b.fp32_src is not None and b.model_file != "model_fp32.onnx":
        _copy(b.fp32_src, folder / "model_fp32.onnx")
    atomic_write_text(folder / "labels.txt", "".join(f"{c}\n" for c in b.classes))
    preprocess = {
        "input_name": b.input_name,
        "layout": "NCHW",
        "dtype": "float32",
        "shape": list(b.input_shape),
        "scale": "pixel / 255",
        "mean": list(b.mean),
        "std": list(b.std),
        "resize": "shorter side to the model's side (bilinear), then centre crop",
        "color": "L" if b.input_shape[0] == 1 else "RGB",
    }
    atomic_write_json(folder / "preprocess.json", preprocess)
    trt_files = (("entrypoint.sh", True), ("layer_report.py", True)) if tensorrt else ()
    for name, executable in (("infer.py", True),) + trt_files:
        atomic_write(folder / name, lambda tmp, n=name: tmp.write_bytes(_template(n)))
        (folder / name).chmod(0o755 if executable else 0o644)
    if tensorrt:
        script = engine_script(b.model_file, p, int8=int8, input_name=b.input_name, input_shape=b.input_shape)
        atomic_write_text(folder / "build_engine.sh", script)
        (folder / "build_engine.sh").chmod(0o755)
    jetpack = b.jetpack if p.kind == "jetson" else None
    trt_version = p.tensorrt[p.jetpack.index(jetpack)] if jetpack in p.jetpack else None
    base = base_image(p.kind, jetpack, b.base_image)
    shipped = sorted(f.name for f in folder.iterdir() if f.is_file()) + ["manifest.json", "MODEL_CARD.md"]
    title = f"edgekd bundle {b.name} for {p.display_name}"
    atomic_write_text(
        folder / "Dockerfile",
        dockerfile(p.kind, base, sorted(set(shipped)), versions=b.versions, title=title),
    )
    manifest: dict[str, Any] = {
        "name": b.name,
        "format_version": 1,
        "model": {
            "file": b.model_file,
            "format": b.model_format,
            "precision": "int8" if int8 else ("fp16" if tensorrt and p.precision != "fp32" else "fp32"),
            "arch": b.arch,
            "parameters": b.parameters,
            "fp32_file": "model_fp32.onnx" if b.model_file != "model_fp32.onnx" and b.fp32_src else None,
        },
        "target": {
            "name": p.name,
            "display_name": p.display_name,
            "kind": p.kind,
            "runtime": p.runtime,
            "precision": p.precision,
            "jetpack": jetpack,
            "tensorrt": trt_version,
            "max_batch": p.max_batch,
        },
        "docker": {"base": base, "engine": "built on the device at first start" if tensorrt else None},
        "labels": list(b.classes),
        "preprocess": preprocess,
        "top_k": b.top_k,
        "metrics": b.accuracy,
        "latency": b.latency,
        "teacher": b.teacher,
        "data": b.data,
        "versions": b.versions,
    }
    files = {}
    manifest["files"] = files
    atomic_write_text(folder / "MODEL_CARD.md", model_card({**manifest, "files": _hashes(folder)}))
    files.update(_hashes(folder))
    atomic_write_json(folder / "manifest.json", manifest)
    for f in folder.iterdir():  # atomic writes create 0600 files; a bundle is meant to be read by others
        f.chmod(0o755 if f.name.endswith((".sh", ".py")) else 0o644)
    return manifest


def _hashes(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        for f in sorted(folder.iterdir())
        if f.is_file() and f.name != "manifest.json"
    }


def verify_bundle(folder: Path) -> list[str]:
    """Problems with an unpacked bundle (missing, extra or changed files); empty when it verifies."""
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    problems = []
    listed = manifest.get("files", {})
    for name, meta in listed.items():
        f = folder / name
        if not f.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(f) != meta["sha256"]:
            problems.append(f"{name} differs from its sha256 in manifest.json")
    for f in folder.rglob("*"):
        if f.is_file() and f.name != "manifest.json" and str(f.relative_to(folder)) not in listed:
            problems.append(f"{f.relative_to(folder)} is not listed in manifest.json")
    return problems
