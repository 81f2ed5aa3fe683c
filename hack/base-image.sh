#!/usr/bin/env bash
# Make a Debian bookworm base image locally (debootstrap from Debian's packages, then `docker import`), since
# this machine has no container registry to pull one from. Idempotent: prints the image reference on stdout and
# reuses the image, or the cached root filesystem tarball, when warm.
#
#   hack/base-image.sh python   minbase + python3 (3.11) + venv: stands in for python:3.11-slim (Dockerfile)
#   hack/base-image.sh node     systemd, containerd, runc, iptables, conntrack, ... : the kind node's root
#   hack/base-image.sh proxy    minbase + iptables + conntrack: kube-proxy's image base
#   hack/base-image.sh redis    minbase + Debian's redis-server: stands in for the chart's redis image
#
# Only debootstrap uses the network (Debian's mirror). Cache: $FLOTILLA_CACHE/cluster/rootfs, debs.
set -euo pipefail
FLAVOR="${1:?usage: base-image.sh python|node|proxy|redis}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE_ROOT="${FLOTILLA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}"
ROOTFS_CACHE="$CACHE_ROOT/cluster/rootfs"
DEBS="$CACHE_ROOT/cluster/debs/$SUITE"
log() { echo "base-image[$FLAVOR]: $*" >&2; }

case "$FLAVOR" in
  python) PKGS="python3,python3-venv" ;;
  proxy) PKGS="iptables,nftables,conntrack,ipset" ;;
  redis) PKGS="redis-server" ;;
  node)
    # what kind's own base image installs (images/base/Dockerfile), from Debian: systemd, the node's networking
    # and mount tools, containerd + runc, and the little things kind runs inside a node
    PKGS="systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod"
    PKGS="$PKGS,libseccomp2,pigz,e2fsprogs,bash,ca-certificates,curl,jq,procps,socat,containerd,runc"
    ;;
  *) log "unknown flavor"; exit 2 ;;
esac
KEY="$(printf '%s\n' "$SUITE" "$PKGS" "$(sed -n '/^strip()/,/^}/p' "$0")" | sha256sum | cut -c1-12)"
TAG="flotilla.local/base-$FLAVOR:$SUITE-$KEY"
TARBALL="$ROOTFS_CACHE/$FLAVOR-$SUITE-$KEY.tar"

if docker image inspect "$TAG" >/dev/null 2>&1; then echo "$TAG"; exit 0; fi

# what no image needs: docs, man pages, locales, apt's lists and archives
strip() {
  local root="$1"
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian \
         "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
         "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
  find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
  find "$root" -name '__pycache__' -prune -exec rm -rf {} + 2>/dev/null || true
}

if [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null || {
    log "installing debootstrap (apt)"; apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  mkdir -p "$ROOTFS_CACHE" "$DEBS"
  work="$(mktemp -d "$ROOTFS_CACHE/.build-$FLAVOR-XXXX")"
  trap 'rm -rf "$work"' EXIT
  log "debootstrap $SUITE ($PKGS) from $MIRROR"
  debootstrap --variant=minbase --include="$PKGS" --cache-dir="$DEBS" "$SUITE" "$work/root" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
  strip "$work/root"
  printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$work/root/etc/apt/sources.list"
  : >"$work/root/etc/resolv.conf"
  tar -C "$work/root" --numeric-owner -cf "$TARBALL.tmp" .
  mv -f "$TARBALL.tmp" "$TARBALL"
fi
log "docker import $TARBALL"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  "$TARBALL" "$TAG" >/dev/null
echo "$TAG"
