"""COCO detection metrics through pycocotools, and COCO-style results JSON.

``coco_map`` builds the ground truth of a split in memory (``image_id`` = position + 1, boxes in
the original image's pixels, the dataset's own ``category_id``s), loads the predictions as COCO
results and runs ``COCOeval(iouType="bbox")`` with its defaults: AP over IoU 0.50:0.05:0.95,
101-point interpolation, maxDets 100 (no hand-written AP). Per-class AP is read from
``COCOeval.eval["precision"]`` the way pycocotools' own summary reads it (entries of -1 skipped).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

from edgekd.tasks.detect.dataset import DetectionSplit


def coco_ground_truth(split: DetectionSplit, names: list[str], category_ids: list[int]) -> dict:
    images = [
        {"id": i + 1, "file_name": f, "height": h, "width": w}
        for i, (f, (h, w)) in enumerate(zip(split.file_names, split.sizes, strict=True))
    ]
    anns = []
    for i, (boxes, labels) in enumerate(zip(split.boxes, split.labels, strict=True)):
        for box, lab in zip(boxes.tolist(), labels.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": category_ids[lab],
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    cats = [{"id": cid, "name": n} for cid, n in zip(category_ids, names, strict=True)]
    return {"images": images, "annotations": anns, "categories": cats}


def results_json(
    predictions: list[dict[str, torch.Tensor]], split: DetectionSplit, category_ids: list[int]
) -> list[dict]:
    """COCO results: one ``{image_id, file_name, category_id, bbox [x, y, w, h], score}`` per detection."""
    out = []
    for i, p in enumerate(predictions):
        for box, score, lab in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True):
            out.append(
                {
                    "image_id": i + 1,
                    "file_name": split.file_names[i],
                    "category_id": category_ids[int(lab)],
                    "bbox": [round(box[0], 3), round(box[1], 3), round(box[2] - box[0], 3), round(box[3] - box[1], 3)],
                    "score": round(float(score), 5),
                }
            )
    return out


def coco_map(
    predictions: list[dict[str, torch.Tensor]], split: DetectionSplit, names: list[str], category_ids: list[int]
) -> dict:
    """``{"mAP", "mAP50", "mAP75", "per_class": {name: AP or None}}`` of per-image predictions (split order)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(split):
        raise ValueError(f"{len(predictions)} predictions for {len(split)} images")
    results = results_json(predictions, split, category_ids)
    empty = {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0, "per_class": {n: 0.0 for n in names}, "pr50": {}}
    if not results:
        return empty
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_ground_truth(split, names, category_ids)
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [T, R, K, area, maxDets]
    per_class, pr50 = {}, {}
    for k, cid in enumerate(ev.params.catIds):  # pycocotools orders classes by sorted category id
        name = names[category_ids.index(cid)]
        p = precision[:, :, k, 0, -1]
        per_class[name] = float(np.mean(p[p > -1])) if (p > -1).any() else None
        # the precision-recall curve at IoU 0.5 (pycocotools' 101 recall points; -1: no detection there)
        pr50[name] = [max(0.0, float(v)) for v in precision[0, :, k, 0, -1]]
    return {
        "mAP": float(ev.stats[0]),
        "mAP50": float(ev.stats[1]),
        "mAP75": float(ev.stats[2]),
        "per_class": per_class,
        "pr50": {"recall": [float(r) for r in ev.params.recThrs], **pr50} if pr50 else {},
    }


def bootstrap_map(
    predictions: list[dict[str, torch.Tensor]],
    split: DetectionSplit,
    names: list[str],
    category_ids: list[int],
    *,
    resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """A percentile bootstrap interval of mAP@[.5:.95] over the split's images (Efron & Tibshirani 1993).

    Each resample draws ``len(split)`` images with replacement, a drawn image keeping its ground truth
    and its detections. COCOeval matches detections to ground truth per image and category, so the
    split is evaluated once and each resample only re-accumulates the per-image matches it drew (a
    drawn twice image counts twice, as a copy under a new id would). Returns ``{"low", "high",
    "level", "resamples", "samples", "values"}``: the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of the resampled mAPs, and the mAPs themselves."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = coco_ground_truth(split, names, category_ids)
    dets = results_json(predictions, split, category_ids)
    n = len(split)
    if not dets:
        return {"low": 0.0, "high": 0.0, "level": level, "resamples": resamples, "samples": n, "values": []}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), iouType="bbox")
        ev.evaluate()
    per_image = ev.evalImgs  # laid out [category][area range][image], images in params.imgIds order
    n_cat, n_area, n_img = len(ev._paramsEval.catIds), len(ev._paramsEval.areaRng), len(ev._paramsEval.imgIds)
    blocks = np.arange(n_cat * n_area)[:, None] * n_img
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = rng.integers(0, n_img, size=n_img)
        ev.evalImgs = [per_image[i] for i in (blocks + drawn[None, :]).ravel()]
        ev.params.imgIds = ev._paramsEval.imgIds = list(range(n_img))
        with contextlib.redirect_stdout(io.StringIO()):
            ev.accumulate()
            ev.summarize()
        values.append(max(0.0, float(ev.stats[0])))
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return {
        "low": float(low),
        "high": float(high),
        "level": level,
        "resamples": resamples,
        "samples": n,
        "values": values,
    }
