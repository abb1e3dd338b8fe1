"""The detection bundle: ``package/<student>-<target>/`` with the ONNX (NMS inside, or the raw head
with ``--nms none``, which infer.py decodes and NMSes itself in numpy), labels.json, infer.py (boxes
drawn with ``--out``, COCO-style results with ``--json``), build_engine.sh for a TensorRT engine on
the device, a README and a Dockerfile.

infer.py runs the model with ONNX Runtime on every target (its letterbox is the one the bench
evaluates with, so its ``--json`` scores to the bench's mAP); running a TensorRT engine from infer.py
is not built for detectors yet: build_engine.sh makes the engine for ``trtexec``/DeepStream users.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgekd.io import atomic_write_json, atomic_write_text
from edgekd.package.dockerfiles import CPU_BASE, dockerfile
from edgekd.package.tarball import write_tarball
from edgekd.rundir import library_versions

TEMPLATE = Path(__file__).with_name("templates") / "infer_detect.py"
NMS_README = "returns `num_dets`, `det_boxes` (x1, y1, x2, y2), `det_scores`, `det_classes` (EfficientNMS convention)."
RAW_README = """returns the raw head (exported with `--nms none`): `cls_p3..p5` (class logits) and `reg_p3..p5` (DFL bin
logits) at strides 8/16/32, described in the ONNX metadata (`edgekd.detect.*`: layout, strides, scores,
box format). infer.py decodes them and applies class-aware NMS itself (numpy), with labels.json's thresholds."""


def build_detect_bundle(ctx) -> dict[str, Any]:
    from edgekd.targets import load_target
    from edgekd.tasks.detect.common import student_imgsz

    cfg = ctx.config
    imgsz = student_imgsz(ctx, cfg)
    profile = load_target(cfg.target)
    teacher = json.loads((ctx.upstream("teacher") / "teacher.json").read_text())
    distill = ctx.upstream_metrics("distill")
    bench = json.loads((ctx.upstream("bench") / "results.json").read_text())["summary"]
    name = f"{distill['student']['name']}-{profile.name}"
    folder = ctx.dir / name
    folder.mkdir(parents=True, exist_ok=True)
    export = ctx.upstream("export")
    shutil.copy2(export / "model_fp32.onnx", folder / "model.onnx")
    shutil.copy2(export / "build_engine.sh", folder / "build_engine.sh")
    script = (folder / "build_engine.sh").read_text().replace("model_fp32.onnx", "model.onnx")
    atomic_write_text(folder / "build_engine.sh", script)
    (folder / "build_engine.sh").chmod(0o755)
    shutil.copy2(TEMPLATE, folder / "infer.py")
    (folder / "infer.py").chmod(0o755)
    atomic_write_json(
        folder / "labels.json",
        {
            "names": teacher["classes"],
            "category_ids": teacher["category_ids"],
            "imgsz": imgsz,
            "conf": cfg.detect.conf,
            "iou": cfg.detect.iou,
            "max_det": cfg.detect.max_det,
        },
    )
    raw = cfg.detect.nms == "none"
    base = cfg.package.base_image or CPU_BASE
    files = ["model.onnx", "labels.json", "infer.py", "build_engine.sh"]
    versions = library_versions()
    text = dockerfile("cpu", base, files, versions=versions, title=f"edgekd detector {name} (ONNX Runtime)")
    atomic_write_text(folder / "Dockerfile", text.replace("--npz /data/val.npz --bench", "/data --json /data/out.json"))
    atomic_write_text(
        folder / "README.md",
        f"""# {name}

{distill["student"]["name"]} distilled from {teacher["arch"]["name"]} for {profile.display_name}.
mAP@[.5:.95] {bench["student_onnx_map50_95"]:.4f} and mAP@.5 {bench["student_onnx_map50"]:.4f} in ONNX Runtime on
{teacher["data"]["val_samples"]} validation images (teacher {bench["teacher_map50_95"]:.4f}).

    python infer.py IMAGES_OR_FOLDERS --out drawn/ --json results.json [--conf 0.25] [--iou 0.6]

The model takes `images` float32 [B,3,{imgsz},{imgsz}] (RGB in [0, 1], letterboxed) and
{RAW_README if raw else NMS_README}
`./build_engine.sh` builds a TensorRT engine from it on the device.
""",
    )
    metrics: dict[str, Any] = {
        "bundle": name,
        "target": profile.name,
        "model_file": "model.onnx",
        "model_format": "onnx-fp32-raw" if raw else "onnx-fp32-nms",
        "map50_95": bench["student_onnx_map50_95"],
        "base_image": base,
    }
    if cfg.package.tarball:
        write_tarball(folder, ctx.dir / f"{name}.tar.gz")
        metrics["tarball"] = f"package/{name}.tar.gz"
    return metrics
