"""Options shared by several commands, defined once: Typer ``Annotated`` aliases, the groups of them
that stand for config settings together (``Group``: the options and their overrides, ``section.key``:
value), and ``takes``, which gives a command the options of some groups."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from edgekd.config import parse_set_option
from edgekd.errors import EdgekdError

# ---- the tail of every pipeline command ------------------------------------------------------
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but warnings and errors.")]


JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print a machine-readable JSON summary on stdout (for CI); implies --quiet."),
]


SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
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


RunDirArg = Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory made by `edgekd compress`.")]


# ---- options of more than one command ---------------------------------------------------------
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Distillation epochs (default 30).")]


BaselineOpt = Annotated[
    bool | None,
    typer.Option("--baseline/--no-baseline", help="Also train the student without KD so the report shows the gain."),
]


DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto (default), cpu, cuda or cuda:N.")]


MaxTrainSamplesOpt = Annotated[
    int | None, typer.Option("--max-train-samples", help="Train on at most N images (a quick look).")
]


ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="ONNX Runtime intra-op threads (default: physical cores).")
]


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


def _methods_overrides(methods: str | None) -> dict[str, Any]:
    """``--methods kd+at`` -> distill.methods with each method's reference weight, and the CE weight
    the references use with them (``default_ce_weight``); ``--set`` can still override either."""
    if methods is None:
        return {}
    spec = methods
    from edgekd.distill.methods import default_ce_weight, method_class

    names = [n.strip() for n in spec.split("+")]
    if not all(names):
        raise EdgekdError(f"--methods {spec!r}: empty method name; write names joined by '+', e.g. kd+at")
    if len(set(names)) != len(names):
        raise EdgekdError(f"--methods {spec!r}: a method is named twice; name each once")
    methods = [{"name": n, "weight": method_class(n).default_weight, "params": {}} for n in names]
    return {"distill.methods": methods, "distill.ce_weight": default_ce_weight(names)}


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


MaxDropOpt = Annotated[
    float | None,
    typer.Option(
        "--max-drop",
        help="Largest INT8 top-1 drop in points (default 1.0); more keeps the most sensitive layers in float.",
    ),
]


QatTeacherOpt = Annotated[
    bool,
    typer.Option("--qat-teacher", help="INT8 QAT distils from the original teacher instead of the FP32 student."),
]


# issue 6: the bench stage's CI gates
MaxLatencyMsOpt = Annotated[
    float | None, typer.Option("--max-latency-ms", help="Gate: student p50 latency at batch 1 at most this.")
]


MinAccuracyOpt = Annotated[
    float | None, typer.Option("--min-accuracy", help="Gate: student top-1 at least this, in percent (e.g. 95).")
]


MaxAccuracyDropOpt = Annotated[
    float | None,
    typer.Option("--max-accuracy-drop", help="Gate: student top-1 at most this many points below the teacher."),
]


BaselineResultsOpt = Annotated[
    Path | None, typer.Option("--baseline", help="An earlier bench/results.json to compare latency with.")
]


MaxRegressionOpt = Annotated[
    str | None,
    typer.Option("--max-regression", help="Gate: p50 latency at most this much above --baseline, e.g. 10%."),
]


NoGatesOpt = Annotated[
    bool, typer.Option("--no-gates", help="Drop the gates saved in the run's config.yaml by an earlier bench.")
]


# ---- groups: options that go together, and what they set ---------------------------------------
@dataclass(frozen=True)
class Group:
    """Options several commands take together: the parameters of ``fn`` (``Annotated`` aliases with
    their defaults), and ``fn(**values)``, the config overrides they stand for. A ``passing`` group
    sets nothing: the command gets its values."""

    fn: Callable[..., dict[str, Any]]
    passing: bool = False

    @property
    def params(self) -> list[inspect.Parameter]:
        return list(inspect.signature(self.fn, eval_str=True).parameters.values())


def group(fn: Callable[..., dict[str, Any]] | None = None, *, passing: bool = False):
    """``@group`` makes a ``Group`` of a function: its parameters are the options."""
    return Group(fn, passing) if fn is not None else lambda f: Group(f, passing)


@group
def distill_options(
    epochs: EpochsOpt = None,
    baseline: BaselineOpt = None,
    scheme: SchemeOpt = None,
    assistant: AssistantOpt = None,
    data_free: DataFreeOpt = False,
    methods: MethodsOpt = None,
    precision: PrecisionOpt = None,
    channels_last: ChannelsLastOpt = None,
    compile_: CompileOpt = False,
) -> dict[str, Any]:
    return {
        "distill.epochs": epochs,
        "distill.baseline": baseline,
        **_scheme_overrides(scheme, assistant, data_free),
        **_methods_overrides(methods),
        **_speed_overrides(precision, channels_last, compile_),
    }


@group
def search_options(
    latency_ms: LatencyMsOpt = None, latency_ratio: LatencyRatioOpt = None, trials: TrialsOpt = None,
    strategy: StrategyOpt = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "search.latency_ms": latency_ms,
        "search.latency_ratio": latency_ratio,
        "search.trials": trials,
        "search.strategy": strategy,
    }


@group
def quantize_options(max_drop: MaxDropOpt = None, qat_teacher: QatTeacherOpt = False) -> dict[str, Any]:
    return {"quantize.max_drop": max_drop, "quantize.teacher": "teacher" if qat_teacher else None}


@group
def gate_options(
    max_latency_ms: MaxLatencyMsOpt = None, min_accuracy: MinAccuracyOpt = None,
    max_accuracy_drop: MaxAccuracyDropOpt = None, baseline: BaselineResultsOpt = None,
    max_regression: MaxRegressionOpt = None, no_gates: NoGatesOpt = False,
) -> dict[str, Any]:  # fmt: skip
    gate_flags = (max_latency_ms, min_accuracy, max_accuracy_drop, baseline, max_regression)
    return {
        # any gate option (or --no-gates) starts from no gates, so earlier gates do not linger
        "bench.gates": {} if no_gates or any(v is not None for v in gate_flags) else None,
        "bench.gates.max_latency_ms": max_latency_ms,
        "bench.gates.min_accuracy_pct": min_accuracy,
        "bench.gates.max_accuracy_drop_points": max_accuracy_drop,
        "bench.gates.baseline": str(baseline.expanduser().resolve()) if baseline else None,
        "bench.gates.max_regression_pct": _percent(max_regression, "--max-regression"),
    }


@group(passing=True)
def run_options(
    resume: ResumeOpt = False, set_: SetOpt = None, quiet: QuietOpt = False, as_json: JsonOpt = False
) -> dict[str, Any]:
    """What every pipeline command ends with."""
    return {}


@group(passing=True)
def stage_options(
    run_dir: RunDirArg, resume: ResumeOpt = False, set_: SetOpt = None, quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> dict[str, Any]:  # fmt: skip
    """A single stage's command: the run directory, then what every pipeline command ends with."""
    return {}


def takes(*groups: Group):
    """Give the command ``fn`` the options of ``groups`` after its own. ``fn`` is called with its own
    options, the values of the passing groups, and ``overrides``: what the other groups set."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        added = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for g in groups for p in g.params]
        given = {"overrides"} | {p.name for p in added}
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name not in given]

        @functools.wraps(fn)
        def command(**values: Any) -> Any:
            overrides: dict[str, Any] = {}
            for g in groups:
                if not g.passing:
                    overrides.update(g.fn(**{p.name: values.pop(p.name) for p in g.params}))
            return fn(**values, overrides=overrides)

        command.__signature__ = inspect.Signature([*own, *added])  # type: ignore[attr-defined]
        return command

    return wrap


def _overrides(pairs: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    out = {k: v for k, v in pairs.items() if v is not None}
    for item in sets or []:
        key, value = parse_set_option(item)
        out[key] = value
    return out


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
