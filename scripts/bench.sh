#!/usr/bin/env bash
# Registry benchmarks (tests/bench.rs, tests/bench_admin.rs): builds the release binary, then
# runs the ignored bench tests against it, one at a time, with their output shown. bench.rs
# runs glci serve and Debian's docker-registry (distribution 2.8) side by side with one client
# and prints one table (target/bench/compare.json); bench_admin.rs writes target/bench/admin.json.
# It does not fail on slow figures, only on wrong answers.
# GLCI_BENCH_ONLY=startup,push,push-tmpfs,pull,rates,https,pull-through runs only those phases of bench.rs;
# GLCI_BENCH_VERSUS=/path/to/glci puts another glci build in distribution's column (an A/B run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
cargo test --release --test bench -- --ignored --nocapture --test-threads=1
cargo test --release --test bench_admin -- --ignored --nocapture --test-threads=1
# The cache figure (issue 16): a 1 GiB node_modules-like tree through glci's cache against docker cp.
cargo test --release --test bench_cache -- --ignored --nocapture --test-threads=1
