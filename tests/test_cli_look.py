"""How the CLI reads in a log or a pipe, and its help pages (issue 20, items 3 and 4)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from edgekd.cli import COMMANDS, app
from edgekd.console import Reporter


def _run(*args: str, columns: int):
    """The CLI with stdout and stderr not a terminal (CliRunner captures them) and ``columns`` wide."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)}, catch_exceptions=False)


# ---- item 3: output in logs and pipes ----------------------------------------------------------
def test_target_names_are_whole_in_a_pipe():
    from edgekd.targets import list_targets

    result = _run("targets", columns=80)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    for profile in list_targets():
        assert re.search(rf"^│ {re.escape(profile.name)} +│", result.stdout, re.M), profile.name


def test_models_table_names_are_whole_in_a_pipe():
    from edgekd.models import list_models

    result = _run("models", columns=40)
    assert result.exit_code == 0, result.output
    for name in list_models():
        assert re.search(rf"^│ {re.escape(name)} +│", result.stdout, re.M), name


def test_messages_are_not_hard_wrapped_off_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    message = (
        "bench: gate max_latency_ms FAILED for student onnx-int8 tensorrt: p50 latency 3.2 ms at batch 1 on "
        "inputs of shape (1, 8, 8) is above the limit of 1.0 ms"
    )
    reporter = Reporter()
    reporter.warn(message)
    reporter.info(message)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"warning: {message}", message]


def test_a_missing_teacher_is_still_one_line_without_resume(tmp_path):
    result = _run("compress", "--out", str(tmp_path / "run"), "--quiet", columns=80)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "edgekd: error: no teacher given; pass --teacher CKPT (train one with `edgekd train-teacher`)"
    ]


# ---- item 4: help pages ------------------------------------------------------------------------
@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_help_shows_no_python_types_for_flags_and_lists(name):
    result = _run(name, "--help", columns=120)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout
    assert "<list[" not in result.stdout


def test_root_help_lists_commands_in_pipeline_order_with_whole_descriptions():
    result = _run("--help", columns=200)
    assert "<bool>" not in result.stdout
    rows = re.findall(r"^│ ([a-z-]+) +(.*?) *│$", result.stdout.split("Commands")[1], re.M)
    assert [name for name, _ in rows] == [name for name, _ in COMMANDS]
    assert [name for name, _ in rows][:7] == ["compress", "search", "distill", "quantize", "export", "bench", "package"]
    for (name, description), (_, command) in zip(rows, COMMANDS, strict=True):
        # one line each: the summary sentence whole, not cut where the docstring's source line ended
        assert description.endswith((".", ")")), (name, description)
        assert command.__doc__.strip().startswith(description[:20]), name


def test_command_help_paragraphs_are_not_broken_mid_sentence():
    result = _run("compress", "--help", columns=200)
    assert "package in one run directory and prints the accuracy / latency / size table." in result.stdout


def test_teacher_is_marked_required_in_compress_help():
    result = _run("compress", "--help", columns=200)
    teacher_row = next(line for line in result.stdout.splitlines() if "--teacher " in line)
    assert teacher_row.lstrip("│ ").startswith("*")
    assert "required unless --config" in result.stdout
