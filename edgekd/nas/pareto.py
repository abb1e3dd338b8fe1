"""``search/pareto.png``: proxy accuracy against estimated latency for every trained candidate.

Searched candidates are dots (the Pareto front joined by a line), the hand-picked zoo students
are labelled diamonds, the teacher a star (its accuracy is its own on the same validation
subset, not a proxy training), the budget a dashed vertical line and the chosen student a ring.
Latencies are modelled (their source is in the axis label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.io import atomic_write


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by another that is both faster and at least as accurate, by latency."""
    front, best = [], float("-inf")
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((lat, acc))
            best = acc
    return front


def plot_pareto(
    path: Path,
    records: list[dict[str, Any]],
    *,
    budget_ms: float,
    best_key: str | None,
    title: str,
    score_key: str = "proxy_top1",
    score_label: str = "proxy top-1 (%)",
) -> None:
    """``score_key`` names the records' score in [0, 1] (plotted x100): detectors use ``proxy_map50_95``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    nas = [r for r in records if r.get("kind") == "nas" and r.get("status") == "trained"]
    zoo = [r for r in records if r.get("kind") == "zoo" and r.get("status") == "trained"]
    teacher = [r for r in records if r.get("kind") == "teacher"]
    pts = [(r["latency_ms"], 100 * r[score_key]) for r in nas]
    if pts:
        ax.scatter(*zip(*pts, strict=True), s=18, c="tab:blue", alpha=0.7, label=f"searched ({len(pts)})")
        front = pareto_front(pts)
        ax.plot(*zip(*front, strict=True), c="tab:blue", lw=1, alpha=0.6)
    for r in zoo:
        ax.scatter(r["latency_ms"], 100 * r[score_key], marker="D", s=30, c="tab:orange")
        ax.annotate(
            r["name"], (r["latency_ms"], 100 * r[score_key]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    if zoo:
        ax.scatter([], [], marker="D", s=30, c="tab:orange", label="hand-picked zoo (same proxy)")
    for r in teacher:
        ax.scatter(
            r["latency_ms"], 100 * r[score_key], marker="*", s=120, c="tab:red", label="teacher (its own accuracy)"
        )
    for r in nas + zoo:
        if r["key"] == best_key:
            ax.scatter(r["latency_ms"], 100 * r[score_key], s=140, facecolors="none", edgecolors="k", label="chosen")
    ax.axvline(budget_ms, ls="--", c="gray", lw=1, label=f"budget {budget_ms:.3g} ms")
    sources = sorted({str(r.get("latency_source")) for r in records if r.get("latency_source")})
    ax.set_xscale("log")
    ax.set_xlabel(f"estimated latency, ms (modelled: {', '.join(sources)})")
    ax.set_ylabel(score_label)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
