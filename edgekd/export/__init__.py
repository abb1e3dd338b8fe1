"""Export: ONNX files from PyTorch models, and checks that they compute what the model computes."""

from edgekd.export.onnx_export import export_onnx
from edgekd.export.parity import check_parity
from edgekd.models.prepare import cpu_eval_copy
from edgekd.runtimes.onnxruntime.infer import run_onnx

__all__ = ["check_parity", "cpu_eval_copy", "export_onnx", "run_onnx"]
