"""The calibration table (LUT): layer latencies measured on the target itself by ``edgekd profile``.

A table holds, per precision:

- ``entries``: measured milliseconds of single layers, keyed by the layer's shape signature
  (:attr:`edgekd.targets.graph_cost.Layer.key`), as Once-for-All keeps one table per device;
- ``fits``: for each layer kind, ``ms = a + b * MFLOPs + c * M elements moved`` fitted (non-negative
  least squares, relative error) to that kind's measurements, which prices the layers the grid did
  not measure;
- ``run_overhead_ms``: the fixed cost of one inference call (a one-node model);
- ``graph_factors``: per kind, what a layer costs inside a graph relative to alone (shape-keeping
  layers are also timed as a chain of copies; the marginal copy has no call overhead and no layout
  conversion at the graph's edges), applied to the points of that kind that cannot be chained.

Where tables live: ``$EDGEKD_LUT_DIR/<target>.json`` when that variable is set, else
``~/.cache/edgekd/lut/<target>.json`` (``<target>`` is the profile's canonical name).
``estimate_latency(..., lut="auto")`` loads the table from there when it exists; pass a
:class:`LatencyTable` (or ``load_table(path)``) to use another one, or ``lut=None`` for the bare
roofline. A table is host-specific: it records the machine it was measured on.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.io import atomic_write_json

TABLE_VERSION = 1


def lut_dir() -> Path:
    """The folder of default tables: ``$EDGEKD_LUT_DIR`` or ``~/.cache/edgekd/lut``."""
    env = os.environ.get("EDGEKD_LUT_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgekd" / "lut"


def default_table_path(target_name: str) -> Path:
    """Where ``edgekd profile --target NAME`` writes its table and ``lut="auto"`` looks for it."""
    return lut_dir() / f"{target_name}.json"


@dataclass
class KindFit:
    """``ms = a_ms + b_ms_per_mflop * MFLOPs + c_ms_per_melement * (M elements) ** exponent`` for one
    layer kind (``exponent`` is 1 except for the NMS term, superlinear in its candidates)."""

    a_ms: float
    b_ms_per_mflop: float
    c_ms_per_melement: float
    samples: int
    median_rel_error: float  # on the grid it was fitted to
    exponent: float = 1.0

    def predict(self, flops: float, elements: float) -> float:
        moved = (elements / 1e6) ** self.exponent if elements > 0 else 0.0
        return self.a_ms + self.b_ms_per_mflop * flops / 1e6 + self.c_ms_per_melement * moved


@dataclass
class PrecisionTable:
    entries: dict[str, float] = field(default_factory=dict)  # layer key -> measured ms
    fits: dict[str, KindFit] = field(default_factory=dict)  # layer kind -> fit
    run_overhead_ms: float = 0.0
    # layer kind -> (cost inside a graph) / (cost of the layer timed alone), from chained measurements
    graph_factors: dict[str, float] = field(default_factory=dict)


@dataclass
class LatencyTable:
    """A calibration table for one target, measured on one machine with one runtime."""

    target: str
    runtime: str  # "onnxruntime" or "tensorrt"
    host: dict[str, Any]
    created: str
    grid: str  # "quick" or "default"
    precisions: dict[str, PrecisionTable] = field(default_factory=dict)
    threads: int | None = None
    clock: str = "wall"  # "cpu": timed by process CPU time (calibrate.CLOCKS)
    version: int = TABLE_VERSION

    def lookup(self, precision: str, key: str) -> float | None:
        table = self.precisions.get(precision)
        return None if table is None else table.entries.get(key)

    def fit(self, precision: str, kind: str) -> KindFit | None:
        table = self.precisions.get(precision)
        return None if table is None else table.fits.get(kind)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "table") -> LatencyTable:
        try:
            if data.get("version") != TABLE_VERSION:
                raise EdgekdError(
                    f"latency table {origin} has version {data.get('version')!r}, not {TABLE_VERSION}; "
                    "rerun `edgekd profile` to rebuild it"
                )
            precisions = {
                p: PrecisionTable(
                    entries={str(k): float(v) for k, v in t.get("entries", {}).items()},
                    fits={k: KindFit(**f) for k, f in t.get("fits", {}).items()},
                    run_overhead_ms=float(t.get("run_overhead_ms", 0.0)),
                    graph_factors={str(k): float(v) for k, v in t.get("graph_factors", {}).items()},
                )
                for p, t in data["precisions"].items()
            }
            return cls(
                target=str(data["target"]),
                runtime=str(data["runtime"]),
                host=dict(data.get("host", {})),
                created=str(data.get("created", "")),
                grid=str(data.get("grid", "")),
                precisions=precisions,
                threads=data.get("threads"),
                clock=str(data.get("clock", "wall")),
            )
        except EdgekdError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise EdgekdError(
                f"latency table {origin} is malformed ({type(err).__name__}: {err}); rerun `edgekd profile`"
            ) from None


def load_table(path: str | os.PathLike) -> LatencyTable:
    """Read a table written by ``edgekd profile``."""
    p = Path(path)
    if not p.is_file():
        raise EdgekdError(f"latency table {p} does not exist; run `edgekd profile --target NAME --out {p}` first")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EdgekdError(f"latency table {p} is not valid JSON ({err}); rerun `edgekd profile`") from None
    if not isinstance(data, dict):
        raise EdgekdError(f"latency table {p} must be a JSON object; rerun `edgekd profile`")
    return LatencyTable.from_dict(data, str(p))


def find_table(target_name: str) -> LatencyTable | None:
    """The default table of ``target_name`` when ``edgekd profile`` has written one, else None."""
    path = default_table_path(target_name)
    return load_table(path) if path.is_file() else None
