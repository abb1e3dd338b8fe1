"""Runner semantics with small fake stages: fingerprints, skip on resume, verification, cut-off
resume, locking, and atomic writes."""

from __future__ import annotations

import json

import pytest

import edgekd.pipeline as P
from edgekd.config import build_config
from edgekd.errors import EdgekdError
from edgekd.io import atomic_write, atomic_write_text


class Log:
    calls: list[tuple[str, bool]] = []


class FakeTeacher(P.Stage):
    name = "teacher"
    config_keys = ("seed",)

    def run(self, ctx):
        Log.calls.append((self.name, ctx.resume))
        atomic_write_text(ctx.dir / "teacher.json", json.dumps({"seed": ctx.config.seed}))
        return P.StageResult(metrics={"seed": ctx.config.seed})


class FakeDistill(P.Stage):
    name = "distill"
    crash = False
    config_keys = ("distill",)
    needs = ("teacher",)

    def run(self, ctx):
        Log.calls.append((self.name, ctx.resume))
        ctx.upstream("teacher")
        (ctx.dir / "partial.ckpt").touch()
        if FakeDistill.crash:
            raise RuntimeError("simulated crash")
        atomic_write_text(ctx.dir / "student.pt", f"epochs={ctx.config.distill.epochs}")
        return P.StageResult(metrics={"epochs": ctx.config.distill.epochs})


@pytest.fixture
def fake_stages(monkeypatch):
    monkeypatch.setattr(P, "_STAGES", {"teacher": FakeTeacher, "distill": FakeDistill})
    Log.calls = []
    return Log


def _runner(tmp_path, **overrides):
    run = P.RunDir(tmp_path / "run")
    cfg = build_config(None, overrides)
    if run.exists():
        run.load_manifest()
    else:
        run.init_manifest(cfg)
    return run, P.Runner(run, cfg)


def test_runs_all_and_records_manifest(tmp_path, fake_stages):
    run, runner = _runner(tmp_path)
    runner.run_stages(["teacher", "distill"], resume=False)
    manifest = json.loads(run.manifest_path.read_text())
    rec = manifest["stages"]["distill"]
    assert rec["status"] == "done" and rec["metrics"] == {"epochs": 30}
    assert set(rec["outputs"]) == {"distill/student.pt", "distill/partial.ckpt"}
    assert len(rec["fingerprint"]) == 64 and "torch" in manifest["versions"]
    assert fake_stages.calls == [("teacher", False), ("distill", False)]


def test_resume_skips_unchanged_and_reruns_changed(tmp_path, fake_stages):
    run, runner = _runner(tmp_path)
    runner.run_stages(["teacher", "distill"], resume=False)
    fake_stages.calls.clear()
    _, runner = _runner(tmp_path)
    runner.run_stages(["teacher", "distill"], resume=True)
    assert fake_stages.calls == []
    _, runner = _runner(tmp_path, **{"distill.epochs": 3})
    runner.run_stages(["teacher", "distill"], resume=True)
    assert fake_stages.calls == [("distill", False)]  # teacher unchanged
    fake_stages.calls.clear()
    _, runner = _runner(tmp_path, seed=1, **{"distill.epochs": 3})
    runner.run_stages(["teacher", "distill"], resume=True)
    assert [c[0] for c in fake_stages.calls] == ["teacher", "distill"]  # upstream change propagates


def test_modified_output_fails_verification_and_reruns(tmp_path, fake_stages):
    run, runner = _runner(tmp_path)
    runner.run_stages(["teacher", "distill"], resume=False)
    (run.path / "distill" / "student.pt").write_text("tampered")
    assert not run.outputs_verify("distill")
    fake_stages.calls.clear()
    _, runner = _runner(tmp_path)
    runner.run_stages(["teacher", "distill"], resume=True)
    assert fake_stages.calls == [("distill", False)]


def test_stage_command_reruns_named_stage_and_needed_upstream(tmp_path, fake_stages):
    run, runner = _runner(tmp_path)
    runner.run_stages(["distill"], resume=False)  # teacher pulled in as a dependency
    assert [c[0] for c in fake_stages.calls] == ["teacher", "distill"]
    fake_stages.calls.clear()
    runner.run_stages(["distill"], resume=False)  # named stage forced, done upstream skipped
    assert fake_stages.calls == [("distill", False)]


def test_cut_off_stage_resumes_in_place(tmp_path, fake_stages):
    run, runner = _runner(tmp_path)
    FakeDistill.crash = True
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            runner.run_stages(["teacher", "distill"], resume=False)
    finally:
        FakeDistill.crash = False
    assert run.stage_record("distill")["status"] == "failed"
    assert "simulated crash" in run.stage_record("distill")["error"]
    fake_stages.calls.clear()
    run, runner = _runner(tmp_path)
    runner.run_stages(["teacher", "distill"], resume=True)
    assert fake_stages.calls == [("distill", True)]  # resumed: its folder (checkpoints) was kept
    assert run.path.joinpath("distill", "student.pt").is_file()
    assert "distill/partial.ckpt" in run.stage_record("distill")["outputs"]


def test_lock_is_exclusive(tmp_path):
    a, b = P.RunDir(tmp_path / "run"), P.RunDir(tmp_path / "run")
    a.lock()
    try:
        with pytest.raises(EdgekdError, match="in use by another edgekd process"):
            b.lock()
    finally:
        a.unlock()
    b.lock()
    b.unlock()


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_text("old")

    def broken(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
