# Two commands are the contract: `make serve` and `make test`, each from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY        ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
CONFIG    ?= examples/workjet.yaml
export CARGO_TERM_COLOR ?= never

# Hyperscan/Vectorscan is linked statically when the system ships libhs.a (Debian: libvectorscan-dev). Looked up
# by the shell when a recipe runs, not when make reads this file: on a fresh machine `system-deps` installs it
# first, and a value read at parse time would silently build without it.
HAS_HS    = for f in /usr/lib/*/libhs.a /usr/lib/libhs.a /usr/local/lib/libhs.a; do [ -e "$$f" ] && exit 0; done; exit 1
FEATURES  = python$$( ( $(HAS_HS) ) && echo ,hyperscan)
HS_FLAG   = $$( ( $(HAS_HS) ) && echo --features hyperscan)

.PHONY: help system-deps venv dev build-release serve test lint test-rust test-py wheel bench bench-load dlp-eval clean services

help:
	@echo "make serve   - set up and run the gateway (examples/workjet.yaml, http://127.0.0.1:8080)"
	@echo "make test    - set up and run every test (Rust, lint, types, Python, Redis and PostgreSQL)"
	@echo "make wheel   - build an abi3 wheel into dist/"
	@echo "make bench   - micro benchmarks; make bench-load - the server load benchmark"

# System packages, only when missing: a C toolchain for the Rust build, libhs.a for the DLP engine.
system-deps:
	@missing=""; \
	command -v cc >/dev/null || missing="$$missing gcc"; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	ls /usr/lib/*/libhs.a >/dev/null 2>&1 || missing="$$missing libvectorscan-dev"; \
	command -v pkg-config >/dev/null || missing="$$missing pkg-config"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing system packages:$$missing (the pure-Rust DLP engine is used without libhs.a)"; fi; \
	fi
	@command -v cargo >/dev/null || { echo "error: cargo not found: install Rust (https://rustup.rs)"; exit 1; }

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

# Python dependencies (runtime + dev) without building the package itself.
$(VENV)/.deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -c 'import tomllib; p=tomllib.load(open("pyproject.toml","rb"))["project"]; print("\n".join(p["dependencies"]+p["optional-dependencies"]["dev"]))' > $(VENV)/requirements.txt
	$(BIN)/pip install -q -r $(VENV)/requirements.txt
	touch $@

# The token vocabularies, loaded at run time from beside the extension (see tools/dump_token_data.rs).
TOKEN_DATA := python/workjet_fast/data/o200k_base.tokens
$(TOKEN_DATA): Cargo.lock tools/dump_token_data.rs rust/tokens/bpe.rs rust/tokens/mod.rs
	cargo run -q --profile ci --example dump_token_data -- python/workjet_fast/data

# The extension, optimized but cheap to link (CI profile), installed into .venv.
dev: system-deps $(VENV)/.deps $(TOKEN_DATA)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin develop -q --profile ci --features "$(FEATURES)"

build-release: system-deps $(VENV)/.deps $(TOKEN_DATA)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin develop -q --release --features "$(FEATURES)"

serve: build-release
	@mkdir -p data
	$(BIN)/workjet serve --config $(CONFIG)

# Redis and PostgreSQL for the backend tests: started when they are installed but not running.
services:
	@bash .ci/services

lint: dev
	cargo fmt --all -- --check
	cargo clippy --all-targets -q -- -D warnings
	cargo clippy --lib -q --features "$(FEATURES)" -- -D warnings
	$(BIN)/ruff format --check python tests benches
	$(BIN)/ruff check python tests benches
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest workjet_fast._workjet_fast --allowlist .mypy-stubtest-allowlist

test-rust:
	cargo test -q $(HS_FLAG)

test-py: dev services
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q benches/py --benchmark-disable -p no:cacheprovider

test: system-deps lint test-rust test-py

wheel: system-deps $(VENV)/.deps $(TOKEN_DATA)
	$(BIN)/maturin build --release --features "$(FEATURES)" --out dist

bench: dev
	cargo bench $(HS_FLAG)
	$(BIN)/python -m pytest benches/py --benchmark-only --benchmark-columns=median,ops -p no:cacheprovider

# e.g. make bench-load BENCH_ARGS="--soak 600" or BENCH_ARGS="--quick --no-litellm"
bench-load: build-release
	$(BIN)/python -m benches.load.run $(BENCH_ARGS)

dlp-eval: dev
	$(BIN)/python -m workjet_fast.dlp_eval

clean:
	rm -rf target dist $(VENV) data
