"""The bundle's Dockerfile for its target: the base image and the few lines on top of it.

Base images (checked 2026-11 against public Dockerfiles and docs found with the project's search
tool; NGC tags can be listed with ``docker manifest inspect IMAGE``):

- Jetson, by the JetPack the target runs (the profile lists them; the newest is the default):
  JetPack 4.6.1 (L4T R32.7.1, TensorRT 8.2.1): ``nvcr.io/nvidia/l4t-tensorrt:r8.2.1-runtime``
  (used as ``FROM`` in public Jetson Nano projects); JetPack 5.0.2 (L4T R35.1.0):
  ``nvcr.io/nvidia/l4t-jetpack:r35.1.0``; JetPack 5.1.1 (L4T R35.3.1, TensorRT 8.5.2):
  ``nvcr.io/nvidia/l4t-jetpack:r35.3.1`` (jetson-containers selects it for L4T R35.3.1);
  JetPack 6.2 (L4T R36.4): ``nvcr.io/nvidia/l4t-jetpack:r36.4.0``, which "carries CUDA 12.6,
  cuDNN 9.3 and TensorRT 10.3 inside the image (since JetPack 5, l4t-base no longer mounts them
  from the host)" (a public deployment guide; the ``l4t-jetpack`` images hold trtexec under
  /usr/src/tensorrt/bin). The container's L4T release must match the device's.
- Data-centre GPUs: ``nvcr.io/nvidia/tensorrt:24.08-py3`` (TensorRT 10.3, CUDA 12.6, Python 3.10;
  trtexec included).
- CPU: ``python:3.11-slim`` with onnxruntime, numpy and Pillow pinned to the versions edgekd ran.

Engines are never shipped: GPU bundles build ``engine/model.engine`` with ``build_engine.sh`` on the
device at the container's first start (``entrypoint.sh``), into a volume.
"""

from __future__ import annotations

from edgekd.errors import EdgekdError

JETSON_BASES = {
    "4.6.1": "nvcr.io/nvidia/l4t-tensorrt:r8.2.1-runtime",
    "5.0.2": "nvcr.io/nvidia/l4t-jetpack:r35.1.0",
    "5.1.1": "nvcr.io/nvidia/l4t-jetpack:r35.3.1",
    "6.2": "nvcr.io/nvidia/l4t-jetpack:r36.4.0",
}
GPU_BASE = "nvcr.io/nvidia/tensorrt:24.08-py3"
# Where a TensorRT bundle's container keeps its engine: the Dockerfile's VOLUME and its ENV
# EDGEKD_ENGINE_DIR (read by entrypoint.sh, build_engine.sh and infer.py), and what the model card says.
ENGINE_DIR = "/app/engine"
CPU_BASE = "python:3.11-slim"


def base_image(kind: str, jetpack: str | None, override: str | None) -> str:
    if override:
        return override
    if kind == "cpu":
        return CPU_BASE
    if kind == "gpu":
        return GPU_BASE
    if jetpack not in JETSON_BASES:
        raise EdgekdError(
            f"no known L4T base image for JetPack {jetpack}; pass --set package.base_image=IMAGE "
            f"(known: JetPack {', '.join(JETSON_BASES)})"
        )
    return JETSON_BASES[jetpack]


def dockerfile(kind: str, base: str, files: list[str], *, versions: dict[str, str], title: str) -> str:
    """Dockerfile text; ``files`` are the bundle files copied into /app (all exist in the bundle)."""
    copy = "COPY " + " ".join(files) + " /app/"
    if kind == "cpu":
        pins = " ".join(
            f"{pkg}=={versions[key]}" if versions.get(key) else pkg
            for pkg, key in (("onnxruntime", "onnxruntime"), ("numpy", "numpy"), ("pillow", "pillow"))
        )
        return f"""# {title}
# CPU: ONNX Runtime on a slim Python base. Build and run (from this folder):
#   docker build -t edgekd-model .
#   docker run --rm -v "$PWD/data:/data" edgekd-model --npz /data/val.npz --bench
FROM {base}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN pip install --no-cache-dir {pins}
WORKDIR /app
{copy}
RUN useradd --create-home --uid 10001 app
USER app
ENTRYPOINT ["python", "/app/infer.py"]
CMD ["--help"]
"""
    runtime = "--runtime nvidia" if kind == "jetson" else "--gpus all"
    return f"""# {title}
# TensorRT target. The engine is built ON THE DEVICE at the first start (entrypoint.sh runs
# build_engine.sh; engines fit one GPU model and TensorRT version, so none is shipped), into the
# volume {ENGINE_DIR} (EDGEKD_ENGINE_DIR), and reused while the GPU and TensorRT version stay the same.
#   docker build -t edgekd-model .
#   docker run --rm {runtime} -v edgekd-engine:{ENGINE_DIR} edgekd-model --build-engine   # optional: build it now
#   docker run --rm {runtime} -v edgekd-engine:{ENGINE_DIR} -v "$PWD/data:/data" edgekd-model \\
#       --npz /data/val.npz --bench
FROM {base}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DEBIAN_FRONTEND=noninteractive EDGEKD_ENGINE_DIR={ENGINE_DIR}
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip python3-numpy python3-pil \\
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
{copy}
RUN chmod +x /app/entrypoint.sh /app/build_engine.sh && mkdir -p {ENGINE_DIR}
VOLUME {ENGINE_DIR}
ENTRYPOINT ["/app/entrypoint.sh"]
CMD ["--help"]
"""
