# Roost — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CONFIG ?= conf/roost.yaml

.PHONY: deps build release run test e2e check fmt fmt-check lint clean upgrade reload fuzz bench

deps:            ## install system packages and Rust (Debian/Ubuntu)
	@scripts/deps.sh

build:           ## debug build
	cargo build --all-targets

release:         ## optimized binary at target/release/roost
	cargo build --release --bins

run: deps release ## three demo backends + Roost on conf/example-local.yaml (Ctrl-C stops)
	@scripts/run-example.sh

test: deps check ## everything CI runs: formatting, lints, unit, integration and WPS e2e tests, fuzz and bench smoke
	cargo test --all-targets
	scripts/e2e.sh
	scripts/fuzz.sh 20
	cargo build --release --bins --example bare_pingora
	python3 bench/run.py --smoke --out target/bench/smoke.md

bench: deps release ## Roost vs NGINX vs HAProxy vs bare Pingora (3 rounds x 10 s), then the micro-benchmarks
	cargo build --release --example bare_pingora
	python3 bench/run.py
	cargo bench --bench select

fuzz:            ## every fuzz target for 10 minutes
	scripts/fuzz.sh 600

e2e: build       ## only the WPS end-to-end suite (PyWPS servers, OWSLib, birdy): tests/e2e
	scripts/e2e.sh

check: fmt-check lint
	@for f in conf/*.yaml; do cargo run -q --bin roost -- -c "$$f" -t || exit 1; done

fmt-check:
	cargo fmt --check

fmt:
	cargo fmt

lint:
	cargo clippy --all-targets -- -D warnings

upgrade: release ## hot-swap the running daemon of CONFIG for target/release/roost (zero downtime)
	target/release/roost upgrade -c $(CONFIG)

reload: release  ## SIGHUP: the running daemon of CONFIG re-reads its backends and health checks
	target/release/roost reload -c $(CONFIG)

clean:
	cargo clean
