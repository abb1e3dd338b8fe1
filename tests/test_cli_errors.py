"""Bad input: each case exits 2 with one line that names the problem, and leaves nothing behind."""

from __future__ import annotations

import builtins
import json

import pytest
import torch
from cli_helpers import sets

from edgekd.models import create_model
from edgekd.models.checkpoint import save_model


def _one_line_error(result, needle: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: "), result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.fixture
def compress(cli, tmp_path):
    def run(*args):
        return cli("compress", "--out", tmp_path / "run", "--quiet", *args)

    return run


@pytest.fixture
def finished_run(cli, tmp_path, digits_teacher):
    """A completed one-epoch run on digits."""
    out = tmp_path / "run"
    args = ("--teacher", digits_teacher, "--student", "cnn_small", "--epochs", "1")
    result = cli("compress", *args, "--out", out, "--quiet", *sets("bench.runs=50", "bench.throughput_runs=3"))
    assert result.exit_code == 0, result.output
    return out


def test_missing_teacher_file(compress, tmp_path):
    _one_line_error(compress("--teacher", tmp_path / "nope.pt"), "does not exist")
    assert not (tmp_path / "run").exists()


def test_truncated_checkpoint(compress, tmp_path, digits_teacher):
    data = digits_teacher.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    _one_line_error(compress("--teacher", tmp_path / "cut.pt"), "not a readable PyTorch checkpoint")


def test_pickle_that_would_run_code_is_refused_and_never_runs(compress, tmp_path):
    marker = tmp_path / "pwned"
    torch.save(_Exploit(marker), tmp_path / "evil.pt")
    _one_line_error(compress("--teacher", tmp_path / "evil.pt"), "--trust-checkpoint")
    assert not marker.exists()


def test_pickled_module_refused_without_flag(compress, tmp_path):
    torch.save(create_model("cnn_small", num_classes=10, in_channels=1), tmp_path / "whole.pt")
    _one_line_error(compress("--teacher", tmp_path / "whole.pt"), "pass --trust-checkpoint")


def test_wrong_number_of_classes(compress, tmp_path):
    model = create_model("cnn_tiny", num_classes=5, in_channels=1)
    save_model(tmp_path / "five.pt", model, input_spec={"shape": [1, 8, 8]}, classes=list("abcde"))
    _one_line_error(compress("--teacher", tmp_path / "five.pt"), "predicts 5 classes but the data has 10")


def test_wrong_input_shape(compress, tmp_path):
    model = create_model("resnet8", num_classes=10, in_channels=3)
    save_model(tmp_path / "rgb.pt", model, input_spec={"shape": [3, 32, 32]}, classes=list("0123456789"))
    _one_line_error(compress("--teacher", tmp_path / "rgb.pt"), "expects inputs of shape (3, 32, 32)")


def test_bare_state_dict_without_arch(compress, tmp_path):
    torch.save(create_model("cnn_tiny", num_classes=10, in_channels=1).state_dict(), tmp_path / "sd.pt")
    _one_line_error(compress("--teacher", tmp_path / "sd.pt"), "--teacher-arch")


def test_unknown_target(compress, digits_teacher):
    _one_line_error(compress("--teacher", digits_teacher, "--target", "jetson-orin-nanoo"), "jetson-orin-nano")


def test_malformed_yaml(compress, tmp_path, digits_teacher):
    (tmp_path / "bad.yaml").write_text("distill:\n  epochs: [3\n")
    _one_line_error(compress("--teacher", digits_teacher, "--config", tmp_path / "bad.yaml"), "not valid YAML")


def test_unknown_config_key(compress, tmp_path, digits_teacher):
    (tmp_path / "c.yaml").write_text("distill:\n  epoch: 3\n")
    _one_line_error(
        compress("--teacher", digits_teacher, "--config", tmp_path / "c.yaml"), "unknown key 'distill.epoch'"
    )


def test_bad_value(compress, digits_teacher):
    _one_line_error(compress("--teacher", digits_teacher, "--set", "distill.optimizer=adam"), "choose one of")


def test_unknown_student(compress, digits_teacher):
    _one_line_error(compress("--teacher", digits_teacher, "--student", "resnet9", "--epochs", "1"), "resnet9")


def test_bad_data_path(compress, tmp_path, digits_teacher):
    _one_line_error(compress("--teacher", digits_teacher, "--data", tmp_path / "missing"), "missing")


def test_locked_run_dir(cli, finished_run):
    from edgekd.pipeline import RunDir

    holder = RunDir(finished_run)
    holder.lock()
    try:
        _one_line_error(cli("compress", "--out", finished_run, "--resume", "--quiet"), "in use by another")
    finally:
        holder.unlock()


def test_train_teacher_refuses_to_overwrite(cli, digits_teacher):
    _one_line_error(cli("train-teacher", "--arch", "cnn_tiny", "--out", digits_teacher), "--force")


def test_unfit_student_is_caught_before_anything_is_written(compress, tmp_path, digits_teacher):
    result = compress("--teacher", digits_teacher, "--student", "tv:squeezenet1_1", "--epochs", "1")
    _one_line_error(result, "student tv:squeezenet1_1 cannot take the data's (1, 8, 8) images")
    assert not (tmp_path / "run").exists()


def test_bad_device(compress, digits_teacher):
    _one_line_error(compress("--teacher", digits_teacher, "--device", "gpu"), "unknown device 'gpu'")


def test_diverging_training_is_a_one_line_error(compress, digits_teacher):
    result = compress("--teacher", digits_teacher, "--student", "cnn_small", "--epochs", "2", "--set", "distill.lr=1e9")
    _one_line_error(result, "training diverged")


def test_out_folder_with_other_files_is_refused(cli, tmp_path, digits_teacher):
    (tmp_path / "mine" / "export").mkdir(parents=True)
    (tmp_path / "mine" / "export" / "notes.txt").write_text("keep me")
    result = cli("compress", "--teacher", digits_teacher, "--out", tmp_path / "mine", "--quiet")
    _one_line_error(result, "not an edgekd run")
    assert (tmp_path / "mine" / "export" / "notes.txt").read_text() == "keep me"


def test_failed_stage_rerun_keeps_the_previous_results(cli, finished_run):
    out = finished_run
    config_before = (out / "config.yaml").read_text()
    student_before = (out / "distill" / "student.pt").read_bytes()
    # a typo is caught before anything is touched
    _one_line_error(cli("distill", out, "--student", "resnet9", "--quiet"), "resnet9")
    assert (out / "config.yaml").read_text() == config_before
    # a run that fails part-way leaves the previous student in place and on record
    _one_line_error(cli("distill", out, "--set", "distill.lr=1e9", "--quiet"), "training diverged")
    assert (out / "distill" / "student.pt").read_bytes() == student_before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["distill"]["status"] == "failed"
    assert manifest["stages"]["distill"]["previous"]["status"] == "done"
