"""Loading untrusted model files: every accepted kind, and one-line refusals for the rest."""

from __future__ import annotations

import builtins

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.models import create_model
from edgekd.models.checkpoint import load_model_file, save_model


@pytest.fixture
def net():
    torch.manual_seed(0)
    return create_model("cnn_tiny", num_classes=10, in_channels=1).eval()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


def test_edgekd_format_round_trip(tmp_path, net):
    path = save_model(
        tmp_path / "m.pt",
        net,
        input_spec={"shape": [1, 8, 8], "mean": [0.3], "std": [0.2]},
        classes=list("0123456789"),
        metrics={"val_top1": 0.9},
    )
    loaded = load_model_file(path)
    assert loaded.kind == "edgekd" and loaded.arch["name"] == "cnn_tiny"
    assert loaded.input["mean"] == [0.3] and loaded.classes[0] == "0" and loaded.metrics["val_top1"] == 0.9
    assert _same(net, loaded.model)


def test_repdistiller_style_dict_and_dataparallel_prefix(tmp_path, net):
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"model": state, "epoch": 240, "best_acc": torch.tensor(72.3)}, tmp_path / "r.pth")
    loaded = load_model_file(tmp_path / "r.pth", arch="cnn_tiny")
    assert loaded.kind == "checkpoint" and _same(net, loaded.model)


def test_bare_state_dict_needs_arch(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(EdgekdError, match="bare state_dict.*--teacher-arch"):
        load_model_file(tmp_path / "sd.pt")
    loaded = load_model_file(tmp_path / "sd.pt", arch="cnn_tiny")
    assert loaded.kind == "state_dict" and loaded.arch["num_classes"] == 10 and loaded.arch["in_channels"] == 1
    assert _same(net, loaded.model)


def test_wrong_arch_names_the_mismatch(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(EdgekdError, match="does not fit architecture cnn_small") as err:
        load_model_file(tmp_path / "sd.pt", arch="cnn_small")
    assert "\n" not in str(err.value)


def test_torchscript(tmp_path, net):
    torch.jit.save(torch.jit.script(net), str(tmp_path / "ts.pt"))
    with pytest.raises(EdgekdError, match="TorchScript program.*--trust-checkpoint"):
        load_model_file(tmp_path / "ts.pt")
    loaded = load_model_file(tmp_path / "ts.pt", trust=True)
    assert loaded.kind == "torchscript" and _same(net, loaded.model)


def test_exported_program_with_static_batch_runs_any_batch(tmp_path, net):
    program = torch.export.export(net, (torch.randn(2, 1, 8, 8),))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    with pytest.raises(EdgekdError, match=r"torch.export program \(.pt2\).*--trust-checkpoint"):
        load_model_file(tmp_path / "m.pt2")
    loaded = load_model_file(tmp_path / "m.pt2", trust=True)
    assert loaded.kind == "exported_program" and loaded.input["shape"] == [1, 8, 8]
    assert _same(net, loaded.model)  # batch 3 through a batch-2 program


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"hello, this is not a checkpoint", "not a readable PyTorch checkpoint")],
)
def test_not_a_checkpoint(tmp_path, content, message):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(EdgekdError, match=message):
        load_model_file(tmp_path / "x.pt")


def test_truncated_checkpoint(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgekdError, match="not a readable PyTorch checkpoint") as err:
        load_model_file(tmp_path / "cut.pt", arch="cnn_tiny")
    assert "\n" not in str(err.value)


def test_missing_and_folder(tmp_path):
    with pytest.raises(EdgekdError, match="does not exist"):
        load_model_file(tmp_path / "nope.pt")
    with pytest.raises(EdgekdError, match="is a folder"):
        load_model_file(tmp_path)


class _Exploit:
    """Unpickling this creates a file: the proof that a loader executed the pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_malicious_pickle_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": _Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(EdgekdError, match="--trust-checkpoint"):
        load_model_file(tmp_path / "evil.pt")
    assert not marker.exists()


def test_pickled_module_needs_trust(tmp_path, net):
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(EdgekdError, match="runs code from the file.*--trust-checkpoint"):
        load_model_file(tmp_path / "whole.pt")
    loaded = load_model_file(tmp_path / "whole.pt", trust=True)
    assert loaded.kind == "pickled_module" and _same(net, loaded.model)
