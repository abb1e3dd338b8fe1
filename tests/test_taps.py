"""Feature taps: found automatically for the zoo and torchvision, overridable by module path, exact
values, and a probe that leaves the model as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.taps import TapCollector, find_taps, probing
from edgekd.errors import EdgekdError
from edgekd.models import create_model


def _model(name, channels=3, classes=10):
    torch.manual_seed(0)
    return create_model(name, num_classes=classes, in_channels=channels)


@pytest.mark.parametrize(
    "name, shape, stages, embedding",
    [
        ("resnet8", (3, 32, 32), ["layer1", "layer2", "layer3"], "fc"),
        ("wrn_16_1", (3, 32, 32), ["block1", "block2", "relu"], "fc"),  # RepDistiller's f1, f2, f3 (after BN-ReLU)
        ("cnn_small", (1, 8, 8), ["stage1", "stage2", "stage3"], "fc"),
        ("mobilenetv2", (3, 32, 32), ["blocks.1", "blocks.2", "blocks.4", "conv2"], "classifier"),
        ("tv:resnet18", (3, 32, 32), ["layer1", "layer2", "layer3", "layer4"], "fc"),
    ],
)
def test_auto_taps_of_known_models(name, shape, stages, embedding):
    model = _model(name, shape[0])
    plan = find_taps(model, torch.randn(2, *shape))
    assert [s.path for s in plan.stages] == stages
    assert plan.embedding is not None and plan.embedding.path == embedding and plan.embedding.where == "input"


@pytest.mark.parametrize("name", ["tv:mobilenet_v3_small", "tv:shufflenet_v2_x0_5"])
def test_auto_stages_of_torchvision_models_shrink_and_embedding_feeds_the_classifier(name):
    model = _model(name)
    taps = TapCollector(model, {"stages", "embedding"}, example=torch.randn(2, 3, 64, 64))
    with probing(model):
        out = taps(torch.randn(2, 3, 64, 64))
    sizes = [f.shape[-1] for f in out["stages"]]
    assert len(sizes) >= 4 and sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    head = model.classifier if hasattr(model, "classifier") else model.fc
    first = next(m for m in head.modules() if isinstance(m, nn.Linear))  # the head's input is the embedding
    assert out["embedding"].shape == (2, first.in_features)


def test_tap_values_are_the_stage_outputs_and_pooled_vector():
    model = _model("resnet8").eval()
    x = torch.randn(3, 3, 32, 32)
    taps = TapCollector(model, {"stages", "embedding"}, example=x[:2])
    with torch.no_grad():
        out = taps(x)
        h = model.relu(model.bn1(model.conv1(x)))
        l1 = model.layer1(h)
        l2 = model.layer2(l1)
        l3 = model.layer3(l2)
    for got, want in zip(out["stages"], [l1, l2, l3], strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(out["embedding"], l3.mean((2, 3)), atol=1e-6)
    assert torch.allclose(out["logits"], model.fc(l3.mean((2, 3))), atol=1e-5)


def test_only_logits_installs_no_hooks():
    model = _model("cnn_small", 1)
    taps = TapCollector(model, {"logits"})
    assert taps._handles == [] and set(taps(torch.randn(2, 1, 8, 8))) == {"logits"}


def test_overrides_by_module_path_and_per_model():
    model = _model("resnet8")
    x = torch.randn(2, 3, 32, 32)
    taps = TapCollector(model, {"stages", "embedding"}, overrides={"stages": ["layer2"], "embedding": "avgpool"})
    out = taps(x)  # no example needed: every tap is named
    assert [tuple(f.shape) for f in out["stages"]] == [(2, 32, 16, 16)] and out["embedding"].shape == (2, 64)
    per_model = {"stages": ["layer1"], "teacher": {"stages": ["layer3"]}}
    t = TapCollector(model, {"stages"}, overrides=per_model, label="teacher")
    s = TapCollector(model, {"stages"}, overrides=per_model, label="student")
    assert t.plan.describe()["stages"] == ["layer3"] and s.plan.describe()["stages"] == ["layer1"]


def test_override_accepts_the_config_section():
    from edgekd.config import build_config

    cfg = build_config(None, {"distill.taps": {"stages": ["layer1", "layer2"], "student": {"embedding": "avgpool"}}})
    taps = TapCollector(_model("resnet8"), {"stages", "embedding"}, overrides=cfg.distill.taps)
    assert taps.plan.describe() == {"stages": ["layer1", "layer2"], "embedding": "avgpool:output"}


def test_bad_override_path_is_a_one_line_error():
    with pytest.raises(EdgekdError, match="no module 'layer9'"):
        TapCollector(_model("resnet8"), {"stages"}, overrides={"stages": ["layer9"]})
    with pytest.raises(EdgekdError, match="unknown taps"):
        TapCollector(_model("resnet8"), {"gram"})


def test_probe_keeps_bn_statistics_and_modes():
    model = _model("resnet8").train()
    model.layer2.eval()  # a module the user froze stays frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    taps = TapCollector(model, {"stages", "embedding"}, example=torch.randn(4, 3, 32, 32) * 5)
    taps.probe(torch.randn(4, 3, 32, 32) * 5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model.layer1.training and not model.layer2.training and not model.layer2[0].bn1.training


def test_module_called_twice_is_tapped_at_each_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
            self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            a = self.block(self.stem(x))
            b = self.block(F.max_pool2d(a, 2))
            return self.fc(b.mean((2, 3)))

    model = Twice()
    x = torch.randn(2, 1, 8, 8)
    taps = TapCollector(model, {"stages"}, example=x)
    assert [(s.path, s.occurrence) for s in taps.plan.stages] == [("stem", 0), ("block", 0), ("block", 1)] or [
        (s.path, s.occurrence) for s in taps.plan.stages
    ] == [("block", 0), ("block", 1)]
    out = taps(x)
    a = model.block(model.stem(x))
    b = model.block(F.max_pool2d(a, 2))
    assert torch.allclose(out["stages"][-2], a) and torch.allclose(out["stages"][-1], b)


def test_captured_map_is_not_changed_by_a_later_inplace_relu():
    model = _model("cnn_small", 1).eval()
    taps = TapCollector(model, {"stages"}, overrides={"stages": ["stage1.0.bn"]})  # followed by ReLU(inplace)
    out = taps(torch.randn(4, 1, 8, 8))
    assert (out["stages"][0] < 0).any()  # the pre-ReLU values survived


def test_gradients_flow_through_taps_and_hooks_go_away():
    model = _model("cnn_small", 1)
    taps = TapCollector(model, {"stages", "embedding"}, example=torch.randn(2, 1, 8, 8))
    out = taps(torch.randn(4, 1, 8, 8))
    out["stages"][0].pow(2).mean().backward()
    assert model.stage1[0].conv.weight.grad.abs().sum() > 0 and model.fc.weight.grad is None
    taps.close()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_plain_forward_does_not_record():
    model = _model("cnn_small", 1)
    taps = TapCollector(model, {"stages"}, example=torch.randn(2, 1, 8, 8))
    model(torch.randn(2, 1, 8, 8))  # evaluate() or export calls the model directly
    assert taps._captured == {} and taps._counts == {}


def test_torchscript_takes_logit_taps_only():
    scripted = torch.jit.script(_model("cnn_small", 1).eval())
    assert set(TapCollector(scripted, {"logits"})(torch.randn(2, 1, 8, 8))) == {"logits"}
    with pytest.raises(EdgekdError, match="TorchScript"):
        TapCollector(scripted, {"stages"}, example=torch.randn(2, 1, 8, 8))
