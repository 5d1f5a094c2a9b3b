# tokenledger — run `make help` for the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install lock demo up down test unit integration lint typecheck bench clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt infra/kafka/pom.xml
	@echo "==> [1/3] virtualenv in $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@echo "==> [2/3] Python packages (versions from constraints.txt; ~1 min)"
	@PYTHONWARNINGS=ignore $(BIN)/pip install -q -c constraints.txt -e '.[dev]'  # setuptools' editable-install notice
	@echo "==> [3/3] Apache Kafka 3.9.2 jars from Maven Central (~60 MB, once)"
	@$(BIN)/python -m infra broker-install
	@touch $(STAMP)
	@echo "==> installed"

install: $(STAMP) ## Create .venv and install the project with its dev tools (versions from constraints.txt)

lock: ## Re-resolve the dependencies to the newest versions pyproject.toml allows; rewrite constraints.txt
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q -e '.[dev]'
	{ sed -n '1,2p' constraints.txt; .venv-lock/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-lock

demo: $(STAMP) ## Run the main job on the embedded defaults (writes ./out/)
	$(BIN)/python -m infra.demo --out out

GATEWAYS ?= 1
up: $(STAMP) ## Run the whole pipeline in the foreground (Kafka, workers, billing service, gateway); GATEWAYS=4 adds a Redis
	$(BIN)/python -m infra up --gateways $(GATEWAYS)

down: ## Stop what `make up` started (from another terminal)
	$(BIN)/python -m infra down

test: $(STAMP) ## Run lint, type checks, unit and integration tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest tests

unit: $(STAMP) ## Fast pure unit tests only
	$(BIN)/pytest tests/unit

integration: $(STAMP) ## Integration tests (real broker, chdb)
	$(BIN)/pytest tests/integration

lint: $(STAMP) ## ruff + mypy strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) ## Benchmarks (print ratios measured in one run)
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python -m bench.$$(basename $$f .py) || exit 1; done

clean: ## Remove the virtualenv and outputs
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
