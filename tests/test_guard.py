"""Teacher quality guard: the decision rule, and a deliberately weak teacher switched away from."""

from __future__ import annotations

import pytest
from cli_helpers import quick_compress, sets
from schemes_helpers import run_stages

from edgekd.config import DistillConfig
from edgekd.distill.guard import LOWER_KD_SCALE, apply, decide


def test_clearly_better_teacher_changes_nothing():
    d = decide(0.95, 0.90, "probe", margin=0.01)
    assert d.clearly_better and d.action == "none"
    cfg = DistillConfig()
    assert apply(d, cfg) == cfg


def test_worse_teacher_goes_teacher_free_and_close_one_lowers_kd():
    worse = decide(0.67, 0.715, "baseline", margin=0.01)  # the resnet56 -> resnet20 numbers
    assert not worse.clearly_better and worse.action == "tfkd" and "not clearly better" in worse.verdict
    assert apply(worse, DistillConfig()).scheme == "tfkd"
    close = decide(0.905, 0.90, "probe", margin=0.01)
    assert close.action == "lower_kd"
    cfg = apply(close, DistillConfig())
    assert cfg.ce_weight == 1.0 and cfg.methods[0].weight == pytest.approx(0.9 * LOWER_KD_SCALE)


def test_warn_mode_and_explicit_fallback():
    d = decide(0.5, 0.9, "probe", mode="warn")
    assert d.action == "warn" and "distill.guard.mode=warn" in d.verdict
    assert apply(d, DistillConfig()) == DistillConfig()
    assert decide(0.5, 0.9, "probe", fallback="lower_kd").action == "lower_kd"
    assert decide(0.5, 0.9, "probe", fallback="dkd", dkd_available=False).action == "lower_kd"
    assert decide(0.5, 0.9, "probe", fallback="dkd", dkd_available=True).action == "dkd"


@pytest.fixture(scope="module")
def weak_teacher(tmp_path_factory, cli):
    """cnn_medium after 1 epoch on 200 images: near chance, far worse than any trained student."""
    out = tmp_path_factory.mktemp("weak") / "weak.pt"
    result = cli(
        "train-teacher", "--arch", "cnn_medium", "--epochs", "1", "--max-train-samples", "200", "--out", out, "--quiet"
    )
    assert result.exit_code == 0, result.output
    return out


def test_guard_switches_away_from_a_weak_teacher(tmp_path, weak_teacher):
    m = run_stages(tmp_path / "run", weak_teacher, {"distill.epochs": 3, "distill.guard.probe_epochs": 3})
    g = m["guard"]
    assert g["teacher_top1"] < 0.5 and g["student_top1"] > g["teacher_top1"] + 0.1
    assert not g["clearly_better"] and g["action"] == "tfkd" and g["scheme_used"] == "tfkd"
    assert (
        m["scheme"] == "tfkd"
        and "tfkd" in m["history"][-1]["train_loss"]
        and "kd" not in m["history"][-1]["train_loss"]
    )
    report = (tmp_path / "run" / "report.md").read_text() if (tmp_path / "run" / "report.md").exists() else None
    assert report is None or "Teacher guard" in report


def test_guard_warn_keeps_kd_and_uses_the_baseline(tmp_path, weak_teacher):
    m = run_stages(
        tmp_path / "run", weak_teacher, {"distill.epochs": 2, "distill.guard.mode": "warn", "distill.baseline": True}
    )
    g = m["guard"]
    assert g["action"] == "warn" and g["student_source"].startswith("the --baseline run")
    assert g["student_top1"] == m["baseline_val_top1"] and "kd" in m["history"][-1]["train_loss"]
    assert (tmp_path / "run" / "distill" / "baseline.pt").is_file()


def test_guard_passes_a_good_teacher(tmp_path, digits_teacher):
    m = run_stages(tmp_path / "run", digits_teacher, {"distill.epochs": 2, "distill.guard.probe_epochs": 1})
    assert m["guard"]["clearly_better"] and m["guard"]["action"] == "none" and m["scheme"] == "offline"
    assert "kd" in m["history"][-1]["train_loss"]


def test_guard_report_line(tmp_path, cli, weak_teacher):
    out = tmp_path / "run"
    result = cli(*quick_compress(weak_teacher, out, *sets("distill.guard.probe_epochs=4")))
    assert result.exit_code == 0, result.output
    assert "not clearly better" in result.output
    report = (out / "report.md").read_text()
    assert "**Teacher guard:**" in report and "The guard chose `tfkd`" in report
