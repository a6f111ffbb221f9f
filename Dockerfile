# syntax=docker/dockerfile:1
#
# Mainstream container image.
#
#   docker build -t mainstream:0.1.0 .                                  # CPU edge daemon
#   docker build -t mainstream-gpu:0.1.0 --build-arg VARIANT=gpu .      # GPU trainer worker
#
#   docker run -d -p 8780:8780 -v mainstream-data:/data \
#       -e MAINSTREAM_NODE_NAME=edge-01 mainstream:0.1.0
#
# Everything is configured through MAINSTREAM_* environment variables (nested fields with
# `__`, e.g. MAINSTREAM_API__PORT) or a YAML file: `... mainstream:0.1.0 serve --config FILE`.
# Environment variables win over the file; the image sets MAINSTREAM_DATA_DIR=/data and
# MAINSTREAM_API__HOST=0.0.0.0.
# The same image runs the trainer worker: `... trainer worker --listen 0.0.0.0:8781`; it has no
# HTTP health route, so run it with `--no-healthcheck` (compose checks its port instead).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# builder: build the project wheel and install it, with its dependencies, into a virtualenv.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# cpu: the edge daemon (tensorflow-cpu). gpu: adds the `gpu` extra (CUDA TensorFlow) for the
# trainer worker; run it with an NVIDIA runtime (`--gpus all`).
ARG VARIANT=cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN case "$VARIANT" in cpu|gpu) ;; *) echo "VARIANT must be cpu or gpu, got '$VARIANT'" >&2; exit 1;; esac \
 && python -m venv /opt/mainstream \
 && /opt/mainstream/bin/pip install --upgrade pip wheel

WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt ./requirements/
COPY mainstream ./mainstream
COPY scheduler ./scheduler
COPY trainer ./trainer
COPY edge_runtime ./edge_runtime
COPY api ./api

# tensorflow-cpu (a core dependency) and tensorflow (the gpu extra) ship the same `tensorflow`
# package, so the gpu variant removes the CPU build and reinstalls the CUDA one over it.
RUN /opt/mainstream/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && wheel="$(ls /wheels/mainstream_edge-*.whl)" \
 && if [ "$VARIANT" = "gpu" ]; then \
        /opt/mainstream/bin/pip install -c requirements/constraints.txt "${wheel}[gpu]" \
     && tf_version="$(/opt/mainstream/bin/pip show tensorflow | sed -n 's/^Version: //p')" \
     && /opt/mainstream/bin/pip uninstall -y tensorflow-cpu \
     && /opt/mainstream/bin/pip install --force-reinstall --no-deps "tensorflow==${tf_version}"; \
    else \
        /opt/mainstream/bin/pip install -c requirements/constraints.txt "${wheel}"; \
    fi \
 && /opt/mainstream/bin/python -c "import mainstream, scheduler, edge_runtime, trainer, api"

# ---------------------------------------------------------------------------------------------
# runtime: the virtualenv on a slim Python, running as an unprivileged user.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VARIANT=cpu
LABEL org.opencontainers.image.title="mainstream" \
      org.opencontainers.image.description="Edge video analytics with shared CNN stems and an event-F1 scheduler" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.mainstream.variant="${VARIANT}"

# opencv-python-headless, TensorFlow and OpenVINO bundle their own libraries (FFmpeg included)
# and only need the C++ runtime and zlib from the system; no X11/OpenGL libraries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libstdc++6 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 mainstream \
 && useradd --system --uid 10001 --gid mainstream --home-dir /home/mainstream \
        --create-home --shell /usr/sbin/nologin mainstream \
 && mkdir -p /data \
 && chown mainstream:mainstream /data

COPY --from=builder /opt/mainstream /opt/mainstream

ENV PATH=/opt/mainstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/home/mainstream \
    MAINSTREAM_DATA_DIR=/data \
    MAINSTREAM_API__HOST=0.0.0.0

# Registry, packages, bases and events live here; mount a volume to keep them.
VOLUME /data
WORKDIR /data
EXPOSE 8780
USER 10001:10001

# Python is in the image already, so the probe needs no curl. It follows MAINSTREAM_API__PORT
# (set the port with that variable rather than in a config file, so that both agree).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health/ready' % os.environ.get('MAINSTREAM_API__PORT', '8780'), timeout=4)"]

ENTRYPOINT ["mainstream"]
CMD ["serve"]
