#!/usr/bin/env bash
# Snapshot and restore latency, live-migration time and downtime, hotplug latency, boot time,
# disk and network throughput or vhost-user device throughput, against QEMU in the nested bench
# (see snapshot-bench.py, migration-bench.py, hotplug-bench.py, boot-bench.py, io-bench.py and
# devices-bench.py for what is measured).
#
# Usage: Scripts/nested/bench-snapshot.sh [--binary PATH] [--sizes "128 1024"] [--runs 5] [--migration [--size 512] | --hotplug | --boot | --io [--net-only] | --devices]
#
# Builds cloud-hypervisor and ch-remote (release) unless --binary is given, boots level 1
# through run-l1.sh and runs the benchmark there. Prints `ch-bench: snapshot ...` and
# `ch-bench: restore ...` lines per guest size (or `ch-bench: migration ...` per idle and busy
# guest, `ch-bench: hotplug ...` per vCPU, disk and memory, `ch-bench: boot ...` wall and guest
# time, `ch-bench: io ...` per disk and network figure, `ch-bench: device ...` per device and
# transfer): medians with their spread and the
# median ratio cloud-hypervisor / QEMU. With --io, --net-only skips the disk figures and runs
# only the network ones (ping, TCP both ways). Not part of CI (a run takes several minutes).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

if [[ ${1:-} == --in-l1 ]]; then
  shift
  [[ -c /dev/kvm ]] || nested_die "no /dev/kvm in level 1"
  ip link set lo up  # level 1's init leaves it down; the migrations run over loopback TCP
  if [[ $5 == devices ]]; then
    exec python3 "$here/devices-bench.py" "$1" "$2" "$nested_vmlinux" "$nested_l2_initrd" "$4"
  fi
  if [[ $5 == io ]]; then
    exec python3 "$here/io-bench.py" "$1" "$2" "$nested_vmlinux" "$nested_l2_initrd" "$4" "$nested_netbench" "$6"
  fi
  if [[ $5 == boot ]]; then
    exec python3 "$here/boot-bench.py" "$1" "$2" "$nested_vmlinux" "$nested_l2_initrd" "$4"
  fi
  if [[ $5 == hotplug ]]; then
    exec python3 "$here/hotplug-bench.py" "$1" "$2" "$nested_vmlinux" "$nested_l2_initrd" "$4"
  fi
  if [[ $5 == migration ]]; then
    exec python3 "$here/migration-bench.py" "$1" "$2" "$nested_vmlinux" "$nested_l2_initrd" "$6" "$4"
  fi
  exec python3 "$here/snapshot-bench.py" "$1" "$2" "$nested_vmlinux" "$nested_l2_initrd" "$3" "$4"
fi

binary="" sizes="128 1024" runs=5 mode=snapshot size=512 io_parts=all
while (($#)); do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --sizes) sizes="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --migration) mode=migration; shift ;;
    --hotplug) mode=hotplug; shift ;;
    --boot) mode=boot; shift ;;
    --io) mode=io; shift ;;
    --net-only) io_parts=net-only; shift ;;
    --devices) mode=devices; shift ;;
    --size) size="$2"; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) nested_die "unknown argument: $1 (usage: bench-snapshot.sh [--binary PATH] [--sizes \"128 1024\"] [--runs 5] [--migration [--size 512] | --hotplug | --boot | --io [--net-only] | --devices])" ;;
  esac
done
repo="$(cd "$here/../.." && pwd)"
if [[ -z $binary ]]; then
  (cd "$repo" && swift build -c release --product cloud-hypervisor >&2 && swift build -c release --product ch-remote >&2)
  binary="$(cd "$repo" && swift build -c release --show-bin-path)/cloud-hypervisor"
fi
[[ $io_parts == all || $mode == io ]] || nested_die "--net-only goes with --io"
# Level 1 gets the io part selection where the other modes pass their size.
[[ $mode == io ]] && size="$io_parts"
remote="$(dirname "$binary")/ch-remote"
[[ -x $binary && -x $remote ]] || nested_die "need cloud-hypervisor and ch-remote at $(dirname "$binary")"
CH_NESTED_TIMEOUT="${CH_NESTED_TIMEOUT:-3600}" "$here/run-l1.sh" "$here/bench-snapshot.sh" --in-l1 "$binary" "$remote" "$sizes" "$runs" "$mode" "$size"
