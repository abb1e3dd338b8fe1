"""Find a model's stage outputs and its embedding by probing it once with a dummy batch.

Stages are the modules after which the spatial size changes (the last module at each resolution,
searched among the top-level children, then one level deeper, e.g. torchvision's ``features``);
the embedding is the input of the last ``nn.Linear``. Used by BYOT's auxiliary heads and the
adversarial scheme's embedding discriminator. (The methods library's tap collector does the same
for feature methods; this is the small subset those two schemes need.)
"""

from __future__ import annotations

import torch
from torch import nn

_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten, nn.Dropout)


def _shapes(model: nn.Module, modules: list[tuple[str, nn.Module]], x: torch.Tensor) -> list[tuple[str, tuple]]:
    order: list[tuple[str, tuple]] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out, name=name: order.append((name, tuple(out.shape))))
        for name, m in modules
    ]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return order


def find_stages(model: nn.Module, input_shape: tuple[int, ...], device="cpu") -> list[tuple[str, tuple[int, ...]]]:
    """``[(module path, output shape (C, H, W)), ...]`` for each resolution, shallow to deep."""
    x = torch.zeros((2, *input_shape), device=device)
    for depth in (1, 2):
        modules = [
            (n, m) for n, m in model.named_modules() if n and n.count(".") == depth - 1 and not isinstance(m, _POOLS)
        ]
        last: dict[tuple[int, int], tuple[str, tuple]] = {}
        for name, shape in _shapes(model, modules, x):
            if len(shape) == 4 and shape[2] * shape[3] > 1:
                last.pop(shape[2:], None)  # keep insertion order = completion order of the last one
                last[shape[2:]] = (name, shape[1:])
        stages = sorted(last.values(), key=lambda s: -s[1][1] * s[1][2])
        if len(stages) >= 2:
            return stages
    raise ValueError("could not find two feature stages of different resolution in the model")


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear classifier to take the embedding from")
    return linears[-1]


class Capture:
    """Forward hooks that keep the latest output of named modules (or the input, ``inputs=True``)."""

    def __init__(self, model: nn.Module, names: list[str], inputs: bool = False):
        self.out: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self.handles = []
        for name in names:
            if inputs:
                hook = modules[name].register_forward_pre_hook(
                    lambda _m, args, n=name: self.out.__setitem__(n, args[0])
                )
            else:
                hook = modules[name].register_forward_hook(lambda _m, _i, out, n=name: self.out.__setitem__(n, out))
            self.handles.append(hook)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
