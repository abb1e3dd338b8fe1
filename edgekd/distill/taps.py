"""Feature taps: named tensors collected from inside a model by forward hooks during its forward pass.

Distillation methods read more than logits. A :class:`TapCollector` installs forward hooks on a
model for exactly the taps the methods ask for and, called on a batch, runs the model and returns

    {"logits": (B, K), "embedding": (B, D), "stages": [(B, C1, H1, W1), (B, C2, H2, W2), ...]}

- ``logits``: the model's output.
- ``embedding``: the pooled penultimate vector fed to the classifier (the input of the head that
  holds the last ``nn.Linear``, flattened), as RepDistiller's ``feat[-1]``.
- ``stages``: the stage outputs, one per spatial resolution: the last module output at each
  resolution, e.g. ``layer1..layer3`` of the CIFAR ResNets, ``block1, block2, relu`` of the WRNs
  (RepDistiller's ``feat[1:-1]``), ``stage1..stage3`` of the small CNNs, ``layer1..layer4`` of a
  torchvision ResNet. Methods use ``stages[-1]`` as the last feature map.
- ``index`` (dataset indices of the batch) is not read from the model; the trainer adds it for the
  methods that declare it (CRD).

Where the taps are is found automatically by tracing one forward pass on an example batch
(:func:`find_taps`): every module call is recorded with its caller, shape and order; a container
whose children produce more than one spatial size is opened up (torchvision's ``features``), the
4-D outputs of non-pooling modules are grouped by resolution, and the last module of each group is
a stage. A leading group of bare leaf modules (a conv/BN/ReLU stem) is dropped when the model has
blocks (a plain VGG keeps its ReLUs). Both can be overridden by module path
in the config (``distill.taps: {stages: [layer1, layer2, layer3], embedding: avgpool}``, or per
model under ``teacher:`` / ``student:``); an overridden embedding is that module's output, flattened.

The probe runs in eval mode under ``no_grad`` and restores every module's mode afterwards, so it
never changes BatchNorm running statistics. Hooks count calls per forward, so a module that runs
several times (a shared ReLU) is tapped at the call the probe found. Captured tensors are cloned:
a later in-place op (``ReLU(inplace=True)``) cannot change them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgekd.errors import EdgekdError

MODEL_TAPS = ("logits", "embedding", "stages")  # read from the model by hooks
EXTRA_TAPS = ("index",)  # supplied by the trainer
KNOWN_TAPS = MODEL_TAPS + EXTRA_TAPS


@dataclass
class TapSite:
    """Where one tap is read: the ``occurrence``-th call (0-based) of module ``path`` in a forward,
    its input (``where="input"``, first positional argument) or its output."""

    path: str
    occurrence: int = 0
    where: str = "output"


@dataclass
class TapPlan:
    """The resolved tap sites of one model."""

    stages: list[TapSite] = field(default_factory=list)
    embedding: TapSite | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "stages": [s.path for s in self.stages],
            "embedding": None
            if self.embedding is None
            else f"{self.embedding.path or '(model)'}:{self.embedding.where}",
        }


# ---- tracing --------------------------------------------------------------------------------
@dataclass
class _Call:
    path: str
    parent: int  # index of the calling module's call, -1 for the root
    occurrence: int
    leaf: bool
    pool: bool = False
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None


_POOLS = (
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
)


def _shape(x: Any) -> tuple[int, ...] | None:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else None


@contextlib.contextmanager
def probing(*models: nn.Module | None) -> Iterator[None]:
    """Eval mode and ``no_grad`` for the block; every module's own train/eval flag is restored after,
    so BatchNorm running statistics are untouched."""
    saved = [(m, m.training) for model in models if model is not None for m in model.modules()]
    try:
        for model in models:
            if model is not None:
                model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, flag in saved:
            m.training = flag


def trace(model: nn.Module, example: torch.Tensor) -> list[_Call]:
    """Record every module call of one forward pass on ``example`` (in eval mode, no grad)."""
    calls: list[_Call] = []
    stack: list[int] = []
    counts: dict[str, int] = {}
    handles = []

    def pre(path: str, leaf: bool, pool: bool):
        def hook(module, args):
            occurrence = counts.get(path, 0)
            counts[path] = occurrence + 1
            in_shape = _shape(args[0]) if args else None
            calls.append(_Call(path, stack[-1] if stack else -1, occurrence, leaf, pool, in_shape))
            stack.append(len(calls) - 1)

        return hook

    def post(path: str):
        def hook(module, args, output):
            index = stack.pop()
            calls[index].out_shape = _shape(output)

        return hook

    for path, module in model.named_modules():
        leaf = next(module.children(), None) is None
        handles.append(module.register_forward_pre_hook(pre(path, leaf, isinstance(module, _POOLS))))
        handles.append(module.register_forward_hook(post(path)))
    try:
        with probing(model):
            model(example)
    finally:
        for h in handles:
            h.remove()
    return calls


def _children(calls: list[_Call], parent: int) -> list[int]:
    return [i for i, c in enumerate(calls) if c.parent == parent]


def _hw(shape: tuple[int, ...] | None) -> tuple[int, int] | None:
    return (shape[2], shape[3]) if shape is not None and len(shape) == 4 else None


def _stage_candidates(calls: list[_Call], parent: int) -> list[int]:
    out: list[int] = []
    for i in _children(calls, parent):
        sizes = {_hw(calls[k].out_shape) for k in _children(calls, i)} - {None}
        out.extend(_stage_candidates(calls, i) if len(sizes) > 1 else [i])
    return out


def _auto_stages(calls: list[_Call]) -> list[TapSite]:
    roots = [i for i, c in enumerate(calls) if c.parent == -1]
    if not roots:
        return []
    candidates = [
        i for i in _stage_candidates(calls, roots[0]) if _hw(calls[i].out_shape) is not None and not calls[i].pool
    ]
    groups: list[list[int]] = []
    for i in candidates:
        if groups and _hw(calls[groups[-1][-1]].out_shape) == _hw(calls[i].out_shape):
            groups[-1].append(i)
        else:
            groups.append([i])
    if any(not calls[i].leaf for g in groups for i in g):
        while groups and all(calls[i].leaf for i in groups[0]):
            groups.pop(0)  # a stem of bare conv/BN/ReLU modules is not a stage
    return [TapSite(calls[g[-1]].path, calls[g[-1]].occurrence) for g in groups]


def _auto_embedding(model: nn.Module, calls: list[_Call]) -> TapSite | None:
    linears = [path for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    last = linears[-1]
    parts = last.split(".")
    ancestors = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]  # outermost first
    for path in ancestors:
        call = next((c for c in calls if c.path == path), None)
        if call is not None and call.in_shape is not None and len(call.in_shape) == 2:
            return TapSite(path, call.occurrence, "input")
    return None


def find_taps(model: nn.Module, example: torch.Tensor) -> TapPlan:
    """Find the stage outputs and the embedding of ``model`` by tracing one pass on ``example``."""
    calls = trace(model, example)
    return TapPlan(stages=_auto_stages(calls), embedding=_auto_embedding(model, calls))


# ---- overrides ------------------------------------------------------------------------------
def tap_override(overrides: Any, key: str, label: str) -> Any:
    """``overrides`` is a mapping or an object with attributes (the config's ``TapsConfig``); a
    ``student``/``teacher`` sub-section named by ``label`` wins over the top level."""

    def get(obj: Any, name: str) -> Any:
        if obj is None:
            return None
        return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)

    own = get(get(overrides, label), key)
    return own if own is not None else get(overrides, key)


def _check_path(model: nn.Module, path: str, what: str) -> None:
    try:
        model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise EdgekdError(
            f"{what}: the model has no module {path!r}; use dotted module paths such as "
            f"{', '.join(names[:6]) or 'layer1'} (see print(model))"
        ) from None


def plan_taps(
    model: nn.Module,
    names: Iterable[str],
    overrides: Any = None,
    example: torch.Tensor | None = None,
    label: str = "student",
) -> TapPlan:
    """Resolve where each of ``names`` is read in ``model``: overrides first, else :func:`find_taps`."""
    names = set(names)
    unknown = names - set(KNOWN_TAPS)
    if unknown:
        raise EdgekdError(f"unknown taps {sorted(unknown)}; known taps are {', '.join(KNOWN_TAPS)}")
    if names - {"logits"} and isinstance(model, torch.jit.ScriptModule):
        raise EdgekdError(
            f"the {label} is TorchScript, which takes no forward hooks, so taps {sorted(names - {'logits'})} "
            "cannot be read; use a logit method (kd, dkd) or load the model as a checkpoint with its arch"
        )
    plan = TapPlan()
    stages, embedding = tap_override(overrides, "stages", label), tap_override(overrides, "embedding", label)
    if stages is not None:
        for path in stages:
            _check_path(model, path, f"distill.taps.stages ({label})")
        plan.stages = [TapSite(p) for p in stages]
    if embedding is not None:
        _check_path(model, embedding, f"distill.taps.embedding ({label})")
        plan.embedding = TapSite(embedding)
    need_stages = "stages" in names and stages is None
    need_embedding = "embedding" in names and embedding is None
    if need_stages or need_embedding:
        if example is None:
            raise ValueError("an example batch is needed to find taps automatically")
        found = find_taps(model, example)
        if need_stages:
            if not found.stages:
                raise EdgekdError(
                    f"found no stage outputs (4-D feature maps) in the {label} model; "
                    f"name them with distill.taps.{label}.stages: [module.path, ...]"
                )
            plan.stages = found.stages
        if need_embedding:
            if found.embedding is None:
                raise EdgekdError(
                    f"found no classifier input (embedding) in the {label} model; "
                    f"name the pooling module with distill.taps.{label}.embedding: module.path"
                )
            plan.embedding = found.embedding
    if "stages" not in names:
        plan.stages = []
    if "embedding" not in names:
        plan.embedding = None
    return plan


# ---- collecting -----------------------------------------------------------------------------
class TapCollector:
    """Forward hooks on ``model`` for ``names``; ``collector(x)`` runs the model and returns the taps.

        taps = TapCollector(student, {"logits", "stages"}, overrides=cfg.taps, example=x0)
        out = taps(x)            # {"logits": ..., "stages": [...]}
        out = taps(x, forward=ddp_model)  # run a wrapper (DDP) of the same model

    ``overrides`` maps ``stages``/``embedding`` to module paths (optionally under ``student``/
    ``teacher``, picked by ``label``). ``example`` (a small batch) is needed unless every requested
    tap is overridden or only ``logits`` is asked. ``close()`` removes the hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        names: Iterable[str],
        overrides: Any = None,
        example: torch.Tensor | None = None,
        label: str = "student",
    ):
        self.model = model
        self.label = label
        self.names = tuple(sorted(set(names) - set(EXTRA_TAPS) | {"logits"}))
        self.plan = plan_taps(model, self.names, overrides, example, label)
        self._captured: dict[tuple[str, int, str], torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._handles: list[Any] = []
        self._active = False  # hooks record only inside __call__ (not in evaluate() or export)
        sites = list(self.plan.stages) + ([self.plan.embedding] if self.plan.embedding else [])
        for path in sorted({s.path for s in sites}):
            wanted = {(s.occurrence, s.where) for s in sites if s.path == path}
            module = model.get_submodule(path) if path else model
            self._handles.append(module.register_forward_pre_hook(self._pre_hook(path, wanted)))
            if any(w == "output" for _, w in wanted):
                self._handles.append(module.register_forward_hook(self._post_hook(path, wanted)))

    def _pre_hook(self, path: str, wanted: set[tuple[int, str]]) -> Callable:
        def hook(module, args):
            if not self._active:
                return
            occurrence = self._counts.get(path, 0)
            self._counts[path] = occurrence + 1
            if (occurrence, "input") in wanted and args:
                self._captured[(path, occurrence, "input")] = args[0].clone()

        return hook

    def _post_hook(self, path: str, wanted: set[tuple[int, str]]) -> Callable:
        def hook(module, args, output):
            if not self._active:
                return
            occurrence = self._counts[path] - 1
            if (occurrence, "output") in wanted:
                self._captured[(path, occurrence, "output")] = output.clone()

        return hook

    def _get(self, site: TapSite) -> torch.Tensor:
        key = (site.path, site.occurrence, site.where)
        if key not in self._captured:
            raise EdgekdError(
                f"tap {site.path!r} ({self.label}) did not run in the forward pass; "
                f"choose a module that the model calls in distill.taps.{self.label}"
            )
        return self._captured[key]

    def __call__(self, x: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
        self._captured.clear()
        self._counts.clear()
        self._active = True
        try:
            logits = (self.model if forward is None else forward)(x)  # not `or`: a compiled module has no bool()
        finally:
            self._active = False
        out: dict[str, Any] = {"logits": logits}
        if self.plan.embedding is not None:
            out["embedding"] = torch.flatten(self._get(self.plan.embedding), 1)
        if self.plan.stages:
            out["stages"] = [self._get(s) for s in self.plan.stages]
        self._captured.clear()
        return out

    def probe(self, example: torch.Tensor) -> dict:
        """The taps on ``example`` in eval mode without gradients (for sizing connectors)."""
        with probing(self.model):
            return self(example)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> TapCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
