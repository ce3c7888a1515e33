#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ (release, AddressSanitizer, coverage on every
# module) and runs them (fuzz/README.md).
#
#   Scripts/fuzz.sh [--seconds N] [--target NAME]...   fuzz each target N seconds (default 20)
#   Scripts/fuzz.sh --replay [--target NAME]...        run each target once over its seed corpus
#   Scripts/fuzz.sh --write-seeds [--target NAME]...   regenerate fuzz/corpus/<target> from the targets
#   Scripts/fuzz.sh --list                             print the target names
#
# Fuzzing works on a copy of fuzz/corpus/<target> (new inputs never touch the committed
# seeds). A crashing input is kept in fuzz/artifacts/<target>/ (ignored by git); replay it
# with `fuzz/.build-fuzz/release/fuzz-<target> <file>`. Prints, per target, executions,
# executions per second and whether it crashed; exits 1 when any target crashed.
set -euo pipefail
# libFuzzer and ASan report crashes; the Swift backtracer would race them for the signal.
export SWIFT_BACKTRACE=enable=no
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && case ":$PATH:" in *":/opt/swift/usr/bin:"*) ;; *) PATH="$PATH:/opt/swift/usr/bin" ;; esac

all_targets=(virtqueue virtio-blk virtio-console virtio-rng virtio-net virtio-vsock pci-config elf-loader bzimage-loader cmdline
  option-parser api-body uart i8042 cmos aml arm64-image arm64-fdt snapshot-restore migration-receive
  vhost-user-reply vhost-user-request json)
mode=fuzz
seconds=20
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    --target) targets+=("${2:?--target needs a name (see --list)}"); shift 2 ;;
    --replay) mode=replay; shift ;;
    --write-seeds) mode=seeds; shift ;;
    --list) printf '%s\n' "${all_targets[@]}"; exit 0 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1'; use --seconds N, --target NAME, --replay, --write-seeds or --list" >&2; exit 2 ;;
  esac
done
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: --seconds takes a whole number of seconds, not '$seconds'" >&2; exit 2 ;; esac
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for target in "${targets[@]}"; do
  case " ${all_targets[*]} " in *" $target "*) ;; *)
    echo "fuzz.sh: no target '$target'; targets: ${all_targets[*]}" >&2; exit 2 ;;
  esac
done

# The sanitizer flags go to every module (-Xswiftc), so the project's libraries carry
# libFuzzer's coverage counters; fuzz/Package.swift adds them to the targets as well.
started=$(date +%s)
build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
if ! (cd fuzz && swift build -c release --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address) >"$build_log" 2>&1; then
  grep -E 'error:' "$build_log" | head -n 30 >&2 || tail -n 30 "$build_log" >&2
  echo "fuzz.sh: building the fuzz package failed (full log above was from: cd fuzz && swift build -c release --scratch-path .build-fuzz)" >&2
  exit 1
fi
echo "fuzz.sh: built in $(( $(date +%s) - started ))s"
bin=fuzz/.build-fuzz/release

if [ "$mode" = seeds ]; then
  for target in "${targets[@]}"; do
    rm -rf "fuzz/corpus/$target"
    mkdir -p fuzz/corpus
    FUZZ_WRITE_SEEDS="fuzz/corpus/$target" "$bin/fuzz-$target"
    echo "fuzz.sh: $target: $(ls "fuzz/corpus/$target" | wc -l) seeds, $(cat "fuzz/corpus/$target"/* | wc -c) bytes"
  done
  exit 0
fi

work=$(mktemp -d)
trap 'rm -f "$build_log"; rm -rf "$work"' EXIT
crashed=()
printf '%-16s %12s %10s  %s\n' target executions exec/s result
for target in "${targets[@]}"; do
  corpus="$work/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  [ -d "fuzz/corpus/$target" ] && cp fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true
  log="$work/$target.log"
  flags=(-rss_limit_mb=2048 -print_final_stats=1 "-artifact_prefix=fuzz/artifacts/$target/")
  if [ "$mode" = replay ]; then
    flags+=(-runs=0)
  else
    flags+=("-max_total_time=$seconds" -timeout=10)
  fi
  set +e
  "$bin/fuzz-$target" "${flags[@]}" "$corpus" >"$log" 2>&1
  status=$?
  set -e
  executions=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
  rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -n 1)
  if [ "$status" -eq 0 ]; then
    result=ok
  else
    result="CRASH (exit $status)"
    crashed+=("$target")
    grep -E '==ERROR|Fatal error|invariant broken|SUMMARY|Test unit written|deadly signal' "$log" | head -n 8 | sed 's/^/    /' >&2
  fi
  printf '%-16s %12s %10s  %s\n' "$target" "${executions:-?}" "${rate:-?}" "$result"
done
echo "fuzz.sh: ${#targets[@]} target(s) in $(( $(date +%s) - started ))s"
if [ ${#crashed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashed: ${crashed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
