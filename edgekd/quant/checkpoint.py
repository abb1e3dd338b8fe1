"""``quantize/student_int8.pt``: the fake-quant student, saved as plain tensors and rebuilt on load.

    {"format": "edgekd.int8/1", "arch": {spec}, "input": {...}, "classes": [...],
     "state_dict": {...}, "skipped": [layers kept in float], "weight_bits": 8 or 7, "metrics": {...}}

The file holds no code: loading rebuilds the student from its arch spec, folds and prepares it the
same way (``prepare_int8`` is deterministic), and loads the folded weights and calibrated ranges
with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgekd.errors import EdgekdError
from edgekd.io import atomic_torch_save
from edgekd.models import create_model
from edgekd.quant.graph import QuantizedModel, prepare_int8

FORMAT = "edgekd.int8/1"


def quant_state(qm: QuantizedModel) -> dict[str, Any]:
    """What an INT8 file keeps of a QuantizedModel: folded weights and ranges, float layers, weight bits."""
    return {
        "state_dict": {k: v.detach().cpu() for k, v in qm.state_dict().items()},
        "skipped": list(qm.skipped),
        "weight_bits": qm.weight_bits,
    }


def restore_quant_state(qm: QuantizedModel, data: dict[str, Any]) -> None:
    """Loads into a freshly prepared QuantizedModel what ``quant_state`` saved."""
    qm.load_state_dict(data["state_dict"])
    qm.set_skipped(data.get("skipped", []))
    qm.set_weight_bits(int(data.get("weight_bits", 8)))


def read_int8_file(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """The dict in an INT8 file of format ``fmt`` (``weights_only=True``), or a one-line error naming ``what``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise EdgekdError(
            f"{path} is not a readable INT8 {what} ({type(err).__name__}); rerun `edgekd quantize`"
        ) from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise EdgekdError(f"{path} is not an edgekd INT8 {what} (format {fmt}); rerun `edgekd quantize`")
    return data


def save_int8(
    path: str | Path,
    qm: QuantizedModel,
    *,
    arch: dict[str, Any],
    input_spec: dict[str, Any],
    classes: list[str],
    metrics: dict[str, Any] | None = None,
) -> Path:
    return atomic_torch_save(
        path,
        {
            "format": FORMAT,
            "arch": arch,
            "input": input_spec,
            "classes": list(classes),
            **quant_state(qm),
            "metrics": metrics or {},
        },
    )


def load_int8(path: str | Path) -> tuple[QuantizedModel, dict[str, Any]]:
    """The QuantizedModel (CPU, eval) and the file's other entries."""
    data = read_int8_file(Path(path), FORMAT, "student")
    model = create_model(data["arch"], num_classes=len(data["classes"]), in_channels=data["input"]["shape"][0])
    qm = prepare_int8(model)
    restore_quant_state(qm, data)
    return qm.eval(), data
