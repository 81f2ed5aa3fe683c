# Flotilla: one image for the operator, the gateway and the simulator (`flotilla operator|gateway|sim ...`).
# Build: docker build -t ghcr.io/flotilla-dev/flotilla:0.1.0 .
# (Not built in this repository's CI: the project machine has no Docker engine; see docs/e2e.md.)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip install . \
    && rm -rf /src \
    && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin flotilla

WORKDIR /
USER 65532
ENTRYPOINT ["flotilla"]
CMD ["--help"]
