"""CI gates over a bench result: latency, accuracy, accuracy drop against the teacher, regression.

Each gate is checked for every student row (each format and runtime) and gives one
``GateResult``: passed, failed (with by how much), or skipped (with why). The bench stage stores
them in ``results.json`` and ``junit.xml`` and always finishes, so CI gets its files; the CLI then
calls ``raise_if_failed`` and exits 1 when a gate failed (``pipeline.CheckFailed``).

Units follow the tables: latency in ms (batch 1, at ``latency_percentile``), accuracy in percent,
accuracy drop in percentage points, regression in percent of the baseline's p50 latency at the
same batch, for the same (model, format, runtime).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgekd.errors import EdgekdError
from edgekd.schema import Strict


class GateConfig(Strict):
    """CI gates checked by the bench stage (issue 6). Unset gates are not checked.

    Accuracy is in percent and drops in percentage points, as the tables print them. The latency
    and accuracy gates apply to every benchmarked student row (each model format and runtime).
    """

    max_latency_ms: float | None = Field(None, gt=0)  # at batch 1, the percentile below
    latency_percentile: Literal["p50", "p90", "p99"] = "p50"
    min_accuracy_pct: float | None = Field(None, ge=0, le=100)
    max_accuracy_drop_points: float | None = Field(None, ge=0, le=100)  # student vs the teacher
    baseline: str | None = None  # an earlier bench/results.json
    max_regression_pct: float | None = Field(None, ge=0)  # p50 latency against the baseline, same row and batch


@dataclass
class GateResult:
    gate: str  # max_latency_ms | min_accuracy | max_accuracy_drop | max_regression
    subject: str  # "student onnx-int8 onnxruntime" (and the batch for regressions)
    status: str  # passed | failed | skipped
    value: float | None
    limit: float | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_baseline(path: str | Path) -> dict[str, Any]:
    """An earlier ``bench/results.json``; a user error when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"baseline {path} does not exist; pass the results.json of an earlier `edgekd bench`")
    try:
        data = json.loads(path.read_text())
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise EdgekdError(f"baseline {path} is not an edgekd bench results.json; pass RUN_DIR/bench/results.json")
    return data


def subject(row: dict[str, Any]) -> str:
    return f"{row['model']} {row['format']} {row['runtime']}"


def _by_row(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row["model"], row["format"], row["runtime"])


def teacher_reference(results: dict[str, Any], runtime: str) -> tuple[float | None, str]:
    """The teacher's top-1 to compare a student of ``runtime`` with: the teacher's row in the same
    runtime, else its FP32 ONNX row, else its PyTorch accuracy from the teacher stage."""
    rows = [r for r in results["models"] if r["model"] == "teacher" and r.get("top1") is not None]
    for r in rows:
        if r["runtime"] == runtime:
            return r["top1"], subject(r)
    for r in rows:
        if r["format"] == "onnx-fp32":
            return r["top1"], subject(r)
    if results.get("teacher_pytorch_top1") is not None:
        return results["teacher_pytorch_top1"], "teacher (PyTorch, teacher stage)"
    return None, ""


def evaluate_gates(results: dict[str, Any], gates: GateConfig, baseline: dict[str, Any] | None) -> list[GateResult]:
    out: list[GateResult] = []
    students = [r for r in results["models"] if r["model"] == "student"]
    pct = gates.latency_percentile
    for row in students:
        name = subject(row)
        lat = row["latency_b1"]
        if gates.max_latency_ms is not None:
            value, limit = lat[f"{pct}_ms"], gates.max_latency_ms
            ok = value <= limit
            msg = f"{pct} latency {value:.3f} ms at batch {lat['batch_size']} {'<=' if ok else '>'} {limit:g} ms" + (
                "" if ok else f" (over by {value - limit:.3f} ms, {100 * (value / limit - 1):+.0f}%)"
            )
            out.append(GateResult("max_latency_ms", name, "passed" if ok else "failed", value, limit, msg))
        top1 = row.get("top1")
        if gates.min_accuracy_pct is not None:
            limit = gates.min_accuracy_pct
            if top1 is None:
                out.append(GateResult("min_accuracy", name, "skipped", None, limit, "no accuracy measured"))
            else:
                value = 100 * top1
                ok = value >= limit
                msg = f"top-1 {value:.2f}% {'>=' if ok else '<'} {limit:g}%" + (
                    "" if ok else f" (short by {limit - value:.2f} points)"
                )
                out.append(GateResult("min_accuracy", name, "passed" if ok else "failed", value, limit, msg))
        if gates.max_accuracy_drop_points is not None:
            limit = gates.max_accuracy_drop_points
            ref, ref_name = teacher_reference(results, row["runtime"])
            if top1 is None or ref is None:
                msg = "no teacher accuracy to compare"
                out.append(GateResult("max_accuracy_drop", name, "skipped", None, limit, msg))
            else:
                drop = 100 * (ref - top1)
                ok = drop <= limit
                msg = f"top-1 {100 * top1:.2f}% vs teacher {100 * ref:.2f}% ({ref_name}): drop {drop:.2f} points " + (
                    f"<= {limit:g}" if ok else f"> {limit:g} (over by {drop - limit:.2f} points)"
                )
                out.append(GateResult("max_accuracy_drop", name, "passed" if ok else "failed", drop, limit, msg))
    if gates.max_regression_pct is not None:
        out += _regressions(results, gates.max_regression_pct, baseline)
    return out


def _regressions(results: dict[str, Any], limit: float, baseline: dict[str, Any] | None) -> list[GateResult]:
    if baseline is None:
        return [GateResult("max_regression", "all rows", "skipped", None, limit, "no --baseline given")]
    old = {_by_row(r): r for r in baseline.get("models", [])}
    out = []
    for row in results["models"]:
        base = old.get(_by_row(row))
        for batch, rec in row["latency"].items():
            name = f"{subject(row)} batch {batch}"
            prev = (base or {}).get("latency", {}).get(str(batch))
            if prev is None:
                out.append(GateResult("max_regression", name, "skipped", None, limit, "not in the baseline"))
                continue
            change = 100 * (rec["p50_ms"] / prev["p50_ms"] - 1)
            ok = change <= limit
            msg = f"p50 {rec['p50_ms']:.3f} ms vs baseline {prev['p50_ms']:.3f} ms: {change:+.1f}% " + (
                f"<= +{limit:g}%" if ok else f"> +{limit:g}% (over by {change - limit:.1f} points)"
            )
            out.append(GateResult("max_regression", name, "passed" if ok else "failed", change, limit, msg))
    host, base_host = results.get("host", {}), baseline.get("host", {})
    if base_host.get("cpu") != host.get("cpu") or base_host.get("gpu") != host.get("gpu"):
        for r in out:
            r.message += f" [baseline measured on another machine: {base_host.get('cpu')}, GPU {base_host.get('gpu')}]"
    return out


def raise_if_failed(run_path: Path) -> None:
    """Exit 1 (``CheckFailed``) with one line naming the failed gates, when ``bench/results.json`` has any."""
    from edgekd.errors import CheckFailed

    path = Path(run_path) / "bench" / "results.json"
    if not path.is_file():
        return
    gates = json.loads(path.read_text()).get("gates") or []
    failed = [g for g in gates if g["status"] == "failed"]
    if failed:
        shown = "; ".join(f"{g['gate']} [{g['subject']}]: {g['message']}" for g in failed[:3])
        more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        raise CheckFailed(f"{len(failed)} bench gate(s) failed: {shown}{more}; see {path.parent / 'junit.xml'}")
