# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The virtiomem scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures, $in, $base, $append, $binary and $remote.
# shellcheck source-path=SCRIPTDIR source=restore-step.sh
source "$here/restore-step.sh"

# vm_type LINE: types LINE into the guest's console (from a step that runs in level 1).
vm_type() { printf '%s\n' "$1" >&"$in"; }

# scenario_virtiomem: a guest booted with --memory size=512M,hotplug_method=virtio-mem,
# hotplug_size=512M (the virtio_mem driver loaded, memhp_default_state=online_movable so that
# the memory it adds is onlined movable, which it can unplug again). `ch-remote resize --memory
# 1024M` asks the device for 512 MiB: the driver plugs it and MemTotal grows by about 512 MiB;
# a tmpfs then holds 640 MiB, more than the boot RAM. After the tmpfs is gone, `resize --memory
# 768M` makes the driver unplug 256 MiB and MemTotal drops. `resize --memory 2048M` (above
# hotplug_size) is refused with a 4xx, and vm.info reports size 512 MiB and hotplugged_size 256 MiB.
# Then a tmpfs gets 480 MiB of data (a 16 MiB random block 30 times; movable allocations go to the
# plugged, movable memory first), the VM is paused and snapshotted, its VMM killed (SIGKILL), and a
# new VMM restores it (--restore ...,resume=on): without booting again, the guest's MemTotal is
# still the shrunk one, the file's md5 is unchanged, and the new VMM's vm.info reports
# hotplugged_size 256 MiB.
scenario_virtiomem() {
  local vm_dir sock
  vm_dir="$(mktemp -d)"
  sock="$vm_dir/api.sock"
  # vm_wait_total OP DELTA: a guest line that waits (up to 240 s of guest time) while MemTotal is
  # still OP the value the guest kept in /tmp/t0 plus DELTA kB (the driver plugs and unplugs block
  # by block, and retries an unplug whose pages it could not move yet after a growing delay); it
  # prints MemTotal every 25 polls, so that the console never falls silent for the harness.
  vm_wait_total() {
    printf '%s' 'n=0; t0=$(cat /tmp/t0); end=$(($(cut -d. -f1 /proc/uptime) + 240)); while [ "$(awk "/MemTotal/ {print \$2}" /proc/meminfo)" '"$1"' $((t0 + ('"$2"'))) ] && [ "$(cut -d. -f1 /proc/uptime)" -lt $end ]; do sleep 0.2; n=$((n+1)); [ $((n % 25)) -eq 0 ] && echo CH-VM-WAITING-$n-$(awk "/MemTotal/ {print \$2}" /proc/meminfo); done; '
  }
  vm_grow() {
    "$remote" --api-socket "$sock" resize --memory 1024M >"$vm_dir/grow.out" 2>&1 && echo resized >>"$vm_dir/grow.out"
    vm_type "$(vm_wait_total -lt 500000)"'sleep 1; awk "/MemTotal/ {print \$2}" /proc/meminfo >/tmp/t0; echo CH-VM-GROWN-$(cat /tmp/t0)'
  }
  vm_shrink() {
    "$remote" --api-socket "$sock" resize --memory 768M >"$vm_dir/shrink.out" 2>&1 && echo resized >>"$vm_dir/shrink.out"
    # /tmp/t0 holds the grown MemTotal (kept at the end of the grow): read here, after the
    # resize, it could already be the shrunk one.
    vm_type "$(vm_wait_total -gt -250000)"'sleep 1; echo CH-VM-SHRUNK-$(awk "/MemTotal/ {print \$2}" /proc/meminfo)'
  }
  vm_final() {
    local status=0
    "$remote" --api-socket "$sock" resize --memory 2048M >"$vm_dir/over.out" 2>&1 || status=$?
    echo "status $status" >>"$vm_dir/over.out"
    "$remote" --api-socket "$sock" info >"$vm_dir/info.json" 2>&1 || true
    vm_type 'mkdir -p /tmp/vm && mount -t tmpfs -o size=900m tmpfs /tmp/vm && dd if=/dev/urandom of=/tmp/vm.seed bs=1048576 count=16 2>/dev/null; i=0; while [ $i -lt 30 ]; do cat /tmp/vm.seed; i=$((i+1)); done >/tmp/vm/keep; rm -f /tmp/vm.seed; echo CH-VM-KEPT-$(($(stat -c %s /tmp/vm/keep) / 1048576))_$(md5sum /tmp/vm/keep | cut -c1-32)'
  }
  # vm_restore: snapshot, kill, restore in a new VMM (restore-step.sh); the restored guest
  # prints MemTotal and the file's md5.
  vm_restore() {
    restore_in_new_vmm "$vm_dir" "$sock" 'echo CH-VM-RESTORED-$(awk "/MemTotal/ {print \$2}" /proc/meminfo)_$(md5sum /tmp/vm/keep | cut -c1-32)' 'CH-VM-RESTORED-[0-9]'
  }
  local restored_status=-1
  local fill='mkdir -p /tmp/vm && mount -t tmpfs -o size=900m tmpfs /tmp/vm && dd if=/dev/zero of=/tmp/vm/fill bs=1048576 count=640 2>/dev/null; echo CH-VM-FILLED-$(($(stat -c %s /tmp/vm/fill) / 1048576)); rm -f /tmp/vm/fill; umount /tmp/vm; echo 3 >/proc/sys/vm/drop_caches; echo CH-VM-EMPTIED-$((6*7))'
  local steps="L2-INIT-READY|||awk '/MemTotal/ {print \$2}' /proc/meminfo >/tmp/t0; echo CH-VM-BOOT-\$(cat /tmp/t0)
  CH-VM-BOOT-([0-9]+)|||!vm_grow
  CH-VM-GROWN-([0-9]+)|||$fill
  CH-VM-FILLED-([0-9]+)|||
  CH-VM-EMPTIED-([0-9]+)|||!vm_shrink
  CH-VM-SHRUNK-([0-9]+)|||!vm_final
  CH-VM-KEPT-([0-9]+_[0-9a-f]+)|||!vm_restore"
  local vm=(--api-socket "path=$sock" "${base[@]}" --cpus boot=1 --memory size=512M,hotplug_method=virtio-mem,hotplug_size=512M
    --cmdline "$append memhp_default_state=online_movable")
  run_l2 virtiomem "$steps" "$binary" "${vm[@]}"
  local before=${captures[0]:-0} grown_total=${captures[1]:-0} filled=${captures[2]:-0} shrunk_total=${captures[4]:-0}
  local grown=$((grown_total - before)) dropped=$((grown_total - shrunk_total))
  local memory
  memory="$(tr -d ' \n' <"$vm_dir/info.json" 2>/dev/null | grep -o '"memory":{[^}]*}' || true)"
  local kept=0 kept_md5=none restored_line restored_total=0 restored_md5=missing boots restored_memory
  IFS=_ read -r kept kept_md5 <<<"${captures[5]:-0_none}"
  restored_line="$(tr -d '\r' <"$vm_dir/restored.out" 2>/dev/null | grep -ao 'CH-VM-RESTORED-[0-9]*_[0-9a-f]*' | tail -n 1 || true)"
  IFS=_ read -r restored_total restored_md5 <<<"${restored_line#CH-VM-RESTORED-}"
  boots="$(grep -ac 'Linux version' "$vm_dir/restored.out" 2>/dev/null || true)"
  restored_memory="$(tr -d ' \n' <"$vm_dir/restored-info.json" 2>/dev/null | grep -o '"memory":{[^}]*}' || true)"
  echo "ch-e2e: [virtiomem] kept $kept MiB (md5 $kept_md5); snapshot: $(tr '\n' ' ' <"$vm_dir/snap.out" 2>/dev/null); restored: MemTotal ${restored_total:-?} kB, md5 ${restored_md5:-?}, kernel boots ${boots:-?}, VMM status $restored_status, memory in info: $restored_memory; $(tail -n 3 "$vm_dir/restored.err" 2>/dev/null | tr '\n' ' ')"
  echo "ch-e2e: [virtiomem] MemTotal $before kB, after resize 1024M $grown_total kB (+$grown kB); tmpfs filled with $filled MiB; after resize 768M $shrunk_total kB (-$dropped kB); grow: $(tr '\n' ' ' <"$vm_dir/grow.out" 2>/dev/null); shrink: $(tr '\n' ' ' <"$vm_dir/shrink.out" 2>/dev/null); resize 2048M: $(tr '\n' ' ' <"$vm_dir/over.out" 2>/dev/null); memory in info: $memory"
  if ((steps_done == 7)) && grep -q resized "$vm_dir/grow.out" && grep -q resized "$vm_dir/shrink.out" &&
    ((grown > 500000 && grown <= 524288)) && ((filled == 640)) && ((dropped > 250000 && dropped <= 262144)) &&
    ! grep -q 'status 0' "$vm_dir/over.out" && grep -q 'responded with 4' "$vm_dir/over.out" && grep -q 'region_size' "$vm_dir/over.out" &&
    grep -q '"size":536870912' <<<"$memory" && grep -q '"hotplugged_size":268435456' <<<"$memory" &&
    ((kept == 480)) && grep -q snapshotted "$vm_dir/snap.out" && [[ $restored_total == "$shrunk_total" && $restored_md5 == "$kept_md5" && ${#kept_md5} == 32 ]] &&
    ((boots == 0)) && ((restored_status == 0)) && grep -q '"hotplugged_size":268435456' <<<"$restored_memory"; then
    pass "virtiomem: --memory size=512M,hotplug_method=virtio-mem,hotplug_size=512M (MemTotal $before kB); ch-remote resize --memory 1024M: the virtio_mem driver plugged 512 MiB and MemTotal grew by $grown kB; a tmpfs then held $filled MiB (more than the boot RAM); resize --memory 768M: the driver unplugged and MemTotal dropped by $dropped kB; resize --memory 2048M refused with $(grep -o 'responded with 4[0-9]*' "$vm_dir/over.out") naming region_size; vm.info memory size 536870912, hotplugged_size 268435456; a tmpfs given $kept MiB, paused, snapshotted, VMM killed, restored in a new VMM: MemTotal still $restored_total kB, the file's md5 $restored_md5 unchanged, no kernel boot, vm.info hotplugged_size 268435456, poweroff status 0"
  else
    fail "virtiomem: steps $steps_done/7, first VMM status $vmm_status (killed after the snapshot), restored VMM status $restored_status, captures [${captures[*]:-}], restored [${restored_line:-}]"
  fi
  rm -rf "$vm_dir"
}
