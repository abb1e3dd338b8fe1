"""Saving models with their arch spec, and loading untrusted model files (teachers).

edgekd's own format (``save_model``) is a plain dict that ``torch.load(weights_only=True)`` reads:

    {"format": "edgekd.model/1", "arch": {spec}, "state_dict": {...},
     "input": {"shape": [C, H, W], "mean": [...], "std": [...]}, "classes": [...], "metrics": {...}}

``load_model_file`` also accepts what users bring: a checkpoint dict from another project
(RepDistiller's ``{"model": state_dict}``, ``{"state_dict": ...}``, ``{"net": ...}``; a
``module.`` prefix from DataParallel is stripped), a bare state_dict with an arch name, a
TorchScript archive, and a ``torch.export`` ``.pt2`` program. A file is untrusted input: it is read
with ``weights_only=True``. A pickled whole ``nn.Module``, a TorchScript archive and a ``.pt2``
program are refused unless the caller passes ``trust=True`` (``--trust-checkpoint``): unpickling a
module runs code from the file, PyTorch treats TorchScript as code, and ``torch.export.load``
unpickles constants with ``weights_only=False`` (torch 2.14, ``pt2_archive/_package.py``).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd import __version__
from edgekd.errors import EdgekdError
from edgekd.io import atomic_torch_save
from edgekd.models.registry import create_model, normalize_spec

FORMAT = "edgekd.model/1"
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "params")


@dataclass
class LoadedModel:
    model: nn.Module
    kind: str  # edgekd | checkpoint | state_dict | torchscript | exported_program | pickled_module
    arch: dict[str, Any] | None  # None when the file carries code, not a spec (TorchScript, .pt2, pickle)
    input: dict[str, Any] = field(default_factory=dict)  # shape / mean / std when the file says
    classes: list[str] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def save_model(
    path: str | Path,
    model: nn.Module,
    *,
    input_spec: dict[str, Any],
    classes: list[str],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (it must carry ``arch_spec``) in edgekd's format, atomically."""
    spec = getattr(model, "arch_spec", None)
    if spec is None:
        raise ValueError("save_model needs a model built by edgekd.models.create_model (no arch_spec)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save(
        path,
        {
            "format": FORMAT,
            "edgekd_version": __version__,
            "arch": dict(spec),
            "state_dict": state,
            "input": dict(input_spec),
            "classes": list(classes),
            "metrics": dict(metrics or {}),
        },
    )


def _zip_names(path: Path) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def _not_a_checkpoint(path: Path, why: str) -> EdgekdError:
    return EdgekdError(
        f"{path} is not a readable PyTorch checkpoint ({why}); pass a file written by torch.save, "
        "torch.jit.save or torch.export.save (re-copy it if it was cut short)"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _load_pickle(path: Path, trust: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise _not_a_checkpoint(path, _first_line(exc)) from None
        if not trust:
            raise EdgekdError(
                f"{path} holds pickled Python objects beyond tensors (e.g. a whole nn.Module), and "
                "unpickling them runs code from the file; re-save it as a state_dict "
                "(torch.save(model.state_dict(), ...)) or pass --trust-checkpoint if you trust its source"
            ) from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, garbage bytes, bad pickle opcodes
        raise _not_a_checkpoint(path, _first_line(exc)) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure of a trusted unpickle is the file's fault
        raise _not_a_checkpoint(path, _first_line(exc)) from None


def _require_trust(path: Path, what: str, trust: bool) -> None:
    if not trust:
        raise EdgekdError(
            f"{path} is {what}: loading it can run code from the file; save a state_dict instead "
            "(torch.save(model.state_dict(), ...)) or pass --trust-checkpoint if you trust its source"
        )


def _looks_like_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _infer_num_classes(state: dict[str, torch.Tensor]) -> int | None:
    """Output size of the last 2-D weight (the classifier) in a state_dict."""
    last = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return int(last[-1].shape[0]) if last else None


def _infer_in_channels(state: dict[str, torch.Tensor]) -> int | None:
    first = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 4]
    return int(first[0].shape[1]) if first else None


def _build_from_state(
    path: Path, state: dict[str, torch.Tensor], arch: str | dict[str, Any] | None
) -> tuple[nn.Module, dict[str, Any]]:
    if arch is None:
        raise EdgekdError(
            f"{path} is a bare state_dict with no architecture; pass --teacher-arch NAME "
            "(a zoo name such as resnet56, or tv:resnet18; `edgekd models` lists them)"
        )
    state = _strip_prefix(state)
    spec = normalize_spec(
        arch,
        num_classes=(arch.get("num_classes") if isinstance(arch, dict) else None) or _infer_num_classes(state),
        in_channels=(arch.get("in_channels") if isinstance(arch, dict) else None) or _infer_in_channels(state),
    )
    model = create_model(spec)
    expected = model.state_dict()
    mismatched = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected or mismatched:
        detail = []
        if mismatched:
            k = mismatched[0]
            detail.append(f"{k} has shape {tuple(state[k].shape)}, {spec['name']} expects {tuple(expected[k].shape)}")
        if missing:
            detail.append(f"{len(missing)} missing keys such as {missing[0]}")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys such as {unexpected[0]}")
        raise EdgekdError(
            f"{path} does not fit architecture {spec['name']} ({'; '.join(detail)}); "
            "pass the architecture it was trained with (--teacher-arch)"
        )
    model.load_state_dict(state, strict=True)
    return model, spec


def load_model_file(path: str | Path, *, arch: str | dict[str, Any] | None = None, trust: bool = False) -> LoadedModel:
    """Load a model file of any supported kind, safely; see the module docstring."""
    path = Path(path)
    if not path.exists():
        raise EdgekdError(f"checkpoint {path} does not exist; check the path passed to --teacher")
    if path.is_dir():
        raise EdgekdError(f"checkpoint {path} is a folder; pass the checkpoint file inside it")
    if path.stat().st_size == 0:
        raise _not_a_checkpoint(path, "the file is empty")

    names = _zip_names(path)
    if names is not None and any(n.endswith("/archive_format") or n == "archive_format" for n in names):
        _require_trust(path, "a torch.export program (.pt2), which torch.export.load unpickles", trust)
        return _load_exported_program(path)
    if names is not None and any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        _require_trust(path, "a TorchScript program, which PyTorch treats as executable code", trust)
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001
            raise _not_a_checkpoint(path, _first_line(exc)) from None
        return LoadedModel(module.eval(), "torchscript", None)

    obj = _load_pickle(path, trust)
    if isinstance(obj, nn.Module):
        return LoadedModel(obj.eval(), "pickled_module", getattr(obj, "arch_spec", None))
    if _looks_like_state_dict(obj):
        model, spec = _build_from_state(path, obj, arch)
        return LoadedModel(model.eval(), "state_dict", spec)
    if isinstance(obj, dict):
        if obj.get("format") == FORMAT:
            model, spec = _build_from_state(path, obj["state_dict"], arch or obj["arch"])
            return LoadedModel(
                model.eval(),
                "edgekd",
                spec,
                dict(obj.get("input") or {}),
                list(obj["classes"]) if obj.get("classes") else None,
                dict(obj.get("metrics") or {}),
            )
        for key in _STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return LoadedModel(inner.eval(), "pickled_module", getattr(inner, "arch_spec", None))
            if _looks_like_state_dict(inner):
                model, spec = _build_from_state(path, inner, arch or obj.get("arch"))
                classes = obj.get("classes")
                return LoadedModel(
                    model.eval(),
                    "checkpoint",
                    spec,
                    dict(obj.get("input") or {}),
                    list(classes) if classes else None,
                )
    raise _not_a_checkpoint(path, f"found a {type(obj).__name__} with no state_dict, model or arch spec in it")


class _ExportedModule(nn.Module):
    """Wraps ``ExportedProgram.module()``: it cannot switch train/eval mode (an exported program is
    frozen in the mode it was exported in), and one exported for a fixed batch size runs any batch
    here by chunking and padding."""

    def __init__(self, program: nn.Module, batch: int | None):
        super().__init__()
        self.program, self.batch = program, batch

    def train(self, mode: bool = True) -> _ExportedModule:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch is None:
            return self.program(x)
        outs = []
        for chunk in x.split(self.batch):
            n = chunk.shape[0]
            if n < self.batch:
                pad = chunk.new_zeros((self.batch - n, *chunk.shape[1:]))
                chunk = torch.cat([chunk, pad])
            outs.append(self.program(chunk)[:n])
        return torch.cat(outs)


def exportable_module(model: nn.Module) -> nn.Module:
    """The module to hand to an exporter: the program itself for a loaded ``.pt2`` (whose batch
    chunking must not be traced into a graph), else ``model``."""
    return model.program if isinstance(model, _ExportedModule) else model


def _load_exported_program(path: Path) -> LoadedModel:
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise _not_a_checkpoint(path, _first_line(exc)) from None
    module = program.module()
    shape: list[Any] = []
    for node in module.graph.nodes:
        if node.op == "placeholder" and "val" in node.meta and hasattr(node.meta["val"], "shape"):
            shape = list(node.meta["val"].shape)
            break
    info: dict[str, Any] = {}
    if len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
        info["shape"] = [int(d) for d in shape[1:]]
    batch = int(shape[0]) if shape and isinstance(shape[0], int) else None
    return LoadedModel(_ExportedModule(module, batch), "exported_program", None, info)
