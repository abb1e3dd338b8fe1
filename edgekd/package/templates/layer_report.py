#!/usr/bin/env python3
"""Which layers of a TensorRT engine run in INT8, FP16 and FP32, and for how long.

    python3 layer_report.py model.layers.json [model.profile.json] [--json report.json]

Reads the engine's layer information (``trtexec --profilingVerbosity=detailed --exportLayerInfo``,
or the engine inspector's JSON) and, when given, the per-layer times (``trtexec --dumpProfile
--exportProfile``); prints a Markdown summary (time and layer count per precision, then every layer)
and writes the same as JSON with ``--json``. ``build_engine.sh`` runs it after building the engine.

A layer's precision is the data type of its first input, as NVIDIA's TensorRT Engine Explorer
(trex, ``Layer.precision``) defines it: an INT8 convolution reads INT8; a Q (Reformat) layer reads
FP32 or FP16 and writes INT8. The type is read from the ``Format/Datatype`` text of the tensor
("Row major linear FP32", "Thirty-two wide channel vectorized row major Int8 format", "Half", ...).
With ``--profilingVerbosity=layer_names_only`` the file has names only and every precision is
"unknown". Standard library only: it runs on the device's Python (3.6 on JetPack 4).
"""

import argparse
import json
import re
import sys

# Data-type words of TensorRT's format strings (trex activations.py), most specific first.
_TYPES = [
    ("BFloat16", "BF16"),
    ("BF16", "BF16"),
    ("FP8", "FP8"),
    ("FP16", "FP16"),
    ("Half", "FP16"),
    ("FP32", "FP32"),
    ("Float", "FP32"),
    ("UInt8", "UINT8"),
    ("Int8", "INT8"),
    ("INT8", "INT8"),
    ("Int32", "INT32"),
    ("INT32", "INT32"),
    ("Int64", "INT64"),
    ("Bool", "BOOL"),
    ("BOOL", "BOOL"),
]
ORDER = ["INT8", "FP16", "BF16", "FP8", "FP32", "INT32", "INT64", "UINT8", "BOOL", "unknown"]


def tensor_precision(fmt):
    """'Row major linear FP32' -> 'FP32'; 'Four wide channel vectorized row major Int8 format' -> 'INT8'."""
    for word, name in _TYPES:
        if re.search(r"(^|[^A-Za-z])" + word + r"([^A-Za-z0-9]|$)", fmt or ""):
            return name
    return "unknown"


def layer_precision(layer):
    """The precision a layer runs in: its first input's type (else its first output's)."""
    if not isinstance(layer, dict):
        return "unknown"
    for key in ("Inputs", "Outputs"):
        tensors = layer.get(key) or []
        if tensors and isinstance(tensors[0], dict):
            return tensor_precision(tensors[0].get("Format/Datatype", ""))
    return "unknown"


def read_layers(info):
    """The layer list of an exported layer-information JSON (a dict with "Layers", or a bare list)."""
    layers = info.get("Layers", []) if isinstance(info, dict) else info
    return [x if isinstance(x, dict) else {"Name": str(x)} for x in layers]


def read_times(profile):
    """{layer name: average ms per run} from trtexec's --exportProfile JSON ([{"count": N}, {"name",
    "averageMs", ...}, ...]); a name listed twice (several profiles) is summed."""
    times = {}
    for entry in profile or []:
        if isinstance(entry, dict) and "name" in entry:
            ms = entry.get("averageMs", entry.get("timeMs", 0.0))
            times[entry["name"]] = times.get(entry["name"], 0.0) + float(ms)
    return times


def summarise(info, profile=None):
    """{"layers": [{name, type, precision, ms}], "by_precision": {precision: {layers, ms, percent}},
    "total_ms", "timed"}."""
    times = read_times(profile)
    rows = []
    for layer in read_layers(info):
        name = layer.get("Name", "")
        rows.append(
            {
                "name": name,
                "type": layer.get("LayerType", layer.get("ParameterType", "")),
                "precision": layer_precision(layer),
                "ms": times.get(name),
            }
        )
    total = sum(r["ms"] or 0.0 for r in rows)
    by = {}
    for r in rows:
        entry = by.setdefault(r["precision"], {"layers": 0, "ms": 0.0})
        entry["layers"] += 1
        entry["ms"] += r["ms"] or 0.0
    for entry in by.values():
        entry["ms"] = round(entry["ms"], 6)
        entry["percent"] = round(100.0 * entry["ms"] / total, 2) if total > 0 else None
    ordered = {k: by[k] for k in sorted(by, key=lambda p: ORDER.index(p) if p in ORDER else len(ORDER))}
    return {"layers": rows, "by_precision": ordered, "total_ms": round(total, 6), "timed": bool(times)}


def markdown(report):
    lines = ["| precision | layers | time (ms) | share |", "|---|---:|---:|---:|"]
    for prec, e in report["by_precision"].items():
        share = "" if e["percent"] is None else "{:.1f}%".format(e["percent"])
        ms = "{:.4f}".format(e["ms"]) if report["timed"] else "n/a"
        lines.append("| {} | {} | {} | {} |".format(prec, e["layers"], ms, share))
    total = "{:.4f} ms".format(report["total_ms"]) if report["timed"] else "not timed (no profile)"
    lines += ["", "Sum of layer times: " + total, "", "| layer | type | precision | ms |", "|---|---|---|---:|"]
    for r in report["layers"]:
        ms = "" if r["ms"] is None else "{:.4f}".format(r["ms"])
        lines.append("| {} | {} | {} | {} |".format(r["name"].replace("|", "/"), r["type"], r["precision"], ms))
    return "\n".join(lines) + "\n"


def _load(path):
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Precision and time per layer of a TensorRT engine.")
    parser.add_argument("layers", help="layer information JSON (trtexec --exportLayerInfo)")
    parser.add_argument("profile", nargs="?", help="per-layer times JSON (trtexec --exportProfile); optional")
    parser.add_argument("--json", help="also write the summary here")
    args = parser.parse_args(argv)
    try:
        info = _load(args.layers)
    except (OSError, ValueError) as err:
        sys.exit("layer_report.py: cannot read {}: {}".format(args.layers, err))
    profile = None
    if args.profile:
        try:
            profile = _load(args.profile)
        except (OSError, ValueError):
            profile = None  # the timing run failed or was skipped: report precisions only
    report = summarise(info, profile)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    sys.stdout.write(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
