#!/usr/bin/env bash
# Build a kind node image locally (no registry: nothing can be pulled), laid out like kind's own node images
# (kind's images/base Dockerfile and pkg/build/nodeimage), and print its reference on stdout. Idempotent: the
# image is keyed by everything that goes into it and reused when present.
#
# Root: hack/base-image.sh node (debootstrapped Debian bookworm: systemd, containerd 1.6, runc, iptables, ...).
# From kind's module source (Go module proxy, sigs.k8s.io/kind): the entrypoint, the systemd units of the
# kubelet/containerd, sysctls, crictl.yaml. From hack/build-cluster-tools.sh: kubelet, kubeadm, kubectl,
# crictl, CNI plugins, runc-capstrip. Our own (hack/kind-node/): containerd's config (runc via runc-capstrip),
# a static single-node CNI config (ptp), kind's /kind/manifests, and a unit that imports the preloaded images.
# Preloaded images (/kind/images/*.tar, tagged as `kubeadm config images list` names them): kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd (FROM scratch + the Go-built binary), kube-proxy (FROM
# hack/base-image.sh proxy: iptables), pause (hack/pause), CoreDNS (FROM scratch + the Go-built binary). So the
# stock kind configuration works: `kind create cluster --image <this>`.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
CACHE_ROOT="${FLOTILLA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}"
log() { echo "kind-node-image: $*" >&2; }

TOOLS="$(bash "$HERE/build-cluster-tools.sh")"
CNI_DIR="$(cd "$TOOLS/../cni" && pwd)"
NODE_BASE="$(bash "$HERE/base-image.sh" node)"
PROXY_BASE="$(bash "$HERE/base-image.sh" proxy)"
KIND_VERSION="$("$TOOLS/kind" version | awk '{print $2}')"
KIND_SRC="$(cd "$(mktemp -d)" && go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
[ -d "$KIND_SRC/images/base/files" ] || { log "no kind source for $KIND_VERSION"; exit 1; }

# the key: every input's content
KEY="$(
  {
    echo "$K8S_VERSION $NODE_BASE $PROXY_BASE $KIND_VERSION"
    for b in kubelet kubeadm kubectl kube-proxy kube-apiserver kube-controller-manager kube-scheduler etcd crictl \
             runc-capstrip pause coredns; do readlink -f "$TOOLS/$b"; done
    cat "$HERE"/kind-node/* "$0"
  } | sha256sum | cut -c1-12
)"
TAG="flotilla.local/kind-node:$K8S_VERSION-$KEY"
if docker image inspect "$TAG" >/dev/null 2>&1; then echo "$TAG"; exit 0; fi

work="$(mktemp -d "${TMPDIR:-/tmp}/flotilla-node-XXXX")"
trap 'rm -rf "$work"' EXIT
build() { # build <tag...> -- <context dir>: quiet docker build, no network (nothing is fetched)
  local tags=() ctx
  while [ "$1" != "--" ]; do tags+=(-t "$1"); shift; done
  ctx="$2"
  DOCKER_BUILDKIT=0 docker build --quiet --network none "${tags[@]}" "$ctx" >/dev/null \
    2> >(grep -v 'legacy builder is deprecated\|BuildKit\|buildx\|environment-variable\|^ *$\|docs.docker.com' >&2)
}

# ---- component images, named as kubeadm names them
mapfile -t IMAGES < <("$TOOLS/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null)
image_for() { printf '%s\n' "${IMAGES[@]}" | grep -E "/$1:" ; }
preload=()
for c in kube-apiserver kube-controller-manager kube-scheduler etcd; do
  d="$work/img-$c"; mkdir -p "$d"; cp -L "$TOOLS/$c" "$d/$c"
  printf 'FROM scratch\nCOPY %s /usr/local/bin/%s\nENV PATH=/usr/local/bin\nENTRYPOINT ["/usr/local/bin/%s"]\n' \
    "$c" "$c" "$c" >"$d/Dockerfile"
  ref="$(image_for "$c")"; build "$ref" -- "$d"; preload+=("$ref")
  log "made $ref"
done
d="$work/img-kube-proxy"; mkdir -p "$d"; cp -L "$TOOLS/kube-proxy" "$d/kube-proxy"
printf 'FROM %s\nCOPY kube-proxy /usr/local/bin/kube-proxy\nENTRYPOINT ["/usr/local/bin/kube-proxy"]\n' "$PROXY_BASE" \
  >"$d/Dockerfile"
ref="$(image_for kube-proxy)"; build "$ref" -- "$d"; preload+=("$ref"); log "made $ref"
d="$work/img-pause"; mkdir -p "$d"; cp -L "$TOOLS/pause" "$d/pause"
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$d/Dockerfile"
ref="$(image_for pause)"; build "$ref" -- "$d"; preload+=("$ref"); log "made $ref"
# CoreDNS as kubeadm's addon runs it (args -conf /etc/coredns/Corefile; it adds NET_BIND_SERVICE for :53)
d="$work/img-coredns"; mkdir -p "$d"; cp -L "$TOOLS/coredns" "$d/coredns"
printf 'FROM scratch\nCOPY coredns /coredns\nENTRYPOINT ["/coredns"]\n' >"$d/Dockerfile"
ref="$(image_for coredns)"; build "$ref" -- "$d"; preload+=("$ref"); log "made $ref"

# ---- the node
ctx="$work/node"; mkdir -p "$ctx/rootfs"
R="$ctx/rootfs"
F="$KIND_SRC/images/base/files"
mkdir -p "$R/usr/local/bin" "$R/usr/local/sbin" "$R/usr/bin" "$R/opt/cni/bin" "$R/etc/containerd" "$R/etc/cni/net.d" \
         "$R/etc/systemd/system/kubelet.service.d" "$R/etc/sysctl.d" "$R/etc/default" "$R/kind/bin" \
         "$R/kind/manifests" "$R/kind/images" "$R/etc/kubernetes/manifests"
install -m 0755 "$F/usr/local/bin/entrypoint" "$R/usr/local/bin/entrypoint"
install -m 0755 "$F"/kind/bin/* "$R/kind/bin/"
install -m 0644 "$F/etc/crictl.yaml" "$R/etc/crictl.yaml"
install -m 0644 "$F"/etc/sysctl.d/* "$R/etc/sysctl.d/"
install -m 0644 "$F"/etc/default/kubelet "$R/etc/default/kubelet"
for u in containerd.service kubelet.service kubelet.slice undo-mount-hacks.service; do
  install -m 0644 "$F/etc/systemd/system/$u" "$R/etc/systemd/system/$u"
done
install -m 0644 "$F"/etc/systemd/system/kubelet.service.d/* "$R/etc/systemd/system/kubelet.service.d/"
install -m 0644 "$HERE/kind-node/flotilla-preload-images.service" "$R/etc/systemd/system/"
install -m 0644 "$HERE/kind-node/containerd-config.toml" "$R/etc/containerd/config.toml"
install -m 0644 "$HERE/kind-node/10-flotilla-ptp.conflist" "$R/etc/cni/net.d/"
install -m 0644 "$HERE/kind-node/default-cni.yaml" "$HERE/kind-node/default-storage.yaml" "$R/kind/manifests/"
for b in kubelet kubeadm kubectl; do install -m 0755 "$(readlink -f "$TOOLS/$b")" "$R/usr/bin/$b"; done
install -m 0755 "$(readlink -f "$TOOLS/crictl")" "$R/usr/local/bin/crictl"
install -m 0755 "$(readlink -f "$TOOLS/runc-capstrip")" "$R/usr/local/sbin/runc-capstrip"
install -m 0755 "$CNI_DIR"/* "$R/opt/cni/bin/"
# kind's containerd.service runs /usr/local/bin/containerd; Debian's is in /usr/bin
ln -s /usr/bin/containerd "$R/usr/local/bin/containerd"
echo "$K8S_VERSION" >"$R/kind/version"
docker save "${preload[@]}" -o "$R/kind/images/preload.tar"
cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $NODE_BASE
COPY rootfs/ /
# as kind's base image: only the services a node needs start (kubelet, containerd, the mount fix-up), journald
# does not read kmsg, systemd-binfmt (kernel-global) is masked
RUN find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \\
    && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \\
       /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \\
       /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \\
    && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \\
    && systemctl enable kubelet.service containerd.service undo-mount-hacks.service flotilla-preload-images.service \\
    && systemctl mask systemd-binfmt.service
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
DOCKERFILE
log "building $TAG"
build "$TAG" -- "$ctx"
# node images older than a day go (disk); younger ones may be another worktree's
bash "$HERE/prune-old-tags.sh" "${TAG%:*}" "$TAG"
echo "$TAG"
