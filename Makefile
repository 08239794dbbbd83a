# corral's two set-up commands: `make run` (chat with the default model) and `make test`.
# Both install what is missing first (scripts/setup.sh) and say what they install.
#
# One build profile (release) serves run, test and bench: llama.cpp is unusable unoptimised.
# CARGO_TARGET_DIR may point outside the clone to keep builds between clones (CI does that).

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
CORRAL := $(CARGO_TARGET_DIR)/release/corral

.PHONY: run test setup build model fixtures plugins bench lint

## Chat with the default model (pulled on first use). Extra arguments: make run ARGS="..."
run: build model plugins
	$(CORRAL) $(ARGS)

## The whole test suite: unit, integration (real default model), prompts, sandbox.
test: build model fixtures plugins
	cargo test --release --workspace

setup:
	@scripts/setup.sh

build: setup
	cargo build --release --workspace --bins

model: build
	@$(CORRAL) model pull >/dev/null

fixtures: setup
	@python3 scripts/fixtures.py

# Builtin tool plugins (wasm32-wasip2 components) next to the corral binary; corral records
# their tool lists, so it is built first.
plugins: build
	@scripts/build-plugins.sh

## corral vs llama.cpp's own llama-bench and llama-server, as ratios (builds those once, cached).
## Extra arguments: make bench ARGS="--quick --json"
bench: build model plugins
	@scripts/bench.sh $(ARGS)

lint:
	cargo fmt --all -- --check
	cargo clippy --release --workspace --all-targets -- -D warnings
