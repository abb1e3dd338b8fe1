"""JUnit XML of a bench run, the format CI systems display as test results.

One ``<testsuite>`` per bench run with one ``<testcase>`` per measured model/runtime (skipped when
the runtime could not run here, with the reason) and one per gate and student row (failed with
the gate's message, which says by how much). Written with ``xml.etree`` so escaping is right.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from typing import Any


def junit_xml(results: dict[str, Any], *, timestamp: str, seconds: float) -> str:
    suites = ET.Element("testsuites", name="edgekd bench")
    suite = ET.SubElement(suites, "testsuite", name="edgekd.bench", timestamp=timestamp, hostname=socket.gethostname())
    props = ET.SubElement(suite, "properties")
    host = results.get("host", {})
    for key, value in (
        ("target", results.get("target")),
        ("cpu", host.get("cpu")),
        ("gpu", host.get("gpu")),
        ("onnxruntime", host.get("onnxruntime")),
    ):
        ET.SubElement(props, "property", name=key, value=str(value))
    tests = failures = skipped = 0
    for row in results["models"]:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"edgekd.bench.{row['runtime']}",
            name=f"{row['model']} {row['format']}",
            time=f"{row.get('seconds', 0):.3f}",
        )
        lat = row["latency_b1"]
        top1 = "n/a" if row.get("top1") is None else f"{100 * row['top1']:.2f}%"
        ET.SubElement(case, "system-out").text = (
            f"top-1 {top1}; batch {lat['batch_size']}: p50 {lat['p50_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms, "
            f"p99 {lat['p99_ms']:.3f} ms ({lat['source']}, {row.get('provider', '')})"
        )
        tests += 1
    for skip in results.get("skipped", []):
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"edgekd.bench.{skip['runtime']}",
            name=skip.get("what", "all models"),
            time="0",
        )
        ET.SubElement(case, "skipped", message=skip["reason"])
        tests += 1
        skipped += 1
    for gate in results.get("gates", []):
        case = ET.SubElement(
            suite, "testcase", classname=f"edgekd.gates.{gate['gate']}", name=gate["subject"], time="0"
        )
        if gate["status"] == "failed":
            failure = ET.SubElement(case, "failure", message=gate["message"], type="GateFailed")
            failure.text = f"{gate['gate']} failed for {gate['subject']}: {gate['message']}"
            failures += 1
        elif gate["status"] == "skipped":
            ET.SubElement(case, "skipped", message=gate["message"])
            skipped += 1
        else:
            ET.SubElement(case, "system-out").text = gate["message"]
        tests += 1
    for element in (suite, suites):
        element.set("tests", str(tests))
        element.set("failures", str(failures))
        element.set("errors", "0")
        element.set("skipped", str(skipped))
        element.set("time", f"{seconds:.3f}")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
