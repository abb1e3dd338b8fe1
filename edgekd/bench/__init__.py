"""Bench: measurement primitives (ONNX Runtime sessions, latency, accuracy, host, model size).

The bench stage and its reports are built on top of these.
"""

from edgekd.bench.model_size import model_size
from edgekd.host import host_description, physical_cores
from edgekd.runtimes.onnxruntime.session import evaluate_accuracy, make_session, measure_latency

__all__ = [
    "evaluate_accuracy",
    "host_description",
    "make_session",
    "measure_latency",
    "model_size",
    "physical_cores",
]
