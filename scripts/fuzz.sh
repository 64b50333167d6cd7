#!/usr/bin/env bash
# cargo-fuzz targets (fuzz/fuzz_targets/*), each run for FUZZ_SECONDS (default 60); fails if any
# target finds a crash, panic, timeout or leak. Not run by CI. Installs cargo-fuzz if missing;
# on a stable toolchain it uses RUSTC_BOOTSTRAP=1 for the sanitizer flags cargo-fuzz needs.
# FUZZ_TARGETS="routes digest" runs only those. The committed seeds (fuzz/seeds/<target>) are
# read-only inputs; what libFuzzer finds grows fuzz/corpus/<target>, crashes land in
# fuzz/artifacts/<target>/ (both ignored by git). Reproduce one with
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<crash-file>
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
CARGO="${CARGO:-cargo}"

if ! "$CARGO" fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    "$CARGO" install cargo-fuzz --locked
fi
if ! rustc -V | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

targets="${FUZZ_TARGETS:-$("$CARGO" fuzz list)}"
# Build once, then run the binaries: `cargo fuzz run` would rebuild whenever src/ changed.
"$CARGO" fuzz build
bin="target/$(rustc -vV | sed -n 's/^host: //p')/release"

mkdir -p logs target/tmp
# The range target keeps upload sessions in a scratch dir under the temp dir: keep it here.
export TMPDIR="$PWD/target/tmp"
failed=()
summary=()
for target in $targets; do
    mkdir -p "corpus/$target" "seeds/$target"
    log="logs/$target.log"
    echo "fuzz: $target for ${FUZZ_SECONDS}s (log: fuzz/$log)" >&2
    status=0
    mkdir -p "artifacts/$target"
    started=$SECONDS
    "$bin/$target" "corpus/$target" "seeds/$target" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    line="$target: $((SECONDS - started))s, ${execs:-?} executions"
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        line="$line, FAILED (exit $status; see fuzz/$log and fuzz/artifacts/$target/)"
        tail -n 40 "$log" >&2
    fi
    summary+=("$line")
done

printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
