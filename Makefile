# glci developer entry points. `make test` is the one test command (CI runs it
# through .ci/run): it installs/starts what the integration tests drive, then
# runs every test target.

CARGO ?= cargo

.PHONY: all build deps test lint bench demo fuzz

all: build

## build: release binary at target/release/glci
build:
	$(CARGO) build --release

## deps: docker.io, skopeo, docker-registry, busybox-static installed; dockerd answering
deps:
	scripts/deps.sh

## test: deps, then unit + integration tests (tests/clients.rs needs skopeo and dockerd);
##       tests/dockerd_restart.rs stops and starts dockerd, so only here (GLCI_TEST_RESTART_DOCKERD)
test: deps
	GLCI_TEST_RESTART_DOCKERD=1 $(CARGO) test --all-targets

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## fuzz: cargo-fuzz targets (fuzz/), FUZZ_SECONDS each (default 60); fails on any crash. Not in CI.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) CARGO=$(CARGO) scripts/fuzz.sh

## bench: release build, then tests/bench*.rs: own-client figures (target/bench/compare.json), real clients
##        (clients.json: curl, skopeo, docker, ctr, HTTPS, pull-through), the run path (run.json),
##        the cache vs docker cp (cache.json), S3 (s3.json)
bench:
	scripts/bench.sh

## demo: fixtures/demo pipeline with the embedded registry (push, run in the image, run again),
##       then glci serve + skopeo round trip of the OCI fixture, digests compared
demo: deps build
	scripts/demo-pipeline.sh
	scripts/demo.sh
