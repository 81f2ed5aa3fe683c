#!/usr/bin/env bash
# Build the real Kubernetes control plane used by the e2e tier (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok, helm) from the Go module proxy with the machine's Go, once, into a cache
# outside the repository. Prints the bin directory on stdout. Idempotent: a complete cache is reused as is.
#
# Why wrapper modules: `go install k8s.io/kubernetes/cmd/...@v` and `go install go.etcd.io/etcd/server/v3@v`
# both fail on the upstream go.mod replace directives, so each gets a tiny module of its own that pins the
# staging modules (k8s v1.Y.Z pairs with staging v0.Y.Z).
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.14}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"

export GOTOOLCHAIN=local CGO_ENABLED=0
GO_VERSION="$(go env GOVERSION)"
CACHE_ROOT="${FLOTILLA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}"
OUT="$CACHE_ROOT/controlplane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION-$GO_VERSION"
BIN="$OUT/bin"
WANT=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm)

complete() { for b in "${WANT[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
if complete; then echo "$BIN"; exit 0; fi

mkdir -p "$BIN" "$OUT/src"
log() { echo "build-control-plane: $*" >&2; }

build_k8s() {
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kube-scheduler" ] \
    && [ -x "$BIN/kubectl" ] && return 0
  local dir="$OUT/src/k8s" minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="v0.${K8S_VERSION#v1.}"
  mkdir -p "$dir"
  log "downloading k8s.io/kubernetes@$K8S_VERSION"
  local gomod
  gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module local/k8sbuild"
    echo
    grep -E '^(go|godebug) ' "$gomod"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # every staging module upstream replaces with ./staging/... is pinned to its published v0.Y.Z twin
    grep -oE 'k8s.io/[a-z0-9-]+ => ./staging/src/k8s.io/[a-z0-9-]+' "$gomod" \
      | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  local pkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version date
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ld="-s -w"
  for p in $pkg $cpkg; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (slow the first time)"
  (cd "$dir" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$BIN/" \
     k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
     k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
}

build_etcd() {
  [ -x "$BIN/etcd" ] && return 0
  local dir="$OUT/src/etcd"
  mkdir -p "$dir"
  printf 'module local/etcdbuild\n\ngo 1.25.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$dir/tools.go"
  log "building etcd $ETCD_VERSION"
  (cd "$dir" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  [ -x "$BIN/kwok" ] && return 0
  log "building kwok $KWOK_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # kwok refuses to start without stages; they ship in the module source
  local moddir
  moddir="$(cd "$OUT/src" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  mkdir -p "$OUT/kwok-stages"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cp "$moddir/kustomize/stage/$f" "$OUT/kwok-stages/$(echo "$f" | tr / _)"
  done
}

build_helm() {
  [ -x "$BIN/helm" ] && return 0
  log "building helm $HELM_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

build_etcd
build_kwok
build_helm
build_k8s
complete || { log "incomplete build in $BIN"; exit 1; }
echo "$BIN"
