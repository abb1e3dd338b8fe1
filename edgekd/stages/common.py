"""What several stages share: the run's data, its checked teacher, normalisation, the student pick.

Each helper memoises on the run (``ctx.memo``), so a ``compress`` that runs every stage in one
process loads the dataset and the teacher once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.config import RunConfig
from edgekd.console import Reporter
from edgekd.data import DataBundle, Normalization, compute_normalization, load_data, skipped_note
from edgekd.errors import EdgekdError
from edgekd.io import sha256_file
from edgekd.models.checkpoint import LoadedModel, load_model_file
from edgekd.rundir import RunDir
from edgekd.stage import StageContext

# Hand-picked students for known teachers (the pairs of RepDistiller's and mdistiller's tables).
# Used when no --student is given and the search stage did not run (search.enabled false); also
# scored by the search as a hand-picked comparison.
SUGGESTED_STUDENTS = {
    "resnet56": "resnet20",
    "resnet110": "resnet32",
    "resnet32x4": "resnet8x4",
    "resnet32": "resnet8",
    "resnet20": "resnet8",
    "wrn_40_2": "wrn_16_2",
    "wrn_40_1": "wrn_16_1",
    "cnn_medium": "cnn_small",
    "cnn_small": "cnn_tiny",
    "tv:resnet50": "tv:resnet18",
    "tv:resnet34": "tv:resnet18",
    "tv:resnet18": "tv:mobilenet_v3_small",
}


def suggest_student(teacher_arch: dict[str, Any] | None, input_shape: tuple[int, int, int]) -> str:
    if teacher_arch and teacher_arch.get("name") in SUGGESTED_STUDENTS:
        return SUGGESTED_STUDENTS[teacher_arch["name"]]
    side = min(input_shape[1:])
    if side <= 16:
        return "cnn_small"
    if side <= 64:
        return "resnet20"
    return "tv:mobilenet_v3_small"


def teacher_path(config: RunConfig) -> Path:
    if not config.teacher.checkpoint:
        raise EdgekdError("no teacher given; pass --teacher CKPT (train one with `edgekd train-teacher`)")
    path = Path(config.teacher.checkpoint).expanduser()
    if not path.exists():
        raise EdgekdError(f"teacher checkpoint {path} does not exist; check the path passed to --teacher")
    return path


def load_teacher(run: RunDir, config: RunConfig) -> LoadedModel:
    return run.memo(
        "teacher",
        lambda: load_model_file(teacher_path(config), arch=config.teacher.arch, trust=config.teacher.trust_checkpoint),
    )


def load_run_data(run: RunDir, config: RunConfig) -> DataBundle:
    def load() -> DataBundle:
        shape = load_teacher(run, config).input.get("shape")
        return load_data(
            config.data.source,
            val_fraction=config.data.val_fraction,
            seed=config.seed,
            max_train_samples=config.data.max_train_samples,
            image_size=config.data.image_size or (int(shape[-1]) if shape else None),
            bad_images=config.data.bad_images,
        )

    def load_and_say() -> DataBundle:
        data = load()
        if data.skipped:  # once per process: the bundle is memoised
            Reporter().warn(skipped_note(data.skipped))
        return data

    return run.memo("data", load_and_say)


def probe_logits(model: nn.Module, shape: tuple[int, ...], what: str, fix: str) -> torch.Tensor:
    """Run ``model`` once on zeros of ``shape`` (C, H, W); a failure is a one-line user error."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros((2, *shape)))
    except Exception as exc:  # noqa: BLE001 - any failure here means the shapes do not fit
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise EdgekdError(f"{what} cannot take the data's {tuple(shape)} images ({first}); {fix}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise EdgekdError(f"{what} must return a (batch, classes) tensor of logits; {fix}")
    return out


def check_teacher_fits(teacher: LoadedModel, data: DataBundle, path: Path, grows: bool = False) -> int:
    """Raise a one-line error unless ``teacher`` takes the data's images and predicts its classes
    (with ``grows``, scheme lifelong: fewer classes, the first ones of the data)."""
    shape = tuple(data.input_shape)
    declared = teacher.input.get("shape")
    if declared and tuple(declared) != shape:
        raise EdgekdError(
            f"teacher {path.name} expects inputs of shape {tuple(declared)} but the data gives {shape}; "
            "pass the dataset the teacher was trained on (--data)"
        )
    out = probe_logits(
        teacher.model,
        shape,
        f"teacher {path.name}",
        "pass the dataset the teacher was trained on (--data) or its architecture (--teacher-arch)",
    )
    n = int(out.shape[1])
    if grows:
        if n >= len(data.classes):
            raise EdgekdError(
                f"scheme lifelong grows the teacher to new classes, but teacher {path.name} already predicts {n} "
                f"and the data has {len(data.classes)}; pass data with more classes (--data) or another --scheme"
            )
        return n
    if n != len(data.classes):
        raise EdgekdError(
            f"teacher {path.name} predicts {n} classes but the data has {len(data.classes)}; "
            "pass the dataset the teacher was trained on (--data)"
        )
    return n


def checked_teacher_for(run: RunDir, config: RunConfig) -> tuple[LoadedModel, DataBundle]:
    teacher = load_teacher(run, config)
    data = load_run_data(run, config)
    grows = config.distill.scheme == "lifelong"
    run.memo("teacher_checked", lambda: check_teacher_fits(teacher, data, teacher_path(config), grows))
    return teacher, data


def checked_teacher(ctx: StageContext) -> tuple[LoadedModel, DataBundle]:
    return checked_teacher_for(ctx.run, ctx.config)


def student_arch(
    config: RunConfig, teacher: LoadedModel, data: DataBundle, run: RunDir | None = None
) -> str | dict[str, Any]:
    """The named student; for "auto", the search's ``best_arch.json`` when the search ran, else the usual pick."""
    arch = config.student.arch
    if arch != "auto":
        return arch
    found = searched_arch(run) if run is not None else None
    return found if found is not None else suggest_student(teacher.arch, data.input_shape)


def searched_arch_input(config: RunConfig, run: RunDir) -> dict[str, Any]:
    """Distill's fingerprint input from the search: the sha256 of the best_arch.json it would use.

    (The search is not in distill's ``needs``: with --student it does not run at all.)"""
    path = run.stage_dir("search") / "best_arch.json"
    if config.student.arch != "auto" or searched_arch(run) is None:
        return {}
    return {"search_best_arch_sha256": sha256_file(path)}


def searched_arch(run: RunDir) -> dict[str, Any] | None:
    """The arch spec in ``search/best_arch.json`` of a finished search stage, else None."""
    import json

    path = run.stage_dir("search") / "best_arch.json"
    if run.stage_record("search").get("status") != "done" or not path.is_file():
        return None
    return json.loads(path.read_text())["arch"]


def teacher_external_inputs(config: RunConfig, run: RunDir) -> dict[str, Any]:
    path = teacher_path(config)
    return {"teacher_sha256": sha256_file(path), "data": load_run_data(run, config).fingerprint}


def resolve_normalization(config: RunConfig, teacher: LoadedModel, data: DataBundle) -> tuple[Normalization, str]:
    """Teacher metadata first (the teacher was trained with it), else computed on the train split."""
    mean, std = teacher.input.get("mean"), teacher.input.get("std")
    if mean and std:
        if len(mean) != data.input_shape[0]:
            raise EdgekdError(
                f"teacher normalisation has {len(mean)} channels but the data has {data.input_shape[0]}; "
                "pass the dataset the teacher was trained on (--data)"
            )
        return Normalization(mean=list(mean), std=list(std)), "from the teacher checkpoint"
    return compute_normalization(data.train), "computed on the training split"


def input_spec(data: DataBundle, norm: Normalization) -> dict[str, Any]:
    return {"shape": list(data.input_shape), "mean": list(norm.mean), "std": list(norm.std)}


def normalization_from_teacher_json(teacher_dir: Path) -> Normalization:
    import json

    info = json.loads((teacher_dir / "teacher.json").read_text())
    return Normalization(mean=info["input"]["mean"], std=info["input"]["std"])
