#!/usr/bin/env bash
# Registry benchmarks (tests/bench.rs, tests/bench_admin.rs): builds the release binary, then
# runs the ignored bench tests against it, one at a time, with their output shown. It prints
# figures and writes target/bench/registry.json and target/bench/admin.json; it does not fail
# on slow figures, only on wrong answers.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
cargo test --release --test bench -- --ignored --nocapture --test-threads=1
cargo test --release --test bench_admin -- --ignored --nocapture --test-threads=1
