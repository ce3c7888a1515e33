# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The cpuhotplug scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures, $in, $pid, $base, $append, $binary and $remote.

# hp_type LINE: types LINE into the guest's console (from a step that runs in level 1).
hp_type() { printf '%s\n' "$1" >&"$in"; }

# hp_vcpu_threads: how many vCPU threads the VMM (the child of run_l2's timeout) runs.
hp_vcpu_threads() {
  local vmm
  vmm="$(pgrep -P "$pid" | head -n 1 || true)"
  grep -l '^vcpu' /proc/"${vmm:-$pid}"/task/*/comm 2>/dev/null | wc -l
}

# scenario_cpuhotplug: a guest booted with --cpus boot=1,max=4 (ACPI CPU hotplug as Cloud
# Hypervisor describes it). `ch-remote resize --cpus 3` adds two vCPUs: the guest's kernel
# sees them through the GED and \_SB_.CPUS.CSCN, the shell onlines them if the kernel left
# them offline (no udev here), and three busy loops pinned with taskset make each CPU's
# user time in /proc/stat grow. `resize --cpus 2` removes one: the kernel offlines it and
# ejects it (_EJ0), the guest shows 2 CPUs and the VMM runs 2 vCPU threads. `resize --cpus 3`
# brings it back (the VMM reuses the ejected KVM vCPU on a new thread) and the guest onlines it
# again. `resize --cpus 5` is refused (above max), and vm.info's boot_vcpus is 3.
scenario_cpuhotplug() {
  local hp_dir sock
  hp_dir="$(mktemp -d)"
  sock="$hp_dir/api.sock"
  hp_grow() {
    "$remote" --api-socket "$sock" resize --cpus 3 >"$hp_dir/grow.out" 2>&1 && echo resized >>"$hp_dir/grow.out"
    echo "vcpu-threads $(hp_vcpu_threads)" >>"$hp_dir/grow.out"
    hp_type 'n=0; while [ ! -e /sys/devices/system/cpu/cpu2 ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; for c in 1 2; do f=/sys/devices/system/cpu/cpu$c/online; [ -e $f ] && [ "$(cat $f)" = 0 ] && echo 1 >$f; done; echo CH-HP-GROWN-$(cat /sys/devices/system/cpu/online)'
  }
  hp_shrink() {
    "$remote" --api-socket "$sock" resize --cpus 2 >"$hp_dir/shrink.out" 2>&1 && echo resized >>"$hp_dir/shrink.out"
    hp_type 'n=0; while [ "$(cat /sys/devices/system/cpu/online)" != 0-1 ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; sleep 2; echo CH-HP-SHRUNK-$(cat /sys/devices/system/cpu/online)_$(grep -c ^processor /proc/cpuinfo)'
  }
  hp_regrow() {
    local tries=0
    # The guest ejects the removed vCPU right after offlining it; its thread then ends.
    while (($(hp_vcpu_threads) != 2)) && ((tries < 50)); do sleep 0.2; tries=$((tries + 1)); done
    echo "vcpu-threads $(hp_vcpu_threads)" >"$hp_dir/threads.out"
    "$remote" --api-socket "$sock" resize --cpus 3 >"$hp_dir/regrow.out" 2>&1 && echo resized >>"$hp_dir/regrow.out"
    hp_type 'n=0; while [ ! -e /sys/devices/system/cpu/cpu2 ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; f=/sys/devices/system/cpu/cpu2/online; [ -e $f ] && [ "$(cat $f)" = 0 ] && echo 1 >$f; echo CH-HP-REGROWN-$(cat /sys/devices/system/cpu/online)'
  }
  hp_final() {
    echo "vcpu-threads $(hp_vcpu_threads)" >>"$hp_dir/regrow.out"
    local status=0
    "$remote" --api-socket "$sock" resize --cpus 5 >"$hp_dir/over.out" 2>&1 || status=$?
    echo "status $status" >>"$hp_dir/over.out"
    "$remote" --api-socket "$sock" info >"$hp_dir/info.json" 2>&1 || true
    hp_type 'echo CH-HP-DONE-$((40+2))'
  }
  local work='p=""; for m in 1 2 4; do taskset $m sh -c "while :; do :; done" & p="$p $!"; done; sleep 1; s() { for c in 0 1 2; do set -- $(grep "^cpu$c " /proc/stat); printf "%s " $2; done; }; a=$(s); sleep 3; b=$(s); kill $p; set -- $a $b; echo CH-HP-WORK-$(($4-$1))_$(($5-$2))_$(($6-$3))'
  local steps="L2-INIT-READY|||echo CH-HP-BOOT-\$(cat /sys/devices/system/cpu/online)_\$(cat /sys/devices/system/cpu/possible)
  CH-HP-BOOT-([0-9,-]+_[0-9,-]+)|||!hp_grow
  CH-HP-GROWN-([0-9,-]+)|||$work
  CH-HP-WORK-([0-9]+_[0-9]+_[0-9]+)|||!hp_shrink
  CH-HP-SHRUNK-([0-9,-]+_[0-9]+)|||!hp_regrow
  CH-HP-REGROWN-([0-9,-]+)|||!hp_final
  CH-HP-DONE-([0-9]+)|||poweroff -f"
  local vm=(--api-socket "path=$sock" "${base[@]}" --cpus boot=1,max=4 --memory size=256M --cmdline "$append")
  run_l2 cpuhotplug "$steps" "$binary" "${vm[@]}"
  if ((stalled)); then
    echo "ch-e2e: [cpuhotplug] the guest stalled; running the scenario again"
    run_l2 cpuhotplug "$steps" "$binary" "${vm[@]}"
  fi
  local u0=0 u1=0 u2=0
  IFS=_ read -r u0 u1 u2 <<<"${captures[2]:-0_0_0}"
  echo "ch-e2e: [cpuhotplug] grow: $(tr '\n' ' ' <"$hp_dir/grow.out" 2>/dev/null); shrink: $(tr '\n' ' ' <"$hp_dir/shrink.out" 2>/dev/null); after the eject: $(cat "$hp_dir/threads.out" 2>/dev/null); grow again: $(tr '\n' ' ' <"$hp_dir/regrow.out" 2>/dev/null); resize 5: $(tr '\n' ' ' <"$hp_dir/over.out" 2>/dev/null); boot_vcpus in info: $(grep -o '"boot_vcpus":[0-9]*' "$hp_dir/info.json" 2>/dev/null)"
  if ((steps_done == 7)) && ((vmm_status == 0)) && [[ ${captures[0]} == 0_0-3 && ${captures[1]} == 0-2 ]] &&
    ((u0 > 50 && u1 > 50 && u2 > 50)) && [[ ${captures[3]} == 0-1_2 && ${captures[4]} == 0-2 ]] &&
    grep -q resized "$hp_dir/regrow.out" && grep -q 'vcpu-threads 3' "$hp_dir/regrow.out" &&
    grep -q resized "$hp_dir/grow.out" && grep -q 'vcpu-threads 3' "$hp_dir/grow.out" && grep -q resized "$hp_dir/shrink.out" &&
    grep -q 'vcpu-threads 2' "$hp_dir/threads.out" && grep -q 'above max_vcpus' "$hp_dir/over.out" && ! grep -q 'status 0' "$hp_dir/over.out" &&
    grep -q '"boot_vcpus":3' "$hp_dir/info.json"; then
    pass "cpuhotplug: --cpus boot=1,max=4 (online 0, possible 0-3); ch-remote resize --cpus 3: the guest saw CPUs 0-2 online and busy loops pinned to each ran (user ticks in 3 s: $u0/$u1/$u2), 3 vCPU threads; resize --cpus 2: the guest offlined and ejected CPU 2 (online 0-1, 2 processors) and its thread ended; resize --cpus 3 again: the ejected vCPU came back on a new thread and the guest onlined it (0-2); resize --cpus 5 refused (above max_vcpus); vm.info boot_vcpus 3; VMM status 0"
  else
    fail "cpuhotplug: steps $steps_done/7, VMM status $vmm_status, captures [${captures[*]:-}]"
  fi
  rm -rf "$hp_dir"
}
