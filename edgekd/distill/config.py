"""The ``distill`` slice of the config: loss terms, schemes, taps, teacher guard and cache."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgekd.schema import Strict as _Strict


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
        if not isinstance(data["methods"], list | tuple | type(None)):
            return data  # not a list: the field's own validation says so in one line
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
