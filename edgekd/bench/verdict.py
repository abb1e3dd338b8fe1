"""The plain verdict at the end of report.md: is this student fit to ship, by which thresholds.

Gates (``bench.gates``) are opt-in and fail CI; the verdict is always given, with edgekd's default
thresholds where the user set no gate, and says which thresholds produced it:

- the student's top-1 against the teacher's, in the same runtime (``bench.gates.max_accuracy_drop_points``
  when set, else :data:`DEFAULT_MAX_DROP_POINTS`);
- each student model's top-1 in its runtime against the same model in PyTorch
  (:data:`DEFAULT_MAX_RUNTIME_GAP_POINTS`): a larger gap means the exported model is not the trained one;
- the INT8 student against the FP32 student in PyTorch (``quantize.max_drop`` as the quantize stage
  recorded it, else :data:`DEFAULT_MAX_INT8_DROP_POINTS`);
- any failed CI gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_DROP_POINTS = 3.0  # student vs teacher, top-1 points
DEFAULT_MAX_RUNTIME_GAP_POINTS = 1.0  # |top-1 in the runtime - top-1 in PyTorch|, same model, points
DEFAULT_MAX_INT8_DROP_POINTS = 1.0  # INT8 vs FP32 student in PyTorch, points


@dataclass
class Verdict:
    status: str  # ready | not ready | no result | none yet
    problems: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    thresholds: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if self.status == "ready":
            head = f"**Verdict: ready.** {_sentence(self.passed)}"
        elif self.status == "not ready":
            head = f"**Verdict: not ready.** {_sentence(self.problems)}"
        else:
            head = f"**Verdict: {self.status}.** {_sentence(self.problems)}"
        out = ["## Verdict", "", head, ""]
        if self.thresholds:
            out += ["Thresholds: " + "; ".join(self.thresholds) + ".", ""]
        return out


def _sentence(parts: list[str]) -> str:
    text = "; ".join(parts)
    return (text[:1].upper() + text[1:] + ".") if text else ""


def _pts(x: float) -> str:
    return f"{x:.2f}"


def _points(x: float) -> str:
    return f"{x:g} point{'' if x == 1 else 's'}"


def verdict(results: dict[str, Any] | None, stages: dict[str, Any], run_dir: str = "RUN_DIR") -> Verdict:
    """The verdict from ``bench/results.json`` (None when there is none) and the manifest's stage records."""
    failed = [(name, rec) for name, rec in stages.items() if rec.get("status") == "failed"]
    if failed:
        name, rec = failed[0]
        return Verdict(
            "no result",
            [
                f"the run stopped at stage {name} ({rec.get('error') or 'no message recorded'}), so nothing after it "
                f"was measured; fix that and rerun with `edgekd compress --out {run_dir} --resume`"
            ],
        )
    if not results or not results.get("models"):
        return Verdict("none yet", [f"nothing has been benchmarked; run `edgekd bench {run_dir}`"])
    gates = results.get("gate_settings") or {}
    max_drop = gates.get("max_accuracy_drop_points")
    drop_source = "bench.gates.max_accuracy_drop_points" if max_drop is not None else "edgekd default"
    max_drop = float(max_drop) if max_drop is not None else DEFAULT_MAX_DROP_POINTS
    # the task's metric: top-1 for classifiers, mAP@[.5:.95] for detectors (results name it, edgekd/tasks/)
    key, label = results.get("metric", "top1"), results.get("metric_label", "top-1")
    v = Verdict("ready")
    v.thresholds.append(f"student within {_points(max_drop)} of the teacher's {label} ({drop_source})")
    v.thresholds.append(
        f"each student model's {label} in its runtime within {_points(DEFAULT_MAX_RUNTIME_GAP_POINTS)} of the same "
        "model in PyTorch (edgekd default)"
    )
    rows = results["models"]
    teachers = {r["runtime"]: r for r in rows if r["model"] == "teacher" and r.get(key) is not None}
    teacher_pt = results.get(f"teacher_pytorch_{key}")
    students = [r for r in rows if r["model"] == "student" and r.get(key) is not None]
    worst = None
    for r in students:
        ref = teachers.get(r["runtime"], {}).get(key, teacher_pt)
        if ref is None:
            continue
        drop = 100 * (ref - r[key])
        if worst is None or drop > worst[0]:
            worst = (drop, r)
    if worst is not None:
        drop, r = worst
        what = f"{r['model']} {r['format']} ({r['runtime']})"
        if drop > max_drop:
            v.problems.append(f"{what} is {_pts(drop)} points below the teacher (limit {max_drop:g})")
        else:
            v.passed.append(f"the student is within {_pts(max(drop, 0.0))} points of the teacher ({what}, worst row)")
    gaps = []
    for r in students:
        if r.get(f"pytorch_{key}") is None:
            continue
        gap = 100 * abs(r[key] - r[f"pytorch_{key}"])
        gaps.append(gap)
        if gap > DEFAULT_MAX_RUNTIME_GAP_POINTS:
            v.problems.append(
                f"student {r['format']} scores {_pts(100 * r[key])}% in {r['runtime']} but "
                f"{_pts(100 * r[f'pytorch_{key}'])}% in PyTorch, {_pts(gap)} points apart (limit "
                f"{DEFAULT_MAX_RUNTIME_GAP_POINTS:g}): the exported model does not behave as the trained one"
            )
    if gaps and max(gaps) <= DEFAULT_MAX_RUNTIME_GAP_POINTS:
        v.passed.append(f"every runtime agrees with PyTorch within {_pts(max(gaps))} points")
    q = (stages.get("quantize") or {}).get("metrics") or {}
    if q.get("mode") not in (None, "off") and q.get("drop_points") is not None:
        limit = q.get("max_drop_points")
        source = "quantize.max_drop" if limit is not None else "edgekd default"
        limit = float(limit) if limit is not None else DEFAULT_MAX_INT8_DROP_POINTS
        v.thresholds.append(f"INT8 within {_points(limit)} of the FP32 student in PyTorch ({source})")
        if q["drop_points"] > limit:
            v.problems.append(f"INT8 loses {_pts(q['drop_points'])} points against FP32 (limit {limit:g})")
        else:
            v.passed.append(f"INT8 is within {_pts(max(q['drop_points'], 0.0))} points of FP32")
    failed_gates = [g for g in results.get("gates") or [] if g.get("status") == "failed"]
    if failed_gates:
        v.problems.append(f"{len(failed_gates)} CI gate(s) failed: " + "; ".join(g["message"] for g in failed_gates))
    comparison = results.get("comparison") or {}
    if comparison.get("speedup_b1"):
        v.passed.append(
            f"it runs {comparison['speedup_b1']:.2f}x faster than the teacher at batch 1 "
            f"({comparison.get('runtime')}, {results.get('latency_source', 'measured')})"
        )
    if v.problems:
        v.status = "not ready"
    return v
