"""The detector search space as data: choices, sample -> spec, and the spec's name.

An edge detector (edgekd/tasks/detect/edge_detector.py) is fixed by its stem width, four stage
widths and CSP depths (strides 4/8/16/32), its neck width and its head width; a candidate adds its
input side. The choices come from ``detect.search`` (config): one NNI choice per label

    imgsz, stem, w0..w3 (stage widths), d0..d3 (stage depths), neck, head

and a sample (NNI's dict from label to value) becomes the spec ``{"name": ..., "imgsz": ...}`` whose
name ``build_detector`` understands (``edet_c16_w32-64-128-256_d1-2-2-1_n64_h64``), so the distill
stage, the checkpoint (which stores the name and imgsz) and export rebuild it without NNI. The
defaults follow the issue (input 320/416/512 around edet_p..edet_s); tests and digits-detect use
smaller sides. Nothing here imports NNI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.tasks.detect.edge_detector import EdetArch, arch_from_name

STAGES = 4


def space_choices(search) -> dict[str, list[int]]:
    """``{label: values}`` of a ``DetectSearchConfig`` (each list sorted, duplicates dropped)."""
    table = {"imgsz": search.imgsz, "stem": search.stem}
    table.update({f"w{i}": search.widths[i] for i in range(STAGES)})
    table.update({f"d{i}": search.depths[i] for i in range(STAGES)})
    table.update(neck=search.neck, head=search.head)
    return {k: sorted(set(int(v) for v in vals)) for k, vals in table.items()}


def format_spec(arch: EdetArch) -> str:
    return arch.name


def parse_spec(name: str) -> EdetArch:
    """The :class:`EdetArch` of a spec name; ``ValueError`` naming the expected form otherwise."""
    arch = arch_from_name(name)
    if arch is None:
        raise ValueError(
            f"{name!r} is not a detector spec name (edet_c<stem>_w<a>-<b>-<c>-<d>_d<a>-<b>-<c>-<d>_n<neck>_h<head>)"
        )
    return arch


def spec_from_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """``{"name": spec name, "imgsz": side}`` of an NNI sample."""
    arch = EdetArch(
        stem=int(sample["stem"]),
        widths=tuple(int(sample[f"w{i}"]) for i in range(STAGES)),  # type: ignore[arg-type]
        depths=tuple(int(sample[f"d{i}"]) for i in range(STAGES)),  # type: ignore[arg-type]
        neck=int(sample["neck"]),
        head=int(sample["head"]),
    )
    return {"name": format_spec(arch), "imgsz": int(sample["imgsz"])}


def cheapest_sample(table: dict[str, list[int]]) -> dict[str, int]:
    """The smallest value of every choice: the fastest candidate of the space."""
    return {k: min(v) for k, v in table.items()}


def random_samples(table: dict[str, list[int]], n: int, seed: int) -> list[dict[str, int]]:
    """``n`` uniform samples (seeded; for tests and the benchmark, which need no NNI strategy)."""
    rng = np.random.default_rng(seed)
    return [{k: int(v[int(rng.integers(len(v)))]) for k, v in table.items()} for _ in range(n)]


def space_size(table: dict[str, list[int]]) -> int:
    return int(np.prod([len(v) for v in table.values()]))
