"""The model registry: one name (plus a few arguments) -> one ``nn.Module``.

Every architecture edgekd can build is reached through :func:`create_model` from an *arch spec*,
a small JSON-serialisable dict ``{"name": ..., "num_classes": ..., "in_channels": ..., **kwargs}``.
The spec is stored on the model (``model.arch_spec``) and saved next to its weights, so a
checkpoint can always be rebuilt without pickling a module.

Zoo models register a factory ``f(num_classes, in_channels, **kwargs)`` with
:func:`register_model` (the timm pattern: one decorator, one dict). Any torchvision
classification model is reached as ``tv:NAME`` (see :mod:`edgekd.models.torchvision_models`).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import json
from collections.abc import Callable
from typing import Any

from torch import nn

from edgekd.errors import EdgekdError

ModelFactory = Callable[..., nn.Module]

TV_PREFIX = "tv:"
DEFAULT_NUM_CLASSES = 10
DEFAULT_IN_CHANNELS = 3

_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(num_classes: int, in_channels: int, **kwargs) -> nn.Module`` as ``name``.

    Names are lower case and unique; ``tv:`` is reserved for torchvision models.
    """
    key = name.lower()
    if key != name or key.startswith(TV_PREFIX) or not key:
        raise ValueError(f"model names must be non-empty, lower case and not start with {TV_PREFIX!r}: {name!r}")

    def decorator(factory: ModelFactory) -> ModelFactory:
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered (by {_MODELS[key].__module__})")
        _MODELS[key] = factory
        return factory

    return decorator


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the zoo models, optionally filtered by a shell-style ``pattern`` ("resnet*").

    torchvision models are not listed; they are reached as ``tv:NAME``.
    """
    names = sorted(_MODELS)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n, pattern.lower())]
    return names


def _close_matches(name: str, candidates: list[str]) -> str:
    matches = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    return f"close matches: {', '.join(matches)}" if matches else "no close matches"


def _canonical_name(name: Any) -> str:
    """The registered spelling of ``name``; raises EdgekdError for an unknown one."""
    if not isinstance(name, str) or not name.strip():
        raise EdgekdError(f"model name must be a non-empty string, got {name!r}")
    name = name.strip()
    if name[: len(TV_PREFIX)].lower() == TV_PREFIX:
        from edgekd.models.torchvision_models import check_tv_name

        tv_name = name[len(TV_PREFIX) :]
        check_tv_name(tv_name)
        return TV_PREFIX + tv_name
    key = name.lower()
    if key not in _MODELS:
        raise EdgekdError(
            f"unknown model {name!r} ({_close_matches(key, list(_MODELS))}); see edgekd.models.list_models() "
            f"for the zoo, or use 'tv:NAME' for a torchvision model"
        )
    return key


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EdgekdError(f"{what} must be a positive integer, got {value!r}")
    return value


def normalize_spec(
    spec: str | dict[str, Any],
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
) -> dict[str, Any]:
    """Return the full arch spec ``{"name", "num_classes", "in_channels", **kwargs}`` of ``spec``.

    ``spec`` is a model name or a dict with at least ``name``. Explicit ``num_classes`` /
    ``in_channels`` override the spec's; defaults are 10 classes and 3 channels. The name is
    checked and put in its registered spelling (zoo names are case-insensitive). The result is a
    new plain dict that survives a JSON round trip.
    """
    if isinstance(spec, str):
        raw: dict[str, Any] = {"name": spec}
    elif isinstance(spec, dict):
        if "name" not in spec:
            raise EdgekdError(f"arch spec needs a 'name' key, got keys {sorted(map(str, spec))}")
        raw = dict(spec)
    else:
        raise EdgekdError(f"arch spec must be a model name or a dict, got {type(spec).__name__}")

    name = _canonical_name(raw.pop("name"))
    nc = num_classes if num_classes is not None else raw.pop("num_classes", DEFAULT_NUM_CLASSES)
    ic = in_channels if in_channels is not None else raw.pop("in_channels", DEFAULT_IN_CHANNELS)
    raw.pop("num_classes", None)
    raw.pop("in_channels", None)
    out: dict[str, Any] = {
        "name": name,
        "num_classes": _positive_int(nc, "num_classes"),
        "in_channels": _positive_int(ic, "in_channels"),
    }
    for key in sorted(raw):
        if not isinstance(key, str):
            raise EdgekdError(f"arch spec keys must be strings, got {key!r}")
        out[key] = raw[key]
    try:
        return json.loads(json.dumps(out))
    except (TypeError, ValueError) as err:
        raise EdgekdError(f"arch spec for {name!r} must be JSON-serialisable: {err}") from None


def _check_kwargs(name: str, factory: ModelFactory, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = sorted(p for p in params if p not in ("num_classes", "in_channels"))
    for key in kwargs:
        if key not in params:
            hint = f"it accepts {', '.join(allowed)}" if allowed else "it accepts no extra arguments"
            raise EdgekdError(f"model {name!r} has no argument {key!r}; {hint}")


def create_model(
    spec: str | dict[str, Any],
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
) -> nn.Module:
    """Build the model described by ``spec`` (see :func:`normalize_spec`), with random weights.

    The normalised spec is attached as ``model.arch_spec`` (a plain dict), so
    ``create_model(model.arch_spec)`` rebuilds the same architecture.
    """
    full = normalize_spec(spec, num_classes=num_classes, in_channels=in_channels)
    name = full["name"]
    kwargs = {k: v for k, v in full.items() if k not in ("name", "num_classes", "in_channels")}
    if name.startswith(TV_PREFIX):
        from edgekd.models.torchvision_models import create_tv_model

        model = create_tv_model(
            name[len(TV_PREFIX) :], num_classes=full["num_classes"], in_channels=full["in_channels"], **kwargs
        )
    else:
        factory = _MODELS[name]
        _check_kwargs(name, factory, kwargs)
        model = factory(num_classes=full["num_classes"], in_channels=full["in_channels"], **kwargs)
    model.arch_spec = full
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
