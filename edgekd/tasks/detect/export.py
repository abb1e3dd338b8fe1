"""ONNX export of an edge detector with decode + NMS inside, and an ONNX Runtime predictor.

Interface (DESIGN.md, every runtime): input ``images`` float32 ``[B, 3, H, W]`` (RGB in [0, 1],
letterboxed); outputs ``num_dets`` int32 ``[B, 1]``, ``det_boxes`` float32 ``[B, K, 4]`` (x1, y1,
x2, y2 in input pixels), ``det_scores`` float32 ``[B, K]``, ``det_classes`` int32 ``[B, K]`` --
TensorRT's EfficientNMS convention. ``nms=None`` (``--nms none``) exports the raw head instead, for
users with their own NMS: ``cls_p3..p5`` ``[B, C, H/s, W/s]`` (class logits, sigmoid not applied) and
``reg_p3..p5`` ``[B, 4 R, H/s, W/s]`` (DFL bin logits, ``R`` bins per side l, t, r, b). Every export
writes what its outputs mean into the ONNX metadata (``edgekd.detect.*``: head, strides, layout,
classes, scores, box format; :func:`onnx_metadata`), and ``OnnxDetector`` decodes a raw head with
the same decode and NMS as PyTorch (``edgekd.tasks.detect.decode``, ``EfficientNMSOutputs``), so
parity and bench hold for either head.

Which NMS node, and why the standard ONNX ``NonMaxSuppression`` (checked 2026-12 in the vendor
documents found with the search tool):

- ``EfficientNMS_TRT`` is a TensorRT plugin on the IPluginV2 interface. The TensorRT 10.12 release
  notes deprecate "EfficientNMS_TRT (version 1)" among the IPluginV2 plugins; the TensorRT 11.x
  migration guide (11.4) keeps the V2 plugin interfaces "deprecated, not removed". A graph with that
  node also cannot run in ONNX Runtime (no such operator), so it would need a second graph per model.
- ``NonMaxSuppression`` is a standard ONNX operator (opset >= 10). The ONNX-TensorRT parser's operator
  matrix lists it as supported (FP32, FP16) in the 10.x parsers (TensorRT has its own NMS layer
  since 8.5, ``INetworkDefinition::addNMS``, still in 11.x, with a four-argument form added in
  10.14), so TensorRT 10.3 (JetPack 6.2) and 11.x both build it without a plugin, and ONNX Runtime
  runs the same file.

So the graph uses ``NonMaxSuppression`` and pads its ``[N, 3]`` selected indices to the EfficientNMS
outputs with ScatterND + TopK + Gather (``edgekd.tasks.detect.nms``). Known cost: NMS has a
data-dependent output shape in TensorRT, which ONNX Runtime's TensorRT provider notes can be slower
than the fused plugin (onnxruntime PR #23705); the outputs keep the plugin's names and shapes, so
swapping the NMS sub-graph for the plugin later changes nothing downstream.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.io import atomic_write
from edgekd.runtimes.onnxruntime.int8_encoding import host_model_source
from edgekd.tasks.detect.decode import decode
from edgekd.tasks.detect.edge_detector import EdgeDetector, is_edge_detector
from edgekd.tasks.detect.nms import EfficientNMSOutputs
from edgekd.tasks.detect.predict import padded_to_list

OUTPUT_NAMES = ["num_dets", "det_boxes", "det_scores", "det_classes"]
RAW_OUTPUT_NAMES = [f"{k}_p{lvl}" for k in ("cls", "reg") for lvl in (3, 4, 5)]
DEFAULT_NMS = {"max_det": 100, "iou": 0.6, "conf": 0.001}
META = "edgekd.detect."  # prefix of the metadata_props keys the export writes


class DetectorWithNMS(nn.Module):
    """An edge detector + decode + clip to the input + EfficientNMS-convention NMS (``nms=None``: raw maps)."""

    def __init__(self, model: EdgeDetector, imgsz: int, nms: dict | None = None):
        super().__init__()
        self.model, self.imgsz = model, imgsz
        self.nms = None if nms is None else EfficientNMSOutputs(nms["max_det"], nms["iou"], nms["conf"])

    def forward(self, images: torch.Tensor):
        out = self.model(images)
        if self.nms is None:
            return (*out["cls"], *out["reg"])
        scores, boxes = decode(out, self.model.strides, self.model.reg_max)
        return self.nms(boxes.clamp(0, float(self.imgsz)), scores)


def export_detector_onnx(
    model: nn.Module,
    path: str | Path,
    imgsz: int = 320,
    nms: dict | None = DEFAULT_NMS,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """Write ``model`` (an ``edet_*``) as ONNX at ``path`` (atomically); see the module docstring."""
    if not is_edge_detector(model):
        raise EdgekdError(
            f"ONNX export with NMS supports edgekd's edge detectors (edet_*), not "
            f"{getattr(model, 'name', type(model).__name__)}; distil into an edet_* student first"
        )
    if imgsz % 32:
        raise EdgekdError(
            f"imgsz {imgsz} is not a multiple of 32 (the largest stride); use e.g. {imgsz // 32 * 32 + 32}"
        )
    nms = None if nms is None else {**DEFAULT_NMS, **nms}
    wrapper = DetectorWithNMS(model, imgsz, nms).eval()
    names = OUTPUT_NAMES if nms is not None else RAW_OUTPUT_NAMES
    axes = {n: {0: "batch"} for n in ["images", *names]} if dynamic_batch else None
    example = torch.zeros(1, 3, imgsz, imgsz)

    def write(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the eager NMS branch is replaced by its symbolic
            torch.onnx.export(
                wrapper,
                (example,),
                str(tmp),
                input_names=["images"],
                output_names=names,
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
        graph = onnx.load(str(tmp))
        for key, value in onnx_metadata(model, imgsz, nms).items():
            graph.metadata_props.add(key=META + key, value=value)
        onnx.save(graph, str(tmp))

    return atomic_write(path, write)


def onnx_metadata(model: nn.Module, imgsz: int, nms: dict | None) -> dict[str, str]:
    """What the exported outputs mean, as ONNX ``metadata_props`` (``edgekd.detect.<key>``): enough for
    a user's own decode and NMS of a raw head, and for ``OnnxDetector`` and the bundle's infer.py."""
    strides = ",".join(str(s) for s in model.strides)
    meta = {
        "head": "nms" if nms is not None else "raw",
        "input": f"images float32 [B,3,{imgsz},{imgsz}]: RGB in [0, 1], letterboxed (long side resized, "
        "padded right/bottom with grey 114/255)",
        "imgsz": str(imgsz),
        "strides": strides,
        "num_classes": str(model.num_classes),
        "reg_max": str(model.reg_max),
    }
    if nms is not None:
        return {
            **meta,
            "layout": "num_dets int32 [B,1]; det_boxes float32 [B,K,4]; det_scores float32 [B,K]; det_classes "
            "int32 [B,K] (TensorRT EfficientNMS convention; entries past num_dets are zero)",
            "scores": "sigmoid probabilities",
            "box_format": "xyxy in input pixels (x1, y1, x2, y2), clipped to the input",
            "nms": json.dumps({**nms, "class_aware": True}),
        }
    return {
        **meta,
        "layout": f"cls_p3..p5 [B,C,H/s,W/s] for s in {strides}; reg_p3..p5 [B,4*reg_max,H/s,W/s], channels "
        "side-major (l, t, r, b), reg_max bins each; location (i, j) of level s is anchor point "
        "((j + 0.5) s, (i + 0.5) s)",
        "scores": "logits: apply sigmoid (independent per class, no background class)",
        "box_format": "DFL (GFL, Li et al. 2020): per side d = sum_k softmax(reg)_k * k in stride units; "
        "box = (x - d_l s, y - d_t s, x + d_r s, y + d_b s), xyxy in input pixels; then clip to the input "
        "and apply class-aware NMS",
    }


def read_metadata(session_or_path) -> dict[str, str]:
    """The ``edgekd.detect.*`` metadata of an exported detector (keys without the prefix)."""
    if isinstance(session_or_path, (str, Path)):
        props = {p.key: p.value for p in onnx.load(str(session_or_path), load_external_data=False).metadata_props}
    else:
        props = session_or_path.get_modelmeta().custom_metadata_map
    return {k.removeprefix(META): v for k, v in props.items() if k.startswith(META)}


def decode_raw_head(
    maps: list[torch.Tensor], strides: tuple[int, ...], reg_max: int, imgsz: int, nms: dict
) -> tuple[torch.Tensor, ...]:
    """The six raw-head outputs (``cls_p3..p5``, ``reg_p3..p5``) -> EfficientNMS-style padded outputs,
    by the very decode and NMS that ``DetectorWithNMS`` puts into the graph."""
    out = {"cls": list(maps[: len(strides)]), "reg": list(maps[len(strides) :])}
    scores, boxes = decode(out, strides, reg_max)
    return EfficientNMSOutputs(nms["max_det"], nms["iou"], nms["conf"])(boxes.clamp(0, float(imgsz)), scores)


class OnnxDetector:
    """ONNX Runtime session on an exported detector; ``__call__(images)`` -> per-image detections.

    A raw head (``--nms none``) is decoded here with the thresholds ``nms`` (``conf``, ``iou``,
    ``max_det``; default :data:`DEFAULT_NMS`), its strides and bins read from the file's metadata."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 1, nms: dict | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # an INT8 CPU flavour runs exactly on any host (its U8U8 re-encoding where U8S8 would saturate)
        source = host_model_source(path)
        self.session = ort.InferenceSession(source, opts, providers=providers or ["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.meta = read_metadata(self.session)
        self.raw = self.output_names == RAW_OUTPUT_NAMES
        self.nms = {**DEFAULT_NMS, **(nms or {})}
        if self.raw and not {"strides", "reg_max"} <= set(self.meta):
            raise EdgekdError(
                f"{path} has raw-head outputs but no edgekd.detect.strides/reg_max metadata; re-export it with edgekd"
            )

    def run(self, images: torch.Tensor) -> dict:
        arrays = self.session.run(None, {"images": images.detach().cpu().numpy().astype("float32")})
        return dict(zip(self.output_names, arrays, strict=True))

    def __call__(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = self.run(images)
        if self.raw:
            strides = tuple(int(s) for s in self.meta["strides"].split(","))
            maps = [torch.from_numpy(out[n]) for n in RAW_OUTPUT_NAMES]
            return padded_to_list(
                *decode_raw_head(maps, strides, int(self.meta["reg_max"]), images.shape[-1], self.nms)
            )
        if self.output_names != OUTPUT_NAMES:
            raise EdgekdError(
                f"this ONNX model's outputs {self.output_names} are neither edgekd's NMS outputs nor its raw head; "
                "export it with edgekd"
            )
        return padded_to_list(*(torch.from_numpy(out[n]) for n in OUTPUT_NAMES))
