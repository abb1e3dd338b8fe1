"""Stage ``package``: a deployment bundle of the run's student for one target, and its ``.tar.gz``.

Which model ships (``package.precision``, default the target profile's precision):

- INT8 target, run with INT8 exports: CPU targets get the ONNX Runtime flavour
  (``export/model_int8_cpu.onnx``, uint8 activations), TensorRT targets the TensorRT flavour
  (``export/model_int8.onnx``, symmetric int8 Q/DQ); either is named ``model_int8.onnx`` in the bundle.
- Otherwise the FP32 ONNX (``model_fp32.onnx``); TensorRT targets build it into an FP16 engine
  when their precision is fp16 or int8 (a warning says when an INT8 target got no INT8 model).

The bundle's accuracy is measured here, on the whole validation split, by running the shipped
ONNX file in ONNX Runtime on this CPU with the same preprocessing that ``preprocess.json`` gives
``infer.py``, so the bundle's runner reproduces it. Writes ``package/NAME/`` and
``package/NAME.tar.gz`` (``edgekd/package/bundle.py`` lists the files).
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import onnx

from edgekd.bench import evaluate_accuracy
from edgekd.data import BatchIterator
from edgekd.errors import EdgekdError
from edgekd.io import sha256_file
from edgekd.package.bundle import BundleInputs, build_bundle
from edgekd.package.dockerfiles import base_image
from edgekd.package.tarball import write_tarball
from edgekd.rundir import library_versions
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.stages.common import checked_teacher, normalization_from_teacher_json
from edgekd.targets import load_target


def _profile(config):
    return load_target(config.package.target or config.target)


def _jetpack(config, profile) -> str | None:
    if profile.kind != "jetson":
        return None
    wanted = config.package.jetpack
    if wanted is None:
        return profile.jetpack[-1] if profile.jetpack else None
    if wanted not in profile.jetpack:
        raise EdgekdError(
            f"{profile.name} runs JetPack {', '.join(profile.jetpack) or '(none listed)'}, not {wanted}; "
            "pass one of those to package.jetpack"
        )
    return wanted


class PackageStage(Stage):
    name = "package"
    config_keys = ("package", "target", "data", "seed")
    needs = ("teacher", "distill", "export", "bench")

    def external_inputs(self, config, run):
        path = Path(config.package.target or config.target)
        return {"package_target_sha256": sha256_file(path)} if path.is_file() else {}

    def check(self, config, run):
        profile = _profile(config)
        base_image(profile.kind, _jetpack(config, profile), config.package.base_image)

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config.package
        profile = _profile(ctx.config)
        _, data = checked_teacher(ctx)
        norm = normalization_from_teacher_json(ctx.upstream("teacher"))
        teacher = json.loads((ctx.upstream("teacher") / "teacher.json").read_text())
        export_dir = ctx.upstream("export")
        distill = ctx.upstream_metrics("distill")
        quantize = ctx.run.stage_record("quantize").get("metrics") or {}

        src, model_file, fmt = self._choose_model(ctx, profile, export_dir)
        fp32 = export_dir / "model_fp32.onnx"
        ctx.reporter.info(f"package: measuring {src.name} with ONNX Runtime on {len(data.val)} validation images")
        batches = BatchIterator(data.val, 256, shuffle=False, seed=0, normalization=norm)
        acc = evaluate_accuracy(src, batches, threads=ctx.config.bench.threads)
        arch = (distill.get("student") or {}).get("name", "student")
        name = f"{arch}-{profile.name}"
        accuracy: dict[str, Any] = {
            "top1": acc["top1"],
            "samples": acc["samples"],
            "split": teacher["data"].get("val_source"),
            "measured_with": "ONNX Runtime (CPU) on the packaging host, the preprocessing of preprocess.json",
            "teacher_top1": teacher.get("val_top1"),
            "student_fp32_top1": distill.get("val_top1"),
            "student_int8_top1": quantize.get("val_top1"),
        }
        if "top5" in acc:
            accuracy["top5"] = acc["top5"]
        inputs = BundleInputs(
            name=name,
            profile=profile,
            model_src=src,
            model_file=model_file,
            model_format=fmt,
            arch=arch,
            parameters=int(distill.get("parameters") or 0),
            classes=list(teacher["classes"]),
            input_name=onnx.load(str(src), load_external_data=False).graph.input[0].name,
            input_shape=tuple(teacher["input"]["shape"]),
            mean=list(norm.mean),
            std=list(norm.std),
            accuracy=accuracy,
            versions=_versions(),
            teacher={k: teacher.get(k) for k in ("kind", "sha256", "val_top1", "parameters")}
            | {"arch": (teacher.get("arch") or {}).get("name")},
            data={
                "name": Path(teacher["data"]["name"]).name,
                "train_samples": teacher["data"]["train_samples"],
                "val_samples": teacher["data"]["val_samples"],
                "fingerprint": teacher["data"]["fingerprint"],
            },
            fp32_src=fp32 if cfg.include_fp32 and fp32.is_file() else None,
            jetpack=_jetpack(ctx.config, profile),
            base_image=cfg.base_image,
            top_k=cfg.top_k,
            latency=_latency(ctx),
        )
        folder = ctx.dir / name
        if folder.exists():  # a package stage cut off (kill -9) mid-bundle: nothing in it to resume from
            shutil.rmtree(folder)
        manifest = build_bundle(folder, inputs)
        metrics: dict[str, Any] = {
            "bundle": name,
            "target": profile.name,
            "model_file": model_file,
            "model_format": fmt,
            "top1": acc["top1"],
            "samples": acc["samples"],
            "files": len(manifest["files"]) + 1,
            "base_image": manifest["docker"]["base"],
        }
        if cfg.tarball:
            tar = write_tarball(folder, ctx.dir / f"{name}.tar.gz")
            metrics["tarball"] = f"package/{tar.name}"
            metrics["tarball_bytes"] = tar.stat().st_size
        ctx.reporter.info(
            f"package: {name} ({model_file}, {fmt}) top-1 {100 * acc['top1']:.2f}% on {acc['samples']} images, "
            f"base image {manifest['docker']['base']}"
        )
        return StageResult(metrics=metrics)

    def _choose_model(self, ctx, profile, export_dir: Path) -> tuple[Path, str, str]:
        precision = ctx.config.package.precision
        precision = profile.precision if precision == "auto" else precision
        if precision == "int8":
            if profile.runtime == "onnxruntime":
                src, fmt = export_dir / "model_int8_cpu.onnx", "onnx-int8-cpu"
            else:
                src, fmt = export_dir / "model_int8.onnx", "tensorrt-int8-qdq"
            if src.is_file():
                return src, "model_int8.onnx", fmt
            ctx.reporter.warn(
                f"package: {profile.name} runs INT8 but this run has no {src.name} (no quantize stage); "
                "shipping the FP32 model"
            )
        fp32 = export_dir / "model_fp32.onnx"
        if not fp32.is_file():
            raise EdgekdError(f"{fp32} is missing; rerun the export stage (edgekd export RUN_DIR)")
        return fp32, "model_fp32.onnx", "onnx-fp32"


def _latency(ctx: StageContext) -> list[dict[str, Any]]:
    """The bench's batch-1 and throughput figures for the model card (measured on this host)."""
    path = ctx.upstream("bench") / "results.json"
    if not path.is_file():
        return []
    results = json.loads(path.read_text())
    host = results.get("host", {})
    where = f"{host.get('cpu', 'this host')}" + (f", GPU {host['gpu']}" if host.get("gpu") else "")
    return [
        {
            "model": r["model"],
            "format": r["format"],
            "runtime": r["runtime"],
            "p50_ms": r["latency_b1"]["p50_ms"],
            "p99_ms": r["latency_b1"]["p99_ms"],
            "throughput_ips": r["throughput"]["throughput_ips"],
            "throughput_batch": r["throughput"]["batch_size"],
            "source": r["latency_b1"].get("source", "measured"),
            "host": where,
        }
        for r in results.get("models", [])
    ]


def _versions() -> dict[str, str]:
    versions = library_versions()
    for dist in ("pillow",):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions
