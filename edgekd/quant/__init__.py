"""INT8 quantization: BN folding, fake quantization, calibration, QAT with KD, sensitivity.

``prepare_int8(model)`` turns an FP32 model into a :class:`QuantizedModel` (folded, traced, with
fake quantizers); ``calibrate`` sets its activation ranges; ``qat.quantization_aware_kd`` fine-tunes
it with the FP32 model as the teacher; ``sensitivity`` finds the layers to keep in float.
"""

from edgekd.quant.calibrate import CALIBRATORS
from edgekd.quant.graph import QuantizedModel, fold_batchnorm, prepare_int8

__all__ = ["CALIBRATORS", "QuantizedModel", "fold_batchnorm", "prepare_int8"]
