"""ONNX export and PyTorch/ONNX parity on tiny models (no zoo, CPU only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.export import check_parity, export_onnx, run_onnx

SHAPE = (3, 16, 16)


def tiny_model(classes: int = 10) -> nn.Module:
    """Two convs with BN, global pooling and a linear head; trained-looking BN statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )
    model.train()
    with torch.no_grad():
        model(torch.randn(8, *SHAPE))  # move BN running stats away from their init
    return model.eval()


def images(n: int = 6) -> torch.Tensor:
    return torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(1))


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.astype(np.float32)})[0]


def test_export_checks_and_matches(tmp_path: Path) -> None:
    model = tiny_model()
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=SHAPE)
    assert path == tmp_path / "model.onnx" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temp file left behind
    onnx.checker.check_model(str(path), full_check=True)
    result = check_parity(model, path, images())
    assert result["passed"], result
    assert result["samples"] == 6 and result["top1_agreement"] == 1.0
    assert result["max_abs_diff"] <= 1e-3
    assert set(result) == {
        "samples",
        "max_abs_diff",
        "mean_abs_diff",
        "top1_agreement",
        "atol",
        "min_agreement",
        "passed",
    }
    assert model.training is False  # export worked on a copy; the model is unchanged


def test_export_leaves_training_model_in_training(tmp_path: Path) -> None:
    model = tiny_model().train()
    export_onnx(model, tmp_path / "m.onnx", input_shape=SHAPE)
    assert model.training is True


def test_opset_and_names(tmp_path: Path) -> None:
    path = export_onnx(tiny_model(), tmp_path / "m.onnx", input_shape=SHAPE)
    graph = onnx.load(str(path))
    default = [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")]
    assert default and default[0] >= 17
    assert [i.name for i in graph.graph.input] == ["input"]
    assert [o.name for o in graph.graph.output] == ["logits"]


def test_dynamic_batch(tmp_path: Path) -> None:
    model = tiny_model()
    path = export_onnx(model, tmp_path / "m.onnx", input_shape=SHAPE)
    for batch in (1, 5):
        x = images(batch)
        out = ort_run(path, x.numpy())
        assert out.shape == (batch, 10)
        np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-4)


def test_static_batch_is_fed_in_chunks(tmp_path: Path) -> None:
    model = tiny_model()
    path = export_onnx(model, tmp_path / "m.onnx", input_shape=SHAPE, dynamic_batch=False, batch_size=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == 2
    out = run_onnx(session, images(5).numpy())
    assert out.shape == (5, 10)
    assert check_parity(model, path, images(5))["passed"]


def test_broken_onnx_fails_parity(tmp_path: Path) -> None:
    model = tiny_model()
    path = export_onnx(model, tmp_path / "m.onnx", input_shape=SHAPE)
    graph = onnx.load(str(path))
    init = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # a conv weight
    values = numpy_helper.to_array(init).copy()
    values.flat[0] += 5.0
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))
    result = check_parity(model, broken, images())
    assert not result["passed"]
    assert result["max_abs_diff"] > 1e-3


def test_unrunnable_onnx_is_reported_not_raised(tmp_path: Path) -> None:
    path = export_onnx(tiny_model(), tmp_path / "m.onnx", input_shape=SHAPE)
    result = check_parity(tiny_model(), path, torch.randn(2, 3, 8, 8))  # the ONNX graph fixes H and W
    assert not result["passed"] and "error" in result


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_script_module_exports(tmp_path: Path) -> None:
    model = tiny_model()
    scripted = torch.jit.script(model)
    path = export_onnx(scripted, tmp_path / "scripted.onnx", input_shape=SHAPE)
    assert check_parity(model, path, images())["passed"]
    assert ort_run(path, images(3).numpy()).shape == (3, 10)


def test_exported_program_exports(tmp_path: Path) -> None:
    model = tiny_model()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (images(2),), dynamic_shapes=({0: batch},))
    for i, source in enumerate((program.module(), program)):
        path = export_onnx(source, tmp_path / f"ep{i}.onnx", input_shape=SHAPE)
        assert check_parity(model, path, images(5))["passed"]
        assert ort_run(path, images(1).numpy()).shape == (1, 10)


def test_exported_program_with_fixed_batch(tmp_path: Path) -> None:
    model = tiny_model()
    program = torch.export.export(model, (images(1),))
    with pytest.raises(EdgekdError, match="dynamic_shapes"):
        export_onnx(program.module(), tmp_path / "ep.onnx", input_shape=SHAPE)
    path = export_onnx(program.module(), tmp_path / "ep.onnx", input_shape=SHAPE, dynamic_batch=False)
    assert check_parity(model, path, images(3))["passed"]


class Unexportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(x).real.mean((2, 3))


def test_export_failure_is_one_line_user_error(tmp_path: Path) -> None:
    with pytest.raises(EdgekdError) as info:
        export_onnx(Unexportable(), tmp_path / "bad.onnx", input_shape=SHAPE)
    message = str(info.value)
    assert "Unexportable" in message and "--opset" in message and "\n" not in message
    assert not (tmp_path / "bad.onnx").exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_input_shape(tmp_path: Path) -> None:
    with pytest.raises(EdgekdError, match="channels, height, width"):
        export_onnx(tiny_model(), tmp_path / "m.onnx", input_shape=(16, 16))  # type: ignore[arg-type]
