"""Tests of the model zoo (edgekd.models): registry, arch specs, shapes, sizes, RepDistiller names."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models import (
    count_parameters,
    create_model,
    list_models,
    normalize_spec,
    register_model,
    registry,
)

CIFAR_MODELS = [
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "mobilenetv2",
    "mobilenetv2_x1_0",
]
SMALL_CNNS = ["cnn_tiny", "cnn_small", "cnn_medium"]


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def test_list_models_is_sorted_and_complete() -> None:
    names = list_models()
    assert names == sorted(names)
    assert set(CIFAR_MODELS + SMALL_CNNS) <= set(names)
    assert not any(n.startswith("tv:") for n in names)
    assert list_models("wrn_*") == ["wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"]


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_gives_logits_at_32x32x3(name: str) -> None:
    model = create_model(name, num_classes=7)
    assert _logits(model, torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", SMALL_CNNS)
@pytest.mark.parametrize("size", [8, 28])
def test_small_cnns_on_digits_and_mnist_sizes(name: str, size: int) -> None:
    model = create_model(name, num_classes=10, in_channels=1)
    assert _logits(model, torch.randn(3, 1, size, size)).shape == (3, 10)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "mobilenetv2"])
def test_cifar_models_take_other_channels_and_small_inputs(name: str) -> None:
    model = create_model(name, num_classes=10, in_channels=1)
    assert _logits(model, torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert _logits(model, torch.randn(2, 1, 28, 28)).shape == (2, 10)


# Published sizes. 100 classes: the CIFAR-100 models of RepDistiller / CRD (Tian et al. 2020) and
# DKD (Zhao et al. 2022) tables (resnet20 0.28M, resnet56 0.86M, resnet110 1.74M, resnet8x4 1.23M,
# resnet32x4 7.43M, wrn_40_2 2.26M, wrn_16_2 0.70M, MobileNetV2 (mobile_half) 0.81M).
# 10 classes: He et al. 2016, Table 6 (resnet20 0.27M, resnet56 0.85M, resnet110 1.7M).
PUBLISHED_PARAMS = [
    ("resnet20", 100, 0.28e6),
    ("resnet56", 100, 0.86e6),
    ("resnet110", 100, 1.74e6),
    ("resnet8x4", 100, 1.23e6),
    ("resnet32x4", 100, 7.43e6),
    ("wrn_40_2", 100, 2.26e6),
    ("wrn_16_2", 100, 0.70e6),
    ("mobilenetv2", 100, 0.81e6),
    ("resnet20", 10, 0.27e6),
    ("resnet56", 10, 0.85e6),
    ("resnet110", 10, 1.7e6),
]


@pytest.mark.parametrize(("name", "num_classes", "published"), PUBLISHED_PARAMS)
def test_parameter_counts_match_published(name: str, num_classes: int, published: float) -> None:
    n = count_parameters(create_model(name, num_classes=num_classes))
    assert abs(n - published) / published < 0.02, f"{name}: {n} parameters, published {published:.3g}"


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("cnn_tiny", 5e3, 10e3), ("cnn_small", 30e3, 60e3), ("cnn_medium", 150e3, 300e3)],
)
def test_small_cnn_sizes(name: str, low: float, high: float) -> None:
    assert low <= count_parameters(create_model(name, num_classes=10, in_channels=1)) <= high


@pytest.mark.parametrize("name", CIFAR_MODELS + SMALL_CNNS + ["tv:mobilenet_v3_small"])
def test_spec_round_trip_loads_strictly(name: str) -> None:
    model = create_model(name, num_classes=5, in_channels=1)
    spec = model.arch_spec
    assert type(spec) is dict
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = create_model(json.loads(json.dumps(spec)))
    assert rebuilt.arch_spec == spec
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(rebuilt.state_dict(), strict=True)


def test_normalize_spec_defaults_and_overrides() -> None:
    assert normalize_spec("ResNet8X4") == {"name": "resnet8x4", "num_classes": 10, "in_channels": 3}
    spec = {"name": "wrn_16_2", "num_classes": 100, "in_channels": 1, "dropout": 0.3}
    assert normalize_spec(spec) == spec
    assert normalize_spec(spec, num_classes=7, in_channels=3) == {
        "name": "wrn_16_2",
        "num_classes": 7,
        "in_channels": 3,
        "dropout": 0.3,
    }
    assert spec["num_classes"] == 100  # the input is not modified
    assert normalize_spec("tv:resnet18", num_classes=2)["name"] == "tv:resnet18"


def test_kwargs_reach_the_model() -> None:
    model = create_model({"name": "mobilenetv2", "width_mult": 1.0})
    assert count_parameters(model) == count_parameters(create_model("mobilenetv2_x1_0"))
    assert create_model({"name": "wrn_16_2", "dropout": 0.3}).block1.layer[0].droprate == 0.3


def test_torchvision_model_with_grayscale_input() -> None:
    model = create_model("tv:resnet18", num_classes=7, in_channels=1)
    assert model.conv1.in_channels == 1
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert model.arch_spec == {"name": "tv:resnet18", "num_classes": 7, "in_channels": 1}
    assert _logits(model, torch.randn(1, 1, 64, 64)).shape == (1, 7)


def _one_line_error(spec: str | dict, **kwargs: int) -> str:
    with pytest.raises(EdgekdError) as info:
        create_model(spec, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_zoo_name_lists_close_matches() -> None:
    message = _one_line_error("resnt8")
    assert "'resnt8'" in message and "resnet8" in message and "list_models()" in message


def test_unknown_torchvision_name() -> None:
    message = _one_line_error("tv:resnet19")
    assert "tv:resnet19" in message and "tv:resnet18" in message
    assert "tv:resnet18" in _one_line_error("tv:ResNet18")  # case-sensitive after the prefix


def test_bad_arguments_are_user_errors() -> None:
    assert "'width'" in _one_line_error({"name": "resnet8", "width": 2})
    assert "'foo'" in _one_line_error({"name": "tv:resnet18", "foo": 1})
    assert "weights" in _one_line_error({"name": "tv:resnet18", "weights": "DEFAULT"})
    assert "name" in _one_line_error({"num_classes": 3})
    assert "num_classes" in _one_line_error("resnet8", num_classes=0)
    assert "JSON" in _one_line_error({"name": "wrn_16_1", "dropout": object()})


def _block_keys(prefix: str, downsample: bool) -> set[str]:
    keys = {f"{prefix}.conv1.weight", f"{prefix}.conv2.weight"}
    for bn in ("bn1", "bn2"):
        keys |= _bn_keys(f"{prefix}.{bn}")
    if downsample:
        keys |= {f"{prefix}.downsample.0.weight"} | _bn_keys(f"{prefix}.downsample.1")
    return keys


def _bn_keys(prefix: str) -> set[str]:
    return {f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def test_resnet8_has_repdistiller_state_dict_keys() -> None:
    expected = {"conv1.weight", "fc.weight", "fc.bias"} | _bn_keys("bn1")
    expected |= _block_keys("layer1.0", downsample=False)
    expected |= _block_keys("layer2.0", downsample=True)
    expected |= _block_keys("layer3.0", downsample=True)
    state = create_model("resnet8", num_classes=100).state_dict()
    assert set(state) == expected
    assert state["layer3.0.downsample.0.weight"].shape == (64, 32, 1, 1)
    assert state["fc.weight"].shape == (100, 64)
    assert create_model("resnet32x4").state_dict()["fc.weight"].shape == (10, 256)
    assert isinstance(create_model("resnet8").avgpool, nn.AdaptiveAvgPool2d)


def test_wrn_and_mobilenetv2_have_repdistiller_names() -> None:
    wrn = create_model("wrn_16_2").state_dict()
    wrn_keys = ["conv1.weight", "block1.layer.0.bn1.weight", "block1.layer.0.convShortcut.weight"]
    wrn_keys += ["block3.layer.1.conv2.weight", "bn1.running_var", "fc.weight"]
    assert set(wrn_keys) <= set(wrn)
    assert "block1.layer.0.convShortcut.weight" not in create_model("wrn_16_1").state_dict()
    mbv2 = create_model("mobilenetv2").state_dict()
    mbv2_keys = ["conv1.0.weight", "blocks.0.0.conv.0.weight", "blocks.6.0.conv.7.running_mean"]
    mbv2_keys += ["conv2.1.weight", "classifier.0.weight"]
    assert set(mbv2_keys) <= set(mbv2)
    assert mbv2["conv1.0.weight"].shape == (16, 3, 3, 3)  # width 0.5 (mobile_half)


def test_register_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @register_model("toy_linear")
    def toy_linear(num_classes: int, in_channels: int, hidden: int = 4) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.Linear(hidden, num_classes))

    assert "toy_linear" in list_models()
    model = create_model({"name": "Toy_Linear", "hidden": 3}, num_classes=2)
    assert model.arch_spec == {"name": "toy_linear", "num_classes": 2, "in_channels": 3, "hidden": 3}
    with pytest.raises(ValueError):
        register_model("toy_linear")(toy_linear)
    with pytest.raises(ValueError):
        register_model("tv:toy")


def test_count_parameters() -> None:
    model = nn.Linear(3, 2)
    assert count_parameters(model) == 8
    model.bias.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 6
