"""Object detection for edgekd (issue 17): data, detectors, loss, KD, COCO mAP, ONNX export with NMS.

A library package; the pipeline stages, CLI and task seam call these functions:

- data: ``load_detection_data(spec, layout="auto", seed=0, log=print)`` -> ``DetectionData``
  (COCO, YOLO data.yaml, or the embedded ``digits-detect``); ``iterate_batches`` for batches.
- models: ``build_detector(name, num_classes, imgsz)`` (``edet_p/n/s`` or ``tv:<torchvision name>``),
  ``DETECTOR_NAMES``, ``describe(model)``.
- training and KD: ``train_detector(model, data, epochs=..., teacher=..., kd={"fgfi": 0.01, ...})``;
  ``kd.applicable(method, teacher, student, imgsz)`` gives the one-line refusal or None.
- evaluation: ``predict_split(model, split, imgsz)`` -> per-image detections in original pixels;
  ``coco_map(preds, split, names, category_ids)``; ``results_json`` for COCO-style results.
- export: ``export_detector_onnx(model, path, imgsz, nms={...} or None)``; ``OnnxDetector(path)``.
"""

from edgekd.tasks.detect.data import load_detection_data
from edgekd.tasks.detect.dataset import DetectionData, DetectionSplit
from edgekd.tasks.detect.export import OUTPUT_NAMES, OnnxDetector, export_detector_onnx
from edgekd.tasks.detect.metrics import coco_map, results_json
from edgekd.tasks.detect.models import DETECTOR_NAMES, build_detector, describe
from edgekd.tasks.detect.predict import predict_split
from edgekd.tasks.detect.train import train_detector
from edgekd.tasks.detect.transforms import iterate_batches

__all__ = [
    "DETECTOR_NAMES",
    "OUTPUT_NAMES",
    "DetectionData",
    "DetectionSplit",
    "OnnxDetector",
    "build_detector",
    "coco_map",
    "describe",
    "export_detector_onnx",
    "iterate_batches",
    "load_detection_data",
    "predict_split",
    "results_json",
    "train_detector",
]
