"""``edgekd compress``: flags in, config built, the whole pipeline run (``edgekd.pipeline.compress``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.app import handles_errors
from edgekd.cli.groups import (
    _overrides,
    distill_options,
    drop_gate_options,
    quantize_options,
    run_options,
    search_options,
    takes,
)
from edgekd.cli.options import DeviceOpt, MaxTrainSamplesOpt, NmsOpt
from edgekd.cli.runs import _finish
from edgekd.config import build_config, read_yaml
from edgekd.console import Reporter


@handles_errors
@takes(distill_options, search_options, quantize_options, drop_gate_options, run_options)
def compress(
    teacher: Annotated[
        Path | None,
        typer.Option(
            "--teacher",
            "-t",
            help="The trained model (required unless --config or the run that --resume continues names one): "
            "an edgekd/PyTorch checkpoint dict, a bare state_dict (with "
            "--teacher-arch), TorchScript, or a torch.export .pt2 file. Loaded with weights_only=True.",
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Target device profile (default x86-cpu; see `edgekd targets`): a module, a family (jetson, gpu, "
            "cpu: this machine's, else a stated default), or a path to a profile YAML.",
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="classify or detect; default: from the data (COCO/YOLO folders and digits-detect are detect) "
            "or the teacher architecture.",
        ),
    ] = None,
    teacher_arch: Annotated[
        str | None,
        typer.Option("--teacher-arch", help="Architecture of a bare state_dict teacher: a zoo name or tv:NAME."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="'digits' (scikit-learn's bundled digits, the default), a folder of .npz files with x/y "
            "arrays (train*.npz + test.npz), or an ImageFolder tree.",
        ),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(
            "--student",
            "-s",
            help="Student architecture (zoo name or tv:NAME); default: searched (NNI, latency-bounded).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A YAML config (e.g. one of pipelines/*.yaml); flags override it."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run directory (default: runs/<teacher>-<target>, numbered)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (default 0); same seed, same metrics on CPU.")
    ] = None,
    max_train_samples: MaxTrainSamplesOpt = None,
    device: DeviceOpt = None,
    trust_checkpoint: Annotated[
        bool,
        typer.Option(
            "--trust-checkpoint",
            help="Allow a teacher file that holds a pickled nn.Module. Unpickling runs code from the file: "
            "only for files from a source you trust.",
        ),
    ] = False,
    no_quantize: Annotated[
        bool, typer.Option("--no-quantize", help="Skip INT8: keep the student in FP32 (FP16 on TensorRT).")
    ] = False,
    nms: NmsOpt = None,
    *,
    overrides: dict,
    resume: bool,
    set_: list[str] | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Teacher in, small fast student out: distil, export to ONNX, benchmark, report.

    Runs the stages teacher -> search -> distill -> quantize -> export -> bench -> package in one run
    directory and prints the accuracy / latency / size table. Without --student, the search finds the
    student: the best model the teacher can teach within the latency budget on the target. A failed
    bench gate (--max-accuracy-drop, --max-map-drop for detectors, --set bench.gates.max_latency_ms=...
    etc., see `edgekd bench --help`) exits 1. Rerun with --resume to continue an interrupted run.
    """
    from edgekd.pipeline import compress as run_compress
    from edgekd.pipeline import default_run_dir

    reporter = Reporter(quiet=quiet or as_json)
    pairs = _overrides(
        {
            "teacher.checkpoint": str(teacher.expanduser().resolve()) if teacher else None,
            "task": task,
            "teacher.arch": teacher_arch,
            "teacher.trust_checkpoint": trust_checkpoint or None,
            "target": str(Path(target).resolve()) if target and Path(target).is_file() else target,
            "data.source": str(Path(data).expanduser().resolve()) if data and Path(data).exists() else data,
            "student.arch": student,
            "seed": seed,
            "data.max_train_samples": max_train_samples,
            "device": device,
            "detect.nms": nms,
            **overrides,
            "quantize.enabled": False if no_quantize else None,
        },
        set_,
    )
    base = read_yaml(out / "config.yaml") if out is not None and resume and (out / "config.yaml").is_file() else {}
    cfg = build_config(config, pairs, base=base)
    if out is None:
        out = default_run_dir(cfg, resume)
        if resume and (out / "config.yaml").is_file():
            cfg = build_config(config, pairs, base=read_yaml(out / "config.yaml"))
    run_compress(cfg, out, resume=resume, reporter=reporter, after=lambda run: _finish(run, as_json, quiet))
