#!/usr/bin/env bash
# Memory per VM on this host's /dev/kvm: how much a VMM holds beside its guest's RAM.
#
# Usage: Scripts/bench-memory-per-vm.sh [--binary PATH] [--count 10] [--runs 3] [--no-qemu] [--breakdown]
#
# Each VM is the same: a tiny PVH kernel (boot-bench --write-idle-kernel) that prints "!" on
# the serial port and halts, 1 vCPU, 64 MiB of RAM, a 64 MiB raw disk, a NIC on its own TAP and
# the control socket (cloud-hypervisor's --api-socket, QEMU's QMP). Once the guest has printed
# "!", the VMM's /proc/PID/smaps is read; every mapping of 64 MiB or more (guest RAM) is left
# out. Printed per run, then as medians (min-max) over the runs:
#   - one VMM alone: resident memory (Rss) and proportional memory (Pss) outside guest RAM;
#   - `--count` VMMs side by side: their mean Pss outside guest RAM (shared pages divided among them).
# With --breakdown, each run also prints the lone VMM's Rss per mapped file (and the anonymous,
# heap and stack mappings) and its private dirty total.
# The reference is QEMU (`-machine microvm`, virtio-mmio disk and NIC, QMP), started the same
# way in the same run (QEMU's microvm is its leanest machine; `-cpu host` fails on this host's
# PVM KVM, so QEMU runs `-cpu qemu64`). Needs root (TAP devices). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && case ":$PATH:" in *":/opt/swift/usr/bin:"*) ;; *) PATH="$PATH:/opt/swift/usr/bin" ;; esac

binary="" count=10 runs=3 qemu=1 breakdown=0
while (($#)); do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --count) count="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --no-qemu) qemu=0; shift ;;
    --breakdown) breakdown=1; shift ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench-memory-per-vm: unknown argument $1 (accepted: --binary PATH, --count N, --runs N, --no-qemu, --breakdown)" >&2; exit 2 ;;
  esac
done
[[ $(id -u) == 0 ]] || { echo "bench-memory-per-vm: needs root (each VM gets a TAP device)" >&2; exit 2; }
swift build -c release --product boot-bench >&2
bin_dir="$(swift build -c release --show-bin-path)"
if [[ -z $binary ]]; then
  swift build -c release --product cloud-hypervisor >&2
  binary="$bin_dir/cloud-hypervisor"
fi

work="$(mktemp -d /tmp/memory-per-vm.XXXXXX)"
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
  local tap
  for tap in $(ip -o link show 2>/dev/null | sed -nE 's/^[0-9]+: (mpv[0-9]+)[:@].*/\1/p'); do ip link del "$tap" 2>/dev/null || true; done
}
trap 'stop_all; rm -rf "$work"' EXIT
"$bin_dir/boot-bench" --write-idle-kernel "$work/idle.elf"

# start VMM INDEX: one VM of the given VMM in the background; its pid is appended to pids.
start() {
  local vmm="$1" i="$2"
  truncate -s 64M "$work/disk$i.img"
  rm -f "$work/serial$i" "$work/api$i.sock"
  if [[ $vmm == ch ]]; then
    "$binary" --api-socket "path=$work/api$i.sock" --kernel "$work/idle.elf" --cpus boot=1 --memory size=64M \
      --disk "path=$work/disk$i.img" --net "tap=mpv$i" --serial "file=$work/serial$i" --console off \
      >"$work/vmm$i.log" 2>&1 &
  else
    ip tuntap add dev "mpv$i" mode tap
    qemu-system-x86_64 -enable-kvm -machine microvm -cpu qemu64 -m 64 -nodefaults -no-user-config -display none \
      -kernel "$work/idle.elf" -serial "file:$work/serial$i" -qmp "unix:$work/api$i.sock,server=on,wait=off" \
      -drive "id=d0,file=$work/disk$i.img,format=raw,if=none" -device virtio-blk-device,drive=d0 \
      -netdev "tap,id=n0,ifname=mpv$i,script=no,downscript=no" -device virtio-net-device,netdev=n0 \
      >"$work/vmm$i.log" 2>&1 &
  fi
  pids+=("$!")
}

# wait_guest INDEX: until the guest printed "!" (60 s at most).
wait_guest() {
  local i="$1" tries=0
  until grep -q '!' "$work/serial$i" 2>/dev/null; do
    ((++tries > 600)) && { echo "bench-memory-per-vm: guest $i never printed '!': $(tail -c 400 "$work/vmm$i.log")" >&2; exit 1; }
    sleep 0.1
  done
}

# outside PID: "RSS PSS" in KiB over the mappings smaller than 64 MiB.
outside() {
  awk '/^Size:/{ big = ($2 >= 65536) } /^Rss:/{ if (!big) rss += $2 } /^Pss:/{ if (!big) pss += $2 } END { print rss + 0, pss + 0 }' "/proc/$1/smaps"
}

# breakdown_of VMM PID: Rss in KiB per mapped file (basename) outside guest RAM, largest first.
breakdown_of() {
  awk -v vmm="$1" '
    /^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "") ? "[anonymous]" : $6; sub(/.*\//, "", name) }
    /^Size:/ { big = ($2 >= 65536) }
    /^Rss:/ { if (!big) rss[name] += $2 }
    /^Private_Dirty:/ { if (!big) dirty += $2 }
    END {
      for (n in rss) if (rss[n] > 0) printf "%d %s\n", rss[n], n | "sort -rn | head -n 20 | sed \"s/^/bench-memory-per-vm: " vmm " Rss KiB /\""
      close("sort -rn | head -n 20 | sed \"s/^/bench-memory-per-vm: " vmm " Rss KiB /\"")
      printf "bench-memory-per-vm: %s private dirty %d KiB\n", vmm, dirty
    }' "/proc/$2/smaps"
}

# measure VMM: "ALONE_RSS ALONE_PSS MEAN_PSS_OF_COUNT" for one run.
measure() {
  local vmm="$1" i alone total=0 values
  start "$vmm" 0
  wait_guest 0
  sleep 1
  alone="$(outside "${pids[0]}")"
  ((breakdown)) && breakdown_of "$vmm" "${pids[0]}" >&2
  for ((i = 1; i < count; i++)); do start "$vmm" "$i"; done
  for ((i = 1; i < count; i++)); do wait_guest "$i"; done
  sleep 1
  for ((i = 0; i < count; i++)); do
    values=($(outside "${pids[$i]}"))
    total=$((total + values[1]))
  done
  stop_all
  echo "$alone $((total / count))"
}

median_spread() {  # values... -> "MEDIAN (MIN-MAX)" in MiB with one decimal
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { m = v[int((NR + 1) / 2)]; printf "%.1f MiB (%.1f-%.1f)", m / 1024, v[1] / 1024, v[NR] / 1024 }'
}

ch_rss=() ch_pss=() ch_many=() q_rss=() q_pss=() q_many=()
for ((run = 1; run <= runs; run++)); do
  order=(ch)
  ((qemu)) && { if ((run % 2)); then order=(ch qemu); else order=(qemu ch); fi; }
  for vmm in "${order[@]}"; do
    read -r rss pss many < <(measure "$vmm")
    if [[ $vmm == ch ]]; then ch_rss+=("$rss"); ch_pss+=("$pss"); ch_many+=("$many")
    else q_rss+=("$rss"); q_pss+=("$pss"); q_many+=("$many"); fi
    echo "bench-memory-per-vm: run $run $vmm: alone Rss $rss KiB, Pss $pss KiB; $count side by side: mean Pss $many KiB"
  done
done
echo "ch-bench: memory per VM ($runs runs; tiny guest, 64 MiB RAM, disk, TAP NIC, control socket; outside guest RAM): cloud-hypervisor alone Rss $(median_spread "${ch_rss[@]}"), Pss $(median_spread "${ch_pss[@]}"); $count side by side mean Pss $(median_spread "${ch_many[@]}")"
if ((qemu)); then
  echo "ch-bench: memory per VM, QEMU microvm the same way: alone Rss $(median_spread "${q_rss[@]}"), Pss $(median_spread "${q_pss[@]}"); $count side by side mean Pss $(median_spread "${q_many[@]}")"
fi
