"""Detector teachers given as code: TorchScript, a ``torch.export`` program (.pt2) or a pickled module.

They load only with ``--trust-checkpoint`` (loading them can run code from the file:
edgekd/models/checkpoint.py says why), and :class:`CodeDetector` puts them behind the detector
interface by what their ``forward`` returns:

- edgekd's raw maps ``{"cls", "reg"[, "feats"]}`` (``torch.export`` of an ``edet_*``): a dense
  anchor-free DFL detector (``family == "edet"``), so the response methods apply (same classes; ``ld``
  also the same bins), and the feature methods when it returns ``feats``;
- torchvision's detections (a scripted or pickled torchvision detector): detections only, so
  pseudo-labels apply; the feature methods too when the module exposes torchvision's ``transform``
  and ``backbone`` (a scripted one does), at the strides its backbone has.

What a teacher does not expose, the KD methods refuse with a one-line error that names what applies.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from edgekd.errors import EdgekdError

# torchvision detector class -> whether its labels count a background class 0
TV_CLASSES = {
    "SSD": True,
    "FasterRCNN": True,
    "MaskRCNN": True,
    "KeypointRCNN": True,
    "FCOS": False,
    "RetinaNet": False,
}


def is_code_archive(path: Path) -> bool:
    """A TorchScript archive or a ``torch.export`` program (zip files with code in them)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("archive_format") for n in names) or any("/code/" in n for n in names)


def load_code_detector(path: Path, *, num_classes: int, imgsz: int, trust: bool) -> tuple[nn.Module, dict[str, Any]]:
    """A TorchScript / .pt2 detector file as a :class:`CodeDetector`; refused without ``trust``."""
    from edgekd.models.checkpoint import load_model_file

    loaded = load_model_file(path, trust=trust)  # the one-line refusal without --trust-checkpoint
    shape = loaded.input.get("shape")
    if shape and list(shape[1:]) != [imgsz, imgsz]:
        raise EdgekdError(
            f"the program {path} was exported for {shape[1]}x{shape[2]} images and the run uses {imgsz}; "
            f"pass --set detect.imgsz={shape[1]} or export it again with a dynamic size"
        )
    program, batch = getattr(loaded.model, "program", loaded.model), getattr(loaded.model, "batch", None)
    model = CodeDetector(program, loaded.kind, num_classes, imgsz, batch=batch)
    if model.name.endswith(":GraphModule"):  # an exported program has no class name of its own
        model.name = f"{loaded.kind}:{path.name}"
    return model, {"arch": model.name, "kind": loaded.kind}


class CodeDetector(nn.Module):
    """A detector given as code, behind edgekd's detector interface (see the module docstring)."""

    def __init__(self, program: nn.Module, kind: str, num_classes: int, imgsz: int, batch: int | None = None):
        super().__init__()
        self.program, self.kind, self.batch = program, kind, batch
        self.num_classes, self.imgsz = num_classes, imgsz
        cls_name = getattr(program, "original_name", None) or type(program).__name__
        self.name = f"{kind}:{cls_name}"
        try:
            program.eval()
        except (NotImplementedError, RuntimeError):  # an exported program stays in the mode it was exported in
            pass
        if cls_name in TV_CLASSES:
            self._init_torchvision(cls_name)
        else:
            self._init_edge()

    # -- torchvision detections -------------------------------------------------------------------------
    def _init_torchvision(self, cls_name: str) -> None:
        self.family, self.head_kind = cls_name.lower(), "detections (torchvision)"
        self.offset = 1 if TV_CLASSES[cls_name] else 0
        self.reg_max, self.strides = None, None
        self.has_features = hasattr(self.program, "transform") and hasattr(self.program, "backbone")
        predicted = _tv_num_classes(self.program)
        if predicted is not None and predicted - self.offset != self.num_classes:
            raise EdgekdError(
                f"the teacher {self.name} predicts {predicted - self.offset} classes and the data has "
                f"{self.num_classes}; train it on this data"
            )

    @torch.no_grad()
    def detect(self, images: torch.Tensor, conf: float, iou: float, max_det: int) -> list[dict[str, torch.Tensor]]:
        if self.strides is not None:
            raise AssertionError("edge-style code detectors go through decode + NMS (predict.detect_batch)")
        m = self.program
        target = m if hasattr(m, "score_thresh") else getattr(m, "roi_heads", m)
        target.score_thresh, target.nms_thresh, target.detections_per_img = conf, iou, max_det
        out = m(list(images))
        dets = out[1] if isinstance(out, tuple) else out  # scripted torchvision models return (losses, detections)
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - self.offset} for d in dets]

    # -- edgekd raw maps --------------------------------------------------------------------------------
    def _init_edge(self) -> None:
        with torch.no_grad():
            try:
                out = self._run(torch.zeros(1, 3, self.imgsz, self.imgsz))
            except Exception as err:  # noqa: BLE001 - whatever the program raises is the file's
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
                raise EdgekdError(
                    f"the teacher program {self.name} does not run on [B, 3, {self.imgsz}, {self.imgsz}] images "
                    f"({first}); pass a TorchScript/torch.export torchvision detector or edgekd detector"
                ) from None
        if not (isinstance(out, dict) and isinstance(out.get("cls"), list) and isinstance(out.get("reg"), list)):
            raise EdgekdError(
                f"the teacher program {self.name} returns a {type(out).__name__}, not edgekd's "
                "{'cls', 'reg', 'feats'} maps nor torchvision's detections; export the detector itself"
            )
        self.family, self.head_kind = "edet", "dense-anchor-free-dfl"
        self.strides = tuple(round(self.imgsz / m.shape[-1]) for m in out["cls"])
        self.reg_max = out["reg"][0].shape[1] // 4
        self.has_features = bool(out.get("feats"))
        self.feature_channels = [f.shape[1] for f in out.get("feats", [])]
        if out["cls"][0].shape[1] != self.num_classes:
            raise EdgekdError(
                f"the teacher {self.name} predicts {out['cls'][0].shape[1]} classes and the data has "
                f"{self.num_classes}; train it on this data"
            )

    def _run(self, x: torch.Tensor):
        """The program on ``x``; one exported for a fixed batch runs any batch in padded chunks."""
        if self.batch is None or x.shape[0] == self.batch:
            return self.program(x)
        outs = []
        for chunk in x.split(self.batch):
            n = chunk.shape[0]
            padded = torch.cat([chunk, chunk.new_zeros(self.batch - n, *chunk.shape[1:])]) if n < self.batch else chunk
            outs.append(tree_map(lambda t, n=n: t[:n], self.program(padded)))
        return tree_map(lambda *ts: torch.cat(ts), *outs)

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        out = dict(self._run(x))
        out.setdefault("feats", [])
        return out

    # -- both ---------------------------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        if not self.has_features:
            return []
        if self.strides is not None:
            return self(images)["feats"]
        m = self.program
        batch = m.transform(list(images))[0].tensors
        return list(m.backbone(batch).values())

    def train(self, mode: bool = True) -> CodeDetector:
        self.training = mode  # a frozen teacher: the program stays in eval mode
        return self


def _tv_num_classes(m: nn.Module) -> int | None:
    """The classes (with background, where it has one) a torchvision detector predicts, if it says."""
    try:
        if hasattr(m, "roi_heads"):
            return int(m.roi_heads.box_predictor.cls_score.out_features)
        head = m.head.classification_head
        return int(head.num_columns if hasattr(head, "num_columns") else head.num_classes)
    except (AttributeError, RuntimeError):
        return None
