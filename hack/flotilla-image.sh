#!/usr/bin/env bash
# Build the Flotilla image (the repository's Dockerfile) for the cluster tier and print its reference
# (flotilla.local/flotilla:<content id>) on stdout.
#
#   - the base: the locally debootstrapped Python (hack/base-image.sh python) stands in for the public
#     python:3.11 slim image (no registry here);
#   - pip's packages: a wheelhouse made once by the base image's pip (with the host's network, CA bundle and
#     pip cache) and served on 127.0.0.1 for the build only, so the build itself dials nothing but loopback
#     (--network host, PIP_NO_INDEX=1, PIP_FIND_LINKS=http://127.0.0.1:<port>/). The wheelhouse is keyed by
#     pyproject.toml's requirements and cached in $FLOTILLA_CACHE/cluster/wheels;
#   - docker's layer cache makes a warm build (unchanged pyproject.toml) a few seconds.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE_ROOT="${FLOTILLA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}"
NAME="${FLOTILLA_IMAGE_NAME:-flotilla.local/flotilla}"
PY="${PYTHON:-python3}"
log() { echo "flotilla-image: $*" >&2; }

BASE="$(bash "$HERE/base-image.sh" python)"

# the requirements the Dockerfile installs: project dependencies + the hf and optimizer extras, and the build backend
reqs="$("$PY" - "$REPO/pyproject.toml" <<'PYEOF'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))
d = p["project"]
extras = d.get("optional-dependencies", {})
print("\n".join(d["dependencies"] + extras.get("hf", []) + extras.get("optimizer", []) + p["build-system"]["requires"]))
PYEOF
)"
# resolved for the base image's own interpreter (markers such as python_full_version < "3.11.3" matter)
target="$(docker run --rm --network none "$BASE" python3 -c 'import platform; print(platform.python_version())')"
key="$(printf '%s\n' "$reqs" "$target" | sha256sum | cut -c1-12)"
WHEELS="$CACHE_ROOT/cluster/wheels/$key"
if [ ! -f "$WHEELS/.complete" ]; then
  log "making the wheelhouse $WHEELS"
  mkdir -p "$WHEELS"
  printf '%s\n' "$reqs" >"$WHEELS/requirements.txt"
  # resolved and built by the base image's own interpreter (markers such as python_full_version < "3.11.3"
  # matter), in a throwaway container that gets the host network and the host's CA bundle (this machine's egress
  # to the package index may re-sign TLS) only for this step, and the host's pip cache
  ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
  mkdir -p "$HOME/.cache/pip"
  docker run --rm --network host -v "$WHEELS:/wheels" -v "$ca:/etc/flotilla-ca.crt:ro" \
    -v "$HOME/.cache/pip:/root/.cache/pip" -e PIP_CERT=/etc/flotilla-ca.crt -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$BASE" sh -c 'python3 -m venv /tmp/v && /tmp/v/bin/pip wheel --quiet --wheel-dir /wheels -r /wheels/requirements.txt' >&2
  touch "$WHEELS/.complete"
fi

# a port fixed by the wheelhouse key: build args are part of docker's cache key, so a new port would rebuild
# every layer after the dependency step; the next ports are tried if it is taken
port=$((20000 + 16#${key:0:4} % 20000))
for _ in $(seq 20); do
  if "$PY" -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
    break
  fi
  port=$((port + 1))
done
"$PY" -m http.server --bind 127.0.0.1 --directory "$WHEELS" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

# the legacy builder: this Docker client has no buildx plugin, and the Dockerfile needs nothing BuildKit adds
DOCKER_BUILDKIT=0 docker build --quiet --network host \
  --build-arg "BASE_IMAGE=$BASE" --build-arg PIP_NO_INDEX=1 --build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/" \
  -t "$NAME:build" "$REPO" >/dev/null 2> >(grep -v 'legacy builder is deprecated\|BuildKit\|buildx\|environment-variable\|^ *$\|docs.docker.com' >&2)
id="$(docker image inspect --format '{{.Id}}' "$NAME:build")"
id="${id#sha256:}"
ref="$NAME:${id:0:12}"
docker tag "$NAME:build" "$ref"
# tags of builds older than a day go (disk); younger ones may be another worktree's, about to be loaded
bash "$HERE/prune-old-tags.sh" "$NAME" "$ref" "$NAME:build"
echo "$ref"
