"""Issue 20, defect 1: a TensorRT bundle keeps its engine where the Dockerfile, the entrypoint, build_engine.sh,
infer.py and the model card all say it is (/app/engine, the image's volume), and a second start reuses it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FAKE_TRTEXEC = """#!/usr/bin/env bash
# Stands in for TensorRT's trtexec: logs each call, writes the engine it is asked to save.
echo "$*" >> "$FAKE_TRT_LOG"
for a in "$@"; do
  case "$a" in
    --help) echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300]" ;;
    --saveEngine=*) echo "fake engine" > "${a#--saveEngine=}" ;;
  esac
done
"""


@pytest.fixture(scope="module")
def bundle(int8_run, cli, tmp_path_factory) -> Path:
    """The Jetson bundle, built in a copy of the shared run (tests/test_package.py rebuilds the shared
    run's package for other targets, so its package folder depends on the order tests run in)."""
    run = tmp_path_factory.mktemp("engine") / "run"
    shutil.copytree(int8_run, run)
    result = cli("package", run, "--target", "jetson-orin-nano", "--quiet")
    assert result.exit_code == 0, result.output
    found = [p for p in (run / "package").iterdir() if p.is_dir() and (p / "Dockerfile").is_file()]
    assert len(found) == 1, found
    return found[0]


def _dockerfile(bundle: Path):
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(bundle / "Dockerfile"))
    volumes = [i["value"] for i in parser.structure if i["instruction"] == "VOLUME"]
    return parser, volumes


def test_dockerfile_entrypoint_infer_and_model_card_agree_on_the_engine_folder(bundle):
    parser, volumes = _dockerfile(bundle)
    engine_dir = parser.envs["EDGEKD_ENGINE_DIR"]  # the image tells the entrypoint where its volume is
    assert engine_dir == "/app/engine" and volumes == [engine_dir]
    assert parser.baseimage.startswith("nvcr.io/nvidia/l4t-jetpack")
    assert '"/app/entrypoint.sh"' in [i["value"] for i in parser.structure if i["instruction"] == "ENTRYPOINT"][0]
    assert "WORKDIR /app" in parser.content
    entrypoint = (bundle / "entrypoint.sh").read_text()
    # without the variable (outside a container) the entrypoint uses engine/ beside itself: /app/engine in the image
    assert re.search(r'^ENGINE_DIR="\$\{EDGEKD_ENGINE_DIR:-\$APP/engine\}"$', entrypoint, re.M)
    assert "/cache" not in entrypoint
    script = (bundle / "build_engine.sh").read_text()
    assert 'ENGINE_DIR="${EDGEKD_ENGINE_DIR:-engine}"' in script and 'ENGINE="$ENGINE_DIR"/model.engine' in script
    card = (bundle / "MODEL_CARD.md").read_text()
    assert f"edgekd-engine:{engine_dir}" in card and f"into `{engine_dir}`" in card and "EDGEKD_ENGINE_DIR" in card
    assert (
        'ENGINE_DIR = Path(os.environ.get("EDGEKD_ENGINE_DIR") or HERE / "engine")' in (bundle / "infer.py").read_text()
    )


def _start(app: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(app / "entrypoint.sh"), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_second_start_reuses_the_engine_in_the_volume(bundle, tmp_path):
    app = tmp_path / "app"
    shutil.copytree(bundle, app)
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "trtexec").write_text(FAKE_TRTEXEC)
    (tools / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for tool in tools.iterdir():
        tool.chmod(0o755)
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "tensorrt.py").write_text('__version__ = "10.3.0"\n')
    log = tmp_path / "trtexec.log"
    parser, _ = _dockerfile(bundle)
    volume = tmp_path / "volume" / parser.envs["EDGEKD_ENGINE_DIR"].lstrip("/")  # the volume, where the image says
    env = {
        "PATH": f"{tools}:{os.environ['PATH']}",
        "PYTHONPATH": str(stub),
        "FAKE_TRT_LOG": str(log),
        "PROFILE": "0",
        "EDGEKD_ENGINE_DIR": str(volume),  # as the Dockerfile's ENV sets it
        "HOME": str(tmp_path),
    }
    first = _start(app, env, "--build-engine")
    assert first.returncode == 0, first.stderr
    assert "building the TensorRT engine" in first.stderr
    assert (volume / "model.engine").is_file() and (volume / "model.engine.json").is_file()
    assert (volume / "model.timing.cache").exists() or "--timingCacheFile=" + str(volume) in log.read_text()
    second = _start(app, env, "--build-engine")
    assert second.returncode == 0, second.stderr
    assert "reusing the TensorRT engine" in second.stderr, second.stderr
    builds = [line for line in log.read_text().splitlines() if "--saveEngine=" in line]
    assert len(builds) == 1 and f"--saveEngine={volume}/model.engine" in builds[0], builds
    assert not (app / "engine").exists()  # nothing written outside the volume
    # outside a container (no EDGEKD_ENGINE_DIR) the engine goes to engine/ beside the entrypoint, where
    # build_engine.sh run by hand and infer.py look for it too
    env.pop("EDGEKD_ENGINE_DIR")
    local = _start(app, env, "--build-engine")
    assert local.returncode == 0, local.stderr
    assert (app / "engine" / "model.engine").is_file()
    default = subprocess.run(
        [sys.executable, "-c", "import infer; print(infer.ENGINE_DIR)"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(default.stdout.strip()) == app / "engine"
