# ultron_nb — two commands: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The side panel, built from extension/ with node (a wheel needs no node).
LABEXT := ultron_nb/labextension/package.json
EXT_SRC := $(wildcard extension/src/*.ts extension/style/*) extension/package.json extension/yarn.lock
DEMO_HOME := $(CURDIR)/.ultron

.PHONY: demo test lab setup prereqs lint bench clean

setup: prereqs $(STAMP) $(LABEXT)
	@# The Kafka connector jars for Flink (idempotent; see ultron_nb/engines/flink/kafka.py).
	@$(BIN)/python -m ultron_nb.engines.flink.kafka install >/dev/null
	@# The ultron-topic connector (local topics, read in order), built with javac (cached).
	@$(BIN)/python -m ultron_nb.engines.flink.connector build >/dev/null

# Java 11+ for Flink, a JDK's javac to build the topic connector, graphviz's dot for the DAG,
# chromium for the side panel's browser tests, node 20+ to build the side panel from a checkout.
prereqs:
	@if ! command -v java >/dev/null 2>&1; then \
	  echo "ultron_nb needs Java 11 or newer for Flink: apt-get install -y openjdk-17-jre-headless" >&2; exit 1; fi
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.[0-9]*\)*.*/\1/p' | head -1); \
	  if [ "$$v" = "1" ] || [ -z "$$v" ] || [ "$$v" -lt 11 ]; then \
	    echo "ultron_nb needs Java 11 or newer for Flink (found: $$(java -version 2>&1 | head -1))" >&2; exit 1; fi
	@v=$$(node --version 2>/dev/null | sed -n 's/^v\([0-9]*\).*/\1/p'); \
	  if [ -z "$$v" ] || [ "$$v" -lt 20 ]; then \
	    echo "building the side panel needs Node.js 20 or newer: apt-get install -y nodejs" >&2; exit 1; fi
	@missing=""; command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	  command -v javac >/dev/null 2>&1 || missing="$$missing openjdk-17-jdk-headless"; \
	  command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
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

# Rebuilt when its sources change; `jupyter-builder develop` links it into the venv, so
# `make lab` always serves the current build.
$(LABEXT): $(EXT_SRC) | $(STAMP)
	cd extension && PATH="$(CURDIR)/$(BIN):$$PATH" jlpm install && PATH="$(CURDIR)/$(BIN):$$PATH" jlpm build:prod
	$(BIN)/jupyter-builder develop --overwrite . >/dev/null
	touch $(LABEXT)

lint: setup
	$(BIN)/ruff check ultron_nb tests bench
	@# Import contracts (pyproject.toml [tool.importlinter]): layers, forbidden arrows, no cycles.
	$(BIN)/lint-imports --no-cache

# Two workers (each with its own session cluster and servers): most tests wait on Flink, so
# two side by side fit a 2-core machine; the notebooks go first (tests/conftest.py).
test: setup lint
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=25

demo: setup
	@mkdir -p $(DEMO_HOME)
	@# The quickstart: define the CTR link, then run it on the embedded local Flink cluster
	@# (cluster up, generated click log, label-join + CTR per minute, real output rows,
	@# stop with savepoint, resume, everything down).
	@for nb in 01_define_a_flow 02_run_on_flink; do \
	  ULTRON_HOME=$(DEMO_HOME) $(BIN)/jupyter nbconvert --to notebook --execute \
	    notebooks/$$nb.ipynb --ExecutePreprocessor.timeout=900 \
	    --output-dir $(DEMO_HOME)/demo --output $$nb || exit 1; done
	@# Show the real output rows the run produced (the preview cells' text).
	@$(BIN)/python -c 'import nbformat, sys; nb = nbformat.read(sys.argv[1], 4); \
	  [print(">>>", c.source.splitlines()[0], "\n" + o.get("data", {}).get("text/plain", o.get("text", ""))) \
	   for c in nb.cells if c.cell_type == "code" and ("preview" in c.source or "closed minutes" in c.source) \
	   for o in c.outputs]' $(DEMO_HOME)/demo/02_run_on_flink.ipynb
	@echo "DAG: $(DEMO_HOME)/ctr.svg; executed notebooks: $(DEMO_HOME)/demo/"

lab: setup
	$(BIN)/jupyter lab --ip 127.0.0.1 --notebook-dir notebooks $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

bench: setup
	$(BIN)/python bench/flow_bench.py

clean:
	rm -rf $(VENV) .ultron .pytest_cache .ruff_cache extension/node_modules extension/lib \
	  extension/.yarn ultron_nb/labextension
