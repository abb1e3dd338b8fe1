"""The detector search (issue 18 §2): the space and its spec names, the proxy, the search stage, and the
student's own input side carried from the search through distill, quantize and export.

The default suite checks the space, the proxy on a tiny budget, and a search -> distill -> quantize ->
export run of a few seconds per stage whose searched student runs at 64 px while the teacher runs at
96 px; the slow suite runs ``compress --task detect`` on digits-detect with 2 trials end to end."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from cli_helpers import FAST_BENCH_OPTS, sets

from edgekd.config import build_config
from edgekd.console import Reporter
from edgekd.errors import EdgekdError
from edgekd.pipeline import run_stages_in
from edgekd.tasks.detect.checkpoint import load_detector, save_detector
from edgekd.tasks.detect.data import load_detection_data
from edgekd.tasks.detect.edge_detector import SIZES, EdgeDetector, arch_from_name
from edgekd.tasks.detect.export import OnnxDetector, export_detector_onnx
from edgekd.tasks.detect.models import build_detector
from edgekd.tasks.detect.search_proxy import DetectProxy, proxy_kd
from edgekd.tasks.detect.search_space import (
    cheapest_sample,
    parse_spec,
    random_samples,
    space_choices,
    spec_from_sample,
)
from edgekd.tasks.detect.train import train_detector

TEACHER_IMGSZ = 96
TINY_SPACE = {  # the search space shrunk to a few cheap detectors at 64 px
    "detect.search.imgsz": [64],
    "detect.search.stem": [8],
    "detect.search.widths": [[16], [16, 32], [32], [64]],
    "detect.search.depths": [[1], [1], [1], [1]],
    "detect.search.neck": [16, 32],
    "detect.search.head": [16],
}


@pytest.fixture(scope="module")
def data():
    return load_detection_data("digits-detect", seed=0, log=None)


@pytest.fixture(scope="module")
def untrained_teacher(data, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_detector("edet_p", data.num_classes, TEACHER_IMGSZ)
    out = tmp_path_factory.mktemp("dsearch") / "teacher.pt"
    save_detector(out, model, arch="edet_p", names=data.names, category_ids=data.category_ids, imgsz=TEACHER_IMGSZ)
    return out


# ---- the space -------------------------------------------------------------------------------------
def test_spec_names_round_trip_and_named_sizes_are_points_of_the_space():
    table = space_choices(build_config(None, {}).detect.search)
    assert table["imgsz"] == [320, 416, 512]
    for sample in random_samples(table, 20, seed=3):
        spec = spec_from_sample(sample)
        arch = parse_spec(spec["name"])
        assert arch.name == spec["name"] and spec["imgsz"] == sample["imgsz"]
        assert list(arch.widths) == [sample[f"w{i}"] for i in range(4)]
        assert list(arch.depths) == [sample[f"d{i}"] for i in range(4)]
        assert (arch.stem, arch.neck, arch.head) == (sample["stem"], sample["neck"], sample["head"])
    for name, (stem, widths, depths, c) in SIZES.items():
        arch = arch_from_name(name)
        assert (arch.stem, arch.widths, arch.depths, arch.neck, arch.head) == (stem, widths, depths, c, c)
        # the named size and its spec name build the same network, parameter for parameter
        a, b = EdgeDetector(name, 10).state_dict(), EdgeDetector(arch.name, 10).state_dict()
        assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    with pytest.raises(ValueError, match="not a detector spec name"):
        parse_spec("edet_c16_w32-64-128_d1-2-2-1_n64_h64")  # three stage widths
    assert arch_from_name("edet_c16_w33-64-128-256_d1-2-2-1_n64_h64") is None  # an odd CSP width
    with pytest.raises(EdgekdError, match="unknown detector 'edet_x'.*spec name"):
        build_detector("edet_x", 10)


def test_sampled_architectures_build_and_run_forward():
    table = space_choices(build_config(None, TINY_SPACE | {"detect.search.imgsz": [64, 96]}).detect.search)
    samples = [cheapest_sample(table), *random_samples(table, 3, seed=0)]
    for sample in samples:
        spec = spec_from_sample(sample)
        arch = parse_spec(spec["name"])
        model = build_detector(spec["name"], 10, spec["imgsz"]).eval()
        s = spec["imgsz"]
        with torch.no_grad():
            out = model(torch.zeros(2, 3, s, s))
        assert [tuple(m.shape) for m in out["cls"]] == [(2, 10, s // st, s // st) for st in (8, 16, 32)]
        assert [f.shape[1] for f in out["feats"]] == [arch.neck] * 3 == model.feature_channels
        assert model.head.cls[0][0][0].out_channels == arch.head  # the head's own width
        assert model.backbone.stem[0].out_channels == arch.stem


def test_search_space_config_errors_are_one_line():
    for bad, words in (
        ({"detect.search.imgsz": [100]}, "multiples of 32"),
        ({"detect.search.widths": [[16], [32], [64]]}, "4 stages"),
        ({"detect.search.neck": [33]}, "must be even"),
        ({"detect.search.head": []}, "non-empty"),
    ):
        with pytest.raises(EdgekdError, match=words):
            build_config(None, bad)


def test_a_spec_detector_saves_with_its_imgsz_and_exports(data, tmp_path):
    spec = spec_from_sample(cheapest_sample(space_choices(build_config(None, TINY_SPACE).detect.search)))
    torch.manual_seed(0)
    model = build_detector(spec["name"], data.num_classes, 64).eval()
    path = save_detector(
        tmp_path / "s.pt", model, arch=spec["name"], names=data.names, category_ids=data.category_ids, imgsz=64
    )
    loaded, info = load_detector(path, arch=None, num_classes=data.num_classes, imgsz=TEACHER_IMGSZ)
    assert info["imgsz"] == 64 and info["arch"] == spec["name"]  # the checkpoint's side, not the one asked for
    onnx_path = export_detector_onnx(loaded, tmp_path / "s.onnx", imgsz=info["imgsz"], nms=None)
    dims = [d.dim_value for d in onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 64, 64]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    got = OnnxDetector(onnx_path).run(x)  # the raw maps, in ONNX Runtime
    for i, level in enumerate((3, 4, 5)):
        torch.testing.assert_close(torch.from_numpy(got[f"cls_p{level}"]), ref["cls"][i], atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(torch.from_numpy(got[f"reg_p{level}"]), ref["reg"][i], atol=1e-4, rtol=1e-3)


# ---- the proxy -------------------------------------------------------------------------------------
def test_the_proxy_trains_on_a_tiny_budget_and_is_deterministic(data):
    cfg = build_config(
        None,
        TINY_SPACE
        | {
            "detect.imgsz": TEACHER_IMGSZ,
            "search.proxy_epochs": 1,
            "search.proxy_train_samples": 16,
            "search.proxy_val_samples": 16,
            "search.proxy_batch_size": 8,
        },
    )
    torch.manual_seed(0)
    teacher = build_detector("edet_p", data.num_classes, TEACHER_IMGSZ)
    train_detector(teacher, data.__class__(data.train.subset(32), data.val, data.names, data.category_ids, "d"),
                   epochs=1, batch_size=16, imgsz=TEACHER_IMGSZ, hflip=0.0)  # fmt: skip
    proxy = DetectProxy.build(teacher, data, cfg, hflip=0.0)
    assert (len(proxy.data.train), len(proxy.data.val)) == (16, 16)
    spec = spec_from_sample(cheapest_sample(space_choices(cfg.detect.search)))
    a, b = proxy.score(spec), proxy.score(spec)
    assert a["proxy_kd"] == {"pkd": 1.0, "dense_kd": 1.0}  # both apply to an edet teacher
    assert 0.0 <= a["proxy_map50_95"] <= a["proxy_map50"] <= 1.0
    assert a["proxy_imitation"] > 0.0
    assert (a["proxy_map50_95"], a["proxy_imitation"]) == (b["proxy_map50_95"], b["proxy_imitation"])
    student = build_detector(spec["name"], data.num_classes, 64)
    assert proxy_kd({}, teacher, student, 64) == {"pseudo_label": 1.0}  # nothing applies: pseudo-labels


# ---- the stage: search -> distill -> quantize -> export at the student's own side ------------------
def _tiny_run_config(teacher: Path, extra: dict | None = None):
    return build_config(
        None,
        TINY_SPACE
        | {
            "task": "detect",
            "teacher.checkpoint": str(teacher),
            "data.source": "digits-detect",
            "data.max_train_samples": 16,
            "target": "jetson-orin-nano",
            "detect.imgsz": TEACHER_IMGSZ,
            "detect.batch_size": 16,
            "distill.epochs": 1,
            "search.trials": 1,
            "search.latency_ms": 100.0,
            "search.compare_zoo": [],
            "search.proxy_epochs": 1,
            "search.proxy_train_samples": 16,
            "search.proxy_val_samples": 16,
            "quantize.mode": "ptq",
            "quantize.calibrator": "max",
            "quantize.sensitivity": False,
            "quantize.sensitivity_samples": 1,
            "quantize.calib_batches": 1,
        }
        | (extra or {}),
    )


def test_search_picks_a_student_that_keeps_its_own_input_side(untrained_teacher, tmp_path):
    out = tmp_path / "run"
    cfg = _tiny_run_config(untrained_teacher)
    run_stages_in(
        out, cfg, ["teacher", "search", "distill", "quantize", "export"], resume=False, reporter=Reporter(quiet=True)
    )
    best = json.loads((out / "search" / "best_arch.json").read_text())
    assert best["source"] == "search" and best["arch"]["imgsz"] == 64 and parse_spec(best["name"])
    trials = [json.loads(line) for line in (out / "search" / "trials.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in trials] == ["teacher", "nas"] and trials[1]["status"] == "trained"
    assert trials[1]["latency_ms"] <= 100.0 and trials[1]["latency_source"]
    assert (out / "search" / "pareto.png").stat().st_size > 1000
    search = json.loads((out / "search" / "search.json").read_text())
    assert search["skipped"] is False and search["trials_trained"] == 1 and search["best"] == best["name"]
    # distill builds the pick at its side; quantize and export follow the student's checkpoint, not detect.imgsz
    manifest = json.loads((out / "manifest.json").read_text())
    distill = manifest["stages"]["distill"]["metrics"]
    assert distill["student"]["name"] == best["name"] and distill["imgsz"] == 64
    for ckpt in ("distill/student.pt", "quantize/student_int8.pt"):
        saved = torch.load(out / ckpt, map_location="cpu", weights_only=True)
        assert (saved["arch"], saved["imgsz"]) == (best["name"], 64), ckpt
    for name in ("model_fp32.onnx", "model_int8.onnx", "model_int8_cpu.onnx"):
        dims = [d.dim_value for d in onnx.load(str(out / "export" / name)).graph.input[0].type.tensor_type.shape.dim]
        assert dims[1:] == [3, 64, 64], name
    parity = json.loads((out / "export" / "parity.json").read_text())
    assert all(p["passed"] for p in parity.values())


def test_a_budget_below_the_space_is_refused_before_training(untrained_teacher, tmp_path):
    cfg = _tiny_run_config(untrained_teacher, {"search.latency_ms": 1e-4})
    with pytest.raises(EdgekdError, match="below the fastest searchable detector"):
        run_stages_in(tmp_path / "run", cfg, ["teacher", "search"], resume=False, reporter=Reporter(quiet=True))
    assert not (tmp_path / "run" / "search" / "trials.jsonl").exists()


# ---- compress end to end (slow) ----------------------------------------------------------------------
@pytest.mark.slow
def test_compress_detect_without_student_searches_then_distils_the_pick(cli, data, tmp_path):
    """``compress --task detect`` on digits-detect with 2 trials: search -> distill -> quantize -> export ->
    bench -> package, every stage after the search at the searched student's own input side."""
    torch.manual_seed(0)
    teacher = build_detector("edet_p", data.num_classes, TEACHER_IMGSZ)
    small = data.__class__(data.train.subset(192), data.val, data.names, data.category_ids, "digits-detect")
    train_detector(teacher, small, epochs=5, lr=4e-3, batch_size=16, imgsz=TEACHER_IMGSZ, seed=0, hflip=0.0)
    t_path = save_detector(
        tmp_path / "t.pt", teacher, arch="edet_p", names=data.names, category_ids=data.category_ids, imgsz=96
    )
    out = tmp_path / "run"
    space = [f"{k}={json.dumps(v)}" for k, v in TINY_SPACE.items() if k != "detect.search.imgsz"]
    result = cli(
        "compress", "--task", "detect", "--teacher", t_path, "--data", "digits-detect", "--target", "jetson-orin-nano",
        "--trials", "2", "--latency-ms", "100", "--epochs", "2", "--max-train-samples", "128", "--max-drop", "100",
        *sets("detect.imgsz=96", "detect.lr=0.004", "detect.search.imgsz=[64]", *space, "search.proxy_epochs=1",
              "search.proxy_train_samples=64", "search.proxy_val_samples=64", "search.compare_zoo=[]",
              "quantize.calibrator=max", "quantize.sensitivity=false", "quantize.sensitivity_samples=1"),
        *FAST_BENCH_OPTS, "--out", out, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s for s, r in manifest["stages"].items() if r["status"] == "done"] == [
        "teacher", "search", "distill", "quantize", "export", "bench", "package",
    ]  # fmt: skip
    search = json.loads((out / "search" / "search.json").read_text())
    best = json.loads((out / "search" / "best_arch.json").read_text())
    trials = [json.loads(line) for line in (out / "search" / "trials.jsonl").read_text().splitlines()]
    assert search["trials_trained"] == 2 == sum(r["kind"] == "nas" and r["status"] == "trained" for r in trials)
    assert best["source"] == "search" and best["imgsz"] == 64 and search["best"] == best["name"]
    assert best["proxy_map50_95"] == max(r["proxy_map50_95"] for r in trials if r["kind"] == "nas")
    distill = manifest["stages"]["distill"]["metrics"]
    assert distill["student"]["name"] == best["name"] and distill["imgsz"] == 64
    for name in ("model_fp32.onnx", "model_int8.onnx", "model_int8_cpu.onnx"):
        dims = [d.dim_value for d in onnx.load(str(out / "export" / name)).graph.input[0].type.tensor_type.shape.dim]
        assert dims[1:] == [3, 64, 64], name
    results = json.loads((out / "bench" / "results.json").read_text())
    assert (results["imgsz"], results["teacher_imgsz"]) == (64, 96)
    labels = next((out / "package").glob("*/labels.json"))
    assert json.loads(labels.read_text())["imgsz"] == 64
    report = (out / "report.md").read_text()
    assert "Student search" in report and "proxy mAP@[.5:.95]" in report and best["name"] in report
