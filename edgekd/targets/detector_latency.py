"""A detector's latency on a target: backbone + neck + head through the layer model, NMS measured.

``estimate_detector_latency(model, target)`` takes a detector as ONNX (a path or ``ModelProto``, e.g.
edgekd's export with NMS inside) or as an ``nn.Module`` whose forward returns tensors (traced here),
and returns a :class:`DetectorLatency`: the total and its parts.

- Backbone, neck and head (and the decode arithmetic) are layers priced as every model is
  (:func:`edgekd.targets.latency.price_layers`: the calibration table of ``edgekd profile`` where
  there is one, the roofline otherwise), grouped by the target runtime's fusion rules.
- NMS is the measured term of :mod:`edgekd.targets.nms_cost`: the table's fit of ONNX Runtime's
  ``NonMaxSuppression`` time against its candidates (boxes x classes). Without a table (a Jetson
  modelled from its datasheet) the roofline prices it as a memory pass over the candidates, which
  the notes say.
- Post-processing has data-dependent shapes (how many candidates pass a score filter, how many
  boxes NMS keeps). Static shape inference cannot know them, so they come from one reference run
  of the ONNX model in ONNX Runtime on this machine, on a uniform-noise image (only shapes are
  read from it, never times). With random weights every anchor passes edgekd's 0.001 threshold,
  which makes the NMS term the worst case a trained detector evaluated at ``conf=0.001`` sees.

Parts are read from the ONNX node names the PyTorch exporter writes (module paths): ``backbone``
(torchvision's ``backbone.body`` too), ``neck`` (``fpn``), ``head`` (``rpn``, ``roi_heads``), else
``post`` (input transform, decode, score filter, box gathering); NMS nodes are ``nms``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from edgekd.errors import EdgekdError
from edgekd.targets.graph_cost import layers_from_onnx, load_onnx_model, torch_to_onnx
from edgekd.targets.latency import PRECISIONS, LatencyEstimate, _resolve_table, price_layers
from edgekd.targets.lut import LatencyTable
from edgekd.targets.profile import TargetProfile
from edgekd.targets.registry import load_target

PARTS = ("backbone", "neck", "head", "post", "nms")


@dataclass
class DetectorLatency:
    """Modelled milliseconds of one detector inference, by part (``parts`` sum to ``ms`` less the
    per-call overhead), and how many candidates entered NMS."""

    ms: float
    parts: dict[str, float]
    nms_candidates: int
    estimate: LatencyEstimate
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        return self.estimate.source

    def to_dict(self) -> dict[str, Any]:
        return {
            "ms": self.ms,
            "parts": dict(self.parts),
            "nms_candidates": self.nms_candidates,
            "source": self.source,
            "target": self.estimate.target,
            "precision": self.estimate.precision,
            "run_overhead_ms": self.estimate.run_overhead_ms,
            "flops": self.estimate.flops,
            "notes": list(self.notes),
        }


def part_of(name: str, kind: str) -> str:
    """Which part of a detector an ONNX node belongs to, from its exporter name (a module path)."""
    if kind == "nms":
        return "nms"
    lowered = name.lower()
    if "fpn" in lowered or "/neck/" in lowered or "extra" in lowered:
        return "neck"
    if "/backbone/" in lowered:
        return "backbone"
    if any(h in lowered for h in ("/head/", "/rpn/", "/roi_heads/", "box_head", "box_predictor")):
        return "head"
    return "post"


def reference_shapes(model: onnx.ModelProto, input_shape: tuple[int, ...], batch: int = 1, seed: int = 0):
    """Shapes of every intermediate tensor in one ONNX Runtime run on a uniform-noise input:
    ``{tensor: (shape, holds float data)}`` (used for data-dependent shapes only, never for time)."""
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for t in node.output:
            if t and t not in outputs and typed.get(t):
                probe.graph.output.append(onnx.helper.make_tensor_value_info(t, typed[t], None))
                outputs.add(t)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise EdgekdError(f"ONNX Runtime cannot load the detector to read its shapes ({first}); re-export it") from err
    graph_inputs = [i for i in session.get_inputs()]
    rng = np.random.default_rng(seed)
    feed = {graph_inputs[0].name: rng.uniform(0, 1, (batch, *input_shape)).astype(np.float32)}
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, feed)
    floats = (np.float32, np.float16, np.float64, np.int8, np.uint8)
    return {n: (list(np.shape(v)), np.asarray(v).dtype.type in floats) for n, v in zip(names, values, strict=True)}


def _as_onnx(model: Any, input_shape: tuple[int, int, int], batch: int) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, str | os.PathLike):
        return load_onnx_model(model)
    return torch_to_onnx(model, input_shape, batch)


def estimate_detector_latency(
    model: Any,
    target: str | os.PathLike | TargetProfile,
    *,
    imgsz: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
    precision: str = "fp32",
    batch: int = 1,
    lut: LatencyTable | str | os.PathLike | None = "auto",
) -> DetectorLatency:
    """Modelled latency of a detector (ONNX path, ``ModelProto`` or ``nn.Module``) on ``target``.

    The input is ``input_shape`` (C, H, W), or ``(3, imgsz, imgsz)``; an ONNX model with a static
    input needs neither. ``lut`` as in :func:`edgekd.targets.latency.estimate_latency`.
    """
    profile = target if isinstance(target, TargetProfile) else load_target(target)
    if precision not in PRECISIONS:
        raise EdgekdError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if input_shape is None and imgsz is not None:
        if imgsz < 32:
            raise EdgekdError(f"imgsz must be at least 32, got {imgsz}")
        input_shape = (3, int(imgsz), int(imgsz))
    if not isinstance(model, onnx.ModelProto | str | os.PathLike) and input_shape is None:
        raise EdgekdError("estimating a PyTorch detector needs imgsz (or input_shape=(C, H, W))")
    proto = _as_onnx(model, input_shape, batch)
    if input_shape is None:
        first = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}][0]
        dims = [d.dim_value for d in first.type.tensor_type.shape.dim][1:]
        if not dims or not all(dims):
            raise EdgekdError("the detector's ONNX input has a dynamic size; pass imgsz")
        input_shape = tuple(dims)
    table = _resolve_table(lut, profile)
    runtime = table.runtime if table is not None else profile.runtime
    fixed = _static_batch(proto, input_shape, batch)
    observed = reference_shapes(fixed, input_shape, batch)
    layers = layers_from_onnx(fixed, input_shape=input_shape, batch=batch, runtime=runtime, observed=observed)
    est = price_layers(layers, profile, precision, table, batch=batch, input_shape=input_shape)
    parts = dict.fromkeys(PARTS, 0.0)
    for row in est.per_layer:
        parts[part_of(row["name"], row["kind"])] += row["ms"]
    candidates = int(sum(layer.act_in for layer in layers if layer.kind == "nms"))
    notes = list(est.notes)
    if candidates and not any(r["kind"] == "nms" and r["source"] != "roofline" for r in est.per_layer):
        notes.append("NMS priced by the roofline (no measured NMS term for this target: run `edgekd profile` on it)")
    return DetectorLatency(est.ms, parts, candidates, est, notes)


def _static_batch(model: onnx.ModelProto, input_shape: tuple[int, ...], batch: int) -> onnx.ModelProto:
    """A copy of ``model`` whose image input is ``[batch, *input_shape]`` (a dynamic batch or size
    would leave the reference run's shapes ambiguous)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    inits = {t.name for t in fixed.graph.initializer}
    first = [i for i in fixed.graph.input if i.name not in inits][0]
    dims = first.type.tensor_type.shape.dim
    if len(dims) != len(input_shape) + 1:
        raise EdgekdError(f"input_shape {tuple(input_shape)} does not fit the detector input of rank {len(dims)}")
    for d, size in zip(dims, (batch, *input_shape), strict=True):
        d.ClearField("dim_param")
        d.dim_value = int(size)
    return fixed
