"""The whole pipeline's configuration as pydantic models, and how it is assembled.

Slices read by a lower package live with it and are assembled here: ``distill`` in
edgekd/distill/config.py, ``search`` in edgekd/nas/config.py, ``bench.gates`` in edgekd/bench/gates.py.

Precedence, lowest first: the defaults below, a YAML file (``--config``, e.g. a preset under
``pipelines/``), then CLI flags and ``--set key=value`` overrides. Unknown keys and bad values fail
with one line naming the field and what is allowed. The resolved config is written to
``RUN_DIR/config.yaml``; each stage reads only its own slice of it (``Stage.config_keys``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from edgekd.bench.gates import GateConfig
from edgekd.distill.config import (
    AdversarialConfig,
    BYOTConfig,
    CacheConfig,
    CrossModalConfig,
    CSKDConfig,
    DataFreeConfig,
    DistillConfig,
    DMLConfig,
    GuardConfig,
    LifelongConfig,
    MethodConfig,
    MultiTeacherConfig,
    SchemeFields,
    TapsConfig,
    TapSites,
    TeacherTrainConfig,
    TfKDConfig,
)
from edgekd.errors import EdgekdError
from edgekd.nas.config import SearchConfig
from edgekd.schema import Strict as _Strict


class AugmentConfig(_Strict):
    """Augmentation for small images: random crop with zero padding, horizontal flip."""

    random_crop: bool = True
    padding: int | None = Field(None, ge=0, le=64)  # None: 1/8 of the image side (4 px at 32x32)
    hflip: bool | None = None  # None: on for 3-channel images, off for grayscale (digits must not flip)


class DataConfig(_Strict):
    source: str = "digits"  # "digits", a folder of .npz files, or an ImageFolder tree
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    max_train_samples: int | None = Field(None, ge=1)
    image_size: int | None = Field(None, ge=8)  # ImageFolder only; default from the teacher or 224
    bad_images: Literal["fail", "skip"] = "fail"  # ImageFolder: an undecodable image stops the run, or is left out
    augment: AugmentConfig = AugmentConfig()
    num_workers: int = Field(0, ge=0)


class TeacherConfig(_Strict):
    checkpoint: str | None = None
    arch: str | dict[str, Any] | None = None  # needed for a bare state_dict
    trust_checkpoint: bool = False  # allow unpickling a whole nn.Module (runs code from the file)


class StudentConfig(_Strict):
    # A zoo name ("resnet8"), "tv:NAME", an arch spec dict, or "auto" (picked from the teacher).
    arch: str | dict[str, Any] = "auto"


class ExportConfig(_Strict):
    opset: int = Field(17, ge=13, le=23)
    parity_samples: int = Field(64, ge=1)
    parity_atol: float = Field(1e-3, gt=0.0)  # max |logit(ORT) - logit(torch)| allowed
    parity_min_agreement: float = Field(0.99, ge=0.0, le=1.0)  # top-1 agreement allowed
    export_teacher: bool = True  # also export the teacher so bench compares like with like


class BenchConfig(_Strict):
    threads: int | None = Field(None, ge=1)  # None: all physical cores
    warmup: int = Field(10, ge=0)
    runs: int = Field(60, ge=50)  # timed runs at batch 1, pooled over `sessions` fresh sessions
    sessions: int = Field(3, ge=1)
    throughput_batch: int = Field(32, ge=1)
    throughput_runs: int = Field(12, ge=3)
    # --- issue 6: runtimes, batch sizes, CI gates, plots ---
    # Runtimes to measure (edgekd/runtimes/base.py): onnxruntime, onnxruntime-cuda,
    # onnxruntime-tensorrt, torch, torch-cuda, tensorrt. One that cannot run here is skipped with its reason.
    runtimes: list[str] = ["onnxruntime"]
    # Batch sizes to time; None: [1, throughput_batch]. Batch 1 gets `runs` timed runs, larger ones `throughput_runs`.
    batch_sizes: list[int] | None = None
    gates: GateConfig = GateConfig()
    plot: bool = True  # bench/accuracy_latency.png

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, runtimes: list[str]) -> list[str]:
        from edgekd.runtimes.base import runtime_names

        known = runtime_names()
        if not runtimes:
            raise ValueError(f"name at least one runtime; choose from {', '.join(known)}")
        for name in runtimes:
            if name not in known:
                raise ValueError(f"unknown runtime {name!r}; choose from {', '.join(known)}")
        return list(dict.fromkeys(runtimes))

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes is None:
            return None
        if not sizes or any(b < 1 for b in sizes):
            raise ValueError("batch sizes must be positive integers, e.g. [1, 8, 32]")
        return sorted(set(sizes))

    def batches(self) -> list[int]:
        return self.batch_sizes or sorted({1, self.throughput_batch})


class PackageConfig(_Strict):
    """The deployment bundle (issue 6): ``edgekd package RUN_DIR``."""

    target: str | None = None  # a profile name or file; None: the run's target
    # auto: the target profile's precision (int8 -> the INT8 model when the run has one, else FP32)
    precision: Literal["auto", "int8", "fp32"] = "auto"
    include_fp32: bool = False  # also ship model_fp32.onnx beside the INT8 model
    jetpack: str | None = None  # Jetson targets: which of the profile's JetPacks (default: the newest)
    base_image: str | None = None  # override the Dockerfile's base image
    top_k: int = Field(5, ge=1)  # what infer.py prints by default
    tarball: bool = True  # also write the bundle as .tar.gz


class QuantizeConfig(_Strict):
    """Stage ``quantize``: INT8 by quantization-aware distillation (or PTQ), see edgekd/quant/."""

    enabled: bool = True  # False (--no-quantize): the stage records "off" and export writes FP32 only
    mode: Literal["qat", "ptq"] = "qat"
    # auto: all four from one pass, the best top-1 on the sensitivity images wins
    calibrator: Literal["auto", "max", "percentile", "entropy", "mse"] = "auto"
    percentile: float = Field(99.99, gt=50.0, le=100.0)  # for calibrator "percentile"
    calib_batches: int = Field(8, ge=1)  # N calibration batches of training images (no augmentation)
    calib_batch_size: int = Field(64, ge=1)
    epochs: int | None = Field(None, ge=1)  # QAT epochs; None: 10% of distill.epochs, at least 1
    lr: float | None = Field(None, gt=0.0)  # QAT learning rate; None: 1% of distill.lr (NVIDIA)
    teacher: Literal["student", "teacher"] = "student"  # QAT teacher: the FP32 student or the original teacher
    ce_weight: float = Field(0.1, ge=0.0)
    kd_weight: float = Field(0.9, ge=0.0)
    temperature: float = Field(4.0, gt=0.0)
    # Feature KD during QAT as well (Polino et al. distil logits only): a method of
    # edgekd.distill.methods that reads features (at, fitnet, sp, nst, fsp, pkt, rkd, cc, crd).
    feature_method: str | None = None
    feature_weight: float | None = Field(None, ge=0.0)  # None: the method's reference weight
    sensitivity: bool = True  # per-layer sensitivity analysis (top-1 drop of quantizing each layer alone)
    sensitivity_samples: int = Field(2000, ge=1)  # validation images it uses
    max_drop: float | None = Field(1.0, ge=0.0)  # top-1 points; keep sensitive layers in float until within
    parity_min_agreement: float = Field(0.99, ge=0.0, le=1.0)  # fake quant vs ONNX Runtime, validation split
    # 8: weights in [-127, 127]; 7: in [-63, 63] (ONNX Runtime's reduce_range), so U8S8 kernels are
    # exact on x86 without VNNI; auto: 7 for a CPU target with such a CPU, else 8
    # (edgekd/runtimes/onnxruntime/int8_encoding.py)
    weight_bits: Literal["auto", 7, 8] = "auto"
    flavour_min_agreement: float = Field(0.995, ge=0.0, le=1.0)  # TensorRT flavour vs CPU flavour

    @field_validator("feature_method")
    @classmethod
    def _feature_method(cls, name: str | None) -> str | None:
        from edgekd.distill.methods import method_class, method_names

        if name is None:
            return None
        features = [n for n in method_names() if set(method_class(n).taps) - {"logits"}]
        if name not in features:
            raise ValueError(f"{name!r} is not a feature distillation method; choose one of {', '.join(features)}")
        return name


class DetectSearchConfig(_Strict):
    """The detector search space (edgekd/tasks/detect/search_space.py): per-choice values; the search's
    budget, strategy, trials and proxy budget are the shared ``search.*`` keys."""

    imgsz: list[int] = [320, 416, 512]  # input sides (multiples of 32)
    stem: list[int] = [8, 16, 32]
    # stage widths (strides 4/8/16/32), each list the choices of one stage; even numbers
    widths: list[list[int]] = [[16, 32, 64], [32, 64, 128], [64, 128, 256], [96, 192, 384]]
    depths: list[list[int]] = [[1], [1, 2, 3], [1, 2, 3], [1, 2]]  # CSP bottlenecks per stage
    neck: list[int] = [32, 64, 96, 128]  # even
    head: list[int] = [32, 64, 96, 128]
    # the proxy's KD terms; those that cannot apply to the pair are dropped (pseudo_label if none applies)
    proxy_kd: dict[str, float] = {"pkd": 1.0, "dense_kd": 1.0}

    @model_validator(mode="after")
    def _check(self) -> DetectSearchConfig:
        lists = {"imgsz": [self.imgsz], "stem": [self.stem], "neck": [self.neck], "head": [self.head]}
        lists.update(widths=self.widths, depths=self.depths)
        for key, groups in lists.items():
            if any(not g for g in groups) or any(v < 1 for g in groups for v in g):
                raise ValueError(f"detect.search.{key} needs non-empty lists of positive integers")
        if len(self.widths) != 4 or len(self.depths) != 4:
            raise ValueError("detect.search.widths and depths need one list per stage (4 stages: strides 4/8/16/32)")
        if any(v % 32 for v in self.imgsz):
            raise ValueError("detect.search.imgsz values must be multiples of 32 (the largest stride)")
        if any(v % 2 for g in (*self.widths, self.neck) for v in g):
            raise ValueError("detect.search.widths and neck values must be even (a CSP block splits them in two)")
        return self


class DetectConfig(_Strict):
    """Object detection (``task: detect``; edgekd/tasks/detect/): input size, student, training, KD, NMS."""

    imgsz: int = Field(320, ge=32, multiple_of=32)  # letterboxed square input; a multiple of the largest stride
    layout: Literal["auto", "coco", "yolo"] = "auto"
    student: str = "edet_n"  # used when neither --student is given nor the search runs (search.enabled false)
    lr: float = Field(2e-3, gt=0.0)  # AdamW, cosine schedule with warm-up
    batch_size: int = Field(16, ge=1)
    # KD terms by name and weight (edgekd/tasks/detect/kd/); pseudo-labels apply to any teacher
    kd: dict[str, float] = {"pseudo_label": 1.0}
    # efficient: decode + NMS inside the ONNX (EfficientNMS outputs); none: the raw head (cls/reg maps, described
    # in the ONNX metadata) for users with their own NMS; bench, parity and the bundle decode it on the host
    nms: Literal["efficient", "none"] = "efficient"
    conf: float = Field(0.001, ge=0.0, lt=1.0)  # score threshold of the NMS (0.001: for mAP)
    iou: float = Field(0.6, gt=0.0, le=1.0)
    max_det: int = Field(100, ge=1)
    parity_max_map_diff: float = Field(0.005, ge=0.0)  # ONNX Runtime mAP vs PyTorch, validation split
    search: DetectSearchConfig = DetectSearchConfig()  # the space searched when no --student is given


class RunConfig(_Strict):
    """Everything one ``edgekd compress`` run uses; written to ``RUN_DIR/config.yaml``."""

    # "classify" or "detect"; "auto" takes it from the data (COCO, YOLO, digits-detect: detect) or the
    # teacher architecture (a torchvision detector: detect), else classify (edgekd/tasks/)
    task: Literal["auto", "classify", "detect"] = "auto"
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    target: str = "x86-cpu"
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    export: ExportConfig = ExportConfig()
    bench: BenchConfig = BenchConfig()
    search: SearchConfig = SearchConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    package: PackageConfig = PackageConfig()
    detect: DetectConfig = DetectConfig()


def _format_error(err: ValidationError, prefix: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        parent: Any = RunConfig
        for part in first["loc"][:-1]:
            field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
            parent = field.annotation if field is not None else None
        allowed = sorted(parent.model_fields) if isinstance(parent, type) else []
        hint = f" (allowed keys here: {', '.join(allowed)})" if allowed else ""
        return f"{prefix}unknown key {where!r}{hint}"
    if kind == "literal_error":
        expected = first.get("ctx", {}).get("expected", "")
        return f"{prefix}{where}: {first['input']!r} is not allowed; choose one of {expected}"
    msg = first["msg"].removeprefix("Value error, ")
    return f"{prefix}{where}: {msg} (got {first.get('input')!r})"


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise EdgekdError(f"--set {dotted}: {part!r} is not a section; use a key inside a section")
        node = child
    node[parts[-1]] = value


def parse_set_option(item: str) -> tuple[str, Any]:
    """``"distill.lr=0.1"`` -> ``("distill.lr", 0.1)``; the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise EdgekdError(f"--set {item!r}: expected KEY=VALUE, e.g. --set distill.lr=0.1")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise EdgekdError(
            f"config file {path} cannot be read as UTF-8 text ({str(exc).splitlines()[0][:120]}); "
            "save it as a UTF-8 YAML file"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError) and "for the tag" in problem:
            tag = problem.split("for the tag", 1)[1].strip().strip("'\"").replace("tag:yaml.org,2002:", "!!")
            raise EdgekdError(
                f"config file {path}{where}: the tag {tag} is refused: edgekd reads plain YAML (mappings, lists, "
                "numbers, text) and never builds objects named by a tag, which could run code; remove the tag and "
                "write the value itself"
            ) from None
        raise EdgekdError(f"config file {path} is not valid YAML{where}: {problem}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EdgekdError(f"config file {path} must hold a mapping of sections, not {type(data).__name__}")
    return data


def build_config(
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Merge ``base`` (e.g. a run's saved config), a YAML file, then dotted ``overrides``; validate."""
    tree: dict[str, Any] = dict(base or {})
    if yaml_path is not None:
        tree = _deep_merge(tree, read_yaml(yaml_path))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(tree, key, value)
    source = f"config {yaml_path}: " if yaml_path else "config: "
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise EdgekdError(_format_error(err, source)) from None


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


__all__ = [
    "AdversarialConfig",
    "AugmentConfig",
    "BYOTConfig",
    "BenchConfig",
    "CSKDConfig",
    "CacheConfig",
    "CrossModalConfig",
    "DMLConfig",
    "DataConfig",
    "DataFreeConfig",
    "DistillConfig",
    "ExportConfig",
    "GateConfig",
    "GuardConfig",
    "LifelongConfig",
    "MethodConfig",
    "MultiTeacherConfig",
    "PackageConfig",
    "QuantizeConfig",
    "RunConfig",
    "SchemeFields",
    "SearchConfig",
    "StudentConfig",
    "TapSites",
    "TapsConfig",
    "TeacherConfig",
    "TeacherTrainConfig",
    "TfKDConfig",
    "build_config",
    "dump_config",
    "parse_set_option",
    "read_yaml",
]
