#!/usr/bin/env bash
# The port-I/O exit benchmark (README "Benchmarks"): one million exits from a CPL3 guest through
# the Swift KVM backend and through a C floor in the same run, plus process start to first exit.
# Usage: Scripts/bench-kvm-exits.sh [--iterations N] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product kvm-exit-bench >/dev/null
bin="$(swift build -c release --show-bin-path)/kvm-exit-bench"
CH_BENCH_SPAWN_NS=$(date +%s%N) exec "$bin" "$@"
