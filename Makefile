# ultron_nb — two commands: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME := $(CURDIR)/.ultron

.PHONY: demo test lab setup prereqs lint bench clean

setup: prereqs $(STAMP)
	@# The Kafka connector jars for Flink (idempotent; see ultron_nb/engines/flink/kafka.py).
	@$(BIN)/python -m ultron_nb.engines.flink.kafka install >/dev/null

# Java 11+ for Flink, graphviz's dot for the DAG.
prereqs:
	@if ! command -v java >/dev/null 2>&1; then \
	  echo "ultron_nb needs Java 11 or newer for Flink: apt-get install -y openjdk-17-jre-headless" >&2; exit 1; fi
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.[0-9]*\)*.*/\1/p' | head -1); \
	  if [ "$$v" = "1" ] || [ -z "$$v" ] || [ "$$v" -lt 11 ]; then \
	    echo "ultron_nb needs Java 11 or newer for Flink (found: $$(java -version 2>&1 | head -1))" >&2; exit 1; fi
	@missing=""; command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing$$missing with apt-get"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	        || { echo "apt-get install$$missing failed" >&2; exit 1; }; \
	    else echo "missing:$$missing — run: sudo apt-get install -y$$missing" >&2; exit 1; fi; fi

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	# One resolve for the whole stack (see DESIGN.md: the cloudpickle trap).
	$(BIN)/python -m pip install -q -e '.[test,postgres]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check ultron_nb tests bench

test: setup lint
	$(BIN)/python -m pytest -q

demo: setup
	@mkdir -p $(DEMO_HOME)
	ULTRON_HOME=$(DEMO_HOME) $(BIN)/jupyter nbconvert --to notebook --execute \
	  notebooks/01_define_a_flow.ipynb --ExecutePreprocessor.timeout=900 \
	  --output-dir $(DEMO_HOME)/demo --output 01_define_a_flow
	@echo "DAG written to $(DEMO_HOME)/ctr.svg; executed notebook in $(DEMO_HOME)/demo/"

lab: setup
	$(BIN)/jupyter lab --ip 127.0.0.1 --notebook-dir notebooks $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

bench: setup
	$(BIN)/python bench/flow_bench.py

clean:
	rm -rf $(VENV) .ultron .pytest_cache .ruff_cache
