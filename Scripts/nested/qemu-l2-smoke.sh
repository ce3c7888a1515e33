#!/usr/bin/env bash
# End-to-end check of the nested test bench, with QEMU as the level-2 VMM (see
# Scripts/nested/README.md). A later test runs cloud-hypervisor in exactly this place.
#
# Usage: Scripts/nested/qemu-l2-smoke.sh
#
# On this machine it starts level 1 through run-l1.sh, which runs this same script with
# --in-l1 inside level 1. There, QEMU with KVM (`-enable-kvm -cpu host -smp 2 -m 512`)
# boots the uncompressed vmlinux (PVH entry) with the level-2 initramfs; the script waits
# for L2-INIT-READY on the serial console, types a command into the guest's shell
# (counting its CPUs, which must be 2) and then `poweroff -f`, and measures the wall time
# from starting the VMM to the init marker.
#
# With CH_NESTED_SMOKE_CH_TEST=1 a second level-2 boot checks the non-interactive mode
# of the level-2 init (ch_test="..." on the kernel command line).
#
# Environment: CH_NESTED_L2_TIMEOUT (seconds for each level-2 boot, default 240),
# CH_NESTED_L2_APPEND (extra level-2 kernel parameters, e.g. quiet), plus everything
# run-l1.sh reads (CH_NESTED_TIMEOUT, CH_NESTED_CACHE, ...).
# The last line is `nested-smoke: PASS ...` or `nested-smoke: FAIL <reason>`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

# ---------------------------------------------------------------------------------------
# Inside level 1 (the chroot of the host tree, run by run-l1.sh).
# ---------------------------------------------------------------------------------------
in_l1() {
  local l2_timeout="${CH_NESTED_L2_TIMEOUT:-240}"
  fail() {
    echo "nested-smoke: FAIL $*"
    exit 1
  }

  # KVM must be there: kvm-amd loaded by level 1's init on QEMU's emulated SVM.
  [[ -c /dev/kvm ]] || fail "no /dev/kvm in level 1 (svm flags: $(grep -c -w svm /proc/cpuinfo))"
  [[ -s $nested_vmlinux && -s $nested_l2_initrd ]] || fail "no vmlinux or l2 initramfs in $CH_NESTED_CACHE"

  # boot_l2 MODE APPEND: boots level 2 with QEMU as the VMM and follows its serial
  # console (stdout of QEMU under -nographic; carriage returns stripped, lines shown
  # with an "L2| " prefix). MODE "shell" types commands once the init marker appeared;
  # MODE "ch_test" only waits for the test's exit marker. Sets l2_ready_s (VMM start to
  # init marker), l2_uptime (guest uptime at the marker), l2_total_s and l2_cpus.
  boot_l2() {
    local mode="$1" append="$2"
    local vmm=(qemu-system-x86_64 -enable-kvm -cpu host -smp 2 -m 512
      -nographic -no-reboot -nic none
      -kernel "$nested_vmlinux" -initrd "$nested_l2_initrd" -append "$append")
    l2_ready_s="" l2_uptime="" l2_total_s="" l2_cpus=""

    # The VMM runs as a coprocess: its stdout (the guest's serial console) comes back on
    # one pipe, and what is written to the other is typed into the guest's console.
    # Its pipes are duplicated to our own descriptors because bash closes the coprocess
    # ones as soon as it exits, possibly before all its output has been read.
    local start_ns out in pid
    start_ns="$(nested_now_ns)"
    coproc L2VMM { exec timeout -k 5 "$l2_timeout" "${vmm[@]}" 2>&1; }
    pid="$L2VMM_PID"
    exec {out}<&"${L2VMM[0]}" {in}>&"${L2VMM[1]}"
    echo "nested-smoke: started level 2 ($mode): ${vmm[*]}"

    # type TEXT: sends one line to the guest's console (never fatal: the guest may be gone).
    type_line() { { printf '%s\n' "$1" 1>&"$in"; } 2>/dev/null || true; }

    local line state=boot rc=0 test_exit="" deadline=$((SECONDS + l2_timeout))
    while ((SECONDS < deadline)); do
      if ! IFS= read -r -t "$((deadline - SECONDS))" -u "$out" line; then
        [[ -n $line ]] || break # end of output (the VMM exited) or a read timeout
      fi
      line="${line//$'\r'/}"
      line="${line//$'\e'c/}"
      line="${line//$'\e'\[*([0-9;?])[A-Za-z]/}"
      printf 'L2| %s\n' "$line"
      case "$state" in
        boot)
          if [[ $line =~ L2-INIT-READY\ uptime=([0-9.]+) ]]; then
            l2_ready_s="$(nested_secs "$start_ns" "$(nested_now_ns)")"
            l2_uptime="${BASH_REMATCH[1]}"
            echo "nested-smoke: level 2 init marker after $l2_ready_s s wall (guest uptime $l2_uptime s)"
            if [[ $mode == shell ]]; then
              # The echo of the typed line shows `CH-RESULT-$(...`; only the output
              # has digits right after the dash.
              # shellcheck disable=SC2016  # expanded by the guest's shell
              type_line 'echo CH-RESULT-$(grep -c ^processor /proc/cpuinfo)'
              state=result
            else
              state="test"
            fi
          fi
          ;;
        result)
          if [[ $line =~ CH-RESULT-([0-9]+) ]]; then
            l2_cpus="${BASH_REMATCH[1]}"
            type_line 'poweroff -f'
            state=off
          fi
          ;;
        test)
          if [[ $line =~ ^L2-TEST-EXIT=([0-9]+) ]]; then
            test_exit="${BASH_REMATCH[1]}"
            state=off
          elif [[ $line =~ ^([0-9]+)$ ]]; then
            l2_cpus="${BASH_REMATCH[1]}"
          fi
          ;;
      esac
    done
    # The guest powered off (or the loop gave up): reap the VMM, killing it if needed.
    if ((SECONDS >= deadline)); then kill "$pid" 2>/dev/null || true; fi
    wait "$pid" || rc=$?
    exec {out}<&- {in}>&-
    l2_total_s="$(nested_secs "$start_ns" "$(nested_now_ns)")"
    echo "nested-smoke: level 2 VMM exited with status $rc after $l2_total_s s"

    [[ -n $l2_ready_s ]] || fail "level 2 never printed L2-INIT-READY (state $state, VMM status $rc)"
    [[ $state == off ]] || fail "level 2 stopped in state '$state' (VMM status $rc)"
    ((rc == 0)) || fail "the level-2 VMM exited with status $rc"
    [[ $mode == shell || $test_exit == 0 ]] || fail "ch_test exited with status $test_exit"
    [[ $l2_cpus == 2 ]] || fail "level 2 counted '${l2_cpus}' CPUs, expected 2"
  }

  local append="console=ttyS0 panic=-1 ${CH_NESTED_L2_APPEND:-}"
  boot_l2 shell "$append"
  local summary="l2_init=${l2_ready_s}s l2_guest_uptime=${l2_uptime}s l2_vmm_total=${l2_total_s}s cpus=$l2_cpus"
  if [[ ${CH_NESTED_SMOKE_CH_TEST:-0} == 1 ]]; then
    boot_l2 ch_test "$append ch_test=\"grep -c ^processor /proc/cpuinfo\""
    summary+=" ch_test_l2_init=${l2_ready_s}s ch_test_total=${l2_total_s}s"
  fi
  echo "nested-smoke: PASS $summary"
}

shopt -s extglob
case "${1:-}" in
  "") ;;
  --in-l1) in_l1; exit 0 ;;
  -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
  *) nested_die "unknown argument: $1 (usage: qemu-l2-smoke.sh)" ;;
esac

# ---------------------------------------------------------------------------------------
# On this machine: run this script inside level 1, keep the output, sum up.
# ---------------------------------------------------------------------------------------
self="$here/${BASH_SOURCE[0]##*/}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
start_ns="$(nested_now_ns)"
set +e
"$here/run-l1.sh" "$self" --in-l1 2>&1 | tee "$log"
rc="${PIPESTATUS[0]}"
set -e
total="$(nested_secs "$start_ns" "$(nested_now_ns)")"
l1_ready="$(sed -n 's/.*level 1 ready after \([0-9.]*\) s.*/\1/p' "$log" | tail -n 1)"
result="$(grep -a '^nested-smoke: \(PASS\|FAIL\)' "$log" | tail -n 1 || true)"
if ((rc == 0)) && [[ $result == "nested-smoke: PASS"* ]]; then
  echo "${result} l1_ready=${l1_ready:-?}s total=${total}s"
  exit 0
fi
echo "${result:-nested-smoke: FAIL level 1 ended with status $rc and no result}${result:+ (run-l1 status $rc)}"
exit 1
