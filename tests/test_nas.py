"""The student search: NNI spaces equal the zoo models, budget rejection before training, the
journal and resume, best_arch rebuilt without NNI, and a real 3-trial search on digits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgekd.config import build_config
from edgekd.console import Reporter
from edgekd.errors import EdgekdError
from edgekd.models import create_model
from edgekd.nas.space import cheapest_sample, choices, make_layout, resolutions_for, spec_from_sample
from edgekd.pipeline import RunDir, run_stages_in

REPO = Path(__file__).resolve().parents[1]
FAST_SEARCH = {
    "search.trials": 3,
    "search.proxy_epochs": 1,
    "search.proxy_train_samples": 200,
    "search.proxy_val_samples": 100,
    "search.compare_zoo": ["cnn_tiny", "cnn_small"],
    "search.threads": 1,
    "target": "x86-cpu",
}


def test_nni_is_imported_in_one_module_only():
    pattern = re.compile(r"^\s*(import nni\b|from nni\b)", re.MULTILINE)
    users = sorted(str(p.relative_to(REPO)) for p in (REPO / "edgekd").rglob("*.py") if pattern.search(p.read_text()))
    assert users == ["edgekd/nas/nni_space.py"]


@pytest.mark.parametrize(
    ("side", "expected"), [(8, [8]), (28, [28]), (32, [32]), (64, [64, 48, 40]), (224, [224, 168, 140])]
)
def test_small_images_keep_their_side_and_large_ones_may_shrink(side, expected):
    assert resolutions_for(side) == expected
    assert make_layout(10, (3, side, side))["resolutions"] == expected


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 64, 64)])
def test_frozen_nni_samples_are_the_zoo_models(shape):
    from edgekd.nas import nni_space

    layout = make_layout(10, shape)
    space = nni_space.new_space(layout)
    assert set(space.simplify()) == set(choices(layout))
    for sample in nni_space.random_samples(layout, 4, seed=1):
        frozen = nni_space.frozen_sample(space, sample)
        spec = spec_from_sample(layout, sample)
        zoo = create_model(spec)
        assert frozen.arch_spec == spec
        assert {k: v.shape for k, v in frozen.net.state_dict().items()} == {
            k: v.shape for k, v in zoo.state_dict().items()
        }
        zoo.load_state_dict(frozen.net.state_dict())
        x = torch.randn(2, *shape)
        torch.testing.assert_close(zoo.eval()(x), frozen.net.eval()(x))
        if spec.get("input_size"):
            assert spec["input_size"] < shape[-1]


def test_cheapest_sample_is_cheapest_by_params():
    layout = make_layout(10, (3, 32, 32), ["mbv"])
    from edgekd.models import count_parameters
    from edgekd.nas import nni_space

    cheap = count_parameters(create_model(spec_from_sample(layout, cheapest_sample(layout, "mbv"))))
    for sample in nni_space.random_samples(layout, 5, seed=2):
        assert count_parameters(create_model(spec_from_sample(layout, sample))) >= cheap


def _run(tmp_path: Path, teacher: Path, stages: list[str], resume: bool = False, **overrides) -> RunDir:
    cfg = build_config(None, {"teacher.checkpoint": str(teacher), **FAST_SEARCH, **overrides})
    return run_stages_in(tmp_path / "run", cfg, stages, resume=resume, reporter=Reporter(quiet=True))


@pytest.fixture(scope="module")
def searched(tmp_path_factory, digits_teacher):
    """teacher -> search (3 trials, 1 proxy epoch on 200 images) -> distill (1 epoch) on digits; distill
    takes the found student (and its fingerprint the sha256 of best_arch.json)."""
    tmp = tmp_path_factory.mktemp("search")
    run = _run(tmp, digits_teacher, ["search", "distill"], **{"distill.epochs": 1, "search.latency_ratio": 0.6})
    return run


def _journal(run: RunDir) -> list[dict]:
    return [json.loads(line) for line in (run.path / "search" / "trials.jsonl").read_text().splitlines()]


def test_search_trains_the_asked_trials_within_budget(searched):
    record = searched.stage_record("search")
    assert record["status"] == "done"
    m = record["metrics"]
    budget = m["budget_ms"]
    assert budget == pytest.approx(0.6 * m["teacher_latency_ms"])
    nas = [r for r in _journal(searched) if r["kind"] == "nas"]
    trained = [r for r in nas if r["status"] == "trained"]
    assert len(trained) == 3 == m["trials_trained"]
    assert len({r["key"] for r in trained}) == 3  # three different architectures
    for r in trained:
        assert r["latency_ms"] <= budget and 0.0 <= r["proxy_top1"] <= 1.0
        assert r["latency_source"] in ("roofline", "lut", "lut+roofline") and r["flops"] > 0 and r["parameters"] > 0
        assert r["arch"]["name"] in ("nas_mbv", "nas_resnet")
    for r in nas:
        if r["status"] == "rejected":  # rejected before training: over budget, never scored
            assert r["latency_ms"] > budget and "proxy_top1" not in r
    best = json.loads((searched.path / "search" / "best_arch.json").read_text())
    assert best["latency_ms"] <= budget
    assert (searched.path / "search" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_distill_uses_the_found_student(searched):
    best = json.loads((searched.path / "search" / "best_arch.json").read_text())
    assert searched.stage_record("distill")["metrics"]["student"] == create_model(best["arch"]).arch_spec


def test_best_arch_rebuilds_without_nni(searched):
    code = (
        "import sys, json; sys.modules['nni'] = None\n"
        "from edgekd.models import create_model\n"
        f"info = json.load(open({str(searched.path / 'search' / 'best_arch.json')!r}))\n"
        "m = create_model(info['arch']); print(sum(p.numel() for p in m.parameters()))\n"
        "assert 'nni' not in [k for k, v in sys.modules.items() if v is not None]\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        int(out.stdout.strip()) == json.loads((searched.path / "search" / "best_arch.json").read_text())["parameters"]
    )


def test_cut_off_search_resumes_without_retraining(tmp_path, digits_teacher, monkeypatch):
    from edgekd.nas.proxy import Proxy

    real = Proxy.score
    calls: list[str] = []

    def flaky(self, spec):
        if len(calls) == 3:  # two zoo students and one searched one, then the machine "dies"
            raise KeyboardInterrupt
        calls.append(spec["name"])
        return real(self, spec)

    monkeypatch.setattr(Proxy, "score", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, digits_teacher, ["search"], **{"search.latency_ratio": 0.6})
    run = RunDir(tmp_path / "run")
    run.load_manifest()
    assert run.stage_record("search")["status"] == "failed"
    first = [json.loads(x) for x in (tmp_path / "run" / ".search.partial" / "trials.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "trained" for r in first) == 3

    calls.clear()
    monkeypatch.setattr(Proxy, "score", lambda self, spec: (calls.append(spec["name"]), real(self, spec))[1])
    run = _run(tmp_path, digits_teacher, ["search"], resume=True, **{"search.latency_ratio": 0.6})
    m = run.stage_record("search")["metrics"]
    assert m["trials_trained"] == 3 and m["replayed_from_journal"] == 1
    assert len(calls) == 2  # only the two trials that had not finished; no zoo retraining
    trained = [r for r in _journal(run) if r["status"] == "trained"]
    assert len({r["key"] for r in trained}) == len(trained) == 5


def test_impossible_budget_fails_fast_with_one_line(tmp_path, digits_teacher):
    with pytest.raises(EdgekdError, match="below the fastest searchable student"):
        _run(tmp_path, digits_teacher, ["search"], **{"search.latency_ms": 1e-4})


def test_given_student_skips_the_search(tmp_path, digits_teacher):
    run = _run(tmp_path, digits_teacher, ["search"], **{"student.arch": "cnn_tiny"})
    assert run.stage_record("search")["metrics"]["skipped"] is True
    assert not (run.path / "search" / "best_arch.json").exists()


def test_search_options_reach_the_config(cli, tmp_path):
    result = cli("compress", "--help")
    for opt in ("--latency-ms", "--latency-ratio", "--trials", "--strategy"):
        assert opt in result.output
    assert "--engine" in cli("search", "--help").output
    with pytest.raises(EdgekdError, match="search.strategy"):
        build_config(None, {"search.strategy": "grid"})


def test_distill_fingerprint_follows_the_found_student(searched):
    from edgekd.stages.common import searched_arch_input

    cfg = build_config(None, {"student.arch": "auto"})
    assert searched_arch_input(cfg, searched)["search_best_arch_sha256"]
    assert searched_arch_input(build_config(None, {"student.arch": "cnn_tiny"}), searched) == {}


def test_report_shows_the_search(searched):
    from edgekd.report import build_report

    searched.load_manifest()
    report = build_report(searched)
    m = searched.stage_record("search")["metrics"]
    assert f"{m['trials_trained']} trials trained" in report and f"Chosen: {m['best']}" in report
    assert "search/pareto.png" in report


@pytest.mark.slow
def test_nni_local_engine_trains_trials_in_their_own_processes(tmp_path, digits_teacher):
    """NNI's local training service (manager + one process per trial, 2 at once) fills the same
    journal and best_arch.json as the sequential engine."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    overrides = {"search.engine": "nni-local", "search.concurrency": 2, "search.trials": 2, "search.port": port}
    run = _run(tmp_path, digits_teacher, ["search"], **{**overrides, "search.latency_ratio": 0.6})
    m = run.stage_record("search")["metrics"]
    trained = [r for r in _journal(run) if r["kind"] == "nas" and r["status"] == "trained"]
    assert m["trials_trained"] == len(trained) == 2
    pids = {r["pid"] for r in trained}
    assert os.getpid() not in pids and len(pids) == 2
    assert all(r["latency_ms"] <= m["budget_ms"] and 0.0 <= r["proxy_top1"] <= 1.0 for r in trained)
    create_model(json.loads((run.path / "search" / "best_arch.json").read_text())["arch"])
