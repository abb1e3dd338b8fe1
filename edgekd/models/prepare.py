"""Prepare a model for export or reference inference: a CPU copy in eval mode.

Accepts a plain ``nn.Module``, a ``torch.jit.ScriptModule``, a ``torch.export.ExportedProgram``
or the module of one (``ep.module()``). The caller's model is never moved or switched to eval:
we work on a deep copy.

The module of an ExportedProgram refuses ``.train()``/``.eval()``; its train/eval behaviour was
fixed when ``torch.export`` traced it (export the model in eval mode). On a copy we only clear
the ``training`` flags so that the ONNX exporter treats it as an inference graph.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn


def cpu_eval_copy(model: nn.Module | torch.export.ExportedProgram) -> nn.Module:
    """Return a deep copy of ``model`` on the CPU in eval mode (an ExportedProgram becomes its module)."""
    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    clone = copy.deepcopy(model)
    tensors = itertools.chain(clone.parameters(), clone.buffers())
    if any(t.device.type != "cpu" for t in tensors):
        clone = clone.cpu()
    try:
        clone.eval()
    except NotImplementedError:  # module of an ExportedProgram: eval() is disabled there
        for sub in clone.modules():
            sub.training = False
    return clone


def is_exported_module(model: nn.Module) -> bool:
    """True for the module of a ``torch.export`` program (a graph module that kept example shapes)."""
    if not isinstance(model, torch.fx.GraphModule):
        return False
    return any(node.op == "placeholder" and "val" in node.meta for node in model.graph.nodes)


def supports_train(model: nn.Module) -> bool:
    """True when ``model.train(False)`` works (the module of an ExportedProgram may refuse it).

    Call it on a model already in eval mode: the call then changes nothing.
    """
    try:
        model.train(False)
    except NotImplementedError:
        return False
    return True


def exported_batch(model: nn.Module) -> int | None:
    """The batch size baked into a ``torch.export`` graph module, or None when it is dynamic or unknown.

    ``ep.module()`` keeps the example shapes of the export in the placeholders' metadata; a plain
    integer there means the graph only runs at that batch size.
    """
    if not is_exported_module(model):
        return None
    for node in model.graph.nodes:
        if node.op == "placeholder":
            value = node.meta.get("val")
            shape = getattr(value, "shape", None)
            if shape is not None and len(shape) > 0 and isinstance(shape[0], int):
                return int(shape[0])
            return None
    return None
