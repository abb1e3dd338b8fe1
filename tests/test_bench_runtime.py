"""ONNX Runtime measurement primitives on tiny models: latency, interleaving, accuracy, size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import edgekd.runtimes.onnxruntime.session as rt
from edgekd.bench import evaluate_accuracy, host_description, make_session, measure_latency, model_size
from edgekd.errors import EdgekdError
from edgekd.export import export_onnx

SHAPE = (3, 12, 12)
CLASSES = 12


def tiny_model(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, CLASSES),
    ).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    return {
        "small": export_onnx(tiny_model(4), folder / "small.onnx", input_shape=SHAPE),
        "wide": export_onnx(tiny_model(16), folder / "wide.onnx", input_shape=SHAPE),
    }


def test_latency_result_shape(models: dict[str, Path]) -> None:
    result = measure_latency(models, batch_size=2, input_shape=SHAPE, threads=1, warmup=1, runs=6, sessions=2)
    assert set(result) == {"small", "wide"}
    for row in result.values():
        assert row["batch_size"] == 2 and row["runs"] == 6 and row["sessions"] == 2 and row["threads"] == 1
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["mean_ms"] > 0
        assert len(row["session_p50_ms"]) == 2
        assert row["throughput_ips"] == pytest.approx(2 / (row["p50_ms"] / 1e3))
        assert row["source"] == "measured" and row["runtime"] == "onnxruntime"
        assert row["provider"] == "CPUExecutionProvider"
        assert {"cpu", "logical_cores", "physical_cores", "os", "onnxruntime", "gpu"} <= set(row["host"])


def test_sessions_are_fresh_and_interleaved(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = rt.make_session

    def recording(path, **kwargs):
        made.append(Path(path).stem)
        return real(path, **kwargs)

    monkeypatch.setattr(rt, "make_session", recording)
    result = measure_latency(models, batch_size=1, input_shape=SHAPE, threads=1, warmup=1, runs=5, sessions=3)
    assert made == ["small", "wide"] * 3
    assert all(row["runs"] == 6 for row in result.values())  # ceil(5 / 3) = 2 timed runs per session


def test_fixed_batch_mismatch_is_a_user_error(tmp_path: Path) -> None:
    path = export_onnx(tiny_model(), tmp_path / "fixed.onnx", input_shape=SHAPE, dynamic_batch=False)
    with pytest.raises(EdgekdError, match="fixed batch of 1"):
        measure_latency({"fixed": path}, batch_size=4, input_shape=SHAPE, threads=1, warmup=0, runs=1, sessions=1)


def test_make_session_options(models: dict[str, Path]) -> None:
    session = make_session(models["small"], threads=1)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert session.get_providers()[0] == "CPUExecutionProvider"
    with pytest.raises(EdgekdError, match="providers"):
        make_session(models["small"], threads=1, providers=["NoSuchExecutionProvider"])
    with pytest.raises(EdgekdError, match="does not exist"):
        make_session(models["small"].parent / "missing.onnx", threads=1)


def test_accuracy_matches_pytorch(models: dict[str, Path]) -> None:
    model = tiny_model(4)
    generator = torch.Generator().manual_seed(3)
    batches = []
    for size in (7, 5):
        x = torch.randn((size, *SHAPE), generator=generator)
        logits = model(x).detach()
        y = logits.argmax(1)
        y[::2] = torch.argsort(logits[::2], dim=1)[:, 0]  # every other label is the least likely class
        y[1] = torch.argsort(logits[1])[-3]  # a third-best label: wrong at top-1, right at top-5
        batches.append((x, y))
    all_x = torch.cat([b[0] for b in batches])
    all_y = torch.cat([b[1] for b in batches])
    logits = model(all_x).detach()
    top1 = (logits.argmax(1) == all_y).float().mean().item()
    top5 = (logits.topk(5, dim=1).indices == all_y[:, None]).any(1).float().mean().item()
    assert 0 < top1 < top5 < 1
    result = evaluate_accuracy(models["small"], [(x, y.numpy()) for x, y in batches], threads=1)
    assert result["samples"] == 12
    assert result["top1"] == pytest.approx(top1)
    assert result["top5"] == pytest.approx(top5)


def test_accuracy_without_top5_for_few_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_shape=(3, 4, 4))
    x = torch.randn(6, 3, 4, 4)
    y = model(x).argmax(1)
    result = evaluate_accuracy(path, [(x.numpy(), y)])
    assert result == {"top1": 1.0, "samples": 6}


def test_accuracy_needs_samples(models: dict[str, Path]) -> None:
    with pytest.raises(EdgekdError, match="no images"):
        evaluate_accuracy(models["small"], [])


def test_model_size_counts_initializers(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((2, 3), dtype=np.float32), "W")
    bias = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight, bias],
    )
    path = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert model_size(path) == {"bytes": path.stat().st_size, "parameters": 8}


def test_model_size_of_exported_model(models: dict[str, Path]) -> None:
    expected = sum(p.numel() for p in tiny_model(16).parameters())
    size = model_size(models["wide"])
    assert size["parameters"] == expected
    assert size["bytes"] == models["wide"].stat().st_size


def test_host_description() -> None:
    host = host_description()
    assert host["logical_cores"] >= host["physical_cores"] >= 1
    assert isinstance(host["cpu"], str) and host["cpu"]
