"""Accuracy against latency: teacher, FP32 student, INT8 student (and the search's Pareto front).

One PNG per bench run, ``bench/accuracy_latency.png``: measured top-1 on the validation split
against measured p50 latency at batch 1, one marker per model and format for each runtime. When
the run has a search stage whose trials carry a latency and an accuracy, its Pareto front is drawn
too, labelled with that latency's source (the search's latencies may be modelled, not measured).
Matplotlib runs headless (Agg).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.io import atomic_write

_LAT_KEYS = ("latency_ms", "p50_ms", "latency")
_ACC_KEYS = ("val_top1", "top1", "proxy_top1", "accuracy")  # the search journal has proxy_top1


def search_front(run_path: Path) -> tuple[list[tuple[float, float]], str]:
    """Non-dominated (latency ms, top-1 %) points of ``search/trials.jsonl``, and the latency source."""
    path = run_path / "search" / "trials.jsonl"
    points, sources = [], set()
    if not path.is_file():
        return [], ""
    for line in path.read_text().splitlines():
        try:
            trial = json.loads(line)
        except ValueError:
            continue
        flat = {**trial, **(trial.get("metrics") or {})} if isinstance(trial, dict) else {}
        if flat.get("status") == "rejected":
            continue
        lat = next((flat[k] for k in _LAT_KEYS if isinstance(flat.get(k), int | float)), None)
        acc = next((flat[k] for k in _ACC_KEYS if isinstance(flat.get(k), int | float)), None)
        if lat is None or acc is None:
            continue
        points.append((float(lat), 100 * float(acc) if acc <= 1 else float(acc)))
        sources.add(str(flat.get("latency_source") or flat.get("source") or "search estimate"))
    points.sort(key=lambda p: (p[0], -p[1]))
    front, best = [], float("-inf")
    for lat, acc in points:
        if acc > best:
            front.append((lat, acc))
            best = acc
    return front, ", ".join(sorted(sources))


def accuracy_latency_plot(results: dict[str, Any], path: Path, *, front=(), front_source: str = "") -> Path | None:
    """Write the plot; None when no row has both a latency and an accuracy."""
    rows = [r for r in results["models"] if r.get("top1") is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"teacher": "tab:blue", "student": "tab:orange"}
    markers = {"fp32": "o", "int8": "s", "fp16": "^", "engine": "D"}
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for r in rows:
        lat = r["latency_b1"]
        precision = r["format"].split("-")[-1]
        ax.scatter(
            lat["p50_ms"],
            100 * r["top1"],
            color=colors.get(r["model"], "tab:gray"),
            marker=markers.get(precision, "o"),
            s=60,
            zorder=3,
        )
        ax.annotate(
            f"{r['model']} {r['format']}\n({r['runtime']})",
            (lat["p50_ms"], 100 * r["top1"]),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=7,
        )
    if front:
        xs, ys = zip(*front, strict=True)
        label = f"search Pareto front (search accuracy; {front_source} latency, not measured here)"
        ax.plot(xs, ys, "--", color="tab:green", marker=".", label=label)
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency at batch {rows[0]['latency_b1']['batch_size']} (ms, measured, log scale)")
    ax.set_ylabel("top-1 on the validation split (%)")
    host = results.get("host", {})
    ax.set_title(f"Accuracy vs latency, {host.get('cpu', 'this host')}"[:80], fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda p: fig.savefig(p, format="png"))
    finally:
        plt.close(fig)
