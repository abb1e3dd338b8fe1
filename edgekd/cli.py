"""The ``edgekd`` command line (Typer). It parses, builds the config and calls the pipeline.

User errors (``EdgekdError``) print one line on stderr and exit 2 (a failed check exits 1);
human output goes to stderr, tables and ``--json`` summaries to stdout.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgekd import __version__
from edgekd.config import RunConfig, build_config, parse_set_option, read_yaml
from edgekd.console import Reporter
from edgekd.errors import EdgekdError

app = typer.Typer(
    name="edgekd",
    help=(
        "Shrink a trained PyTorch classifier onto an edge device: distil a small student from it, "
        "export it to ONNX, and measure accuracy and latency side by side with the teacher.\n\n"
        "Start with:  edgekd compress --teacher ckpt.pt --target jetson-orin-nano --data PATH"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
stdout = Console(highlight=False, soft_wrap=True)

COMPRESS_STAGES = ["teacher", "distill", "export", "bench", "package"]


def _version(value: bool) -> None:
    if value:
        print(f"edgekd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def handles_errors(fn):
    """Turn ``EdgekdError`` into one line on stderr and its exit code, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgekdError as err:
            print(f"edgekd: error: {err}", file=sys.stderr)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            print("edgekd: interrupted; rerun the same command with --resume to continue", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


# ---- shared options --------------------------------------------------------------------------
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but warnings and errors.")]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print a machine-readable JSON summary on stdout (for CI); implies --quiet."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override any config value, e.g. --set distill.lr=0.1 --set bench.runs=100 (repeatable; "
        "the value is read as YAML).",
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run: skip stages whose inputs are unchanged and whose outputs verify, and "
        "restart a cut-off training stage from its last per-epoch checkpoint.",
    ),
]
RunDirArg = Annotated[Path, typer.Argument(help="A run directory made by `edgekd compress`.")]


def _overrides(pairs: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    out = {k: v for k, v in pairs.items() if v is not None}
    for item in sets or []:
        key, value = parse_set_option(item)
        out[key] = value
    return out


def _emit_summary(run, as_json: bool) -> None:
    manifest = run.manifest
    if as_json:
        summary = {
            "run_dir": str(run.path),
            "report": str(run.path / "report.md"),
            "target": manifest.get("target"),
            "stages": {
                k: {"status": v.get("status"), "seconds": v.get("seconds"), "metrics": v.get("metrics")}
                for k, v in manifest.get("stages", {}).items()
            },
        }
        print(json.dumps(summary, indent=2, default=str))
        return
    results_md = run.path / "bench" / "results.md"
    if results_md.is_file():
        stdout.print(results_md.read_text())
    stdout.print(f"Run directory: {run.path}   report: {run.path / 'report.md'}")


def _run_pipeline(
    run, config: RunConfig, stages: list[str], resume: bool, reporter: Reporter, prepare: Callable[[], None]
) -> None:
    """Check the stages' settings, then ``prepare`` the run directory (config, manifest), then run.
    Nothing is written when a check fails; the report is rebuilt whatever happens after that."""
    from edgekd.pipeline import Runner
    from edgekd.report import write_report

    runner = Runner(run, config, reporter)
    runner.check(stages)
    prepare()
    try:
        runner.run_stages(stages, resume=resume)
    finally:
        if run.manifest and run.path.is_dir():
            write_report(run, stale=runner.stale_stages())


def _default_run_dir(base: str, resume: bool) -> Path:
    root = Path("runs")
    candidates = [root / base] + [root / f"{base}-{i}" for i in range(2, 1000)]
    existing = [c for c in candidates if (c / "manifest.json").is_file()]
    if resume:
        if not existing:
            raise EdgekdError(f"--resume found no earlier run under {root / base}*; pass --out RUN_DIR")
        return existing[-1]
    return next(c for c in candidates if not c.exists())


# ---- compress --------------------------------------------------------------------------------
@app.command()
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
            help="Target device profile (default x86-cpu; see `edgekd targets`), or a path to a profile YAML.",
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
            help="Student architecture (zoo name or tv:NAME); default: the usual student for the teacher.",
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
    trust_checkpoint: Annotated[
        bool,
        typer.Option(
            "--trust-checkpoint",
            help="Allow a teacher file that holds a pickled nn.Module. Unpickling runs code from the file: "
            "only for files from a source you trust.",
        ),
    ] = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Teacher in, small fast student out: distil, export to ONNX, benchmark, report.

    Runs the stages teacher -> distill -> export -> bench -> package in one run directory and prints the
    accuracy / latency / size table. Rerun with --resume to continue an interrupted run. A failed
    bench gate (--set bench.gates.max_latency_ms=... etc., see `edgekd bench --help`) exits 1.
    """
    from edgekd.pipeline import RunDir, library_versions, registered_stages
    from edgekd.targets import load_target

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
        },
        set_,
    )
    base: dict[str, Any] = {}
    if out is not None and resume and (out / "config.yaml").is_file():
        base = read_yaml(out / "config.yaml")
    cfg = build_config(config, overrides, base=base)
    if not cfg.teacher.checkpoint:
        raise EdgekdError("no teacher given; pass --teacher CKPT (train one with `edgekd train-teacher`)")
    profile = load_target(cfg.target)
    if out is None:
        out = _default_run_dir(f"{Path(cfg.teacher.checkpoint).stem}-{Path(cfg.target).stem}", resume)
        if resume and (out / "config.yaml").is_file():
            cfg = build_config(config, overrides, base=read_yaml(out / "config.yaml"))
    from edgekd.stages.common import teacher_path

    teacher_path(cfg)
    run = RunDir(out)
    if run.exists() and not resume:
        raise EdgekdError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if out.is_dir() and not run.exists() and any(out.iterdir()):
        raise EdgekdError(f"{out} is a folder with other files in it, not an edgekd run; choose a new or empty --out")
    fresh = not out.exists()
    run.lock()
    try:

        def prepare() -> None:
            if run.exists():
                run.load_manifest()
                run.manifest["target"] = cfg.target
                run.manifest["versions"] = library_versions()
            else:
                run.init_manifest(cfg)
            run.manifest["target_profile"] = {
                "name": profile.name,
                "kind": profile.kind,
                "runtime": profile.runtime,
                "precision": profile.precision,
            }
            run.write_config(cfg)
            reporter.info(f"edgekd {__version__}: run directory {out} (target {profile.display_name})")

        stages = [s for s in registered_stages() if s in COMPRESS_STAGES]
        _run_pipeline(run, cfg, stages, resume, reporter, prepare)
        _emit_summary(run, as_json)
        from edgekd.bench.gates import raise_if_failed  # a failed bench gate exits 1 (issue 6)

        raise_if_failed(out)
    except EdgekdError:
        # A user error before any stage finished leaves no half-made run directory behind.
        if fresh and not any(r.get("status") == "done" for r in run.manifest.get("stages", {}).values()):
            run.unlock()
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        run.unlock()


# ---- single stages ---------------------------------------------------------------------------
def _stage_command(
    stage: str, run_dir: Path, overrides: dict[str, Any], resume: bool, quiet: bool, as_json: bool
) -> None:
    from edgekd.pipeline import RunDir

    run = RunDir(run_dir)
    run.load_manifest()
    if not run.config_path.is_file():
        raise EdgekdError(f"{run_dir} has no config.yaml, so the run cannot be repeated; start a new run with compress")
    cfg = build_config(None, overrides, base=read_yaml(run.config_path))
    reporter = Reporter(quiet=quiet or as_json)
    run.lock()
    try:
        run.load_manifest()
        _run_pipeline(run, cfg, [stage], resume, reporter, lambda: run.write_config(cfg))
        _emit_summary(run, as_json)
    finally:
        run.unlock()


@app.command()
@handles_errors
def distill(
    run_dir: RunDirArg,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Distillation epochs.")] = None,
    student: Annotated[str | None, typer.Option("--student", "-s", help="Student architecture.")] = None,
    baseline: Annotated[bool | None, typer.Option("--baseline/--no-baseline", help="Also train without KD.")] = None,
    resume: ResumeOpt = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """(Re)run the distill stage of a run directory (and any upstream stage that is not done).

    Settings come from RUN_DIR/config.yaml; options here override and are saved back.
    """
    overrides = _overrides({"distill.epochs": epochs, "student.arch": student, "distill.baseline": baseline}, set_)
    _stage_command("distill", run_dir, overrides, resume, quiet, as_json)


@app.command()
@handles_errors
def export(
    run_dir: RunDirArg,
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default 17).")] = None,
    resume: ResumeOpt = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """(Re)run the export stage: FP32 ONNX of the student and teacher, checked, with a parity test."""
    _stage_command("export", run_dir, _overrides({"export.opset": opset}, set_), resume, quiet, as_json)


@app.command()
@handles_errors
def bench(
    run_dir: RunDirArg,
    threads: Annotated[
        int | None, typer.Option("--threads", help="ONNX Runtime intra-op threads (default: physical cores).")
    ] = None,
    runs: Annotated[int | None, typer.Option("--runs", help="Timed runs at batch 1 (>= 50).")] = None,
    # --- issue 6: runtimes, batches and CI gates ---
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime",
            help="Comma-separated runtimes: onnxruntime (default), onnxruntime-cuda, onnxruntime-tensorrt, "
            "torch, torch-cuda (FP32 and FP16), tensorrt. One that cannot run here is skipped with its reason.",
        ),
    ] = None,
    batch: Annotated[
        str | None, typer.Option("--batch", help="Comma-separated batch sizes to time, e.g. 1,8,32 (default 1,32).")
    ] = None,
    max_latency_ms: Annotated[
        float | None, typer.Option("--max-latency-ms", help="Gate: student p50 latency at batch 1 at most this.")
    ] = None,
    min_accuracy: Annotated[
        float | None, typer.Option("--min-accuracy", help="Gate: student top-1 at least this, in percent (e.g. 95).")
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option("--max-accuracy-drop", help="Gate: student top-1 at most this many points below the teacher."),
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="An earlier bench/results.json to compare latency with.")
    ] = None,
    max_regression: Annotated[
        str | None,
        typer.Option("--max-regression", help="Gate: p50 latency at most this much above --baseline, e.g. 10%."),
    ] = None,
    no_gates: Annotated[
        bool, typer.Option("--no-gates", help="Drop the gates saved in the run's config.yaml by an earlier bench.")
    ] = False,
    resume: ResumeOpt = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """(Re)run the bench stage: accuracy, latency p50/p90/p99, throughput, memory and size of teacher and
    student (FP32 and INT8) in each runtime, then the CI gates.

    Writes RUN_DIR/bench/results.json, results.md, junit.xml and accuracy_latency.png. A failed gate
    exits 1 and names the gate and by how much. Gate options replace the gates saved in the run's
    config.yaml (by an earlier bench); without any, the saved gates apply again.
    """
    gate_flags = (max_latency_ms, min_accuracy, max_accuracy_drop, baseline, max_regression)
    overrides = _overrides(
        {
            # any gate option (or --no-gates) starts from no gates, so earlier gates do not linger
            "bench.gates": {} if no_gates or any(v is not None for v in gate_flags) else None,
            "bench.threads": threads,
            "bench.runs": runs,
            "bench.runtimes": _csv(runtime, "--runtime", str),
            "bench.batch_sizes": _csv(batch, "--batch", int),
            "bench.gates.max_latency_ms": max_latency_ms,
            "bench.gates.min_accuracy_pct": min_accuracy,
            "bench.gates.max_accuracy_drop_points": max_accuracy_drop,
            "bench.gates.baseline": str(baseline.expanduser().resolve()) if baseline else None,
            "bench.gates.max_regression_pct": _percent(max_regression, "--max-regression"),
        },
        set_,
    )
    _stage_command("bench", run_dir, overrides, resume, quiet, as_json)
    from edgekd.bench.gates import raise_if_failed

    raise_if_failed(run_dir)


def _csv(value: str | None, flag: str, kind: type) -> list | None:
    """``"1,8,32"`` -> ``[1, 8, 32]``; a user error naming the flag when an item does not parse."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return [kind(v) for v in items]
    except ValueError:
        raise EdgekdError(f"{flag} {value!r}: expected a comma-separated list, e.g. {flag} 1,8,32") from None


def _percent(value: str | None, flag: str) -> float | None:
    """``"10%"`` or ``"10"`` -> 10.0."""
    if value is None:
        return None
    try:
        return float(value.strip().removesuffix("%"))
    except ValueError:
        raise EdgekdError(f"{flag} {value!r}: expected a percentage such as 10%") from None


# ---- package (issue 6) -----------------------------------------------------------------------
@app.command()
@handles_errors
def package(
    run_dir: RunDirArg,
    target: Annotated[
        str | None,
        typer.Option("--target", help="Target profile of the bundle (default: the run's target), or a profile YAML."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Also copy the bundle folder and its .tar.gz into this folder."),
    ] = None,
    fp32: Annotated[
        bool | None, typer.Option("--fp32/--no-fp32", help="Also ship model_fp32.onnx beside the INT8 model.")
    ] = None,
    jetpack: Annotated[
        str | None, typer.Option("--jetpack", help="Jetson targets: the JetPack to build for (default: the newest).")
    ] = None,
    resume: ResumeOpt = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """(Re)build the deployment bundle: model_int8.onnx, labels, preprocess.json, infer.py, build_engine.sh,
    a Dockerfile for the target, manifest.json (sha256 of every file) and MODEL_CARD.md, plus its .tar.gz.

    Written to RUN_DIR/package/NAME/ and RUN_DIR/package/NAME.tar.gz.
    """
    target_value = str(Path(target).resolve()) if target and Path(target).is_file() else target
    overrides = _overrides(
        {"package.target": target_value, "package.include_fp32": fp32, "package.jetpack": jetpack}, set_
    )
    if out is not None and out.exists() and not out.is_dir():
        raise EdgekdError(f"--out {out} is a file; pass a folder to copy the bundle into")
    _stage_command("package", run_dir, overrides, resume, quiet, as_json)
    if out is not None:
        _copy_bundle(run_dir, out, quiet or as_json)


def _copy_bundle(run_dir: Path, out: Path, quiet: bool) -> None:
    from edgekd.pipeline import RunDir

    metrics = RunDir(run_dir).load_manifest()["stages"]["package"]["metrics"]
    name = metrics["bundle"]
    if (out / name).exists():
        raise EdgekdError(f"{out / name} already exists; remove it or pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run_dir / "package" / name, out / name)
    if metrics.get("tarball"):
        shutil.copy2(run_dir / metrics["tarball"], out / Path(metrics["tarball"]).name)
    if not quiet:
        print(f"bundle copied to {out / name}", file=sys.stderr)


# ---- train-teacher ---------------------------------------------------------------------------
@app.command("train-teacher")
@handles_errors
def train_teacher(
    arch: Annotated[str, typer.Option("--arch", "-a", help="Architecture: a zoo name (`edgekd models`) or tv:NAME.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the checkpoint (edgekd format).")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="'digits', a folder of .npz files, or an ImageFolder tree.")
    ] = "digits",
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 30,
    lr: Annotated[float, typer.Option("--lr", help="Initial learning rate (SGD, cosine schedule).")] = 0.05,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    max_train_samples: Annotated[
        int | None, typer.Option("--max-train-samples", help="Train on at most N images.")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", help="Resize images to this side (ImageFolder default 224).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a teacher from scratch with cross-entropy (for the demo, or if you have none).

    The checkpoint carries its arch spec, classes and normalisation, so `compress` needs no more flags.
    """
    import torch

    from edgekd.config import DataConfig, TeacherTrainConfig
    from edgekd.data import augment_kwargs, compute_normalization, load_data
    from edgekd.distill.trainer import TrainSetup, resolve_device, train
    from edgekd.models import create_model
    from edgekd.models.checkpoint import save_model

    reporter = Reporter(quiet=quiet or as_json)
    if out.exists() and not force:
        raise EdgekdError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    cfg = TeacherTrainConfig(epochs=epochs, lr=lr, batch_size=batch_size)
    data_cfg = DataConfig(source=data, max_train_samples=max_train_samples, image_size=image_size)
    bundle = load_data(
        data, val_fraction=data_cfg.val_fraction, seed=seed, max_train_samples=max_train_samples, image_size=image_size
    )
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
            device=resolve_device(device),
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


# ---- information -----------------------------------------------------------------------------
@app.command()
@handles_errors
def targets(as_json: JsonOpt = False) -> None:
    """List the target device profiles (with their default runtime and precision)."""
    from edgekd.targets import list_targets

    profiles = list_targets()
    if as_json:
        print(json.dumps([p.model_dump(mode="json") for p in profiles], indent=2))
        return
    table = Table(title="edgekd targets")
    for col in ("name", "device", "kind", "runtime", "precision", "INT8 TOPS (dense)", "memory GB/s"):
        table.add_column(col)
    for p in profiles:
        table.add_row(
            p.name,
            p.display_name,
            p.kind,
            p.runtime,
            p.precision,
            "-" if p.int8_tops_dense is None else f"{p.int8_tops_dense:g}",
            "-" if p.memory_bandwidth_gbs is None else f"{p.memory_bandwidth_gbs:g}",
        )
    stdout.print(table)


@app.command()
@handles_errors
def models(as_json: JsonOpt = False) -> None:
    """List the model zoo's architectures (any torchvision classifier also works as tv:NAME)."""
    from edgekd.models import count_parameters, create_model, list_models

    rows = []
    for name in list_models():
        rows.append({"name": name, "parameters_10_classes": count_parameters(create_model(name, num_classes=10))})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="edgekd model zoo (plus tv:NAME for any torchvision classifier)")
    table.add_column("name")
    table.add_column("parameters (10 classes, 3 channels)", justify="right")
    for r in rows:
        table.add_row(r["name"], f"{r['parameters_10_classes']:,}")
    stdout.print(table)


@app.command()
@handles_errors
def inspect(run_dir: RunDirArg, as_json: JsonOpt = False) -> None:
    """Show a run directory's manifest: each stage's status, timing and key metrics, whether its
    outputs still match their recorded sha256, and whether it is stale (its inputs changed since it
    ran, e.g. after `edgekd distill` was rerun; `compress --resume` would rerun it)."""
    from edgekd.pipeline import RunDir, Runner

    run = RunDir(run_dir)
    manifest = run.load_manifest()
    runner = Runner(run, build_config(None, None, base=read_yaml(run.config_path)))
    stale = runner.stale_stages()
    for name, rec in manifest.get("stages", {}).items():
        rec["outputs_verified"] = run.outputs_verify(name)
        rec["stale"] = name in stale
    if as_json:
        print(json.dumps(manifest, indent=2, default=str))
        return
    table = Table(title=f"{run_dir}  (target {manifest.get('target')}, edgekd {manifest.get('edgekd_version')})")
    for col in ("stage", "status", "seconds", "outputs", "key metrics"):
        table.add_column(col)
    for name, rec in manifest.get("stages", {}).items():
        outputs = rec.get("outputs") or {}
        metrics = rec.get("metrics") or {}
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in list(metrics.items())[:4]
            if isinstance(v, int | float)
        )
        status = rec.get("status", "?")
        if status == "failed":
            status += f": {rec.get('error', '')}"
        elif status == "done" and rec["stale"]:
            status = "stale (inputs changed)"
        table.add_row(
            name,
            status,
            f"{rec.get('seconds', 0):.1f}",
            f"{len(outputs)} files, {'verified' if rec['outputs_verified'] else 'MODIFIED or missing'}"
            if outputs
            else "-",
            shown,
        )
    stdout.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
