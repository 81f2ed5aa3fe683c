# Flotilla developer entry points. Everything runs from the repo-root virtualenv `.venv`, created on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install check fmt test e2e e2e-cluster image up bench bench-quick crds clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,peers,optimizer]'
	touch $(STAMP)

check: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy flotilla gateway kvcache autoscaler lora_manager engine_sim optimizer bench operator/flotilla_operator
	$(BIN)/lint-imports

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The unit + integration tiers (real Redis, engine_sim processes, the official openai client).
test: install
	$(BIN)/pytest

# The e2e tier: a real kube-apiserver/etcd/controller-manager/scheduler + kwok, built on first use
# (hack/build-control-plane.sh, cached outside the repo).
e2e: install
	bash hack/build-control-plane.sh >/dev/null
	$(BIN)/pytest -m e2e tests/e2e

# The cluster tier: a real kind cluster on a local Docker engine, the image built from the Dockerfile, the chart
# installed, real pods (docs/e2e.md, "The cluster tier"). Needs root (dockerd). Everything is built once and cached
# outside the repo (~/.cache/flotilla/cluster, docker's image store); the builds run here, outside test timeouts.
e2e-cluster: install
	bash hack/docker-engine.sh >/dev/null
	bash hack/build-cluster-tools.sh >/dev/null
	bash hack/kind-node-image.sh >/dev/null
	bash hack/flotilla-image.sh >/dev/null
	bash hack/base-image.sh redis >/dev/null
	$(BIN)/pytest -m e2e_cluster tests/e2e_cluster

# The Flotilla image from the Dockerfile on the locally made base (prints its reference).
image:
	@bash hack/docker-engine.sh >/dev/null
	@bash hack/flotilla-image.sh

# README's first command: simulated engines + gateway, no cluster.
up: install
	$(BIN)/flotilla up

bench: install
	$(BIN)/flotilla bench

bench-quick: install
	$(BIN)/flotilla bench --quick

# CRD YAML is generated from the pydantic models (flotilla/crds/); a unit test fails when it drifts.
crds: install
	$(BIN)/flotilla crds --output-dir charts/flotilla/crds

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build dist
