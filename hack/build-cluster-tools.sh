#!/usr/bin/env bash
# Build what the cluster tier (make e2e-cluster) needs besides the control plane, from the Go module proxy with
# the machine's Go, once, into a cache outside the repository. Prints the bin directory on stdout. Idempotent.
#
#   kubelet, kubeadm, kube-proxy  (v1.34.4, the wrapper-module approach of hack/build-control-plane.sh)
#   kind                          (sigs.k8s.io/kind; its module source also gives the node image's entrypoint)
#   crictl, CNI plugins           (sigs.k8s.io/cri-tools, github.com/containernetworking/plugins)
#   coredns                       (github.com/coredns/coredns, the version kubeadm deploys)
#   runc-capstrip, pause          (hack/runc-capstrip, hack/pause: this repository's own)
# plus links to kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, helm from the control
# plane cache (hack/build-control-plane.sh).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.37.0}"
CNI_VERSION="${CNI_VERSION:-v1.10.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.1}"

export GOTOOLCHAIN=local CGO_ENABLED=0
GO_VERSION="$(go env GOVERSION)"
CACHE_ROOT="${FLOTILLA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}"
OUT="$CACHE_ROOT/cluster/tools-k8s-$K8S_VERSION-kind-$KIND_VERSION-crictl-$CRICTL_VERSION-cni-$CNI_VERSION-$GO_VERSION"
COREDNS="$OUT/coredns-$COREDNS_VERSION/coredns"
BIN="$OUT/bin"
CNI_BIN="$OUT/cni"
CNI_PLUGINS=(bridge host-local loopback portmap ptp)
# the repo's own small tools are rebuilt when their source changes
OWN_SUM="$(cat "$HERE"/runc-capstrip/* "$HERE"/pause/* | sha256sum | cut -c1-12)"
WANT=(kubelet kubeadm kube-proxy kind crictl "runc-capstrip-$OWN_SUM" "pause-$OWN_SUM")

log() { echo "build-cluster-tools: $*" >&2; }
complete() {
  for b in "${WANT[@]}"; do [ -x "$BIN/$b" ] || return 1; done
  for p in "${CNI_PLUGINS[@]}"; do [ -x "$CNI_BIN/$p" ] || return 1; done
  [ -x "$COREDNS" ] || return 1
}
link_controlplane() {
  local cp
  cp="$(bash "$HERE/build-control-plane.sh")"
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm; do ln -sfn "$cp/$b" "$BIN/$b"; done
  ln -sfn "$BIN/runc-capstrip-$OWN_SUM" "$BIN/runc-capstrip"
  ln -sfn "$BIN/pause-$OWN_SUM" "$BIN/pause"
  ln -sfn "$COREDNS" "$BIN/coredns"
}
if complete; then link_controlplane; echo "$BIN"; exit 0; fi
mkdir -p "$BIN" "$CNI_BIN" "$OUT/src"

build_k8s() {
  [ -x "$BIN/kubelet" ] && [ -x "$BIN/kubeadm" ] && [ -x "$BIN/kube-proxy" ] && return 0
  local dir="$OUT/src/k8s" minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="v0.${K8S_VERSION#v1.}"
  mkdir -p "$dir"
  log "downloading k8s.io/kubernetes@$K8S_VERSION"
  local gomod
  gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module local/k8snodebuild"
    echo
    grep -E '^(go|godebug) ' "$gomod"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -oE 'k8s.io/[a-z0-9-]+ => ./staging/src/k8s.io/[a-z0-9-]+' "$gomod" \
      | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  local pkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version date
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ld="-s -w"
  for p in $pkg $cpkg; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  log "building kubelet, kubeadm, kube-proxy (slow the first time)"
  (cd "$dir" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$BIN/" \
     k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kube-proxy)
}

build_small() {
  if [ ! -x "$BIN/kind" ]; then
    log "building kind $KIND_VERSION"
    GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION"
  fi
  if [ ! -x "$BIN/crictl" ]; then
    log "building crictl $CRICTL_VERSION"
    GOBIN="$BIN" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
      "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  fi
  local p missing=()
  for p in "${CNI_PLUGINS[@]}"; do [ -x "$CNI_BIN/$p" ] || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "building CNI plugins $CNI_VERSION: ${missing[*]}"
    local pkgs=()
    for p in "${missing[@]}"; do
      case "$p" in
        host-local) pkgs+=("github.com/containernetworking/plugins/plugins/ipam/host-local@$CNI_VERSION") ;;
        portmap) pkgs+=("github.com/containernetworking/plugins/plugins/meta/portmap@$CNI_VERSION") ;;
        *) pkgs+=("github.com/containernetworking/plugins/plugins/main/$p@$CNI_VERSION") ;;
      esac
    done
    GOBIN="$CNI_BIN" go install -trimpath -ldflags "-s -w" "${pkgs[@]}"
  fi
  if [ ! -x "$COREDNS" ]; then
    log "building coredns $COREDNS_VERSION"
    mkdir -p "$(dirname "$COREDNS")"
    GOBIN="$(dirname "$COREDNS")" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  fi
  (cd "$HERE/runc-capstrip" && go build -trimpath -ldflags "-s -w" -o "$BIN/runc-capstrip-$OWN_SUM" .)
  (cd "$HERE/pause" && go build -trimpath -ldflags "-s -w" -o "$BIN/pause-$OWN_SUM" .)
}

build_small
build_k8s
complete || { log "incomplete build in $BIN"; exit 1; }
link_controlplane
echo "$BIN"
