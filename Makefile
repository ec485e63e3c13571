# Roost — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CONFIG ?= conf/roost.yaml

.PHONY: deps build release run test e2e check unit msrv fmt fmt-check lint clean upgrade reload fuzz bench deploy-check pingora-test help

deps:            ## install system packages and Rust (Debian/Ubuntu)
	@scripts/deps.sh

build:           ## debug build
	cargo build --all-targets

# One release build serves `make run`, `make test` (benchmark smoke) and `make bench`: the
# bench's bare-Pingora example is built with it, so dev-dependency features are the same for all
# and the binary is never rebuilt just because another target asked for it.
RELEASE_BUILD = cargo build --release --bins --example bare_pingora

release:         ## optimized binaries: target/release/roost (+ the benchmark's bare Pingora)
	$(RELEASE_BUILD)

run: deps release ## three demo backends + Roost on conf/example-local.yaml (Ctrl-C stops)
	@scripts/run-example.sh

test: deps check msrv release pingora-test ## what CI runs before `make deploy-check`: check, MSRV, Pingora's tests of the patched crates, integration and WPS e2e tests, fuzz and bench smoke
	cargo test --all-targets
	scripts/e2e.sh
	scripts/fuzz.sh 20
	python3 bench/run.py --smoke --out target/bench/smoke.md
	python3 bench/shared_state.py --smoke --out target/bench/shared-state-smoke.md

deploy-check:    ## build and run the Docker image, compose file and systemd unit for real (root; ~25 min cached, ~60 fresh): doc/deployment.md
	@if [ "$$(id -u)" = 0 ]; then scripts/deploy-check.sh; else sudo -E scripts/deploy-check.sh; fi

bench: deps release ## Roost vs NGINX vs HAProxy vs bare Pingora: req/s (3 rounds x 10 s), instructions and allocations per request, KB per idle connection, large transfers; the Redis-shared table vs the local one; then the micro-benchmarks
	python3 bench/run.py
	python3 bench/shared_state.py
	cargo bench --bench select

fuzz:            ## every fuzz target for 10 minutes
	scripts/fuzz.sh 600

e2e: build       ## only the WPS end-to-end suite (PyWPS servers, OWSLib, birdy): tests/e2e
	scripts/e2e.sh

check: fmt-check lint unit ## the quick tier (offline once dependencies are cached): fmt, clippy, -t on conf/, unit tests, Pingora patch series
	@for f in conf/*.yaml; do cargo run -q --bin roost -- -c "$$f" -t || exit 1; done
	@scripts/pingora-patches.sh check

unit:            ## unit tests (the pure cores: config, policy, selection, tables)
	cargo test --lib --bins

pingora-test:    ## Pingora's own unit tests of the crates third_party/ patches, but the four needing the internet (doc/pingora-patches.md)
	cargo test --manifest-path third_party/Cargo.toml --workspace --lib -- \
	  --skip connectors::http::v1::tests::test_connect \
	  --skip connectors::http::v1::tests::test_reuse_rejects_fd_mismatch \
	  --skip connectors::l4::tests::test_conn_error_addr_not_avail \
	  --skip connectors::l4::tests::test_conn_timeout

msrv:            ## build with the Rust version Cargo.toml declares (rustup installs it)
	scripts/msrv.sh

help:            ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

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
