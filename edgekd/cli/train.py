"""The training commands: ``search``, ``distill`` and ``quantize`` on a run directory, and
``train-teacher``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from edgekd.cli.app import handles_errors, stdout
from edgekd.cli.groups import distill_options, quantize_options, search_options
from edgekd.cli.options import DeviceOpt, JsonOpt, MaxTrainSamplesOpt, QuietOpt
from edgekd.cli.runs import stage_command
from edgekd.console import Reporter
from edgekd.errors import EdgekdError


@stage_command("distill", distill_options)
def distill(
    student: Annotated[str | None, typer.Option("--student", "-s", help="Student architecture.")] = None,
) -> dict:
    """(Re)run the distill stage of a run directory (and any upstream stage that is not done).

    Settings come from RUN_DIR/config.yaml; options here override and are saved back.
    """
    return {"student.arch": student}


@stage_command("search", search_options)
def search(
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="sequential (default: one process, no server) or nni-local (NNI's training service; starts "
            "NNI's manager, a web server listening on ALL network interfaces).",
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help="Parallel trials with --engine nni-local.")
    ] = None,
    proxy_epochs: Annotated[int | None, typer.Option("--proxy-epochs", help="KD epochs per candidate.")] = None,
) -> dict:
    """(Re)run the student search: NNI proposes students and short KD trainings rank them.

    Candidates over the latency budget are rejected before training, the rest get a short KD training
    from the teacher. Writes search/trials.jsonl, best_arch.json (the student distill uses) and
    pareto.png. Sets student.arch to auto.
    """
    return {
        "student.arch": "auto",
        "search.enabled": True,
        "search.engine": engine,
        "search.concurrency": concurrency,
        "search.proxy_epochs": proxy_epochs,
    }


@stage_command("quantize", quantize_options)
def quantize(
    mode: Annotated[str | None, typer.Option("--mode", help="qat (default) or ptq (calibration only).")] = None,
    calibrator: Annotated[
        str | None,
        typer.Option(
            "--calibrator",
            help="auto (default: tries max, percentile, entropy and mse, keeps the best on validation images), "
            "max, percentile, entropy or mse.",
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="QAT epochs (default: 10% of the distill epochs, at least 1).")
    ] = None,
) -> dict:
    """(Re)run the quantize stage: INT8 by quantization-aware distillation (or PTQ).

    A per-layer sensitivity analysis keeps the most sensitive layers in float within --max-drop (mixed
    precision). QAT distils with CE + KD; `--set quantize.feature_method=at` adds a feature method (at,
    fitnet, sp, ...) at its reference weight. Later stages (export, bench, package) keep their old
    results until `edgekd compress --out RUN_DIR --resume` reruns them.
    """
    return {
        "quantize.enabled": True,
        "quantize.mode": mode,
        "quantize.calibrator": calibrator,
        "quantize.epochs": epochs,
    }


@handles_errors
def train_teacher(
    arch: Annotated[str, typer.Option("--arch", "-a", help="Architecture: a zoo name (`edgekd models`) or tv:NAME.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the checkpoint (edgekd format).")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="'digits', a folder of .npz files, or an ImageFolder tree.")
    ] = "digits",
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 30,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr", help="Initial learning rate (default: 0.05 SGD for classifiers, 0.002 AdamW for detectors)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    max_train_samples: MaxTrainSamplesOpt = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", help="Resize images to this side (ImageFolder default 224).")
    ] = None,
    bad_images: Annotated[
        Literal["fail", "skip"],
        typer.Option(
            "--bad-images",
            help="ImageFolder: stop on an image that cannot be decoded (fail), or leave such images out (skip).",
        ),
    ] = "fail",
    device: DeviceOpt = None,
    task: Annotated[
        str, typer.Option("--task", help="classify, detect, or auto (detect for COCO/YOLO data and digits-detect).")
    ] = "auto",
    imgsz: Annotated[int, typer.Option("--imgsz", help="Detection: square input size (multiple of 32).")] = 320,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a teacher from scratch with cross-entropy (for the demo, or if you have none).

    The checkpoint carries its arch spec, classes and normalisation, so `compress` needs no more flags.
    """
    import torch

    from edgekd.config import DataConfig, TeacherTrainConfig
    from edgekd.data import augment_kwargs, compute_normalization, load_data, skipped_note
    from edgekd.distill.trainer import TrainSetup, resolve_device, train
    from edgekd.models import create_model
    from edgekd.models.checkpoint import save_model
    from edgekd.tasks import get_task

    reporter = Reporter(quiet=quiet or as_json)
    if out.exists() and not force:
        raise EdgekdError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    if task == "detect" or (task == "auto" and get_task("detect").matches_data(data)):
        from edgekd.tasks.detect.teacher import train_teacher_file

        reporter = Reporter(quiet=quiet or as_json)
        summary = train_teacher_file(
            arch,
            data,
            out,
            epochs=epochs,
            lr=lr or 0.002,
            imgsz=imgsz,
            batch_size=batch_size,
            seed=seed,
            log=reporter.info,
        )
        if as_json:
            print(json.dumps(summary, indent=2))
        else:
            stdout.print(f"Teacher {arch}: validation mAP@[.5:.95] {summary['val_map50_95']:.4f} -> {out}")
        return
    cfg = TeacherTrainConfig(epochs=epochs, lr=lr or 0.05, batch_size=batch_size)
    data_cfg = DataConfig(source=data, max_train_samples=max_train_samples, image_size=image_size)
    bundle = load_data(
        data,
        val_fraction=data_cfg.val_fraction,
        seed=seed,
        max_train_samples=max_train_samples,
        image_size=image_size,
        bad_images=bad_images,
    )
    if bundle.skipped:
        reporter.warn(skipped_note(bundle.skipped))
    norm = compute_normalization(bundle.train)
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(bundle.classes), in_channels=bundle.input_shape[0])
    reporter.info(
        f"train-teacher: {model.arch_spec['name']} on {bundle.name} ({len(bundle.train)} train / "
        f"{len(bundle.val)} val images), {epochs} epochs"
    )
    result = train(
        TrainSetup(
            student=model,
            train=bundle.train,
            val=bundle.val,
            normalization=norm,
            config=cfg,
            seed=seed,
            device=resolve_device(device or "auto"),
            augment=augment_kwargs(data_cfg.augment, bundle.input_shape),
        ),
        reporter=reporter,
        label="teacher",
    )
    spec = {"shape": list(bundle.input_shape), "mean": norm.mean, "std": norm.std}
    save_model(out, model, input_spec=spec, classes=bundle.classes, metrics={**result, "data": bundle.name})
    summary = {
        "checkpoint": str(out),
        "arch": model.arch_spec,
        "val_top1": result["final"]["val_top1"],
        "epochs": epochs,
        "seconds": result["seconds"],
    }
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        stdout.print(f"Teacher {model.arch_spec['name']}: validation top-1 {100 * summary['val_top1']:.2f}% -> {out}")
