# Flotilla: one image for the operator, the gateway and the engine simulator (`flotilla operator|gateway|sim`).
#
#   docker build -t ghcr.io/flotilla-dev/flotilla:0.1.0 .
#
# Multi-stage: the builder makes a virtualenv (dependencies + the `hf` and `optimizer` extras — the operator's
# ModelGroup controller solves the GPU optimizer's integer program with PuLP/CBC — then the Flotilla wheel) and only
# that venv reaches the final stage — no build context, compiler, pip or wheel cache in a layer. Runs as uid
# 65532 (non-root). BASE_IMAGE is a pinned public Python 3.11 slim; `make e2e-cluster` overrides it with a
# locally debootstrapped Debian bookworm + python3 (hack/base-image.sh python), as that machine has no registry,
# and feeds pip from a wheelhouse served on loopback (hack/flotilla-image.sh).
# Plain Dockerfile syntax only (no RUN --mount, no COPY --chmod): builds with BuildKit and the legacy builder.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS builder
# Where pip finds packages, for a mirror or a local wheelhouse (builder stage only): e.g.
# --build-arg PIP_INDEX_URL=https://mirror/simple, or PIP_NO_INDEX=1 + PIP_FIND_LINKS=http://127.0.0.1:8000/.
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
d = p["project"]; open("/tmp/requirements.txt", "w").write("\n".join(d["dependencies"] + d.get("optional-dependencies", {}).get("hf", []) + d.get("optional-dependencies", {}).get("optimizer", []))); \
open("/tmp/build-requirements.txt", "w").write("\n".join(p["build-system"]["requires"]))' \
    && python3 -m venv /opt/flotilla \
    && /opt/flotilla/bin/pip install --quiet -r /tmp/requirements.txt \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install --quiet -r /tmp/build-requirements.txt
COPY . .
RUN /opt/build/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/flotilla/bin/pip install --quiet --no-deps /tmp/wheels/*.whl \
    && /opt/flotilla/bin/python -m pip uninstall --quiet --yes pip setuptools \
    # kubernetes>=35 ships a second, asyncio copy of its generated client (68 MB) that nothing here imports
    # (kopf has its own aiohttp client): dropped, and the smoke test below imports every Flotilla component
    && rm -rf /opt/flotilla/lib/python3*/site-packages/kubernetes/aio \
    && /opt/flotilla/bin/flotilla --help >/dev/null \
    && /opt/flotilla/bin/python -c "import flotilla.cli, gateway, kvcache, autoscaler, lora_manager, engine_sim, \
flotilla_operator, optimizer, pulp, kopf, kubernetes.client, kubernetes.config, tokenizers"

FROM ${BASE_IMAGE}
ENV PATH=/opt/flotilla/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 65532 flotilla \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin flotilla
COPY --from=builder /opt/flotilla /opt/flotilla
USER 65532:65532
WORKDIR /
ENTRYPOINT ["flotilla"]
CMD ["--help"]
