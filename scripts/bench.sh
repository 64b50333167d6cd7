#!/usr/bin/env bash
# Placeholder so `make bench` exists; there is no benchmark yet. Fails on
# purpose so nobody mistakes a green run for a measurement.
set -euo pipefail
echo "bench: not yet written" >&2
exit 1
