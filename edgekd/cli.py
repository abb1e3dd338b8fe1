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

COMPRESS_STAGES = ["teacher", "search", "distill", "quantize", "export", "bench", "package"]


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
# issue 3: distillation schemes (edgekd/distill/schemes/)
SchemeOpt = Annotated[
    str | None,
    typer.Option(
        "--scheme",
        help="How the student learns: offline (default), dml, byot, cskd, tfkd, multi_teacher, data_free, "
        "adversarial, cross_modal, lifelong (settings under distill.<scheme>.*).",
    ),
]
AssistantOpt = Annotated[
    str | None,
    typer.Option("--assistant", help="Teacher-assistant KD: distil this architecture first, then the student from it."),
]
DataFreeOpt = Annotated[
    bool,
    typer.Option(
        "--data-free",
        help="Distil without training images: synthesise inputs from the teacher's BatchNorm statistics "
        "(DeepInversion); real data, if given, is used for validation only.",
    ),
]
MethodsOpt = Annotated[
    str | None,
    typer.Option(
        "--methods",
        help="Distillation methods joined by '+', e.g. kd, dkd, at, kd+at+rkd, crd+kd (kd dkd fitnet at sp "
        "rkd pkt nst fsp cc crd). Each gets its reference weight (kd 0.9, dkd 1, fitnet 100, at 1000, sp 3000, "
        "rkd 1, pkt 30000, nst 50, fsp 50, cc 0.02, crd 0.8) and CE gets 0.1 with kd alone, else 1. "
        "For other weights use a config: distill.methods: [{name: kd, weight: 0.9}, ...].",
    ),
]

# issue 19: trainer speed (edgekd/distill/speed.py)
PrecisionOpt = Annotated[
    str | None,
    typer.Option("--precision", help="Training precision: fp32 (default), bf16 (CUDA or CPU) or fp16 (CUDA)."),
]
ChannelsLastOpt = Annotated[
    bool | None,
    typer.Option("--channels-last/--no-channels-last", help="NHWC memory format (default: on)."),
]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile student and teacher (off by default).")]


def _speed_overrides(precision: str | None, channels_last: bool | None, compile_: bool) -> dict[str, Any]:
    return {"distill.precision": precision, "distill.channels_last": channels_last, "distill.compile": compile_ or None}


def _scheme_overrides(scheme: str | None, assistant: str | None, data_free: bool) -> dict[str, Any]:
    return {
        "distill.scheme": "data_free" if data_free else scheme,
        "distill.assistant": assistant,
    }


def _methods_overrides(spec: str | None) -> dict[str, Any]:
    """``--methods kd+at`` -> distill.methods with each method's reference weight, and the CE weight
    the references use with them (``default_ce_weight``); ``--set`` can still override either."""
    if spec is None:
        return {}
    from edgekd.distill.methods import default_ce_weight, method_class

    names = [n.strip() for n in spec.split("+")]
    if not all(names):
        raise EdgekdError(f"--methods {spec!r}: empty method name; write names joined by '+', e.g. kd+at")
    if len(set(names)) != len(names):
        raise EdgekdError(f"--methods {spec!r}: a method is named twice; name each once")
    methods = [{"name": n, "weight": method_class(n).default_weight, "params": {}} for n in names]
    return {"distill.methods": methods, "distill.ce_weight": default_ce_weight(names)}


# ---- search options (issue 4) ----------------------------------------------------------------
LatencyMsOpt = Annotated[
    float | None,
    typer.Option("--latency-ms", help="Search: latency budget in ms on the target (modelled, batch 1)."),
]
LatencyRatioOpt = Annotated[
    float | None,
    typer.Option(
        "--latency-ratio", help="Search: budget as a fraction of the teacher's estimated latency (default 0.5)."
    ),
]
TrialsOpt = Annotated[int | None, typer.Option("--trials", help="Search: candidates to train (default 20).")]
StrategyOpt = Annotated[
    str | None, typer.Option("--strategy", help="Search strategy: evolution (default), random or tpe.")
]


def _search_overrides(latency_ms, latency_ratio, trials, strategy) -> dict[str, Any]:
    return {
        "search.latency_ms": latency_ms,
        "search.latency_ratio": latency_ratio,
        "search.trials": trials,
        "search.strategy": strategy,
    }


def _overrides(pairs: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    out = {k: v for k, v in pairs.items() if v is not None}
    for item in sets or []:
        key, value = parse_set_option(item)
        out[key] = value
    return out


def _emit_summary(run, as_json: bool, quiet: bool = False) -> None:
    """The bench table and where the run is (nothing with --quiet), or the JSON summary."""
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
    if quiet:
        return
    results_md = run.path / "bench" / "results.md"
    if results_md.is_file():
        stdout.print(results_md.read_text())
    stdout.print(f"Run directory: {run.path}   report: {run.path / 'report.md'}")


def _run_pipeline(
    run, config: RunConfig, stages: list[str], resume: bool, reporter: Reporter, prepare: Callable[[], None]
) -> None:
    """Check the stages' settings, then ``prepare`` the run directory (config, manifest), then run.
    Nothing is written when a check fails; the report is rebuilt whatever happens after that. Warns
    when later stages now hold results of the earlier inputs (a stage rerun alone)."""
    from edgekd.pipeline import Runner
    from edgekd.report import write_report

    runner = Runner(run, config, reporter)
    runner.check(stages)
    prepare()
    stale: list[str] = []
    try:
        runner.run_stages(stages, resume=resume)
    finally:
        if run.manifest and run.path.is_dir():
            stale = runner.stale_stages()
            write_report(run, stale=stale)
    if stale:
        reporter.warn(
            f"out of date: {', '.join(stale)} ran on earlier inputs (a stage before it was rerun); "
            f"refresh with `edgekd compress --out {run.path} --resume`"
        )


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

        from edgekd.stages.search import search_active

        # The search runs only without --student (and with search.enabled).
        stages = [s for s in registered_stages() if s in COMPRESS_STAGES and (s != "search" or search_active(cfg))]
        _run_pipeline(run, cfg, stages, resume, reporter, prepare)
        _emit_summary(run, as_json, quiet)
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
        _emit_summary(run, as_json, quiet)
    finally:
        run.unlock()


@app.command()
@handles_errors
def distill(
    run_dir: RunDirArg,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Distillation epochs.")] = None,
    student: Annotated[str | None, typer.Option("--student", "-s", help="Student architecture.")] = None,
    baseline: Annotated[bool | None, typer.Option("--baseline/--no-baseline", help="Also train without KD.")] = None,
    scheme: SchemeOpt = None,
    assistant: AssistantOpt = None,
    data_free: DataFreeOpt = False,
    methods: MethodsOpt = None,
    precision: PrecisionOpt = None,
    channels_last: ChannelsLastOpt = None,
    compile_: CompileOpt = False,
    resume: ResumeOpt = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """(Re)run the distill stage of a run directory (and any upstream stage that is not done).

    Settings come from RUN_DIR/config.yaml; options here override and are saved back.
    """
    overrides = _overrides(
        {
            "distill.epochs": epochs,
            "student.arch": student,
            "distill.baseline": baseline,
            **_scheme_overrides(scheme, assistant, data_free),
            **_methods_overrides(methods),
            **_speed_overrides(precision, channels_last, compile_),
        },
        set_,
    )
    _stage_command("distill", run_dir, overrides, resume, quiet, as_json)


@app.command()
@handles_errors
def search(
    run_dir: RunDirArg,
    latency_ms: LatencyMsOpt = None,
    latency_ratio: LatencyRatioOpt = None,
    trials: TrialsOpt = None,
    strategy: StrategyOpt = None,
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
    resume: ResumeOpt = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """(Re)run the student search: NNI proposes students, those over the latency budget are rejected
    before training, the rest get a short KD training from the teacher. Writes search/trials.jsonl,
    best_arch.json (the student distill uses) and pareto.png. Sets student.arch to auto."""
    overrides = _overrides(
        {
            "student.arch": "auto",
            "search.enabled": True,
            "search.engine": engine,
            "search.concurrency": concurrency,
            "search.proxy_epochs": proxy_epochs,
            **_search_overrides(latency_ms, latency_ratio, trials, strategy),
        },
        set_,
    )
    _stage_command("search", run_dir, overrides, resume, quiet, as_json)


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


@app.command()
@handles_errors
def quantize(
    run_dir: RunDirArg,
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
    max_drop: Annotated[
        float | None,
        typer.Option("--max-drop", help="Largest top-1 drop in points; more keeps the most sensitive layers in float."),
    ] = None,
    qat_teacher: Annotated[
        bool, typer.Option("--qat-teacher", help="Distil from the original teacher instead of the FP32 student.")
    ] = False,
    resume: ResumeOpt = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """(Re)run the quantize stage: INT8 by quantization-aware distillation (or PTQ), with a
    per-layer sensitivity analysis and mixed precision within --max-drop. QAT distils with CE + KD;
    `--set quantize.feature_method=at` adds a feature method (at, fitnet, sp, ...) at its reference
    weight. Later stages (export, bench, package) keep their old results until
    `edgekd compress --out RUN_DIR --resume` reruns them."""
    overrides = _overrides(
        {
            "quantize.enabled": True,
            "quantize.mode": mode,
            "quantize.calibrator": calibrator,
            "quantize.epochs": epochs,
            "quantize.max_drop": max_drop,
            "quantize.teacher": "teacher" if qat_teacher else None,
        },
        set_,
    )
    _stage_command("quantize", run_dir, overrides, resume, quiet, as_json)


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
            p.name + (f" ({', '.join(p.aliases)})" if p.aliases else ""),
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


# ---- latency model (issue 4): profile a target, estimate a model's latency --------------------
def _parse_shape(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise EdgekdError(f"--input-shape must be C,H,W (e.g. 3,32,32), got {text!r}")
    return dims  # type: ignore[return-value]


@app.command()
@handles_errors
def latency(
    model: Annotated[str, typer.Argument(help="An .onnx file, or a zoo name / tv:NAME (then see --input-shape).")],
    target: Annotated[str, typer.Option("--target", help="Target profile name or YAML path (see `edgekd targets`).")],
    precision: Annotated[
        str | None, typer.Option("--precision", help="fp32, fp16 or int8 (default: the target's precision).")
    ] = None,
    batch: Annotated[int, typer.Option("--batch", help="Batch size.")] = 1,
    input_shape: Annotated[
        str | None,
        typer.Option("--input-shape", help="C,H,W: needed for a zoo model (default 3,32,32) or a dynamic ONNX input."),
    ] = None,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classes of a zoo model.")] = 10,
    lut: Annotated[
        str | None,
        typer.Option(
            "--lut",
            help="Calibration table from `edgekd profile` (default: the target's table in ~/.cache/edgekd/lut "
            "or $EDGEKD_LUT_DIR when there is one); 'none' for the bare roofline.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also print the per-layer table.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Estimate a model's latency on a target (modelled: calibration table or roofline, never measured)."""
    from edgekd.targets import load_target
    from edgekd.targets.latency import estimate_latency

    profile = load_target(target)
    shape = _parse_shape(input_shape)
    path = Path(model)
    if path.suffix.lower() == ".onnx" or path.exists():
        subject: Any = path
    else:
        from edgekd.models import create_model

        shape = shape or (3, 32, 32)
        subject = create_model(model, num_classes=num_classes, in_channels=shape[0])
    table: Any = "auto" if lut is None else None if lut.lower() == "none" else Path(lut)
    est = estimate_latency(
        subject, profile, input_shape=shape, precision=precision or profile.precision, batch=batch, lut=table
    )
    if as_json:
        print(json.dumps(est.to_dict(), indent=2))
        return
    if verbose:
        layers = Table(title=f"{model} on {profile.name}: per layer ({est.precision}, batch {est.batch})")
        for col in ("#", "layer", "kind", "fused", "MFLOPs", "KB moved", "ms", "source"):
            layers.add_column(col, justify="right" if col in ("#", "MFLOPs", "KB moved", "ms") else "left")
        for i, row in enumerate(est.per_layer):
            layers.add_row(
                str(i),
                row["op"],
                row["kind"],
                "+".join(row["fused"]),
                f"{row['flops'] / 1e6:.3f}",
                f"{row['bytes'] / 1e3:.1f}",
                f"{row['ms']:.4f}",
                row["source"] + (f" ({row['bound']})" if row.get("bound") else ""),
            )
        stdout.print(layers)
        for note in est.notes:
            stdout.print(f"note: {note}")
    table_note = f", table {est.table}" if est.table else ""
    stdout.print(
        f"{model}: {est.ms:.3f} ms on {profile.display_name} ({est.precision}, batch {est.batch}, "
        f"{est.flops / 1e6:.1f} MFLOPs) - modelled, source: {est.source}{table_note}"
    )


@app.command()
@handles_errors
def profile(
    target: Annotated[str, typer.Option("--target", help="The target this machine is (x86-cpu, arm-cpu, a Jetson).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the table (default ~/.cache/edgekd/lut/<target>.json)."),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A dozen layers in a few seconds instead of ~160.")] = False,
    precision: Annotated[
        list[str] | None, typer.Option("--precision", help="Precision(s) to measure (TensorRT: fp32, fp16, int8).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="ONNX Runtime intra-op threads (default: physical cores).")
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure layer latencies on this machine and write the table `edgekd latency` prefers to the roofline.

    Runs a grid of one-layer models through TensorRT when it is installed with a GPU, else ONNX
    Runtime on the CPU. Run it on the device itself: a table describes the machine it ran on.
    """
    from edgekd.targets import load_target
    from edgekd.targets.calibrate import profile_runtime, run_profile
    from edgekd.targets.lut import default_table_path

    if threads is not None and threads < 1:
        raise EdgekdError(f"--threads must be at least 1, got {threads}")
    prof = load_target(target)
    precisions = tuple(precision or ["fp32"])
    bad = [p for p in precisions if p not in ("fp32", "fp16", "int8")]
    if bad:
        raise EdgekdError(f"--precision must be fp32, fp16 or int8, got {', '.join(bad)}")
    runtime = profile_runtime(prof, precisions)
    reporter = Reporter(quiet=quiet or as_json)
    destination = out or default_table_path(prof.name)
    reporter.info(f"profile: timing {'the quick' if quick else 'the default'} layer grid for {prof.name} ({runtime})")

    def progress(done: int, total: int, label: str) -> None:
        if done == total or done % 20 == 0:
            reporter.info(f"  {done}/{total} {label}")

    table = run_profile(
        prof.name,
        grid="quick" if quick else "default",
        precisions=precisions,
        threads=threads,
        sessions=1 if quick else 2,
        min_runs=10 if quick else 20,
        budget_s=0.02 if quick else 0.15,
        progress=progress,
    )
    table.save(destination)
    summary = {
        "table": str(destination),
        "target": table.target,
        "runtime": table.runtime,
        "grid": table.grid,
        "entries": {p: len(t.entries) for p, t in table.precisions.items()},
        "run_overhead_ms": {p: t.run_overhead_ms for p, t in table.precisions.items()},
        "fit_median_rel_error": {
            p: {k: f.median_rel_error for k, f in t.fits.items()} for p, t in table.precisions.items()
        },
    }
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        stdout.print(
            f"Latency table for {table.target} ({table.runtime}, {sum(summary['entries'].values())} layers) "
            f"-> {destination}"
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
