"""``MODEL_CARD.md`` of a bundle: what the model is, how well it does, how it was measured, how to run it."""

from __future__ import annotations

from typing import Any

from edgekd.package.dockerfiles import ENGINE_DIR


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def model_card(m: dict[str, Any]) -> str:
    model, acc, target = m["model"], m["metrics"], m["target"]
    int8_known = acc.get("student_int8_top1") is not None
    lines = [
        f"# {m['name']}",
        "",
        f"A {model['arch']} image classifier ({model['parameters']:,} parameters, {model['precision'].upper()}, "
        f"{len(m['labels'])} classes) distilled by edgekd {m['versions'].get('edgekd')} from a "
        f"{m['teacher'].get('arch') or m['teacher'].get('kind')} teacher, packaged for **{target['display_name']}** "
        f"({target['kind']}, runtime {target['runtime']}).",
        "",
        "## Files",
        "",
    ]
    for name, meta in sorted(m["files"].items()):
        lines.append(f"- `{name}` ({meta['bytes']:,} bytes, sha256 `{meta['sha256'][:16]}…`)")
    lines += [
        "- `manifest.json`: the sha256 of every file above, versions, metrics",
        "",
        "## Accuracy",
        "",
        f"- This bundle's model (`{model['file']}`): top-1 **{_pct(acc['top1'])}** on the {acc['samples']} images of "
        f"the validation split ({acc['split']}), measured by edgekd with {acc['measured_with']}. "
        "`infer.py --npz val.npz` on the same images reproduces it.",
        f"- Teacher: {_pct(acc.get('teacher_top1'))}; FP32 student in PyTorch: {_pct(acc.get('student_fp32_top1'))}"
        + (f"; INT8 student (fake-quant, PyTorch): {_pct(acc.get('student_int8_top1'))}" if int8_known else "")
        + ".",
    ]
    if model["format"] == "tensorrt-int8-qdq":
        lines.append(
            "- The TensorRT engine built from it on the device may differ from ONNX Runtime by a few images; "
            "check on the device with `infer.py --npz val.npz`."
        )
    lines += ["", "## Latency", ""]
    if m.get("latency"):
        for row in m["latency"]:
            lines.append(
                f"- {row['model']} {row['format']} ({row['runtime']}): p50 {row['p50_ms']:.3f} ms at batch 1, "
                f"{row['throughput_ips']:.0f} img/s at batch {row['throughput_batch']} — {row['source']} on "
                f"{row['host']}, not on the target."
            )
    else:
        lines.append("- Not benchmarked in this run.")
    lines.append("- On the target: `infer.py --npz val.npz --bench` (or `docker run ... --bench`) measures it there.")
    pre = m["preprocess"]
    lines += [
        "",
        "## Input",
        "",
        f"{pre['layout']} float32 `{pre['input_name']}` of shape (N, {', '.join(map(str, pre['shape']))}): pixels "
        f"/ 255, minus mean {pre['mean']}, divided by std {pre['std']} (`preprocess.json`). Image files are "
        f"converted to {'grayscale' if pre['shape'][0] == 1 else 'RGB'}, the shorter side resized to the model's "
        "side and centre-cropped.",
        "",
        "## Run",
        "",
        "    python3 infer.py picture.png --top-k 3",
        "    python3 infer.py --npz val.npz --bench       # x: uint8 images, y: labels",
        "",
    ]
    if target["runtime"] == "tensorrt":
        lines += [
            "With TensorRT on the device (engines are built there, never shipped):",
            "",
            "    ./build_engine.sh                     # writes engine/model.engine and its .json sidecar",
            "    python3 infer.py --engine engine/model.engine --npz val.npz --bench",
            "",
            f"Container ({m['docker']['base']}):",
            "",
            "    docker build -t edgekd-model .",
            f"    docker run --rm {'--runtime nvidia' if target['kind'] == 'jetson' else '--gpus all'} "
            f'-v edgekd-engine:{ENGINE_DIR} -v "$PWD/data:/data" edgekd-model --npz /data/val.npz --bench',
            "",
            f"The first start builds the engine into `{ENGINE_DIR}` (the image's `EDGEKD_ENGINE_DIR` and its "
            "volume; here the `edgekd-engine` volume, a minute or more on a Jetson); later starts reuse it while the "
            "GPU and TensorRT version stay the same. `... edgekd-model --build-engine` only builds it.",
        ]
    else:
        lines += [
            f"Container ({m['docker']['base']}):",
            "",
            "    docker build -t edgekd-model .",
            '    docker run --rm -v "$PWD/data:/data" edgekd-model --npz /data/val.npz --bench',
        ]
    if target.get("jetpack"):
        lines += [
            "",
            f"Built for JetPack {target['jetpack']} (TensorRT {target.get('tensorrt')}): the container's "
            "L4T release must match the device's (`cat /etc/nv_tegra_release`).",
        ]
    lines += [
        "",
        "## Limits",
        "",
        f"- Trained and evaluated on {m['data']['name']} ({m['data']['train_samples']} training images); "
        "accuracy elsewhere is not measured.",
        "- Latencies above were measured on the packaging host; the target's own numbers come from `--bench` there.",
        "",
    ]
    return "\n".join(lines)
