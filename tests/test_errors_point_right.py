"""Issue 20, defect 2: errors say what went wrong, not something else.

Disk errors are disk errors (with the path and the space), a run in progress is named (pid, since), a
stale lock is recovered and said so, YAML tags are refused as tags, a stray label is named with its file
and index, train-teacher's divergence names its own --lr, infer.py rejects object arrays in one line with
exit 2, and report.md names the stage that failed.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekd.pipeline as P
from edgekd.config import build_config
from edgekd.errors import EdgekdError, StorageError
from edgekd.io import atomic_torch_save, atomic_write_text
from edgekd.report import build_report
from edgekd.rundir import RunDir

TEMPLATES = Path(__file__).resolve().parents[1] / "edgekd" / "package" / "templates"


def _one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


class SmallCNN(torch.nn.Sequential):
    def __init__(self):
        super().__init__(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10))
        self(torch.zeros(1, 1, 8, 8))


# ---- disk errors ---------------------------------------------------------------------------------
def test_disk_full_during_export_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    from edgekd.export.onnx_export import export_onnx

    def full_disk(model, args, f, **kwargs):
        Path(f).write_bytes(b"\0" * 4096)  # part of the file made it out
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.onnx, "export", full_disk)
    with pytest.raises(StorageError) as err:
        export_onnx(SmallCNN(), tmp_path / "export" / "model_fp32.onnx", input_shape=(1, 8, 8))
    message = str(err.value)
    assert f"could not write {tmp_path / 'export' / 'model_fp32.onnx'}: no space left on device" in message
    assert "free on the filesystem of" in message and "needed more than 4.0 KB" in message
    assert "opset" not in message and "layer" not in message
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == []  # no half-written file


@pytest.mark.parametrize(
    ("code", "where", "words"),
    [
        (errno.EACCES, "mkstemp", "permission denied (errno 13); make the folder writable"),
        (errno.EROFS, "replace", "read-only file system (errno 30); choose an --out on a writable disk"),
        (errno.EDQUOT, "replace", "disk quota exceeded"),
    ],
)
def test_permission_and_read_only_are_said_as_such(tmp_path, monkeypatch, code, where, words):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path))

    monkeypatch.setattr(tempfile if where == "mkstemp" else os, where, refuse)
    with pytest.raises(StorageError, match=re.escape(words)) as err:
        atomic_write_text(tmp_path / "bench" / "results.json", "{}")
    assert str(tmp_path / "bench" / "results.json") in str(err.value)


def test_torch_save_on_a_full_tmpfs(tmp_path):
    """A real full disk where this machine lets the test mount a small tmpfs (root), else skipped."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(StorageError, match="no space left on device") as err:  # torch's own error has no errno
            atomic_torch_save(mnt / "student.pt", {"w": torch.zeros(64, 1024)})
        assert str(mnt / "student.pt") in str(err.value)
        assert list(mnt.iterdir()) == []
    finally:
        gc.collect()  # torch's writer keeps its (unlinked) file open until collected
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


class _FullDiskStage(P.Stage):
    name = "teacher"

    def run(self, ctx):
        with open(ctx.dir / "teacher.json", "w") as f:  # a plain write, not through edgekd.io
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f.name)


def test_a_stage_that_fills_the_disk_fails_with_the_disk_named(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "_STAGES", {"teacher": _FullDiskStage})
    run = RunDir(tmp_path / "run")
    cfg = build_config(None, {})
    run.init_manifest(cfg)
    with pytest.raises(StorageError, match="no space left on device"):
        P.Runner(run, cfg).run_stages(["teacher"], resume=False)
    error = json.loads(run.manifest_path.read_text())["stages"]["teacher"]["error"]
    assert error.startswith("could not write ") and "teacher.json: no space left on device" in error


# ---- two runs on one --out -------------------------------------------------------------------------
def test_second_run_on_one_out_is_told_who_holds_it(cli, tmp_path, digits_teacher):
    out = tmp_path / "run"
    first = RunDir(out)
    first.lock("compress")  # a run that has started: its lock, nothing else yet
    try:
        line = _one_line_error(
            cli("compress", "--teacher", digits_teacher, "--out", out, "--quiet"),
            f"run directory {out} is in use by another edgekd process: pid {os.getpid()} since ",
            "(compress)",
        )
        assert "other files" not in line
    finally:
        first.unlock()
    assert (out / ".lock").read_text() == ""  # a clean release empties it: not stale


def test_stale_lock_of_a_killed_run_is_recovered_and_said_so(cli, tmp_path, digits_teacher):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("pid=999999 since=2026-11-30T10:00:00+00:00 command=compress\n")  # killed -9
    result = cli("compress", "--teacher", digits_teacher, "--out", out, "--student", "resnet9", "--quiet")
    assert result.exit_code == 2
    stderr = " ".join(result.stderr.split())
    assert "recovered the stale lock of pid 999999 since 2026-11-30T10:00:00+00:00 (compress)" in stderr
    assert "other files" not in stderr and "resnet9" in stderr


def test_a_killed_writers_temp_files_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "run"
    (out / ".export.partial").mkdir(parents=True)
    half = out / ".export.partial" / ".model_fp32.onnx.k3j2.tmp"  # atomic_write's temp, its writer killed
    half.write_bytes(b"half")
    (out / ".lock").write_text("pid=999999 since=2026-11-30T10:00:00+00:00 command=compress\n")
    run = RunDir(out)
    note = run.lock("compress")
    run.unlock()
    assert not half.exists() and "removed 1 half-written temp file(s)" in note


# ---- config, data, training, bundle ----------------------------------------------------------------
@pytest.mark.parametrize(
    "text", ["seed: !!python/object/apply:os.system ['true']\n", "distill: !!python/object:argparse.Namespace {}\n"]
)
def test_yaml_tags_are_refused_as_tags(cli, tmp_path, digits_teacher, text):
    (tmp_path / "c.yaml").write_text(text)
    line = _one_line_error(
        cli("compress", "--teacher", digits_teacher, "--config", tmp_path / "c.yaml", "--out", tmp_path / "r"),
        "the tag !!python/object",
        "is refused",
    )
    assert "fix the syntax" not in line


def test_a_stray_label_is_named_with_its_file_and_index(cli, tmp_path, digits_teacher):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images * 16).clip(0, 255).astype(np.uint8)
    y = digits.target.copy()
    y[37] = 15
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "train.npz", x=x[:1500], y=y[:1500])
    np.savez(data / "test.npz", x=x[1500:], y=y[1500:])
    line = _one_line_error(
        cli("compress", "--teacher", digits_teacher, "--data", data, "--out", tmp_path / "r", "--quiet"),
        f"{data / 'train.npz'}: y[37] = 15",
        "no image has label 10..14",
        "10 classes (0..9)",
    )
    assert "16 classes" not in line.split("naming all")[0]


def test_train_teacher_divergence_names_its_own_flag(cli, tmp_path):
    args = ("train-teacher", "--arch", "cnn_tiny", "--data", "digits", "--epochs", "1", "--lr", "1e9")
    line = _one_line_error(cli(*args, "--out", tmp_path / "t.pt", "--quiet"), "training diverged", "--lr")
    assert "distill.lr" not in line


def _mini_bundle(folder: Path) -> Path:
    """infer.py with the files it reads before it needs a model: enough to test its input checks."""
    folder.mkdir()
    (folder / "infer.py").write_text((TEMPLATES / "infer.py").read_text())
    (folder / "manifest.json").write_text(json.dumps({"top_k": 3, "model": {"file": "model.onnx"}}))
    (folder / "preprocess.json").write_text(json.dumps({"shape": [1, 8, 8], "mean": [0.5], "std": [0.25]}))
    (folder / "labels.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    return folder


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"x": np.array([{"a": 1}, None], dtype=object)}, "object arrays"),
        ({"x": np.zeros((2, 8, 8), np.uint8), "y": np.array(["a", "b"], dtype=object)}, "object arrays"),
        ({"x": np.array(["ab", "cd"])}, "x has dtype <U2"),
        ({"images": np.zeros((2, 8, 8), np.uint8)}, "no array x (it has: images)"),
        ({"x": np.zeros((2, 3, 9, 9), np.uint8)}, "x has shape (2, 3, 9, 9), expected (N, 1, 8, 8)"),
    ],
)
def test_infer_rejects_bad_npz_in_one_line_with_exit_2(tmp_path, arrays, words):
    bundle = _mini_bundle(tmp_path / "bundle")
    np.savez(tmp_path / "bad.npz", **arrays)
    result = subprocess.run(
        [sys.executable, str(bundle / "infer.py"), "--npz", str(tmp_path / "bad.npz")], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("infer.py: error: ") and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr


# ---- report.md after a failed stage ---------------------------------------------------------------
class _Fails(P.Stage):
    name = "distill"

    def run(self, ctx):
        (ctx.dir / "last.ckpt").write_bytes(b"epoch 3")
        raise EdgekdError("distill: the loss became nan in epoch 4 (training diverged)")


def test_report_names_the_stage_that_failed_and_why(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "_STAGES", {"distill": _Fails})
    run = RunDir(tmp_path / "run")
    cfg = build_config(None, {})
    run.init_manifest(cfg)
    with pytest.raises(EdgekdError):
        P.run_pipeline(run, cfg, ["distill"], False, P.Reporter(quiet=True), lambda: None)
    text = (run.path / "report.md").read_text()
    assert "**The run stopped at stage distill:** distill: the loss became nan in epoch 4 (training diverged)." in text
    assert "Its files so far are kept in `.distill.partial/`" in text
    assert "No benchmark yet" not in text
    assert build_report(run) == text
