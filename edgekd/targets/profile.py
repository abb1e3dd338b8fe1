"""The schema of a target profile: one edge target's hardware figures and software stack.

A profile is data (a YAML file under ``profiles/`` or the user's own file); this model validates
it. Unknown fields are rejected so that a typo in a profile fails loudly instead of being ignored.
Every hardware figure may be null (unknown); a figure that is known cites its source in
``sources`` (REFERENCES.md asks that every number carry its citation).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Kind = Literal["jetson", "gpu", "cpu"]
Runtime = Literal["tensorrt", "onnxruntime"]
Precision = Literal["fp32", "fp16", "int8"]

NUMERIC_FIELDS = (
    "int8_tops_dense",
    "int8_tops_sparse",
    "gpu_int8_tops_dense",
    "fp16_tflops",
    "tf32_tflops",
    "fp32_tflops",
    "memory_bandwidth_gbs",
    "dla_cores",
    "max_batch",
    "compute_efficiency",
    "int8_efficiency",
    "memory_efficiency",
    "kernel_overhead_us",
    "run_overhead_us",
)
# The latency model's own figures (edgekd/targets/latency.py); a profile may leave them null and
# get the defaults for its kind, which latency.py labels as edgekd defaults.
LATENCY_MODEL_FIELDS = (
    "compute_efficiency",
    "int8_efficiency",
    "memory_efficiency",
    "kernel_overhead_us",
    "run_overhead_us",
)


class TargetProfile(BaseModel):
    """One deployment target (a Jetson module, a data-centre GPU or a CPU).

    ``jetpack``, ``tensorrt`` and ``cuda`` are parallel lists: entry ``i`` of each belongs to the
    same software stack (e.g. JetPack 6.2 with TensorRT 10.3 and CUDA 12.6). They are empty where
    the stack is not fixed by the target (data-centre GPUs, CPUs).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)  # other names users may type for this target
    display_name: str = ""
    kind: Kind
    runtime: Runtime
    precision: Precision
    int8_tops_dense: float | None = Field(default=None, ge=0)
    int8_tops_sparse: float | None = Field(default=None, ge=0)
    # INT8 of the GPU alone where int8_tops_* are module totals that include the DLAs (a TensorRT
    # engine runs on the GPU); null when int8_tops_dense is the GPU's own figure.
    gpu_int8_tops_dense: float | None = Field(default=None, ge=0)
    fp16_tflops: float | None = Field(default=None, ge=0)  # dense FP16 (tensor cores where present), GPU only
    # dense TF32 tensor throughput: TensorRT runs FP32 layers as TF32 by default on Ampere and later
    tf32_tflops: float | None = Field(default=None, ge=0)
    fp32_tflops: float | None = Field(default=None, ge=0)
    memory_bandwidth_gbs: float | None = Field(default=None, ge=0)
    dla_cores: int | None = Field(default=None, ge=0)
    # Latency model (roofline) parameters: fraction of peak compute reached by large convolutions,
    # the same for INT8 kernels, fraction of the memory bandwidth reached, fixed cost per kernel and
    # per inference call (microseconds). Null: the edgekd default for the profile's kind.
    compute_efficiency: float | None = Field(default=None, gt=0, le=1)
    int8_efficiency: float | None = Field(default=None, gt=0, le=1)
    memory_efficiency: float | None = Field(default=None, gt=0, le=1)
    kernel_overhead_us: float | None = Field(default=None, ge=0)
    run_overhead_us: float | None = Field(default=None, ge=0)
    compute_capability: str | None = None
    jetpack: list[str] = Field(default_factory=list)
    tensorrt: list[str] = Field(default_factory=list)
    cuda: list[str] = Field(default_factory=list)
    max_batch: int = Field(default=1, ge=1)
    # The instruction-set class of the CPU that runs the ONNX Runtime CPU flavour of INT8
    # (edgekd/runtimes/onnxruntime/int8_encoding.py): "host" = the machine edgekd runs on, read from its CPU flags.
    cpu_isa: Literal["host", "x86-64-vnni", "x86-64-avx512", "x86-64-avx2", "x86-64", "arm64"] = "host"
    sources: dict[str, str] = Field(default_factory=dict)

    @field_validator("compute_capability", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        """Accept ``8.7`` written without quotes in YAML; keep versions as text."""
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("jetpack", "tensorrt", "cuda", mode="before")
    @classmethod
    def _versions_as_text(cls, value: Any) -> Any:
        """Accept ``[6.2]`` written without quotes in YAML; keep every version as text."""
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> TargetProfile:
        """Fill ``display_name``, check parallel stack lists and that sources name real fields."""
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)
        if self.jetpack and not (len(self.tensorrt) == len(self.cuda) == len(self.jetpack)):
            raise ValueError("jetpack, tensorrt and cuda must be lists of the same length (one entry per stack)")
        unknown = sorted(set(self.sources) - set(type(self).model_fields))
        if unknown:
            raise ValueError(f"sources names unknown field(s) {', '.join(unknown)}")
        return self

    def known_figures(self) -> dict[str, float]:
        """The numeric fields that are not null, by name."""
        return {f: getattr(self, f) for f in NUMERIC_FIELDS if getattr(self, f) is not None}

    def cpu_flavour_isa(self) -> tuple[str, str]:
        """(instruction-set class, where it came from) of the CPU that runs the INT8 CPU flavour.

        A CPU target that names its instruction set gets it; everything else (``host``, and GPU or
        Jetson targets, whose CPU flavour only serves the bench on this machine) gets this host's.
        """
        if self.kind == "cpu" and self.cpu_isa != "host":
            return self.cpu_isa, f"target profile {self.name}"
        from edgekd.runtimes.onnxruntime.int8_encoding import host_isa

        return host_isa(), "this host's CPU (CPUID)"
