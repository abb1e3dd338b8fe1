"""`edgekd package` on a real digits run: bundle contents, infer.py accuracy, Dockerfiles, safe tarballs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from dockerfile_parse import DockerfileParser

from edgekd.errors import EdgekdError
from edgekd.io import sha256_file
from edgekd.package.bundle import verify_bundle
from edgekd.package.dockerfiles import JETSON_BASES, base_image, dockerfile
from edgekd.package.tarball import safe_extract, write_tarball
from edgekd.targets.registry import canonical_name


@pytest.fixture(scope="module")
def val_npz(tmp_path_factory) -> Path:
    """The run's validation split as raw uint8 images and labels (what a user hands infer.py)."""
    from edgekd.data import load_data

    data = load_data("digits", val_fraction=0.2, seed=0, max_train_samples=None, image_size=None)
    path = tmp_path_factory.mktemp("val") / "val.npz"
    np.savez(path, x=data.val.images.numpy(), y=data.val.labels.numpy())
    return path


@pytest.fixture(scope="module")
def bundles(int8_run, cli, tmp_path_factory) -> dict[str, Path]:
    """Two bundles of the same run: the Jetson one (its target) and an INT8 CPU one (--out copies)."""
    out = tmp_path_factory.mktemp("bundles")
    made = {}
    cpu_int8 = ["--no-fp32", "--set", "package.precision=int8"]
    for target, extra in (("jetson-orin-nano", ["--fp32"]), ("x86-cpu", cpu_int8)):
        result = cli("package", int8_run, "--target", target, "--out", out, "--quiet", *extra)
        assert result.exit_code == 0, result.output
        made[target] = out / f"cnn_small-{canonical_name(target)}"  # jetson-orin-nano is jetson-orin-nano-8gb
    return made


def _infer(bundle: Path, *args) -> dict:
    proc = subprocess.run(
        [sys.executable, str(bundle / "infer.py"), *map(str, args), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=bundle.parent,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("target", ["jetson-orin-nano", "x86-cpu"])
def test_infer_reproduces_the_manifest_accuracy(bundles, val_npz, target):
    bundle = bundles[target]
    manifest = json.loads((bundle / "manifest.json").read_text())
    result = _infer(bundle, "--npz", val_npz, "--runtime", "auto")
    assert result["runtime"] == "onnxruntime" and result["samples"] == manifest["metrics"]["samples"] == 360
    assert abs(result["top1"] - manifest["metrics"]["top1"]) <= 0.001  # within 0.1 point
    assert manifest["metrics"]["top1"] > 0.9


def test_bundle_picks_the_int8_flavour_for_each_target(bundles, int8_run):
    jetson = json.loads((bundles["jetson-orin-nano"] / "manifest.json").read_text())
    cpu = json.loads((bundles["x86-cpu"] / "manifest.json").read_text())
    assert jetson["model"]["format"] == "tensorrt-int8-qdq" and cpu["model"]["format"] == "onnx-int8-cpu"
    assert jetson["files"]["model_int8.onnx"]["sha256"] == sha256_file(int8_run / "export" / "model_int8.onnx")
    assert cpu["files"]["model_int8.onnx"]["sha256"] == sha256_file(int8_run / "export" / "model_int8_cpu.onnx")
    assert "model_fp32.onnx" in jetson["files"] and "model_fp32.onnx" not in cpu["files"]
    assert jetson["target"]["jetpack"] == "6.2" and jetson["target"]["tensorrt"] == "10.3"
    assert "build_engine.sh" in jetson["files"] and "build_engine.sh" not in cpu["files"]
    script = (bundles["jetson-orin-nano"] / "build_engine.sh").read_text()
    assert "trtexec" in script and "--saveEngine" in script and "model_int8.onnx" in script
    assert "--maxShapes=input:8x1x8x8" in script  # the profile's max_batch
    assert 'ENGINE="$ENGINE_DIR"/model.engine' in script and '"tensorrt": tensorrt.__version__' in script  # the sidecar
    assert not list(bundles["jetson-orin-nano"].rglob("*.engine"))  # never ship an engine


def test_manifest_hashes_every_file_and_no_absolute_paths(bundles, int8_run):
    for bundle in bundles.values():
        manifest = json.loads((bundle / "manifest.json").read_text())
        on_disk = {p.name for p in bundle.iterdir()} - {"manifest.json"}
        assert set(manifest["files"]) == on_disk
        assert verify_bundle(bundle) == []
        assert {"edgekd", "onnxruntime", "numpy"} <= set(manifest["versions"])
        assert (bundle / "labels.txt").read_text().splitlines() == [str(i) for i in range(10)]
        for p in bundle.iterdir():
            if p.suffix != ".onnx":
                text = p.read_text()
                assert str(int8_run.parent) not in text and "/tmp/" not in text, p.name
        card = (bundle / "MODEL_CARD.md").read_text()
        assert f"{100 * manifest['metrics']['top1']:.2f}%" in card and "docker build" in card
    labels = bundles["x86-cpu"] / "labels.txt"
    original = labels.read_text()
    labels.write_text("tampered\n")
    try:
        assert verify_bundle(bundles["x86-cpu"]) == ["labels.txt differs from its sha256 in manifest.json"]
    finally:
        labels.write_text(original)  # the bundle is shared by the other tests of this module
    assert verify_bundle(bundles["x86-cpu"]) == []


@pytest.mark.parametrize("target", ["jetson-orin-nano", "x86-cpu"])
def test_dockerfile_parses_with_base_copy_sources_and_entrypoint(bundles, target):
    bundle = bundles[target]
    parser = DockerfileParser(path=str(bundle / "Dockerfile"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert parser.baseimage == manifest["docker"]["base"]
    expected = "nvcr.io/nvidia/l4t-jetpack:r36.4.0" if target == "jetson-orin-nano" else "python:3.11-slim"
    assert parser.baseimage == expected
    copies = [i["value"].split()[:-1] for i in parser.structure if i["instruction"] == "COPY"]
    assert copies and all((bundle / src).is_file() for srcs in copies for src in srcs)
    assert {"infer.py", "model_int8.onnx", "preprocess.json", "labels.txt"} <= {s for c in copies for s in c}
    assert any(i["instruction"] == "ENTRYPOINT" for i in parser.structure)


def test_tarball_has_relative_names_and_extracts_safely(bundles, int8_run, tmp_path):
    tar_path = int8_run / "package" / "cnn_small-x86-cpu.tar.gz"  # the last bundle built in the run
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        assert all(not n.startswith("/") and ".." not in Path(n).parts for n in names)
        assert all(n.split("/")[0] == "cnn_small-x86-cpu" for n in names)
        assert all(m.isfile() or m.isdir() for m in tar.getmembers())
    files = safe_extract(tar_path, tmp_path / "x")
    assert len(files) == len(names) - 1 and verify_bundle(tmp_path / "x" / "cnn_small-x86-cpu") == []
    again = tmp_path / "again.tar.gz"  # the same folder gives the same bytes
    write_tarball(int8_run / "package" / "cnn_small-x86-cpu", again)
    assert sha256_file(again) == sha256_file(tar_path)


def _hostile(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("bundle/ok.txt")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"x"))
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return path


def _member(name: str, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("member", "needle"),
    [
        (_member("/etc/evil"), "absolute path or '..'"),
        (_member("bundle/../../evil"), "absolute path or '..'"),
        (_member("../evil"), "absolute path or '..'"),
        (_member("bundle/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
        (_member("bundle/hard", tarfile.LNKTYPE, "../../outside"), "is a link"),
        (_member("bundle/dev", tarfile.CHRTYPE), "special file"),
    ],
)
def test_hostile_tarball_is_refused_before_anything_is_written(tmp_path, member, needle):
    archive = _hostile(tmp_path / "evil.tar.gz", member)
    dest = tmp_path / "dest"
    with pytest.raises(EdgekdError, match=needle):
        safe_extract(archive, dest)
    assert not dest.exists() and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("jetpack", sorted(JETSON_BASES))
def test_every_jetpack_has_a_base_image_and_a_parsable_dockerfile(tmp_path, jetpack):
    base = base_image("jetson", jetpack, None)
    files = ["infer.py", "entrypoint.sh", "build_engine.sh", "model_int8.onnx"]
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile("jetson", base, files, versions={}, title="t"))
    parser = DockerfileParser(path=str(path))
    assert parser.baseimage == base and base.startswith("nvcr.io/nvidia/l4t-")
    assert json.loads(next(i["value"] for i in parser.structure if i["instruction"] == "ENTRYPOINT"))
    assert base_image("gpu", None, None).startswith("nvcr.io/nvidia/tensorrt:")
    assert base_image("cpu", None, "my/base:1") == "my/base:1"
    with pytest.raises(EdgekdError, match="no known L4T base image for JetPack 3.3"):
        base_image("jetson", "3.3", None)


def test_package_errors_are_one_line(int8_run, cli, tmp_path):
    result = cli("package", int8_run, "--target", "jetson-orin-nano", "--jetpack", "4.6.1", "--quiet")
    assert result.exit_code == 2 and "runs JetPack 5.1.1, 6.2, not 4.6.1" in result.stderr
    result = cli("package", int8_run, "--target", "no-such-target", "--quiet")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_infer_reads_image_files_and_benches(bundles, val_npz, tmp_path):
    from PIL import Image

    bundle = bundles["x86-cpu"]
    with np.load(val_npz) as data:
        x = data["x"][:3]
    paths = []
    for i, img in enumerate(x):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(img[0], mode="L").save(paths[-1])
    from_files = _infer(bundle, *paths, "--top-k", "3", "--bench", "--runs", "5", "--batch", "4")
    assert [p["input"] for p in from_files["predictions"]] == [str(p) for p in paths]
    assert all(len(p["top_k"]) == 3 for p in from_files["predictions"])
    from_npz = _infer(bundle, "--npz", val_npz)
    assert [p["top_k"][0]["index"] for p in from_files["predictions"]] == [
        p["top_k"][0]["index"] for p in from_npz["predictions"][:3]
    ]
    bench = from_files["bench"]
    assert set(bench) == {"1", "4"} and all(0 < b["p50_ms"] <= b["p99_ms"] for b in bench.values())


def test_a_package_stage_killed_mid_bundle_resumes(int8_run, cli, tmp_path):
    """kill -9 while the bundle was being written left ``.package.partial/BUNDLE/``; ``compress --resume``
    builds the bundle again in its place (it failed with FileExistsError and a traceback; issue 20)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(int8_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    record = manifest["stages"]["package"]
    name = record["metrics"]["bundle"]
    half = run / ".package.partial" / name
    half.mkdir(parents=True)
    (half / "labels.txt").write_text("0\n1\n")  # a bundle cut off after its first files
    record["status"] = "running"
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = cli("compress", "--out", run, "--resume", "--quiet")
    assert result.exit_code == 0, result.output
    bundle = run / "package" / name
    assert (bundle / "Dockerfile").is_file() and not (run / ".package.partial").exists()
    assert verify_bundle(bundle) == []
