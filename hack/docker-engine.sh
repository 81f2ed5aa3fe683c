#!/usr/bin/env bash
# Make a Docker engine usable here, for the cluster tier (make e2e-cluster): idempotent, quick when it is up.
#
#   - installs Debian's docker.io if dockerd is missing (apt: the only network use);
#   - installs hack/runc-capstrip as dockerd's default runtime: CAP_SYS_RESOURCE is not in this machine's
#     capability bounding set, so runc refuses privileged containers (kind nodes) unless it is removed;
#   - daemon.json: no NAT and no forwarding to the outside (iptables=false, ip-masq=false, ip-forward=false),
#     no default bridge (bridge=none: a container gets a network only if it is given one; builds use the host
#     network to reach package registries, tests use an --internal network), overlay2;
#   - starts dockerd if it is not running (logs to $CACHE/cluster/logs/dockerd.log) and waits for `docker info`.
#
# Needs root. Prints nothing on success but the docker host (unix socket) on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE_ROOT="${FLOTILLA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}"
LOGS="$CACHE_ROOT/cluster/logs"
WRAPPER=/usr/local/libexec/flotilla/runc-capstrip
SOCK=/var/run/docker.sock
log() { echo "docker-engine: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "needs root (dockerd, /etc/docker)"; exit 1; }
mkdir -p "$LOGS"

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  # the package may start a daemon with its own defaults: ours is started below with ours
  (systemctl stop docker docker.socket || service docker stop || true) >/dev/null 2>&1
fi

# the wrapper: this repository's hack/runc-capstrip, built once per source version
sum="$(cat "$HERE"/runc-capstrip/* | sha256sum | cut -c1-12)"
built="$CACHE_ROOT/cluster/runc-capstrip-$sum"
if [ ! -x "$built" ]; then
  (cd "$HERE/runc-capstrip" && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$built" .)
fi
mkdir -p "$(dirname "$WRAPPER")"
if ! cmp -s "$built" "$WRAPPER"; then
  install -m 0755 "$built" "$WRAPPER.new" && mv -f "$WRAPPER.new" "$WRAPPER"
fi

mkdir -p /etc/docker
want="$(cat <<JSON
{
  "default-runtime": "runc-capstrip",
  "runtimes": {"runc-capstrip": {"path": "$WRAPPER"}},
  "iptables": false,
  "ip6tables": false,
  "ip-masq": false,
  "ip-forward": false,
  "bridge": "none",
  "storage-driver": "overlay2",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
JSON
)"
changed=0
if [ "$(cat /etc/docker/daemon.json 2>/dev/null)" != "$want" ]; then
  printf '%s\n' "$want" >/etc/docker/daemon.json
  changed=1
fi

DOCKER=(docker -H "unix://$SOCK")
running() { "${DOCKER[@]}" info >/dev/null 2>&1; }
if running && [ "$changed" = 1 ]; then
  log "daemon.json changed: restarting dockerd"
  pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
  if [ -n "$pid" ]; then kill "$pid"; for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done; fi
fi
if ! running; then
  log "starting dockerd (log: $LOGS/dockerd.log)"
  # containerd is started by dockerd itself (its managed instance), so nothing else has to run
  setsid dockerd --host "unix://$SOCK" >>"$LOGS/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do running && break; sleep 1; done
  running || { log "dockerd did not come up; see $LOGS/dockerd.log"; tail -20 "$LOGS/dockerd.log" >&2; exit 1; }
fi
# the capability fix is what makes kind possible: say so loudly if it is not in effect
"${DOCKER[@]}" info --format '{{.DefaultRuntime}}' | grep -qx runc-capstrip \
  || { log "dockerd's default runtime is not runc-capstrip"; exit 1; }
echo "unix://$SOCK"
