#!/usr/bin/env python3
"""Run the bundled detector on images: boxes drawn (--out) and COCO-style results (--json).

    python infer.py IMAGE_OR_FOLDER [...] [--out DIR] [--json FILE] [--conf 0.25] [--iou 0.6]

The model (model.onnx, exported by edgekd with decode and NMS inside) takes images letterboxed to a
square of labels.json's "imgsz" (long side resized, padded right/bottom with grey 114), as float32
RGB in [0, 1]; its outputs are num_dets, det_boxes (x1, y1, x2, y2 in input pixels), det_scores and
det_classes (TensorRT's EfficientNMS convention). A model exported with --nms none returns the raw
head instead (cls_p3..p5, reg_p3..p5, described in its metadata edgekd.detect.*): this script then
decodes it and applies class-aware NMS itself, as the exported NMS would (scores above labels.json's
"conf", IoU above "iou" suppressed, at most "max_det" per class and per image). Boxes are mapped
back to each original image.
--json writes one object per box: file_name, category_id (the dataset's own id), bbox [x, y, w, h]
in the original image's pixels, score. Needs onnxruntime, numpy and pillow.
"""

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def fail(message):
    print("infer.py: error: " + message, file=sys.stderr)
    sys.exit(2)


def images_in(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(EXTENSIONS))
        elif os.path.isfile(p):
            out.append(p)
        else:
            fail("no image or folder at %s; pass image files or folders" % p)
    if not out:
        fail("no images found in %s" % ", ".join(paths))
    return out


def letterbox(image, imgsz):
    """(float32 [3, imgsz, imgsz] in [0, 1], scale): long side to imgsz, grey 114 right/bottom."""
    from PIL import Image

    w, h = image.size
    r = float(imgsz) / max(h, w)
    nw, nh = max(1, int(round(w * r))), max(1, int(round(h * r)))
    canvas = np.full((imgsz, imgsz, 3), 114, dtype=np.uint8)
    resized = image if (nw, nh) == (w, h) else image.resize((nw, nh), Image.BILINEAR)
    canvas[:nh, :nw] = np.asarray(resized, dtype=np.uint8)
    return canvas.transpose(2, 0, 1).astype(np.float32) / 255.0, r


def nms(boxes, scores, iou, max_keep=None):
    """Greedy NMS (numpy): indices kept, best first; suppresses IoU above ``iou`` (ONNX NonMaxSuppression)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and (max_keep is None or len(keep) < max_keep):
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        overlap = inter / (area(boxes[i]) + area(boxes[order[1:]]) - inter + 1e-9)
        order = order[1:][overlap <= iou]
    return np.array(keep, dtype=np.int64)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def decode_raw(maps, strides, reg_max, imgsz):
    """One image's raw head -> (boxes [A, 4] xyxy in input pixels, scores [A, C]), as the metadata's
    box_format says: anchor ((j + 0.5) s, (i + 0.5) s), per side d = sum_k softmax(logits)_k * k strides."""
    n = len(strides)
    all_boxes, all_scores = [], []
    for cls, reg, s in zip(maps[:n], maps[n:], strides):
        num_classes, h, w = cls.shape[1:]
        all_scores.append(sigmoid(cls[0].reshape(num_classes, h * w).T))
        logits = reg[0].reshape(4, reg_max, h * w).astype(np.float64)
        prob = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        dist = (prob * np.arange(reg_max)[None, :, None]).sum(axis=1).T * s  # [h*w, 4]: l, t, r, b in pixels
        ys, xs = np.meshgrid((np.arange(h) + 0.5) * s, (np.arange(w) + 0.5) * s, indexing="ij")
        px, py = xs.reshape(-1), ys.reshape(-1)
        all_boxes.append(np.stack([px - dist[:, 0], py - dist[:, 1], px + dist[:, 2], py + dist[:, 3]], axis=1))
    boxes = np.concatenate(all_boxes).clip(0, imgsz).astype(np.float32)
    return boxes, np.concatenate(all_scores).astype(np.float32)


def raw_detections(maps, head, imgsz, iou):
    """Class-aware NMS over a decoded raw head, as the exported NMS does; the best head["max_det"]."""
    boxes, scores = decode_raw(maps, head["strides"], head["reg_max"], imgsz)
    iou = head["iou"] if iou is None else iou
    kept_boxes, kept_scores, kept_classes = [], [], []
    for c in range(scores.shape[1]):
        idx = np.nonzero(scores[:, c] > head["conf"])[0]
        keep = idx[nms(boxes[idx], scores[idx, c], iou, head["max_det"])]
        kept_boxes.append(boxes[keep])
        kept_scores.append(scores[keep, c])
        kept_classes.append(np.full(len(keep), c, dtype=np.int32))
    boxes, scores, classes = np.concatenate(kept_boxes), np.concatenate(kept_scores), np.concatenate(kept_classes)
    best = np.argsort(-scores, kind="stable")[: head["max_det"]]
    return boxes[best], scores[best], classes[best]


def detect(session, image, imgsz, conf, iou, head=None):
    x, r = letterbox(image, imgsz)
    outputs = session.run(None, {"images": x[None]})
    if head is not None:  # a raw head: decode + NMS here, at --iou if given
        boxes, scores, classes = raw_detections(outputs, head, imgsz, iou)
        boxes, iou = boxes / r, None
    else:
        num, boxes, scores, classes = outputs
        n = int(num[0, 0])
        boxes, scores, classes = boxes[0, :n] / r, scores[0, :n], classes[0, :n]
    w, h = image.size
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    keep = scores >= conf
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    if iou is not None:
        kept = []
        for c in np.unique(classes):
            idx = np.nonzero(classes == c)[0]
            kept += list(idx[nms(boxes[idx], scores[idx], iou)])
        kept = np.array(sorted(kept), dtype=np.int64)
        boxes, scores, classes = boxes[kept], scores[kept], classes[kept]
    return boxes, scores, classes


def raw_head(session, labels):
    """None for a model with NMS inside; for a raw head, what decoding it needs (metadata + labels.json)."""
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("edgekd.detect.head") != "raw":
        return None
    return {
        "strides": [int(s) for s in meta["edgekd.detect.strides"].split(",")],
        "reg_max": int(meta["edgekd.detect.reg_max"]),
        "conf": float(labels["conf"]),
        "iou": float(labels["iou"]),
        "max_det": int(labels["max_det"]),
    }


def draw(image, boxes, scores, classes, names, path):
    from PIL import ImageDraw

    canvas = image.copy()
    pen = ImageDraw.Draw(canvas)
    for (x1, y1, x2, y2), s, c in zip(boxes, scores, classes):
        pen.rectangle([x1, y1, x2, y2], outline=(255, 64, 0), width=2)
        pen.text((x1 + 2, y1 + 1), "%s %.2f" % (names[int(c)], s), fill=(255, 64, 0))
    canvas.save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="image files or folders of images")
    ap.add_argument("--out", help="write each image with its boxes drawn into this folder")
    ap.add_argument("--json", help="write COCO-style results (one object per box) to this file")
    ap.add_argument("--conf", type=float, default=0.25, help="score threshold (default 0.25; 0.001 for mAP)")
    ap.add_argument(
        "--iou", type=float, default=None, help="NMS IoU, stricter than the exported one (default: as exported)"
    )
    ap.add_argument("--model", default=os.path.join(HERE, "model.onnx"))
    args = ap.parse_args(argv)
    try:
        import onnxruntime as ort
        from PIL import Image
    except ImportError as err:
        fail("%s; install onnxruntime, numpy and pillow" % err)
    with open(os.path.join(HERE, "labels.json")) as f:
        labels = json.load(f)
    names, ids, imgsz = labels["names"], labels["category_ids"], int(labels["imgsz"])
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    head = raw_head(session, labels)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    results = []
    for path in images_in(args.inputs):
        try:
            image = Image.open(path).convert("RGB")
        except Exception as err:  # noqa: BLE001 - any unreadable image is one line
            fail("cannot read image %s (%s); replace or remove it" % (path, err))
        boxes, scores, classes = detect(session, image, imgsz, args.conf, args.iou, head)
        name = os.path.basename(path)
        for (x1, y1, x2, y2), s, c in zip(boxes, scores, classes):
            results.append(
                {
                    "file_name": name,
                    "category_id": int(ids[int(c)]),
                    "bbox": [
                        round(float(x1), 3),
                        round(float(y1), 3),
                        round(float(x2 - x1), 3),
                        round(float(y2 - y1), 3),
                    ],
                    "score": round(float(s), 5),
                }
            )
        if args.out:
            draw(image, boxes, scores, classes, names, os.path.join(args.out, name))
        print("%s: %d boxes" % (name, len(boxes)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
