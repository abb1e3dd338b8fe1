"""Options shared by several commands, defined once (Typer ``Annotated`` aliases), and the helpers
that turn flags into config overrides (``section.key``: value)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgekd.config import parse_set_option
from edgekd.errors import EdgekdError

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
    typer.Option("--channels-last/--no-channels-last", help="NHWC memory format (default: on CUDA only)."),
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
