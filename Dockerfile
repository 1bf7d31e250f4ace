# syntax=docker/dockerfile:1
# paygate gateway image. Build from the repository root:
#   docker build -t paygate:local .
# The same image runs the gateway (`paygate serve`), migrations (`paygate migrate`)
# and the sandbox channel simulator (`paygate sandbox`).

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: build the wheel and install it (with its dependencies) into a venv ----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/paygate
COPY . .
RUN /opt/paygate/bin/pip install --upgrade pip \
 && /opt/paygate/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/paygate/bin/pip install /wheels/paygate-*.whl \
 && /opt/paygate/bin/paygate --help >/dev/null

# --- runtime: the venv only, non-root ------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/paygate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PAYGATE_CONFIG=/etc/paygate/paygate.toml
RUN groupadd --system --gid 10001 paygate \
 && useradd --system --uid 10001 --gid paygate --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin paygate
COPY --from=builder /opt/paygate /opt/paygate
COPY deploy/paygate.docker.toml /etc/paygate/paygate.toml
USER 10001:10001
# 50051 gRPC API, 8080 channel callbacks (HTTP), 9464 Prometheus /metrics
EXPOSE 50051 8080 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["paygate", "health", "--address", "127.0.0.1:50051", "--timeout", "3"]
ENTRYPOINT ["paygate"]
CMD ["serve"]
