#!/usr/bin/env bash
# Flotilla on a local kind cluster, end to end: create the cluster, build and load the image, install the chart,
# deploy a simulated model (no GPU), send one request through the gateway. docs/kind.md explains each step.
#
# Needs: docker, kind, kubectl, helm, and internet access for the image build (pip) and for pulling kind's node
# image and redis. Every step can be switched or pointed elsewhere through the environment, so the same script
# serves `make e2e-cluster` (local images, no internet):
#   KIND_CLUSTER=flotilla  IMAGE=flotilla:dev  NAMESPACE=flotilla-system  RELEASE=flotilla
#   KIND_NODE_IMAGE=...      node image for `kind create cluster` (default: kind's own)
#   CREATE_CLUSTER=0         use an existing cluster (the current kubectl context)
#   BUILD_IMAGE=0            skip `docker build` (the image exists already)
#   LOAD_IMAGE=0             skip `kind load docker-image`
#   HELM_EXTRA_ARGS="..."    more `helm upgrade --install` arguments (e.g. --set redis.image.repository=...)
#   KIND=kind KUBECTL=kubectl HELM=helm DOCKER=docker   the binaries
#   LOCAL_PORT=8080          local end of the port-forward to the gateway
#   TIMEOUT=300s             how long to wait for pods
set -euo pipefail

KIND_CLUSTER=${KIND_CLUSTER:-flotilla}
IMAGE=${IMAGE:-flotilla:dev}
NAMESPACE=${NAMESPACE:-flotilla-system}
RELEASE=${RELEASE:-flotilla}
CREATE_CLUSTER=${CREATE_CLUSTER:-1}
BUILD_IMAGE=${BUILD_IMAGE:-1}
LOAD_IMAGE=${LOAD_IMAGE:-1}
HELM_EXTRA_ARGS=${HELM_EXTRA_ARGS:-}
KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
DOCKER=${DOCKER:-docker}
LOCAL_PORT=${LOCAL_PORT:-8080}
TIMEOUT=${TIMEOUT:-300s}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODEL_MANIFEST=${MODEL_MANIFEST:-$REPO/examples/simulated-model.yaml}
MODEL_NAME=${MODEL_NAME:-sim-llama}
SERVED_NAME=${SERVED_NAME:-llama}
# the image reference split for the chart (a registry port such as host:5000/x:tag keeps its colon)
IMAGE_REPO=${IMAGE%:*}
IMAGE_TAG=${IMAGE##*:}
if [[ "$IMAGE_REPO" == "$IMAGE" || "$IMAGE_TAG" == */* ]]; then
  echo "IMAGE must be repository:tag, got $IMAGE" >&2
  exit 2
fi

step() { printf '\n==> %s\n' "$*"; }

if [[ "$CREATE_CLUSTER" == 1 ]]; then
  step "1/5 kind cluster $KIND_CLUSTER"
  if "$KIND" get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    echo "exists; using it"
  else
    "$KIND" create cluster --name "$KIND_CLUSTER" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
  fi
  "$KUBECTL" config use-context "kind-$KIND_CLUSTER" >/dev/null
fi

if [[ "$BUILD_IMAGE" == 1 ]]; then
  step "2/5 build $IMAGE (one image: operator, gateway and simulator)"
  "$DOCKER" build -t "$IMAGE" "$REPO"
fi
if [[ "$LOAD_IMAGE" == 1 ]]; then
  "$KIND" load docker-image "$IMAGE" --name "$KIND_CLUSTER"
fi

step "3/5 helm install $RELEASE into $NAMESPACE"
# shellcheck disable=SC2086 # HELM_EXTRA_ARGS is a list of words on purpose
"$HELM" upgrade --install "$RELEASE" "$REPO/charts/flotilla" \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="$IMAGE_REPO" --set-string image.tag="$IMAGE_TAG" --set image.pullPolicy=IfNotPresent \
  --wait --timeout "$TIMEOUT" $HELM_EXTRA_ARGS
"$KUBECTL" -n "$NAMESPACE" get pods -o wide

step "4/5 a simulated model ($MODEL_MANIFEST)"
"$KUBECTL" -n "$NAMESPACE" apply -f "$MODEL_MANIFEST"
"$KUBECTL" -n "$NAMESPACE" wait --for=condition=Available "md/$MODEL_NAME" --timeout "$TIMEOUT"
"$KUBECTL" -n "$NAMESPACE" get md "$MODEL_NAME" -o wide

step "5/5 a chat completion through the gateway (port-forward to 127.0.0.1:$LOCAL_PORT)"
"$KUBECTL" -n "$NAMESPACE" port-forward "svc/$RELEASE-gateway" "$LOCAL_PORT:80" >/dev/null &
FORWARD=$!
trap 'kill "$FORWARD" 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$LOCAL_PORT/ready" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "http://127.0.0.1:$LOCAL_PORT/v1/chat/completions" \
  -H 'Content-Type: application/json' \
  -d "{\"model\": \"$SERVED_NAME\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello, Flotilla!\"}], \"max_tokens\": 16}"
echo
step "done: OpenAI base URL http://127.0.0.1:$LOCAL_PORT/v1 while a port-forward runs (kubectl -n $NAMESPACE port-forward svc/$RELEASE-gateway $LOCAL_PORT:80)"
