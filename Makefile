# Two commands on a fresh machine:  `make demo` runs the main job, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export RAY_USAGE_STATS_ENABLED := 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: demo test lint bench clean system-deps

# Debian tools the multi-host test and the TLS/key scripts use; installed when
# missing and we are root (CI is), otherwise the tests that need them say so.
SYSTEM_TOOLS := ip openssl ssh-keygen
system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing iproute2 openssl openssh-client (missing:$$missing)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 openssl openssh-client >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/byzflower run --clients 10 --byzantine 3 --attack alie --rule multikrum \
		--rounds 10 --out runs/demo

test: $(STAMP) system-deps
	$(BIN)/ruff check strategies server clients tests bench
	$(BIN)/ruff format --check strategies server clients tests bench
	$(BIN)/mypy strategies server clients
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check strategies server clients tests bench
	$(BIN)/ruff format --check strategies server clients tests bench

bench: $(STAMP)
	$(BIN)/python bench/aggregation.py
	$(BIN)/python bench/kappa.py

clean:
	rm -rf $(VENV) .flwr runs
