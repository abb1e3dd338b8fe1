"""INT8 for edge detectors: calibration, quantization-aware distillation, sensitivity and mixed
precision scored by mAP, the INT8 checkpoint, and the two INT8 ONNX flavours with decode and NMS.

The machinery is classification's (edgekd/quant/: fold BN, fake quantizers, four calibrators, one
scale table exported twice); what differs for a detector lives here:

- :class:`QuantizedDetector` puts the fake-quant copy (``prepare_int8`` of an ``edet_*``) behind the
  detector interface, so training, KD, prediction and the NMS export take it as they take the FP32
  detector. Only the network is quantized: decode (DFL expectation, anchor points) and NMS run after
  it in floating point, and the TensorRT rules checker refuses a Q/DQ there.
- QAT-KD is quantization mimic (Wei et al., "Quantization Mimic: Towards Very Tiny CNN for Object
  Detection", ECCV 2018): the FP32 detector teaches its own quantized copy by its dense responses
  (class KD at the positives and confident locations, ``dense_kd``; the DFL box distributions,
  ``ld``) and by its features (``mimic``: L2 between the two necks' maps inside the ground-truth
  boxes, through a 1x1 adapter that starts as the identity, the two networks having the same
  widths), on top of the detection loss on the ground truth. It runs through the detection training
  loop at a small learning rate (NVIDIA's QAT guidance: about 1% of training's, for about 10% of its
  epochs, at least one).
- Scores are COCO mAP@[.5:.95] (pycocotools) on the validation split, for the calibrator choice,
  the per-layer sensitivities, QAT-or-PTQ and mixed precision (``quantize.max_drop`` in mAP points).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.io import atomic_torch_save
from edgekd.quant.checkpoint import quant_state, read_int8_file, restore_quant_state
from edgekd.quant.graph import QuantizedModel, prepare_int8
from edgekd.tasks.detect.edge_detector import is_edge_detector
from edgekd.tasks.detect.models import build_detector
from edgekd.tasks.detect.train import train_detector
from edgekd.tasks.detect.transforms import iterate_batches

FORMAT = "edgekd.detector-int8/1"
# Quantization mimic's terms and weights (module docstring); the detection loss has weight 1.
QAT_KD = {"dense_kd": 1.0, "ld": 1.0, "mimic": 1.0}
QAT_KD_OPTIONS = {"mimic": {"identity_adapter": True}}


class QuantizedDetector(nn.Module):
    """The fake-quant copy of an edge detector, behind the detector interface (``family == "edet"``)."""

    family = "edet"

    def __init__(self, qm: QuantizedModel, fp32: nn.Module):
        super().__init__()
        _check_edge_detector(fp32)
        self.qm = qm
        self.name, self.num_classes, self.reg_max = fp32.name, fp32.num_classes, fp32.reg_max
        self.strides = tuple(fp32.strides)
        self.feature_channels = list(fp32.feature_channels)

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        return self.qm(x)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.qm(x)["feats"]


def _check_edge_detector(model: nn.Module) -> None:
    if not is_edge_detector(model):
        raise EdgekdError(
            f"INT8 for detectors supports edgekd's edge detectors (edet_*), not "
            f"{getattr(model, 'name', type(model).__name__)}; distil into an edet_* student first"
        )


def prepare_detector_int8(model: nn.Module) -> QuantizedDetector:
    """Fold BN and insert fake quantizers into a copy of the edge detector ``model``."""
    _check_edge_detector(model)
    return QuantizedDetector(prepare_int8(model), model)


def calibration_batches(data, imgsz: int, images: int, batch_size: int) -> list[torch.Tensor]:
    """The first ``images`` training images, letterboxed without augmentation, in batches."""
    split = data.train.subset(min(images, len(data.train)))
    return [b.images for b in iterate_batches(split, imgsz, batch_size, train=False)]


def qat_kd(
    qdet: QuantizedDetector,
    fp32: nn.Module,
    data,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    imgsz: int,
    seed: int,
    hflip: float,
    kd: dict[str, float] | None = None,
    log=None,
) -> dict[str, Any]:
    """Fine-tune ``qdet`` in place: detection loss + quantization mimic from the frozen ``fp32``
    detector (``kd``: the terms and weights; default :data:`QAT_KD`). Returns the training history."""
    teacher = copy.deepcopy(fp32).eval()
    terms = QAT_KD if kd is None else kd
    options = {k: v for k, v in QAT_KD_OPTIONS.items() if k in terms}
    return train_detector(
        qdet,
        data,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        imgsz=imgsz,
        seed=seed,
        teacher=teacher,
        kd=terms or None,
        kd_options=options,
        hflip=hflip,
        log=log,
    )


def save_detector_int8(
    path: str | Path,
    qdet: QuantizedDetector,
    *,
    arch: Any,
    names: list[str],
    category_ids: list[int],
    imgsz: int,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """``quantize/student_int8.pt``: plain tensors; loading rebuilds the detector from ``arch`` and
    prepares it the same way (``prepare_int8`` is deterministic)."""
    qm = qdet.qm
    return atomic_torch_save(
        path,
        {
            "format": FORMAT,
            "arch": arch,
            "names": list(names),
            "category_ids": list(category_ids),
            "imgsz": imgsz,
            **quant_state(qm),
            "metrics": metrics or {},
        },
    )


def load_detector_int8(path: str | Path) -> tuple[QuantizedDetector, dict[str, Any]]:
    """The INT8 detector (CPU, eval) and the file's other entries (``weights_only=True``)."""
    data = read_int8_file(Path(path), FORMAT, "detector")
    fp32 = build_detector(data["arch"], len(data["names"]), data["imgsz"])
    qdet = prepare_detector_int8(fp32)
    restore_quant_state(qdet.qm, data)
    return qdet.eval(), data


def export_detector_int8(
    qdet: QuantizedDetector,
    trt_path: str | Path,
    cpu_path: str | Path | None,
    *,
    imgsz: int,
    nms: dict | None,
    opset: int = 17,
    cpu_isa: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The TensorRT and CPU INT8 flavours of ``qdet`` with decode and NMS (edgekd/export/int8_onnx.py
    for how one scale table becomes two files), plus the rules checker's verdict on the TensorRT one."""
    from edgekd.export.int8_onnx import export_int8
    from edgekd.export.trt_rules import assert_trt_rules
    from edgekd.tasks.detect.export import export_detector_onnx

    def write_float(qm: QuantizedModel, path: Path) -> None:
        export_detector_onnx(QuantizedDetector(qm, qdet), path, imgsz=imgsz, nms=nms, opset=opset)

    info = export_int8(
        qdet.qm,
        trt_path,
        cpu_path,
        input_shape=(3, imgsz, imgsz),
        opset=opset,
        cpu_isa=cpu_isa,
        write_float=write_float,
    )
    info["trt_rules"] = assert_trt_rules(trt_path)
    return info
