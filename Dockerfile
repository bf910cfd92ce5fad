# One image per service, all from this file and the repository root as context:
#   docker build --build-arg SERVICE=taskgen --build-arg TORCH_VARIANT=none -t embedforge/taskgen:TAG .
#   docker build --build-arg SERVICE=trainer --build-arg TORCH_VARIANT=cu128 -t embedforge/trainer:TAG-cuda .
# SERVICE names a folder of services/. TORCH_VARIANT picks the torch wheel index, cpu (default) or
# a CUDA build such as cu128 (its runtime comes with the wheels, the driver from the node), or is
# none for a service that runs no model (taskgen, examplegen): those images get requirements-service.txt
# only, the others requirements-torch.txt as well. skaffold.yaml sets both per service.
# Stage 1 installs the pinned environment and generates the gRPC stubs from protos/;
# the final stage holds only the virtualenv, the stubs and the code, and runs as uid 10001.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG SERVICE
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements-service.txt requirements-torch.txt constraints.txt ./
# torch comes first from the variant's wheel index, at the version constraints.txt pins.
RUN test -n "$SERVICE" \
 && python -m venv /opt/venv \
 && if [ "$TORCH_VARIANT" != none ]; then \
      pip install --no-deps --index-url "https://download.pytorch.org/whl/$TORCH_VARIANT" "$(grep '^torch==' constraints.txt)" \
      && pip install -r requirements-torch.txt -c constraints.txt; \
    fi \
 && pip install -r requirements-service.txt -c constraints.txt
COPY protos protos
COPY libs libs
COPY services services
# Stubs are build output of libs.protogen (grpcio-tools), never copied from a checkout.
RUN test -f "services/$SERVICE/__main__.py" \
 && python -m libs.protogen gen \
 && python -m compileall -q gen libs services

FROM ${PYTHON_IMAGE}
ARG SERVICE
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    EMBEDFORGE_SERVICE=${SERVICE}
RUN groupadd --system --gid 10001 embedforge \
 && useradd --system --uid 10001 --gid embedforge --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin embedforge \
 && install -d -o embedforge -g embedforge /var/lib/embedforge
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /src/gen gen
COPY --from=builder /src/libs libs
COPY --from=builder /src/services/__init__.py services/__init__.py
COPY --from=builder /src/services/${SERVICE} services/${SERVICE}
USER 10001:10001
EXPOSE 50051
# exec: the service is PID 1 and gets the pod's SIGTERM.
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"services.$EMBEDFORGE_SERVICE\" \"$@\"", "--"]
