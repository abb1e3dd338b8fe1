"""Options shared by several commands, defined once: Typer ``Annotated`` aliases, the groups of them
that stand for config settings together (``Group``: the options and their overrides, ``section.key``:
value), and ``takes``, which gives a command the options of some groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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


NmsOpt = Annotated[
    str | None,
    typer.Option(
        "--nms",
        help="Detectors: efficient (decode + NMS inside the ONNX, EfficientNMS outputs; the default) or none (the "
        "raw head, described in the ONNX metadata, for your own NMS; bench and the bundle decode it).",
    ),
]


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
    typer.Option(
        "--max-accuracy-drop",
        help="Gate: student top-1 (mAP@[.5:.95] for detectors) at most this many points below the teacher.",
    ),
]


MaxMapDropOpt = Annotated[
    float | None,
    typer.Option(
        "--max-map-drop",
        help="Gate (detectors): student mAP@[.5:.95] at most this many points below the teacher; the detection "
        "name of --max-accuracy-drop (one gate).",
    ),
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
