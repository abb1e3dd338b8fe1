"""``edgekd compress``: flags in, config built, the whole pipeline run (``edgekd.pipeline.compress``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.app import handles_errors
from edgekd.cli.options import (
    AssistantOpt,
    ChannelsLastOpt,
    CompileOpt,
    DataFreeOpt,
    JsonOpt,
    LatencyMsOpt,
    LatencyRatioOpt,
    MethodsOpt,
    PrecisionOpt,
    QuietOpt,
    ResumeOpt,
    SchemeOpt,
    SetOpt,
    StrategyOpt,
    TrialsOpt,
    _methods_overrides,
    _overrides,
    _scheme_overrides,
    _search_overrides,
    _speed_overrides,
)
from edgekd.cli.runs import _finish
from edgekd.config import build_config, read_yaml
from edgekd.console import Reporter


@handles_errors
def compress(
    teacher: Annotated[
        Path | None,
        typer.Option(
            "--teacher",
            "-t",
            help="The trained model: an edgekd/PyTorch checkpoint dict, a bare state_dict (with "
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
    resume: ResumeOpt = False,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (default 0); same seed, same metrics on CPU.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Distillation epochs (default 30).")] = None,
    max_train_samples: Annotated[
        int | None, typer.Option("--max-train-samples", help="Train on at most N images (a quick look).")
    ] = None,
    baseline: Annotated[
        bool | None,
        typer.Option(
            "--baseline/--no-baseline", help="Also train the student without KD so the report shows the gain."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto (default), cpu, cuda or cuda:N.")] = None,
    methods: MethodsOpt = None,
    trust_checkpoint: Annotated[
        bool,
        typer.Option(
            "--trust-checkpoint",
            help="Allow a teacher file that holds a pickled nn.Module. Unpickling runs code from the file: "
            "only for files from a source you trust.",
        ),
    ] = False,
    scheme: SchemeOpt = None,
    assistant: AssistantOpt = None,
    data_free: DataFreeOpt = False,
    precision: PrecisionOpt = None,
    channels_last: ChannelsLastOpt = None,
    compile_: CompileOpt = False,
    latency_ms: LatencyMsOpt = None,
    latency_ratio: LatencyRatioOpt = None,
    trials: TrialsOpt = None,
    strategy: StrategyOpt = None,
    no_quantize: Annotated[
        bool, typer.Option("--no-quantize", help="Skip INT8: keep the student in FP32 (FP16 on TensorRT).")
    ] = False,
    qat_teacher: Annotated[
        bool,
        typer.Option("--qat-teacher", help="INT8 QAT distils from the original teacher instead of the FP32 student."),
    ] = False,
    max_drop: Annotated[
        float | None,
        typer.Option("--max-drop", help="Largest INT8 top-1 drop in points (default 1.0); more keeps layers in float."),
    ] = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Teacher in, small fast student out: distil, export to ONNX, benchmark, report.

    Runs the stages teacher -> search -> distill -> quantize -> export -> bench -> package in one run
    directory and prints the accuracy / latency / size table. Without --student, the search finds the
    student: the best model the teacher can teach within the latency budget on the target. A failed
    bench gate (--set bench.gates.max_latency_ms=... etc., see `edgekd bench --help`) exits 1. Rerun
    with --resume to continue an interrupted run.
    """
    from edgekd.pipeline import compress as run_compress
    from edgekd.pipeline import default_run_dir

    reporter = Reporter(quiet=quiet or as_json)
    overrides = _overrides(
        {
            "teacher.checkpoint": str(teacher.expanduser().resolve()) if teacher else None,
            "teacher.arch": teacher_arch,
            "teacher.trust_checkpoint": trust_checkpoint or None,
            "target": str(Path(target).resolve()) if target and Path(target).is_file() else target,
            "data.source": str(Path(data).expanduser().resolve()) if data and Path(data).exists() else data,
            "student.arch": student,
            "seed": seed,
            "distill.epochs": epochs,
            "distill.baseline": baseline,
            "data.max_train_samples": max_train_samples,
            "device": device,
            **_scheme_overrides(scheme, assistant, data_free),
            **_methods_overrides(methods),
            **_speed_overrides(precision, channels_last, compile_),
            **_search_overrides(latency_ms, latency_ratio, trials, strategy),
            "quantize.enabled": False if no_quantize else None,
            "quantize.teacher": "teacher" if qat_teacher else None,
            "quantize.max_drop": max_drop,
        },
        set_,
    )
    base = read_yaml(out / "config.yaml") if out is not None and resume and (out / "config.yaml").is_file() else {}
    cfg = build_config(config, overrides, base=base)
    if out is None:
        out = default_run_dir(cfg, resume)
        if resume and (out / "config.yaml").is_file():
            cfg = build_config(config, overrides, base=read_yaml(out / "config.yaml"))
    run_compress(cfg, out, resume=resume, reporter=reporter, after=lambda run: _finish(run, as_json, quiet))
