#!/usr/bin/env bash
# The guest memory snapshot benchmark (Benchmarks/MemorySnapshotBench): save a 1 GiB guest with
# 10% non-zero pages to a sparse file, restore it in copy mode (page cache warm and cold) and in
# on-demand mode (userfaultfd: set-up, first touch of 1% of the pages, prefault of the rest).
# Usage: Scripts/bench-memory-snapshot.sh [memory-snapshot-bench options: --size MiB --data % --touch % --chunk KiB --dir PATH]
# Needs userfaultfd (root, or vm.unprivileged_userfaultfd=1) for the on-demand part.
# Environment: SWIFT_SCRATCH (build folder).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=(); [ -n "${SWIFT_SCRATCH:-}" ] && scratch=(--scratch-path "$SWIFT_SCRATCH")
swift build -c release --product memory-snapshot-bench "${scratch[@]}" >/dev/null
"$(swift build -c release --show-bin-path "${scratch[@]}")/memory-snapshot-bench" "$@"
