#!/usr/bin/env bash
# The qcow2 benchmark (README "Benchmarks"): the Qcow module against qemu-img/qemu-io on the same
# images, in one run. It makes (with qemu-img) a 1 GiB fully allocated image of random data and a
# 256 MiB compressed one, then times
#   - a sequential read of the whole image: qcow-bench seq vs qemu-img convert to a null target;
#   - 4 KiB random reads and writes (the same offsets): qcow-bench rand vs qemu-io (start-up subtracted;
#     qemu-io parses and reports every command, so this mostly measures its per-command overhead);
#   - 4 KiB strided reads and writes (the same offsets, one request in flight): qcow-bench rand vs
#     qemu-img bench -d 1, whose own timer covers only the I/O.
# Ratios are qemu's time over ours: above 1.0x the module is faster. Both use the host page cache.
# Usage: Scripts/bench-qcow.sh [--ops N]      (default 20000 random operations)
# Environment: QCOW_BENCH_DIR (scratch folder, default /dev/shm or /tmp), SWIFT_SCRATCH (build folder).
set -euo pipefail
cd "$(dirname "$0")/.."
ops=20000
[ "${1:-}" = "--ops" ] && ops=$2
for tool in qemu-img qemu-io; do
  command -v "$tool" >/dev/null || { echo "bench-qcow: $tool is missing (apt-get install qemu-utils)" >&2; exit 1; }
done
scratch=(); [ -n "${SWIFT_SCRATCH:-}" ] && scratch=(--scratch-path "$SWIFT_SCRATCH")
swift build -c release --product qcow-bench "${scratch[@]}" >/dev/null
bench="$(swift build -c release --show-bin-path "${scratch[@]}")/qcow-bench"

base=${QCOW_BENCH_DIR:-$([ -w /dev/shm ] && echo /dev/shm || echo /tmp)}
dir=$(mktemp -d "$base/qcow-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
ns() { date +%s%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
ratio() { awk -v q="$1" -v s="$2" 'BEGIN { printf "%.2fx", q / s }'; }

echo "bench-qcow: making images in $dir"
head -c 1G /dev/urandom > "$dir/full.raw"
qemu-img convert -f raw -O qcow2 "$dir/full.raw" "$dir/full.qcow2"
rm "$dir/full.raw"
head -c 192M /dev/urandom | base64 -w0 | head -c 256M > "$dir/text.raw"
qemu-img convert -c -f raw -O qcow2 "$dir/text.raw" "$dir/compressed.qcow2"
rm "$dir/text.raw"
cat "$dir/full.qcow2" "$dir/compressed.qcow2" > /dev/null   # both sides start from a warm page cache

sequential() {  # image size label
  local start end ours theirs
  start=$(ns); qemu-img convert -n -f qcow2 "$1" --target-image-opts "driver=null-co,size=$2"; end=$(ns)
  theirs=$(seconds "$start" "$end")
  ours=$("$bench" seq "$1" | awk '{ printf "%.3f", $3 }')
  printf '%-34s qcow-bench %7ss  qemu-img convert %7ss  speed vs qemu %s\n' "$3" "$ours" "$theirs" "$(ratio "$theirs" "$ours")"
}
sequential "$dir/full.qcow2" $((1 << 30)) "sequential read, 1 GiB allocated"
sequential "$dir/compressed.qcow2" $((256 << 20)) "sequential read, 256 MiB compressed"

"$bench" offsets "$ops" $((1 << 30)) 7 > "$dir/offsets"
awk '{ print "read " $1 " 4k" }' "$dir/offsets" > "$dir/reads.io"
awk '{ print "write -P 171 " $1 " 4k" }' "$dir/offsets" > "$dir/writes.io"
echo "read 0 4k" > "$dir/one.io"
start=$(ns); qemu-io -f qcow2 "$dir/full.qcow2" < "$dir/one.io" > /dev/null; end=$(ns)
startup=$(( end - start ))
random() {  # commands label [--write]
  local start end ours theirs
  start=$(ns); qemu-io -f qcow2 "$dir/full.qcow2" < "$1" > /dev/null; end=$(ns)
  theirs=$(seconds "$startup" "$(( end - start ))")
  ours=$("$bench" rand "$dir/full.qcow2" "$dir/offsets" ${3:-} | awk '{ printf "%.3f", $3 }')
  printf '%-34s qcow-bench %7ss  qemu-io %16ss  speed vs qemu %s  (%s ops/s)\n' "$2" "$ours" "$theirs" "$(ratio "$theirs" "$ours")" \
    "$(awk -v n="$ops" -v s="$ours" 'BEGIN { printf "%.0f", n / s }')"
}
random "$dir/reads.io" "$ops random 4 KiB reads"
random "$dir/writes.io" "$ops random 4 KiB writes" --write
step=$((4096 * 104729))  # a prime number of 4 KiB blocks: the requests hop across the whole image
awk -v n="$ops" -v step="$step" -v size=$((1 << 30)) 'BEGIN { o = 0; for (k = 0; k < n; k++) { print o; o = (o + step) % size } }' > "$dir/strided"
strided() {  # label [-w]
  local ours theirs
  theirs=$(qemu-img bench -c "$ops" -d 1 -s 4k -S "$step" -t writeback ${2:-} -f qcow2 "$dir/full.qcow2" | awk '/Run completed/ { print $4 }')
  ours=$("$bench" rand "$dir/full.qcow2" "$dir/strided" ${2:+--write} | awk '{ printf "%.3f", $3 }')
  printf '%-34s qcow-bench %7ss  qemu-img bench -d 1 %6ss  speed vs qemu %s\n' "$1" "$ours" "$theirs" "$(ratio "$theirs" "$ours")"
}
strided "$ops strided 4 KiB reads"
strided "$ops strided 4 KiB writes" -w
qemu-img check -q "$dir/full.qcow2" && echo "bench-qcow: qemu-img check finds the written image clean"
