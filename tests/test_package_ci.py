"""The project's own container and CI example: parsed, not built (no Docker on these machines)."""

from __future__ import annotations

from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[1]


def test_root_dockerfile_runs_edgekd_on_cpu_or_a_cuda_base():
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    structure = parser.structure
    args = {i["value"].split("=", 1)[0]: i["value"].split("=", 1)[1] for i in structure if i["instruction"] == "ARG"}
    assert args["BASE"] == "python:3.11-slim" and "download.pytorch.org/whl/cpu" in args["TORCH_INDEX"]
    assert any(i["instruction"] == "FROM" and i["value"] == "${BASE}" for i in structure)
    for copy in (i for i in structure if i["instruction"] == "COPY"):
        for src in copy["value"].split()[:-1]:
            assert (REPO / src).exists(), src
    assert next(i["value"] for i in structure if i["instruction"] == "ENTRYPOINT") == '["edgekd"]'
    assert "torch==2.14.1 torchvision==0.29.1" in parser.content  # the pair pyproject.toml pins
    assert "nvidia/cuda:" in parser.content  # the CUDA build is documented beside the build argument


def test_ci_workflow_gates_and_publishes_junit_and_report():
    flow = yaml.safe_load((REPO / ".github" / "workflows" / "bench.yml").read_text())
    steps = flow["jobs"]["bench"]["steps"]
    text = "\n".join(str(s.get("run", "")) for s in steps)
    assert "compress" in text and "bench" in text and "--max-latency-ms" in text and "--max-accuracy-drop" in text
    junit = next(s for s in steps if "junit" in str(s.get("uses", "")))
    assert junit["if"] == "always()" and junit["with"]["report_paths"].endswith("bench/junit.xml")
    assert any("report.md" in str(s.get("with", {}).get("path", "")) and s.get("if") == "always()" for s in steps)
    assert "gpu" in flow["jobs"]["bench"]["runs-on"]
    assert (REPO / "docs" / "ci.md").is_file()
