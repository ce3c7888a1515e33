#!/usr/bin/env bash
# The project's test command (README "Set-up"): installs what is missing, builds, runs every test.
#
# KVM tests run on this host's /dev/kvm and are skipped, with the reason, where it cannot be
# opened; CH_REQUIRE_KVM=1 (set by .ci/run) turns a missing /dev/kvm into a failure.
# Then real Linux guests boot under cloud-hypervisor in the nested bench
# (Scripts/nested/ch-e2e.sh, a few minutes); CH_SKIP_NESTED=1 leaves that out.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && case ":$PATH:" in *":/opt/swift/usr/bin:"*) ;; *) PATH="$PATH:/opt/swift/usr/bin" ;; esac
Scripts/install-deps.sh

# The nested bench's cache (Debian's kernel, as bzImage and vmlinux) also feeds the loader
# tests on a real kernel; prepare.sh is quick once the cache is complete.
if [ "${CH_SKIP_NESTED:-0}" != 1 ] || [ "${CH_REQUIRE_REAL_KERNEL:-0}" = 1 ]; then Scripts/nested/prepare.sh >&2; fi
# Debian's arm64 kernel Image, for the arm64 Image loader's test on a real kernel (cached, ~20 s once).
if [ "${CH_REQUIRE_REAL_KERNEL:-0}" = 1 ]; then Scripts/fetch-arm64-kernel.sh >&2; fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
swift build --build-tests 2>&1 | tail -n 20
status=${PIPESTATUS[0]}
if [ "$status" -eq 0 ]; then
  swift test --skip-build 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
fi
set -e

# One plain closing line with the Swift Testing totals.
summary=$(grep -E 'Test run with [0-9]+ tests?' "$log" | tail -n 1 || true)
total=$(sed -nE 's/.*Test run with ([0-9]+) tests?.*/\1/p' <<<"$summary")
failed=$(grep -E '✘ Test .* failed' "$log" | grep -cv '✘ Test run with' || true)
skipped=$(grep -cE '➜ Test .* skipped' "$log" || true)
if [ -n "$total" ]; then
  echo "swift-testing: $((total - failed - skipped)) passed, $failed failed, $skipped skipped"
fi
# Repeat what failed at the very end: a CI report that keeps only the tail still names it.
if [ "$status" -ne 0 ]; then
  echo "swift-testing: what failed:"
  grep -E '✘ (Test|Suite) .*(failed|recorded an issue)' "$log" | grep -v '✘ Test run with' | head -n 40 || true
  grep -E 'error: |Fatal error|Crash|signal [0-9]+' "$log" | head -n 20 || true
fi
[ "$status" -eq 0 ] || exit "$status"

if [ "${CH_SKIP_NESTED:-0}" = 1 ]; then
  echo "test.sh: nested end-to-end tests skipped (CH_SKIP_NESTED=1)"
  exit 0
fi
Scripts/nested/ch-e2e.sh
