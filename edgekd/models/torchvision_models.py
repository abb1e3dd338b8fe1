"""torchvision classification models as ``tv:NAME`` (e.g. ``tv:resnet18``, ``tv:mobilenet_v3_small``).

Users' teachers are often torchvision models (ImageNet-style ResNets, MobileNets, EfficientNets;
the torchvision model zoo, https://pytorch.org/vision/stable/models.html). Any name in
``torchvision.models.list_models(module=torchvision.models)`` is built with
``torchvision.models.get_model(NAME, weights=None, num_classes=..., **kwargs)``: random weights,
never a download (the user's checkpoint supplies the weights). For ``in_channels != 3`` the first
``nn.Conv2d`` in the module tree is replaced by one with the same hyper-parameters and the new
number of input channels (the usual way to feed grayscale images to an RGB architecture).
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import torchvision
from torch import nn

from edgekd.errors import EdgekdError


@functools.cache
def tv_model_names() -> tuple[str, ...]:
    """Sorted names of torchvision's classification models."""
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def check_tv_name(name: str) -> None:
    """Raise EdgekdError unless ``name`` (case-sensitive) is a torchvision classification model."""
    names = tv_model_names()
    if name not in names:
        matches = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        if not matches:
            matches = [n for n in names if n.lower() == name.lower()]
        close = f"close matches: {', '.join('tv:' + m for m in matches)}" if matches else "no close matches"
        raise EdgekdError(
            f"unknown torchvision model 'tv:{name}' ({close}); "
            "see torchvision.models.list_models(module=torchvision.models)"
        )


def replace_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Swap the first ``nn.Conv2d`` of ``model`` for a fresh one taking ``in_channels`` inputs."""
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise EdgekdError(f"cannot set in_channels={in_channels}: {type(model).__name__} has no nn.Conv2d")
    name, module = first
    if module.in_channels == in_channels:
        return model
    if module.groups != 1:
        raise EdgekdError(
            f"cannot set in_channels={in_channels}: the first conv {name!r} is grouped (groups={module.groups})"
        )
    new = nn.Conv2d(
        in_channels,
        module.out_channels,
        kernel_size=module.kernel_size,
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        bias=module.bias is not None,
        padding_mode=module.padding_mode,
        device=module.weight.device,
        dtype=module.weight.dtype,
    )
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    return model


def create_tv_model(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """Build torchvision model ``name`` with random weights for ``num_classes`` and ``in_channels``."""
    check_tv_name(name)
    for key in ("weights", "weights_backbone", "pretrained", "progress"):
        if key in kwargs:
            raise EdgekdError(
                f"'tv:{name}' got argument {key!r}; edgekd never downloads weights, load a checkpoint instead"
            )
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err) or "got multiple values" in str(err):
            raise EdgekdError(f"model 'tv:{name}' rejected an argument: {err}") from None
        raise
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    return model
