#!/usr/bin/env bash
# Regenerates Sources/CloudHypervisor/link-order.txt: the functions of cloud-hypervisor that an
# idle booted VMM has run, which the release link places first and together
# (`--symbol-ordering-file` in Package.swift) so that its code touches few pages of the binary.
#
# Usage: Scripts/update-link-order.sh
#
# Boots the idle VM of Scripts/bench-memory-per-vm.sh (a tiny PVH guest that prints "!" and halts,
# 1 vCPU, 64 MiB, a raw disk, a NIC on a TAP, the API socket) under valgrind's callgrind, waits
# for the guest's "!" and two seconds of idling, dumps the profile and lists, in name order, every
# function of the binary it ran. Seccomp is off for the run (valgrind does not know the seccomp
# system call); the few functions installing the filters are missing from the list, which costs a
# page or two, nothing more. Names the code no longer has are skipped by the linker.
# Needs root (TAP device) and valgrind. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && case ":$PATH:" in *":/opt/swift/usr/bin:"*) ;; *) PATH="$PATH:/opt/swift/usr/bin" ;; esac
[[ $(id -u) == 0 ]] || { echo "update-link-order: needs root (the VM gets a TAP device)" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "update-link-order: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
swift build -c release --product boot-bench >&2
swift build -c release --product cloud-hypervisor >&2
bin_dir="$(swift build -c release --show-bin-path)"
work="$(mktemp -d /tmp/link-order.XXXXXX)"
vg=""
cleanup() {
  [[ -n $vg ]] && { kill -9 "$vg" 2>/dev/null || true; wait "$vg" 2>/dev/null || true; }
  ip link del lo-order0 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin_dir/boot-bench" --write-idle-kernel "$work/idle.elf"
truncate -s 64M "$work/disk.img"
# valgrind cannot read the DWARF of Swift's objects; the symbol table is enough.
strip --strip-debug -o "$work/cloud-hypervisor" "$bin_dir/cloud-hypervisor"
valgrind --tool=callgrind --callgrind-out-file="$work/profile" "$work/cloud-hypervisor" --seccomp false \
  --api-socket "path=$work/api.sock" --kernel "$work/idle.elf" --cpus boot=1 --memory size=64M \
  --disk "path=$work/disk.img" --net tap=lo-order0 --serial "file=$work/serial" --console off \
  >"$work/vmm.log" 2>&1 &
vg=$!
tries=0
until grep -q '!' "$work/serial" 2>/dev/null; do
  ((++tries > 1200)) && { echo "update-link-order: the guest never printed '!': $(tail -c 600 "$work/vmm.log")" >&2; exit 1; }
  sleep 0.1
done
sleep 2
callgrind_control --dump "$vg" >/dev/null
sleep 2
profile="$(ls "$work"/profile.* | head -1)"
# Callgrind names each function once as "fn=(ID) NAME" (or "cfn=" for a callee), then by "(ID)"
# alone; the object is given the same way by "ob=" / "cob=". Recursion depth shows as "'N".
awk '
  function name(s, table,   id, rest) {
    id = s; sub(/\).*/, "", id); sub(/^\(/, "", id)
    rest = s; if (sub(/^\([0-9]+\) /, "", rest)) { table[id] = rest; return rest }
    return table[id]
  }
  /^ob=/  { ob = name(substr($0, 4), obs); cob = ""; next }
  /^cob=/ { cob = name(substr($0, 5), obs); next }
  /^fn=/  { n = name(substr($0, 4), fns); if (ob ~ /\/cloud-hypervisor$/) print n; cob = ""; next }
  /^cfn=/ { n = name(substr($0, 5), fns); o = (cob != "" ? cob : ob); if (o ~ /\/cloud-hypervisor$/) print n; cob = ""; next }
' "$profile" | sed -E "s/'[0-9]+\$//" | grep -v -E '^\(|^0x' | LC_ALL=C sort -u >Sources/CloudHypervisor/link-order.txt
echo "update-link-order: $(wc -l <Sources/CloudHypervisor/link-order.txt) functions in Sources/CloudHypervisor/link-order.txt" >&2
