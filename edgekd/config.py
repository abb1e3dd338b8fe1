"""The whole pipeline's configuration as pydantic models, and how it is assembled.

Precedence, lowest first: the defaults below, a YAML file (``--config``, e.g. a preset under
``pipelines/``), then CLI flags and ``--set key=value`` overrides. Unknown keys and bad values fail
with one line naming the field and what is allowed. The resolved config is written to
``RUN_DIR/config.yaml``; each stage reads only its own slice of it (``Stage.config_keys``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekd.errors import EdgekdError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    augment: AugmentConfig = AugmentConfig()
    num_workers: int = Field(0, ge=0)


class TeacherConfig(_Strict):
    checkpoint: str | None = None
    arch: str | dict[str, Any] | None = None  # needed for a bare state_dict
    trust_checkpoint: bool = False  # allow unpickling a whole nn.Module (runs code from the file)


class StudentConfig(_Strict):
    # A zoo name ("resnet8"), "tv:NAME", an arch spec dict, or "auto" (picked from the teacher).
    arch: str | dict[str, Any] = "auto"


class MethodConfig(_Strict):
    """One distillation loss term: ``weight * method(student taps, teacher taps, labels)``."""

    name: str
    weight: float = Field(1.0, ge=0.0)
    params: dict[str, Any] = {}


# ---- issue 3: distillation schemes, survey algorithms, teacher guard, teacher cache --------------
# Each scheme/algorithm's settings in its own model; ``distill.scheme`` picks one (see
# edgekd/distill/schemes/). Defaults follow each paper or its official code (cited in the files).
SchemeName = Literal[
    "offline",
    "dml",
    "byot",
    "cskd",
    "tfkd",
    "multi_teacher",
    "data_free",
    "adversarial",
    "cross_modal",
    "lifelong",
]


class DMLConfig(_Strict):
    """Deep mutual learning (Zhang et al. 2018): ``peers`` students trained together, no teacher."""

    peers: int = Field(2, ge=2, le=8)
    archs: list[str | dict[str, Any]] = []  # peer architectures after the first (default: the student's)
    T: float = Field(1.0, gt=0.0)  # the paper uses plain softmax outputs (T=1)


class BYOTConfig(_Strict):
    """Be Your Own Teacher (Zhang et al. 2019); official code defaults alpha 0.3, T 3, feature 0.03."""

    alpha: float = Field(0.3, ge=0.0, le=1.0)
    T: float = Field(3.0, gt=0.0)
    feature_weight: float = Field(0.03, ge=0.0)


class CSKDConfig(_Strict):
    """Class-wise self-KD (Yun et al. 2020): KL between two same-class samples' predictions, T=4, weight 1."""

    T: float = Field(4.0, gt=0.0)
    weight: float = Field(1.0, ge=0.0)


class TfKDConfig(_Strict):
    """Teacher-free KD, virtual teacher (Yuan et al. 2020): correct class ``a``, the rest (1-a)/(K-1)."""

    correct_prob: float = Field(0.9, gt=0.0, lt=1.0)
    T: float = Field(20.0, gt=0.0)
    alpha: float = Field(0.1, ge=0.0, le=1.0)  # (1 - alpha) * CE + alpha * multiplier * KL
    multiplier: float = Field(1.0, gt=0.0)


class MultiTeacherConfig(_Strict):
    """Several teachers' soft labels, averaged or confidence-weighted (CA-MKD, Zhang et al. 2022)."""

    checkpoints: list[str] = []  # further teachers (the run's --teacher is the first)
    weighting: Literal["average", "confidence"] = "confidence"
    T: float = Field(4.0, gt=0.0)  # temperature at which the soft labels are mixed (the KD method's T)
    feature_teacher: int = Field(0, ge=0)  # which teacher (0 = --teacher) supplies feature taps


class DataFreeConfig(_Strict):
    """DeepInversion (Yin et al. 2020): images synthesised from the teacher's BatchNorm statistics."""

    samples: int = Field(2048, ge=16)
    batch_size: int = Field(256, ge=2)
    iterations: int = Field(1000, ge=1)
    lr: float = Field(0.1, gt=0.0)
    bn_weight: float = Field(10.0, ge=0.0)  # r_feature
    first_bn_multiplier: float = Field(10.0, ge=1.0)
    tv_l2: float = Field(2.5e-5, ge=0.0)
    tv_l1: float = Field(0.0, ge=0.0)
    l2: float = Field(0.0, ge=0.0)
    jitter: int | None = Field(None, ge=0)  # pixels of random shift (default 1/8 of the side)
    ce_weight: float = Field(0.0, ge=0.0)  # CE to the synthesis targets while distilling


class AdversarialConfig(_Strict):
    """A discriminator on logits or embeddings that the student learns to fool (Xu et al. 2018)."""

    on: Literal["logits", "embedding"] = "logits"
    weight: float = Field(0.1, ge=0.0)
    lr: float = Field(2e-4, gt=0.0)
    hidden: int = Field(128, ge=4)
    conditional: bool = True  # the discriminator also sees the label (one-hot)


class CrossModalConfig(_Strict):
    """Teacher and student see different views of each sample (paired transforms)."""

    teacher_view: str = "identity"  # identity | grayscale | lowres:N
    student_view: str = "grayscale"


class LifelongConfig(_Strict):
    """Learning without Forgetting (Li & Hoiem 2016): the old model's outputs on its classes, T=2."""

    T: float = Field(2.0, gt=0.0)
    weight: float = Field(1.0, ge=0.0)  # lambda_o


class GuardConfig(_Strict):
    """Teacher quality guard: auto switches to a safer setting when the teacher is not clearly better."""

    mode: Literal["auto", "warn", "off"] = "auto"
    margin: float = Field(0.01, ge=0.0, le=1.0)  # the teacher must beat the student alone by this much
    probe_epochs: int | None = Field(None, ge=1)  # default: a fifth of distill.epochs (at least 1)
    fallback: Literal["auto", "lower_kd", "dkd", "tfkd"] = "auto"

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML reads a bare `off` (e.g. --set distill.guard.mode=off) as false


class CacheConfig(_Strict):
    """Teacher output cache (top-k logits on disk, keyed by teacher, data, seed and epoch)."""

    enabled: bool = False
    dir: str | None = None  # default $EDGEKD_CACHE_DIR or ~/.cache/edgekd/teacher_outputs
    top_k: int = Field(32, ge=1)
    dtype: Literal["float16", "float32"] = "float32"


class SchemeFields(_Strict):
    """Mixed into ``DistillConfig``: the scheme and every algorithm's settings."""

    scheme: SchemeName = "offline"
    assistant: str | dict[str, Any] | None = None  # TAKD: teacher -> assistant -> student
    dml: DMLConfig = DMLConfig()
    byot: BYOTConfig = BYOTConfig()
    cskd: CSKDConfig = CSKDConfig()
    tfkd: TfKDConfig = TfKDConfig()
    multi_teacher: MultiTeacherConfig = MultiTeacherConfig()
    data_free: DataFreeConfig = DataFreeConfig()
    adversarial: AdversarialConfig = AdversarialConfig()
    cross_modal: CrossModalConfig = CrossModalConfig()
    lifelong: LifelongConfig = LifelongConfig()
    guard: GuardConfig = GuardConfig()
    cache: CacheConfig = CacheConfig()


# ---- end issue 3 schemes ------------------------------------------------------------------------


class TapSites(_Strict):
    """Module paths of one model's taps (``edgekd.distill.taps``); None: found automatically."""

    stages: list[str] | None = None  # e.g. [layer1, layer2, layer3]
    embedding: str | None = None  # e.g. avgpool (its output, flattened)


class TapsConfig(TapSites):
    """Tap overrides for both models; ``student``/``teacher`` sections win over the top level."""

    student: TapSites = TapSites()
    teacher: TapSites = TapSites()


class DistillConfig(SchemeFields):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[float] = [
        0.625,
        0.75,
        0.875,
    ]  # step schedule, as fractions of epochs (150/180/210 of 240)
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    warmup_epochs: int = Field(0, ge=0)
    # Warm-up ramp of the feature, relation and contrastive terms (not KD/DKD; DKD has its own): their
    # weights grow linearly per step from 0 to the configured weight over this many epochs
    # (edgekd.distill.trainer.ramp_factor). 0: off, the references' setting.
    feature_warmup_epochs: float = Field(0.0, ge=0.0)
    # Speed (edgekd.distill.speed): autocast precision (fp16 uses a GradScaler and needs CUDA; bf16 runs on
    # CPU too), channels_last memory format (None: auto, on: measured faster on CPU and CUDA; see
    # speed.use_channels_last), torch.compile of
    # student and teacher (off until measured). Losses are computed in float32 in every mode.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool | None = None
    compile: bool = False
    # RepDistiller / mdistiller defaults: 0.1 * CE + 0.9 * KD at T=4 (REFERENCES.md).
    # Left out, ce_weight follows the methods (``_default_ce_weight``): 0.1 with KD alone, else 1.0.
    ce_weight: float = Field(0.1, ge=0.0)
    methods: list[MethodConfig] = [MethodConfig(name="kd", weight=0.9, params={"T": 4.0})]
    baseline: bool = False  # also train the student without KD, so the report shows the gain
    taps: TapsConfig = TapsConfig()  # where feature taps are read (module paths); auto when unset

    @model_validator(mode="before")
    @classmethod
    def _default_ce_weight(cls, data: Any) -> Any:
        """The reference rule when ce_weight is not given: KD alone trains with 0.1 CE + 0.9 KD;
        feature/relation/contrastive weights are published with CE weight 1, and so are combinations."""
        if not isinstance(data, dict) or data.get("ce_weight") is not None or "methods" not in data:
            return data
        from edgekd.distill.methods import default_ce_weight, method_names

        names = []
        for m in data["methods"] or []:
            name = m.get("name") if isinstance(m, dict) else getattr(m, "name", None)
            if name not in method_names():
                return data  # the methods validator reports it
            names.append(name)
        return {**data, "ce_weight": default_ce_weight(names)}

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[MethodConfig]) -> list[MethodConfig]:
        from edgekd.distill.methods import method_names

        known = method_names()
        for m in methods:
            if m.name not in known:
                raise ValueError(f"unknown method {m.name!r}; choose one of {', '.join(known)}")
        return methods


class TeacherTrainConfig(DistillConfig):
    """``edgekd train-teacher``: the distill settings with plain cross-entropy."""

    ce_weight: float = 1.0
    methods: list[MethodConfig] = []


class ExportConfig(_Strict):
    opset: int = Field(17, ge=13, le=23)
    parity_samples: int = Field(64, ge=1)
    parity_atol: float = Field(1e-3, gt=0.0)  # max |logit(ORT) - logit(torch)| allowed
    parity_min_agreement: float = Field(0.99, ge=0.0, le=1.0)  # top-1 agreement allowed
    export_teacher: bool = True  # also export the teacher so bench compares like with like


class GateConfig(_Strict):
    """CI gates checked by the bench stage (issue 6). Unset gates are not checked.

    Accuracy is in percent and drops in percentage points, as the tables print them. The latency
    and accuracy gates apply to every benchmarked student row (each model format and runtime).
    """

    max_latency_ms: float | None = Field(None, gt=0)  # at batch 1, the percentile below
    latency_percentile: Literal["p50", "p90", "p99"] = "p50"
    min_accuracy_pct: float | None = Field(None, ge=0, le=100)
    max_accuracy_drop_points: float | None = Field(None, ge=0, le=100)  # student vs the teacher
    baseline: str | None = None  # an earlier bench/results.json
    max_regression_pct: float | None = Field(None, ge=0)  # p50 latency against the baseline, same row and batch


class BenchConfig(_Strict):
    threads: int | None = Field(None, ge=1)  # None: all physical cores
    warmup: int = Field(10, ge=0)
    runs: int = Field(60, ge=50)  # timed runs at batch 1, pooled over `sessions` fresh sessions
    sessions: int = Field(3, ge=1)
    throughput_batch: int = Field(32, ge=1)
    throughput_runs: int = Field(12, ge=3)
    # --- issue 6: runtimes, batch sizes, CI gates, plots ---
    # Runtimes to measure (edgekd/bench/runtimes.py): onnxruntime, onnxruntime-cuda,
    # onnxruntime-tensorrt, torch, torch-cuda, tensorrt. One that cannot run here is skipped with its reason.
    runtimes: list[str] = ["onnxruntime"]
    # Batch sizes to time; None: [1, throughput_batch]. Batch 1 gets `runs` timed runs, larger ones `throughput_runs`.
    batch_sizes: list[int] | None = None
    gates: GateConfig = GateConfig()
    plot: bool = True  # bench/accuracy_latency.png

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, runtimes: list[str]) -> list[str]:
        from edgekd.bench.runtimes import runtime_names

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


# ---- search (issue 4: teacher-guided, latency-bounded student search with NNI) ----------------
class SearchConfig(_Strict):
    """The NAS stage: runs when ``student.arch`` is "auto" (no --student) and ``enabled`` is set.

    The latency budget is ``latency_ms``, else ``latency_ratio`` times the teacher's estimated
    latency on the run's target at ``precision`` (default: the target's own precision).
    """

    enabled: bool = True  # False: no search; "auto" picks the usual hand-picked student
    families: list[Literal["mbv", "resnet"]] = ["mbv", "resnet"]
    strategy: Literal["evolution", "random", "tpe"] = "evolution"
    trials: int = Field(20, ge=1)  # candidates trained (rejected ones are not counted)
    latency_ms: float | None = Field(None, gt=0.0)
    latency_ratio: float = Field(0.5, gt=0.0)  # used when latency_ms is not set
    precision: Literal["fp32", "fp16", "int8"] | None = None
    proxy_epochs: int = Field(5, ge=1)
    proxy_train_samples: int | None = Field(1000, ge=10)
    proxy_val_samples: int | None = Field(2000, ge=10)
    proxy_batch_size: int = Field(32, ge=1)
    proxy_lr: float = Field(0.05, gt=0.0)
    population: int | None = Field(None, ge=2)  # evolution; None: trials // 2, between 4 and 20
    compare_zoo: list[str] | None = None  # hand-picked students scored on the same proxy; None: by input size
    threads: int | None = Field(None, ge=1)  # torch threads during the search (1 suits tiny proxies); None: as is
    engine: Literal["sequential", "nni-local"] = "sequential"
    concurrency: int = Field(1, ge=1)  # nni-local only
    port: int = Field(8745, ge=1024, le=65535)  # nni-local only: NNI's manager (listens on all interfaces)


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


class RunConfig(_Strict):
    """Everything one ``edgekd compress`` run uses; written to ``RUN_DIR/config.yaml``."""

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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
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
