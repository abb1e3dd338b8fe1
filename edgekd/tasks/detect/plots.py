"""The detection bench's pictures: precision-recall curves at IoU 0.5 (pycocotools' own precision
table, per class) and a grid of validation images with the teacher's and the student's boxes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from edgekd.io import atomic_write  # noqa: E402


def pr_curve_plot(curves: dict[str, dict], path: Path) -> Path | None:
    """``curves``: model label -> ``{"recall": [...], class name: [precision ...]}``; one panel per model."""
    curves = {label: c for label, c in curves.items() if c}
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 4), squeeze=False)
    for ax, (label, c) in zip(axes[0], curves.items(), strict=True):
        for name, precision in c.items():
            if name != "recall":
                ax.plot(c["recall"], precision, label=name)
        ax.set(
            title=f"{label}: precision-recall at IoU 0.5",
            xlabel="recall",
            ylabel="precision",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return path


def detections_grid(
    split, rows: dict[str, list], names: list[str], path: Path, n: int = 6, min_score: float = 0.3
) -> Path:
    """The first ``n`` validation images, one row per model (``rows``: label -> per-image detections)."""
    n = min(n, len(split))
    fig, axes = plt.subplots(len(rows), n, figsize=(2.4 * n, 2.6 * len(rows)), squeeze=False)
    for r, (label, preds) in enumerate(rows.items()):
        for i in range(n):
            ax = axes[r][i]
            ax.imshow(split.image(i).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            keep = preds[i]["scores"] >= min_score
            for box, lab in zip(preds[i]["boxes"][keep].tolist(), preds[i]["labels"][keep].tolist(), strict=True):
                x1, y1, x2, y2 = box
                ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="orangered", lw=1))
                ax.text(x1, y1, names[int(lab)], color="orangered", fontsize=6, va="bottom")
            if i == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(f"validation images, boxes with score >= {min_score}", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return path
