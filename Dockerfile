# edgekd in a container: `docker run edgekd compress ...` / `bench` / `package`.
#
# CPU (the default; PyTorch's CPU wheels):
#   docker build -t edgekd .
#   docker run --rm -v "$PWD:/work" edgekd compress --teacher teacher.pt --target x86-cpu --out runs/cpu
#
# CUDA (a GPU runner; PyPI's torch wheels bring their own CUDA libraries, the base image brings the
# driver integration and Ubuntu 24.04's Python 3.12):
#   docker build -t edgekd:cuda --build-arg BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#       --build-arg TORCH_INDEX=https://pypi.org/simple --build-arg ORT=onnxruntime-gpu .
#   docker run --rm --gpus all -v "$PWD:/work" edgekd:cuda bench runs/x --runtime onnxruntime-cuda,torch-cuda
#
# Nothing is downloaded at run time; data and teachers are mounted (/work is the working directory).
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG ORT=onnxruntime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive \
    MPLBACKEND=Agg PATH=/opt/edgekd/bin:$PATH

# CUDA bases are plain Ubuntu: add Python and venv there (python:*-slim already has them).
RUN if ! python3 -m venv --help >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/edgekd

WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgekd ./edgekd
# torch and torchvision as the tested pair (pyproject.toml), from the index that fits the base.
RUN pip install --index-url "${TORCH_INDEX}" --extra-index-url https://pypi.org/simple \
        torch==2.14.1 torchvision==0.29.1 \
    && pip install . \
    && if [ "${ORT}" != "onnxruntime" ]; then pip uninstall -y onnxruntime && pip install "${ORT}"; fi \
    && edgekd --version

RUN useradd --create-home --uid 10001 edgekd && mkdir -p /work && chown edgekd /work
USER edgekd
WORKDIR /work
ENTRYPOINT ["edgekd"]
CMD ["--help"]
