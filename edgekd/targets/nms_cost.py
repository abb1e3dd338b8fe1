"""The NMS term of a detector's latency: ONNX ``NonMaxSuppression`` time against its candidates.

A detector's post-processing is dominated by NMS, whose cost is set by the number of candidates
(box-class pairs) it is given, not by FLOPs: ``edgekd profile`` times the one-node model of
:func:`nms_model` at several (boxes, classes) sizes with :func:`nms_inputs` and fits

    ms = a + c * (candidates / 1e6) ** p      (a, c >= 0, p in [0.8, 2]: :func:`fit_nms`)

which the table stores as the fit of layer kind ``nms`` (graph_cost keys an NMS layer by its
candidates, ``act_in`` = boxes x classes). On ONNX Runtime 1.32 (this repository's 2-core AVX-512
host) it grows a little faster than linearly: 2100 candidates took ~0.02 ms, 84,000 ~1.5 ms (p ~1.2);
the score distribution barely matters once every candidate passes the threshold.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.targets.lut import KindFit

OPSET = 17


def nms_model(boxes: int, classes: int, max_per_class: int = 100, iou: float = 0.6, conf: float = 0.001):
    """A one-node ONNX model: ``NonMaxSuppression(x [1, boxes, 4], x1 [1, classes, boxes])`` -> ``y``."""
    inits = [
        numpy_helper.from_array(np.array([max_per_class], np.int64), "max_out"),
        numpy_helper.from_array(np.array([iou], np.float32), "iou"),
        numpy_helper.from_array(np.array([conf], np.float32), "conf"),
    ]
    node = helper.make_node("NonMaxSuppression", ["x", "x1", "max_out", "iou", "conf"], ["y"])
    graph = helper.make_graph(
        [node],
        "nms",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, boxes, 4]),
            helper.make_tensor_value_info("x1", TensorProto.FLOAT, [1, classes, boxes]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def nms_inputs(boxes: int, classes: int, rng, size: float = 320.0) -> list[np.ndarray]:
    """Candidate boxes ``[1, boxes, 4]`` (xyxy, 4-80 px, anywhere in a ``size`` image) and scores
    ``[1, classes, boxes]`` all above the 0.001 threshold: the worst case (an untrained head, or
    ``conf=0.001`` as mAP evaluation runs), since NMS time is set by the candidates that pass."""
    centre = rng.uniform(0, size, (1, boxes, 2))
    half = rng.uniform(2, 40, (1, boxes, 2))
    xyxy = np.concatenate([centre - half, centre + half], axis=-1).astype(np.float32)
    return [xyxy, rng.uniform(0.002, 1.0, (1, classes, boxes)).astype(np.float32)]


def fit_nms(samples: list[tuple[float, float]]) -> KindFit:
    """Fit ``ms = a + c * (candidates / 1e6) ** p`` to (candidates, ms): a, c >= 0 by least relative
    error for each p on a grid from 0.8 to 2.0, keeping the p with the smallest median relative error."""
    from scipy.optimize import nnls

    if len(samples) < 2:
        raise ValueError("fitting the NMS term needs at least two (candidates, ms) samples")
    n = np.array([c / 1e6 for c, _ in samples])
    ms = np.array([m for _, m in samples])
    weight = 1.0 / np.maximum(ms, 1e-4)
    best: KindFit | None = None
    for p in np.arange(0.8, 2.0001, 0.05):
        rows = np.stack([np.ones_like(n), n**p], axis=1)
        coef, _ = nnls(rows * weight[:, None], ms * weight)
        rel = float(np.median(np.abs(rows @ coef - ms) / np.maximum(ms, 1e-6)))
        if best is None or rel < best.median_rel_error:
            best = KindFit(float(coef[0]), 0.0, float(coef[1]), len(samples), rel, float(round(p, 2)))
    assert best is not None
    return best


def is_nms(model: onnx.ModelProto) -> bool:
    return any(n.op_type == "NonMaxSuppression" for n in model.graph.node)
