"""INT8 on real CIFAR-10: QAT-KD against FP32 and ONNX Runtime's own PTQ; ORT CPU latency of both flavours.

    python benchmarks/quantization.py [--part accuracy|latency|all] [--arch resnet20] [--also mobilenetv2]
        [--qat-teacher TEACHER.pt] [--data ../shared/data/cifar10]

Accuracy part: trains an FP32 CIFAR student once (cached under benchmarks/work/quantization/; by
default on 48,000 training images for 20 epochs, which took 42 minutes for resnet20 on 2 cores and
reached 85.73%; the other 2,000 are held out for choices), folds BN, calibrates INT8 on
``--calib-images`` training images (all four calibrators, PTQ top-1 of each), runs
quantization-aware distillation (the FP32 model teaches its fake-quant copy, ~10% of the FP32 epochs
at 1% of its learning rate, through edgekd's trainer), exports the TensorRT and CPU flavours, and
builds ONNX Runtime's ``quantize_static`` (QDQ, uint8 activations, int8 per-channel weights, MinMax)
from the same BN-folded FP32 ONNX with the same calibration images. Top-1 of everything on the
10,000 CIFAR-10 test images, and the parity between fake quant and ORT. ``--also`` runs the same for
more students (reported, not gated: e.g. a MobileNetV2, whose depthwise convolutions are the usual
hard case for INT8, Krishnamoorthi 2018); ``--qat-teacher`` adds QAT-KD from the original teacher
(edgekd's ``--qat-teacher``; Polino et al.'s setting). Each student's files live in
``benchmarks/work/quantization/<arch>/``.

Latency part (rerun alone on a quiet machine): ONNX Runtime CPU, 2 threads, batch 1 and 32, every
model in several fresh sessions, interleaved (A1 B1 C1 D1 A2 ...), medians. ``--latency-extra``
adds the other CIFAR ResNet (resnet8 when ``--arch`` is resnet20, else resnet20) exported the same
way with untrained (BN-warmed) weights, for latency only.

Writes ``benchmarks/results/quantization.md`` and ``.json``; its acceptance table also carries the rows of
``quantization_noninferiority.py`` (QAT-KD non-inferior to ORT PTQ, at that script's own budget).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import untrained_int8  # noqa: E402

from edgekd.bench import host_description, measure_latency, model_size  # noqa: E402
from edgekd.config import AugmentConfig, TeacherTrainConfig  # noqa: E402
from edgekd.data import BatchIterator, augment_kwargs, compute_normalization, load_data  # noqa: E402
from edgekd.data.splits import subset_indices, take  # noqa: E402
from edgekd.distill.trainer import TrainSetup, evaluate, train  # noqa: E402
from edgekd.export.int8_onnx import export_fp32_folded, export_int8  # noqa: E402
from edgekd.export.trt_rules import check_trt_rules  # noqa: E402
from edgekd.io import (  # noqa: E402
    atomic_write_json,
    atomic_write_text,
    sha256_file,  # noqa: E402
)
from edgekd.models import create_model  # noqa: E402
from edgekd.models.checkpoint import load_model_file  # noqa: E402
from edgekd.quant import CALIBRATORS, prepare_int8  # noqa: E402
from edgekd.quant.ort_ptq import ort_quantize_static  # noqa: E402
from edgekd.quant.qat import keep_better, qat_config, quantization_aware_kd  # noqa: E402
from edgekd.runtimes.onnxruntime.int8_encoding import host_isa  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _images(split, norm, n: int | None = None) -> np.ndarray:
    out = [x.numpy() for x, _ in BatchIterator(split, 256, shuffle=False, seed=0, normalization=norm)]
    arr = np.concatenate(out)
    return arr if n is None else arr[:n]


def _ort_logits(path: Path, images: np.ndarray) -> np.ndarray:
    from edgekd.runtimes.onnxruntime.infer import run_onnx
    from edgekd.runtimes.onnxruntime.session import make_session

    session = make_session(path, threads=2)
    return np.concatenate([run_onnx(session, images[i : i + 256]) for i in range(0, len(images), 256)])


@torch.no_grad()
def _torch_logits(model, images: np.ndarray) -> np.ndarray:
    model.eval()
    return np.concatenate([model(torch.from_numpy(images[i : i + 256])).numpy() for i in range(0, len(images), 256)])


def held_out_monitor(args, data, n: int = 2000):
    """``n`` training images the FP32 model never saw: ``--calibrator auto`` chooses on them and the
    trainings log them, so that the test images serve only the final top-1. Test images only when
    the whole training set is in use."""
    full = load_data(str(args.data), seed=args.seed)
    rest = np.setdiff1d(np.arange(len(full.train)), subset_indices(full.train.labels, args.train_samples, args.seed))
    if len(rest) < n:
        _log(f"monitoring on {n} test images: fewer than {n} training images are left out of training")
        return take(data.val, subset_indices(data.val.labels, n, args.seed))
    return take(full.train, rest[subset_indices(full.train.labels[torch.from_numpy(rest)], n, args.seed)])


def paired_comparison(a_logits: np.ndarray, b_logits: np.ndarray, labels: np.ndarray) -> dict:
    """Which of two models is right where they differ, with the exact two-sided McNemar test: under
    "equally accurate", the images only one of them gets right split like fair coin flips, so
    p = min(1, 2 * P[Binomial(n, 1/2) <= min(a_only, b_only)]) with n = a_only + b_only."""
    a_ok, b_ok = a_logits.argmax(1) == labels, b_logits.argmax(1) == labels
    a_only, b_only = int(np.sum(a_ok & ~b_ok)), int(np.sum(b_ok & ~a_ok))
    n, k = a_only + b_only, min(a_only, b_only)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def fp32_student(args, arch: str, work: Path, data, norm, monitor, augment, cfg):
    """The FP32 student of ``arch``, trained with ``cfg`` on ``data.train`` (cached in ``work`` under a
    name that carries the budget); returns it in eval mode with ``{"seconds", "epochs", "train_samples"}``."""
    fp32_path = work / f"fp32_{arch}_{args.train_samples}_{args.epochs}.pt"
    model = create_model(arch, num_classes=len(data.classes), in_channels=3)
    if fp32_path.is_file():
        model.load_state_dict(torch.load(fp32_path, weights_only=True))
        fp32_info = json.loads(fp32_path.with_suffix(".json").read_text())
        _log(f"FP32 {arch}: cached ({fp32_path.name})")
    else:
        _log(f"FP32 {arch}: training on {len(data.train)} images, {args.epochs} epochs")
        result = train(
            TrainSetup(model, data.train, monitor, norm, cfg, args.seed, torch.device("cpu"), augment=augment),
            checkpoint_path=fp32_path.with_suffix(".last.ckpt"),
            resume=True,
            label="fp32",
        )
        fp32_info = {"seconds": result["seconds"], "epochs": args.epochs, "train_samples": len(data.train)}
        torch.save(model.state_dict(), fp32_path)
        atomic_write_json(fp32_path.with_suffix(".json"), fp32_info)
    return model.eval(), fp32_info


def accuracy_part(args, arch: str, work: Path) -> dict:
    """Everything of the accuracy part for one student; its files go to ``work`` (one folder per arch)."""
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    data = load_data(str(args.data), seed=args.seed, max_train_samples=args.train_samples)
    norm = compute_normalization(data.train)
    monitor = held_out_monitor(args, data)
    augment = augment_kwargs(AugmentConfig(), data.input_shape)
    cfg = TeacherTrainConfig(epochs=args.epochs, lr=args.lr, batch_size=128)
    model, fp32_info = fp32_student(args, arch, work, data, norm, monitor, augment, cfg)
    test = (
        data.val
        if args.test_samples >= len(data.val)
        else take(data.val, subset_indices(data.val.labels, args.test_samples, args.seed))
    )
    test_x = _images(test, norm)
    test_y = test.labels.numpy()
    calib_idx = np.random.default_rng(args.seed).permutation(len(data.train))[: args.calib_images]
    calib_split = take(data.train, np.sort(calib_idx))
    calib_x = _images(calib_split, norm)
    calib_batches = [torch.from_numpy(calib_x[i : i + 64]) for i in range(0, len(calib_x), 64)]

    def top1(logits: np.ndarray) -> float:
        return float(np.mean(logits.argmax(1) == test_y))

    out: dict = {"fp32_training": fp32_info}
    fp32_logits = _torch_logits(model, test_x)
    out["fp32_top1"] = top1(fp32_logits)
    _log(f"FP32 top-1 {100 * out['fp32_top1']:.2f}%")

    qm = prepare_int8(model)
    ptq = {}
    for method in CALIBRATORS:
        qm.calibrate(calib_batches, method)
        ptq[method] = top1(_torch_logits(qm, test_x))
        _log(f"PTQ ({method} calibration) fake-quant top-1 {100 * ptq[method]:.2f}%")
    out["ptq_fake_quant_top1"] = ptq

    def monitor_top1() -> float:
        return evaluate(qm, monitor, norm, torch.device("cpu"))["top1"]

    chosen = qm.calibrate(calib_batches, args.calibrator, score=monitor_top1)
    out["calibration"] = {"setting": args.calibrator, "chosen": chosen["method"], "scores": chosen.get("auto_scores")}

    fp32_onnx = work / "model_fp32_folded.onnx"
    export_fp32_folded(qm, fp32_onnx, input_shape=(3, 32, 32))
    ort_ptq = work / "model_int8_ort_quantize_static.onnx"
    ort_quantize_static(fp32_onnx, ort_ptq, calib_x, batch_size=64)

    qat_cfg = qat_config(cfg, epochs=args.qat_epochs)
    out["qat"] = {"epochs": qat_cfg.epochs, "lr": qat_cfg.lr, "calibrator": chosen["method"], "ce_weight": 0.1}
    qat_path = (
        work / f"qat_{arch}_{args.train_samples}_{args.epochs}_{qat_cfg.epochs}_lr{qat_cfg.lr:g}_{chosen['method']}.pt"
    )
    out["qat"].update(
        cached_qat(
            qm,
            model,
            qat_path,
            "FP32 model as the teacher",
            qat_cfg,
            data.train,
            monitor,
            norm,
            augment,
            args.seed,
            model,
        )
    )
    qm.eval()
    fq_logits = _torch_logits(qm, test_x)
    out["qat_fake_quant_top1"] = top1(fq_logits)

    trt_path, cpu_path = work / "model_int8.onnx", work / "model_int8_cpu.onnx"
    export_int8(qm, trt_path, cpu_path, input_shape=(3, 32, 32))
    out["trt_rules"] = check_trt_rules(trt_path)
    logits = {name: _ort_logits(p, test_x) for name, p in (("fp32", fp32_onnx), ("ort_ptq", ort_ptq))}
    logits["cpu"] = _ort_logits(cpu_path, test_x)
    logits["trt"] = _ort_logits(trt_path, test_x)
    out["onnx_top1"] = {k: top1(v) for k, v in logits.items()}

    def agree(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(a.argmax(1) == b.argmax(1)))

    out["parity"] = {
        "fake_quant_vs_cpu": agree(fq_logits, logits["cpu"]),
        "fake_quant_vs_trt": agree(fq_logits, logits["trt"]),
        "cpu_vs_trt": agree(logits["cpu"], logits["trt"]),
        "fp32_torch_vs_onnx": agree(fp32_logits, logits["fp32"]),
    }
    out["qat_vs_ort_ptq"] = paired_comparison(logits["cpu"], logits["ort_ptq"], test_y)
    out["sizes"] = {
        k: model_size(p)["bytes"]
        for k, p in (("fp32", fp32_onnx), ("ort_ptq", ort_ptq), ("cpu", cpu_path), ("trt", trt_path))
    }
    variants = {}
    if args.qat_teacher and arch == args.arch:
        # Polino et al.'s setting: the large model teaches the quantized small one
        loaded = load_model_file(args.qat_teacher)
        teacher = loaded.model.eval()
        tag = f"{(loaded.arch or {}).get('name', 'teacher')}_{sha256_file(args.qat_teacher)[:8]}"
        variants["qat_original_teacher"] = (teacher, tag, f"the original teacher {tag}", qat_cfg)
    if args.qat_feature and arch == args.arch:
        feature_cfg = qat_config(cfg, epochs=args.qat_epochs, feature_method=args.qat_feature)
        variants["qat_feature"] = (
            model,
            args.qat_feature,
            f"FP32 model as the teacher, + {args.qat_feature}",
            feature_cfg,
        )
    for key, (teacher, tag, label, variant_cfg) in variants.items():
        v = qat_variant(
            args, arch, work, model, chosen["method"], variant_cfg, teacher, tag, label, data, monitor, norm, augment,
            calib_batches, test_x, top1,
        )  # fmt: skip
        fq, cpu = v.pop("fake_quant_logits"), v.pop("cpu_logits")
        v.update(
            tag=tag,
            methods=[m.model_dump() for m in variant_cfg.methods],
            agree_fake_quant_vs_cpu=agree(fq, cpu),
            vs_ort_ptq=paired_comparison(cpu, logits["ort_ptq"], test_y),
        )
        if key == "qat_original_teacher":
            v.update(teacher=tag, teacher_top1=top1(_torch_logits(teacher, test_x)))
        out[key] = v
    out["test_images"] = int(len(test_y))
    out["calib_images"] = int(len(calib_x))
    _log(f"accuracy: {json.dumps(out['onnx_top1'])}, parity {json.dumps(out['parity'])}")
    return out


def cached_qat(
    qm, teacher, path: Path, teacher_label: str, qat_cfg, train_split, monitor, norm, augment, seed, fp32_model
):
    """QAT-KD of ``qm`` from ``teacher`` (cached at ``path``), then the quantize stage's choice: the
    QAT weights unless they score below calibration alone on the held-out monitoring images."""
    cpu = torch.device("cpu")
    ptq_state = {k: v.clone() for k, v in qm.state_dict().items()}
    ptq_top1 = evaluate(qm, monitor, norm, cpu)["top1"]
    if path.is_file():
        qm.load_state_dict(torch.load(path, weights_only=True))
        _log(f"QAT-KD ({teacher_label}): cached")
        seconds = json.loads(path.with_suffix(".json").read_text())["seconds"]
    else:
        _log(f"QAT-KD: {qat_cfg.epochs} epoch(s) at lr {qat_cfg.lr:g}, {teacher_label}")
        result = quantization_aware_kd(
            qm,
            teacher,
            train_split=train_split,
            val_split=monitor,
            normalization=norm,
            config=qat_cfg,
            seed=seed,
            device=cpu,
            augment=augment,
            checkpoint_path=path.with_suffix(".last.ckpt"),
            resume=False,
            fp32_model=fp32_model,
        )
        torch.save(qm.state_dict(), path)
        seconds = result["seconds"]
        atomic_write_json(path.with_suffix(".json"), {"seconds": seconds})
    qat_top1 = evaluate(qm, monitor, norm, cpu)["top1"]
    selected = keep_better(qm, ptq_state, ptq_top1, qat_top1)
    _log(
        f"QAT-KD ({teacher_label}): {100 * qat_top1:.2f}% on the monitoring images, calibration alone "
        f"{100 * ptq_top1:.2f}%: keeping the {selected} weights"
    )
    return {"seconds": seconds, "monitor_top1_ptq": ptq_top1, "monitor_top1_qat": qat_top1, "selected": selected}


def qat_variant(
    args, arch, work, model, calibrator, qat_cfg, teacher, tag, label, data, monitor, norm, augment, calib_batches,
    test_x, top1,
) -> dict:  # fmt: skip
    """One more QAT-KD of the FP32 ``model`` (from ``teacher``, with ``qat_cfg``), from the same
    calibration as the default one; its files carry ``tag``. Top-1 of fake quant and cpu flavour."""
    qm = prepare_int8(model)
    qm.calibrate(calib_batches, calibrator)
    path = (
        work / f"qat_{arch}_{args.train_samples}_{args.epochs}_{qat_cfg.epochs}_lr{qat_cfg.lr:g}_{calibrator}_{tag}.pt"
    )
    selection = cached_qat(qm, teacher, path, label, qat_cfg, data.train, monitor, norm, augment, args.seed, model)
    qm.eval()
    fq = _torch_logits(qm, test_x)
    trt_path, cpu_path = work / f"model_int8_qat_{tag}.onnx", work / f"model_int8_cpu_qat_{tag}.onnx"
    export_int8(qm, trt_path, cpu_path, input_shape=(3, 32, 32))
    cpu = _ort_logits(cpu_path, test_x)
    return {
        **selection,
        "fake_quant_top1": top1(fq),
        "cpu_top1": top1(cpu),
        "fake_quant_logits": fq,
        "cpu_logits": cpu,
    }


def _latency_models(work: Path) -> dict[str, Path]:
    return {
        "FP32 (BN folded)": work / "model_fp32_folded.onnx",
        "INT8 cpu flavour": work / "model_int8_cpu.onnx",
        "ORT quantize_static": work / "model_int8_ort_quantize_static.onnx",
        "INT8 TensorRT flavour": work / "model_int8.onnx",
    }


def _extra_latency_models(work: Path, arch: str) -> dict[str, Path]:
    """``arch`` with untrained weights (BN statistics warmed on noise), exported the same way: latency only."""
    extra = work / f"latency_{arch}"
    extra.mkdir(exist_ok=True)
    qm, calib = untrained_int8(arch)
    export_fp32_folded(qm, extra / "model_fp32_folded.onnx", input_shape=(3, 32, 32))
    export_int8(qm, extra / "model_int8.onnx", extra / "model_int8_cpu.onnx", input_shape=(3, 32, 32))
    ort_quantize_static(
        extra / "model_fp32_folded.onnx",
        extra / "model_int8_ort_quantize_static.onnx",
        torch.cat(calib).numpy(),
        batch_size=32,
    )
    return _latency_models(extra)


def latency_part(args, work: Path) -> dict:
    sets = {args.arch: _latency_models(work / args.arch)}
    sets.update({f"{arch} (not gated)": _latency_models(work / arch) for arch in args.also})
    if args.latency_extra:
        extra = "resnet8" if args.arch != "resnet8" else "resnet20"
        sets[f"{extra} (untrained weights, latency only)"] = _extra_latency_models(work, extra)
    out: dict = {}
    for label, models in sets.items():
        missing = [str(p) for p in models.values() if not p.is_file()]
        if missing:
            raise SystemExit(f"missing {missing}; run --part accuracy first")
        out[label] = {}
        for batch, runs in ((1, args.runs_b1), (32, args.runs_b32)):
            _log(f"latency {label}, batch {batch}: {args.sessions} sessions x {len(models)} models")
            res = measure_latency(
                models,
                batch_size=batch,
                input_shape=(3, 32, 32),
                threads=2,
                warmup=10 if batch == 1 else 3,
                runs=runs,
                sessions=args.sessions,
            )
            out[label][f"batch{batch}"] = {
                k: {"p50_ms": v["p50_ms"], "session_p50_ms": v["session_p50_ms"], "runs": v["runs"]}
                for k, v in res.items()
            }
    return out


def _load_avg() -> str:
    """The 1-minute load average and the processes runnable right now (this one included)."""
    try:
        fields = Path("/proc/loadavg").read_text().split()
        return f"{fields[0]} ({fields[3].split('/')[0]} runnable)"
    except (OSError, IndexError):
        return "?"


def _selection_note(q: dict) -> str:
    if "selected" not in q:
        return ""
    kept = "the QAT weights" if q["selected"] == "qat" else "the calibrated (PTQ) weights, so those rows are PTQ"
    return (
        f" On the 2,000 held-out training images QAT scored {100 * q['monitor_top1_qat']:.2f}% against "
        f"{100 * q['monitor_top1_ptq']:.2f}% for calibration alone; as the quantize stage does, the QAT-KD rows "
        f"hold {kept}."
    )


def markdown(res: dict) -> str:
    a, lat = res.get("accuracy"), res.get("latency")
    lines = ["# INT8: quantization-aware distillation, TensorRT and ONNX Runtime CPU flavours", ""]
    b = res["budget"]
    if a:
        o = a["onnx_top1"]
        lines += [
            f"FP32 student {b['arch']} trained on a seeded stratified subset of {b['train_samples']} CIFAR-10 "
            f"training images for {b['epochs']} epochs (batch 128, SGD lr {b['lr']} cosine, crop+flip), CE only. "
            f"Calibration: {a['calib_images']} training images. QAT-KD: {a['qat']['epochs']} epoch(s) at lr "
            f"{a['qat']['lr']:g} from {a['qat']['calibrator']} calibration"
            + (
                " (chosen by `--calibrator auto` on 2,000 held-out training images: "
                + ", ".join(f"{k} {100 * v:.2f}%" for k, v in a["calibration"]["scores"].items())
                + ")"
                if a.get("calibration", {}).get("setting") == "auto"
                else ""
            )
            + f", loss 0.1 CE + 0.9 KD (T=4), FP32 model as "
            f"the teacher. Top-1 on {a['test_images']} CIFAR-10 test images (seeded stratified subset of the 10,000 "
            "when fewer)." + _selection_note(a["qat"]),
            "",
            "| model | top-1 (%) | vs FP32 (points) | size (KiB) |",
            "|---|---:|---:|---:|",
        ]
        fp = o["fp32"]
        rows = [
            ("FP32, PyTorch", a["fp32_top1"], None),
            ("FP32 ONNX (BN folded), ORT", fp, "fp32"),
            ("INT8 ORT quantize_static PTQ (QDQ, u8 act, s8 per-channel, MinMax)", o["ort_ptq"], "ort_ptq"),
        ]
        rows += [(f"INT8 PTQ fake quant, {m} calibration", v, None) for m, v in a["ptq_fake_quant_top1"].items()]
        rows += [
            ("INT8 QAT-KD, PyTorch fake quant", a["qat_fake_quant_top1"], None),
            ("INT8 QAT-KD, cpu flavour (model_int8_cpu.onnx), ORT", o["cpu"], "cpu"),
            ("INT8 QAT-KD, TensorRT flavour (model_int8.onnx), run by ORT on CPU", o["trt"], "trt"),
        ]
        qt = a.get("qat_original_teacher")
        if qt:
            rows += [
                (
                    f"INT8 QAT-KD from the original teacher ({qt['teacher']}), PyTorch fake quant",
                    qt["fake_quant_top1"],
                    None,
                ),
                (f"INT8 QAT-KD from the original teacher ({qt['teacher']}), cpu flavour, ORT", qt["cpu_top1"], None),
            ]
        qf = a.get("qat_feature")
        if qf:
            f = qf["methods"][-1]
            rows += [
                (
                    f"INT8 QAT-KD + {f['name']} feature KD (weight {f['weight']:g}), PyTorch fake quant",
                    qf["fake_quant_top1"],
                    None,
                ),
                (
                    f"INT8 QAT-KD + {f['name']} feature KD (weight {f['weight']:g}), cpu flavour, ORT",
                    qf["cpu_top1"],
                    None,
                ),
            ]
        for name, v, key in rows:
            size = f"{a['sizes'][key] / 1024:.1f}" if key else ""
            lines.append(f"| {name} | {100 * v:.2f} | {100 * (v - fp):+.2f} | {size} |")
        p = a["parity"]
        lines += [
            "",
            f"Top-1 agreement: fake quant vs cpu flavour {100 * p['fake_quant_vs_cpu']:.2f}%, fake quant vs "
            f"TensorRT flavour {100 * p['fake_quant_vs_trt']:.2f}%, cpu vs TensorRT flavour "
            f"{100 * p['cpu_vs_trt']:.2f}%. TensorRT rules checker on model_int8.onnx: "
            f"{'passed' if a['trt_rules']['passed'] else 'FAILED'} ({a['trt_rules']['quantized_layers']} "
            "quantized layers).",
            "",
        ]
        if qt:
            lines += [
                f"The original teacher ({qt['teacher']}) scores {100 * qt['teacher_top1']:.2f}% on the same test "
                f"images; its QAT-KD ran the same epochs, learning rate and calibration as the default one; "
                f"fake quant vs cpu flavour agree on {100 * qt['agree_fake_quant_vs_cpu']:.2f}%." + _selection_note(qt),
                "",
            ]
        if qf:
            pc = qf["vs_ort_ptq"]
            lines += [
                f"QAT-KD + {qf['methods'][-1]['name']}: the same epochs, learning rate, calibration and KD as the "
                "default one, plus the feature term at its reference weight on the stage outputs; fake quant vs "
                f"cpu flavour agree on {100 * qf['agree_fake_quant_vs_cpu']:.2f}%. Against ORT quantize_static, "
                f"image by image: {pc['a_only']} vs {pc['b_only']} right by one only (McNemar p = {pc['p_value']:.2f})."
                + _selection_note(qf),
                "",
            ]
    if res.get("also"):
        lines += [
            "## Other students (same recipe; not gated)",
            "",
            "| student | FP32 | ORT quantize_static | PTQ max | PTQ percentile | PTQ entropy | PTQ mse | auto chose "
            "| QAT-KD cpu flavour | kept | vs quantize_static: right by one only (McNemar p) "
            "| fake quant vs cpu | cpu vs TensorRT flavour |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|",
        ]
        for arch, x in res["also"].items():
            o, ptq, par = x["onnx_top1"], x["ptq_fake_quant_top1"], x["parity"]
            lines.append(
                f"| {arch} | {100 * o['fp32']:.2f} | {100 * o['ort_ptq']:.2f} | "
                + " | ".join(f"{100 * ptq[m]:.2f}" for m in ("max", "percentile", "entropy", "mse"))
                + f" | {x['calibration']['chosen']} | {100 * o['cpu']:.2f} | {x['qat'].get('selected', 'qat')} | "
                + _paired_cell(x)
                + f" | {100 * par['fake_quant_vs_cpu']:.2f}% | "
                f"{100 * par['cpu_vs_trt']:.2f}% |"
            )
        lines.append("")
    if lat:
        lines += ["## ONNX Runtime CPU latency (2 threads; median over fresh interleaved sessions)", ""]
        for label, per in lat.items():
            lines += [
                f"### {label}",
                "",
                "| model | host ISA | batch 1 p50 (ms) | x FP32 | x quantize_static "
                "| batch 32 p50 (ms) | x FP32 | x quantize_static |",
                "|---|---|---:|---:|---:|---:|---:|---:|",
            ]
            names = list(per["batch1"])
            for n in names:
                cells = []
                for bkey in ("batch1", "batch32"):
                    r = per[bkey]
                    v = r[n]["p50_ms"]
                    cells += [
                        f"{v:.3f}",
                        f"{v / r['FP32 (BN folded)']['p50_ms']:.2f}",
                        f"{v / r['ORT quantize_static']['p50_ms']:.2f}",
                    ]
                lines.append(f"| {n} | {res.get('host_isa', '?')} | " + " | ".join(cells) + " |")
            lines.append("")
    gates = res.get("gates", {})
    if gates:
        lines += ["## Acceptance", "", "| check | measured | goal | result |", "|---|---:|---:|---|"]
        for g in gates.values():
            lines.append(f"| {g['check']} | {g['measured']} | {g['goal']} | {'PASS' if g['passed'] else 'FAIL'} |")
        lines += noninferiority_rows()
        lines.append("")
    h = res["host"]
    lines += [
        f"Machine: {h.get('cpu')}, {h.get('logical_cores')} logical cores, onnxruntime {h.get('onnxruntime')}, "
        f"torch {torch.__version__}. {res.get('load_note', '')}",
        "",
    ]
    for part, c in (res.get("commands") or {"all": {"command": res["command"], "finished": "?"}}).items():
        lines.append(f"Command ({part} part, finished {c['finished']}): `{c['command']}`")
    lines.append("")
    return "\n".join(lines)


NONINFERIORITY = "quantization_noninferiority"


def noninferiority_rows() -> list[str]:
    """Acceptance rows from ``quantization_noninferiority.json`` (issue 18: QAT-KD non-inferior to ORT
    PTQ), each naming its own, smaller budget; none when that benchmark has not run."""
    path = RESULTS / f"{NONINFERIORITY}.json"
    if not path.is_file():
        return []
    r = json.loads(path.read_text())
    b, c, m = r["budget"], r["comparisons"], r["margin_points"]
    budget = f"{b['train_samples']:,} images x {b['epochs']} epochs, {NONINFERIORITY}.md"
    rows = [("qat_0_as_trained", "as trained, default recipe"), ("qat_0_stage_kept", "as the quantize stage keeps it")]
    if r["chosen_recipe"]:
        i = r["chosen_recipe"]
        x = r["recipes"][i]
        rows.append((f"qat_{i}_as_trained", f"as trained, recipe {x['epochs']}:{x['lr']:g} chosen on held-out images"))
    return [
        f"| INT8 QAT-KD non-inferior to ORT quantize_static by {m:.1f} points (one-sided 95% paired bootstrap over "
        f"{r['test_images']:,} test images), {label}; smaller budget: {budget} "
        f"| {c[k]['difference']:+.2f} points, lower bound {c[k]['lower']:+.2f} | bound > -{m:.2f} "
        f"| {'PASS' if c[k]['non_inferior'] else 'FAIL'} |"
        for k, label in rows
    ]


def with_noninferiority_rows(md: str) -> str:
    """``md`` (quantization.md) with the acceptance table's non-inferiority rows replaced by the current ones."""
    lines = [x for x in md.split("\n") if f"{NONINFERIORITY}.md" not in x or not x.startswith("| INT8 QAT-KD")]
    last = max(i for i, x in enumerate(lines) if x.startswith("| ") and ("| PASS |" in x or "| FAIL |" in x))
    return "\n".join(lines[: last + 1] + noninferiority_rows() + lines[last + 1 :])


def _paired_cell(a: dict) -> str:
    pc = a.get("qat_vs_ort_ptq")
    return f"{pc['a_only']} vs {pc['b_only']} (p = {pc['p_value']:.2f})" if pc else ""


def _paired_note(a: dict) -> str:
    pc = a.get("qat_vs_ort_ptq")
    if not pc:
        return ""
    return f" ({pc['a_only']} vs {pc['b_only']} images right by one only; McNemar p = {pc['p_value']:.2f})"


def gates(res: dict, arch: str) -> dict:
    out = {}
    a = res.get("accuracy")
    if a:
        o = a["onnx_top1"]
        d = 100 * (o["cpu"] - o["fp32"])
        out["qat_vs_fp32"] = {
            "check": "INT8 QAT-KD (cpu flavour, ORT) within 0.5 points of FP32",
            "measured": f"{d:+.2f} points",
            "goal": ">= -0.50",
            "passed": d >= -0.5,
        }
        out["qat_vs_ort_ptq"] = {
            "check": "INT8 QAT-KD more accurate than ORT quantize_static",
            "measured": f"{100 * o['cpu']:.2f} vs {100 * o['ort_ptq']:.2f}" + _paired_note(a),
            "goal": ">",
            "passed": o["cpu"] > o["ort_ptq"],
        }
        out["parity_fq_cpu"] = {
            "check": "fake quant vs ORT (cpu flavour) top-1 agreement",
            "measured": f"{100 * a['parity']['fake_quant_vs_cpu']:.2f}%",
            "goal": ">= 99%",
            "passed": a["parity"]["fake_quant_vs_cpu"] >= 0.99,
        }
        out["parity_flavours"] = {
            "check": "cpu vs TensorRT flavour top-1 agreement",
            "measured": f"{100 * a['parity']['cpu_vs_trt']:.2f}%",
            "goal": ">= 99.5%",
            "passed": a["parity"]["cpu_vs_trt"] >= 0.995,
        }
    lat = (res.get("latency") or {}).get(arch)
    if lat:
        for bkey in ("batch1", "batch32"):
            r = lat[bkey]
            cpu = r["INT8 cpu flavour"]["p50_ms"]
            for ref, goal in (("FP32 (BN folded)", 0.6), ("ORT quantize_static", 1.05)):
                ratio = cpu / r[ref]["p50_ms"]
                out[f"{bkey}_{ref}"] = {
                    "check": f"cpu flavour latency / {ref}, {bkey.replace('batch', 'batch ')}",
                    "measured": f"{ratio:.2f}x",
                    "goal": f"<= {goal}x",
                    "passed": ratio <= goal,
                }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("accuracy", "latency", "all"), default="all")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--arch", default="resnet20", help="the gated student")
    parser.add_argument("--train-samples", type=int, default=48000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--qat-epochs", type=int, default=None, help="default: 10%% of --epochs, at least 1")
    parser.add_argument("--calibrator", default="auto", choices=("auto", *CALIBRATORS))
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument("--test-samples", type=int, default=10000, help="seeded stratified subset of the test set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sessions", type=int, default=15)
    parser.add_argument("--runs-b1", type=int, default=1000)
    parser.add_argument("--runs-b32", type=int, default=100)
    parser.add_argument("--latency-extra", action="store_true", help="also time another CIFAR ResNet (latency only)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training (ORT timing always uses 2)")
    parser.add_argument(
        "--also", nargs="*", default=[], help="more students, measured like --arch (reported, not gated)"
    )
    parser.add_argument(
        "--qat-feature",
        default=None,
        help="also run QAT-KD with this feature method added (edgekd's quantize.feature_method), e.g. at",
    )
    parser.add_argument(
        "--qat-teacher",
        type=Path,
        default=None,
        help="an edgekd checkpoint of the original teacher: also run QAT-KD from it (edgekd's --qat-teacher)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = ROOT / "benchmarks" / "work" / "quantization"
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / "quantization.json"
    res = json.loads(json_path.read_text()) if json_path.is_file() else {}
    res["budget"] = {
        "arch": args.arch,
        "train_samples": args.train_samples,
        "epochs": args.epochs,
        "lr": args.lr,
        "seed": args.seed,
    }
    t0 = time.perf_counter()
    loads = [_load_avg()]
    if args.part in ("accuracy", "all"):
        res["accuracy"] = accuracy_part(args, args.arch, work / args.arch)
        res["also"] = {arch: accuracy_part(args, arch, work / arch) for arch in args.also}
        loads.append(_load_avg())
    if args.part in ("latency", "all"):
        res["latency"] = latency_part(args, work)
        loads.append(_load_avg())
    res["host"] = host_description()
    res["host_isa"] = host_isa()  # the CPU flavour's encoding depends on it (runtimes/onnxruntime/int8_encoding.py)
    res["command"] = "python benchmarks/quantization.py " + " ".join(sys.argv[1:])
    commands = res.setdefault("commands", {})
    if args.part == "all":
        commands.clear()
    commands[args.part] = {"command": res["command"], "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if {"accuracy", "latency"} <= set(commands):
        commands.pop("all", None)  # both of its parts have been rerun since
    res["wall_seconds"] = round(time.perf_counter() - t0, 1)
    # busy: more runnable processes than cores at a sample (the load average lags by minutes)
    busy = max((int(x.split("(")[1].split()[0]) for x in loads if "(" in x), default=0) > 2
    res["load_note"] = f"1-minute load average during this run: {', '.join(loads)} on 2 cores" + (
        " (other jobs shared the CPU; latency ratios come from interleaved sessions in one run, absolute times are "
        "inflated)."
        if busy
        else " (a quiet machine)."
    )
    res["gates"] = gates(res, args.arch)
    atomic_write_json(json_path, res)
    atomic_write_text(RESULTS / "quantization.md", markdown(res))
    _log(f"wrote {RESULTS / 'quantization.md'} in {res['wall_seconds']:.0f}s")
    print(markdown(res))


if __name__ == "__main__":
    main()
