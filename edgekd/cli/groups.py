"""Option groups: options that go together on several commands, declared once as a function whose
parameters are the options and which returns their config overrides; ``takes`` adds groups to a
command. Also the small parsers of option values."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgekd.cli.options import (
    AssistantOpt,
    BaselineOpt,
    BaselineResultsOpt,
    ChannelsLastOpt,
    CompileOpt,
    DataFreeOpt,
    EpochsOpt,
    JsonOpt,
    LatencyMsOpt,
    LatencyRatioOpt,
    MaxAccuracyDropOpt,
    MaxDropOpt,
    MaxLatencyMsOpt,
    MaxMapDropOpt,
    MaxRegressionOpt,
    MethodsOpt,
    MinAccuracyOpt,
    NoGatesOpt,
    PrecisionOpt,
    QatTeacherOpt,
    QuietOpt,
    ResumeOpt,
    RunDirArg,
    SchemeOpt,
    SetOpt,
    StrategyOpt,
    TrialsOpt,
    _methods_overrides,
    _scheme_overrides,
    _speed_overrides,
)
from edgekd.config import parse_set_option
from edgekd.errors import EdgekdError


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


def _drop_gate(max_accuracy_drop: float | None, max_map_drop: float | None) -> float | None:
    """``--max-map-drop`` is the detection name of ``--max-accuracy-drop``: one gate, one limit."""
    if None not in (max_accuracy_drop, max_map_drop) and max_accuracy_drop != max_map_drop:
        raise EdgekdError(
            f"--max-accuracy-drop {max_accuracy_drop:g} and --max-map-drop {max_map_drop:g} set one gate (the "
            "student's drop below the teacher, mAP for detectors); pass one of them"
        )
    return max_map_drop if max_map_drop is not None else max_accuracy_drop


@group
def drop_gate_options(max_accuracy_drop: MaxAccuracyDropOpt = None, max_map_drop: MaxMapDropOpt = None) -> dict:
    """The accuracy (mAP) drop gate on ``compress``, whose --baseline is the student-alone run's."""
    return {"bench.gates.max_accuracy_drop_points": _drop_gate(max_accuracy_drop, max_map_drop)}


@group
def gate_options(
    max_latency_ms: MaxLatencyMsOpt = None, min_accuracy: MinAccuracyOpt = None,
    max_accuracy_drop: MaxAccuracyDropOpt = None, max_map_drop: MaxMapDropOpt = None,
    baseline: BaselineResultsOpt = None, max_regression: MaxRegressionOpt = None, no_gates: NoGatesOpt = False,
) -> dict[str, Any]:  # fmt: skip
    max_accuracy_drop = _drop_gate(max_accuracy_drop, max_map_drop)
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
