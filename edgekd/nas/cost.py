"""What a candidate costs before it is trained: parameters, FLOPs and estimated target latency.

The latency comes from the latency model (``edgekd.targets.latency.estimate_latency``): a
calibration table from ``edgekd profile`` where one exists for the target, else the roofline.
Every latency carries its source (``lut``, ``roofline``, ``lut+roofline``); all are modelled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models import count_parameters, create_model


@dataclass(frozen=True)
class Cost:
    parameters: int
    flops: float
    latency_ms: float
    latency_source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_cost(model: nn.Module, target: str, input_shape: tuple[int, int, int], precision: str) -> Cost:
    """Parameters, FLOPs and the modelled batch-1 latency of ``model`` on ``target`` at ``precision``."""
    from edgekd.targets.latency import estimate_latency

    was_training = model.training
    model.eval()
    try:
        est = estimate_latency(model, target, input_shape=tuple(input_shape), precision=precision, batch=1)
    finally:
        model.train(was_training)
    return Cost(count_parameters(model), float(est.flops), float(est.ms), str(est.source))


def spec_cost(spec: dict[str, Any] | str, target: str, input_shape: tuple[int, int, int], precision: str) -> Cost:
    return model_cost(create_model(spec), target, input_shape, precision)


def teacher_cost(model: nn.Module, target: str, input_shape: tuple[int, int, int], precision: str) -> Cost:
    """The teacher's cost; a teacher the latency model cannot read is a one-line error."""
    try:
        return model_cost(model, target, input_shape, precision)
    except EdgekdError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a TorchScript teacher the tracer cannot walk
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise EdgekdError(
            f"cannot estimate the teacher's latency ({first}); give the budget in milliseconds with --latency-ms"
        ) from None
