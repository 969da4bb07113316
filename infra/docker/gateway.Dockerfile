# The gateway and controller image: slim, no torch, no CUDA.
# Build from the repository root: docker build -f infra/docker/gateway.Dockerfile -t pagefleet-gateway .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY platform platform
COPY workers workers
COPY kernels kernels
# The distribution depends on torch for the workers; the gateway installs pagefleet without
# dependencies, then only what the control plane imports.
RUN pip install --no-cache-dir --prefix=/install --no-deps . \
 && pip install --no-cache-dir --prefix=/install \
      msgspec "litestar>=2.12" uvicorn httpx "redis>=5" "celery[redis]>=5.4" \
      prometheus-client "kubernetes>=30" pyyaml \
      "hiredis>=3.2" "uvloop>=0.15.1" "httptools>=0.8"

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --uid 10001 --create-home pagefleet \
 && python -c "import pagefleet.platform.gateway, pagefleet.platform.controller.runner, sys; assert 'torch' not in sys.modules"
USER 10001
EXPOSE 8000
ENTRYPOINT ["pagefleet"]
CMD ["gateway", "--host", "0.0.0.0", "--port", "8000"]
