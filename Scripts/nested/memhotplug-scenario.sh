# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The memhotplug scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures, $in, $base, $append, $binary and $remote.
# shellcheck source-path=SCRIPTDIR source=restore-step.sh
source "$here/restore-step.sh"

# mh_type LINE: types LINE into the guest's console (from a step that runs in level 1).
mh_type() { printf '%s\n' "$1" >&"$in"; }

# scenario_memhotplug: a guest booted with --memory size=512M,hotplug_size=512M (ACPI memory
# hotplug as Cloud Hypervisor describes it). `ch-remote resize --memory 1024M` hot-adds 512 MiB:
# the guest's kernel learns of it through the GED and \_SB_.MHPC.MSCN, its memory blocks appear
# offline (Debian's kernel does not online hot-added memory by itself, and there is no udev
# here), the shell onlines them and MemTotal grows by about 512 MiB. A tmpfs then holds 640 MiB
# of data (a 16 MiB random block 40 times), more than the boot RAM could. `resize --memory 2048M`
# is refused with a 4xx naming hotplug_size, and vm.info reports the new size. Then the VM is
# paused and snapshotted, its VMM killed (SIGKILL), and a new VMM restores it (--restore
# ...,resume=on): without booting again, the guest still has the grown MemTotal, the file's md5
# is unchanged, and the new VMM's vm.info reports the grown size.
scenario_memhotplug() {
  local mh_dir sock
  mh_dir="$(mktemp -d)"
  sock="$mh_dir/api.sock"
  mh_grow() {
    "$remote" --api-socket "$sock" resize --memory 1024M >"$mh_dir/grow.out" 2>&1 && echo resized >>"$mh_dir/grow.out"
    mh_type 'n=0; while [ "$(grep -l offline /sys/devices/system/memory/memory*/state | wc -l)" -lt 4 ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; c=0; for f in $(grep -l offline /sys/devices/system/memory/memory*/state); do echo online >$f && c=$((c+1)); done; echo CH-MH-GROWN-${c}_$(awk "/MemTotal/ {print \$2}" /proc/meminfo)'
  }
  mh_final() {
    local status=0
    "$remote" --api-socket "$sock" resize --memory 2048M >"$mh_dir/over.out" 2>&1 || status=$?
    echo "status $status" >>"$mh_dir/over.out"
    "$remote" --api-socket "$sock" info >"$mh_dir/info.json" 2>&1 || true
    mh_restore
  }
  # mh_restore: snapshot, kill, restore in a new VMM (restore-step.sh); the restored guest
  # prints MemTotal and the file's md5.
  mh_restore() {
    restore_in_new_vmm "$mh_dir" "$sock" 'echo CH-MH-RESTORED-$(awk "/MemTotal/ {print \$2}" /proc/meminfo)_$(md5sum /tmp/mh/fill | cut -c1-32)' 'CH-MH-RESTORED-[0-9]'
  }
  local restored_status=-1
  local fill='mkdir -p /tmp/mh && mount -t tmpfs -o size=900m tmpfs /tmp/mh && dd if=/dev/urandom of=/tmp/mh.seed bs=1048576 count=16 2>/dev/null; i=0; while [ $i -lt 40 ]; do cat /tmp/mh.seed; i=$((i+1)); done >/tmp/mh/fill; rm -f /tmp/mh.seed; echo CH-MH-FILLED-$(($(stat -c %s /tmp/mh/fill) / 1048576))_$(awk "/MemFree/ {print \$2}" /proc/meminfo)_$(md5sum /tmp/mh/fill | cut -c1-32)'
  local steps="L2-INIT-READY|||echo CH-MH-BOOT-\$(awk '/MemTotal/ {print \$2}' /proc/meminfo)
  CH-MH-BOOT-([0-9]+)|||!mh_grow
  CH-MH-GROWN-([0-9]+_[0-9]+)|||$fill
  CH-MH-FILLED-([0-9]+_[0-9]+_[0-9a-f]+)|||!mh_final"
  local vm=(--api-socket "path=$sock" "${base[@]}" --cpus boot=1 --memory size=512M,hotplug_size=512M --cmdline "$append")
  run_l2 memhotplug "$steps" "$binary" "${vm[@]}"
  local before=${captures[0]:-0} onlined=0 after=0 filled=0 free=0 md5=none
  IFS=_ read -r onlined after <<<"${captures[1]:-0_0}"
  IFS=_ read -r filled free md5 <<<"${captures[2]:-0_0_none}"
  local grown=$((after - before)) restored_total=0 restored_md5=missing boots
  local restored_line
  restored_line="$(tr -d '\r' <"$mh_dir/restored.out" 2>/dev/null | grep -ao 'CH-MH-RESTORED-[0-9]*_[0-9a-f]*' | tail -n 1 || true)"
  IFS=_ read -r restored_total restored_md5 <<<"${restored_line#CH-MH-RESTORED-}"
  boots="$(grep -ac 'Linux version' "$mh_dir/restored.out" 2>/dev/null || true)"
  echo "ch-e2e: [memhotplug] MemTotal $before kB, after resize $after kB ($onlined blocks onlined, +$grown kB); tmpfs filled with $filled MiB (md5 $md5), MemFree $free kB; grow: $(tr '\n' ' ' <"$mh_dir/grow.out" 2>/dev/null); resize 2048M: $(tr '\n' ' ' <"$mh_dir/over.out" 2>/dev/null); memory in info: $(tr -d ' \n' <"$mh_dir/info.json" 2>/dev/null | grep -o '"memory":{[^}]*}' | grep -o '"size":[0-9]*'); snapshot: $(tr '\n' ' ' <"$mh_dir/snap.out" 2>/dev/null); restored: MemTotal ${restored_total:-?} kB, md5 ${restored_md5:-?}, kernel boots ${boots:-?}, VMM status $restored_status, info $(tr -d ' \n' <"$mh_dir/restored-info.json" 2>/dev/null | grep -o '"memory":{[^}]*}' | grep -o '"size":[0-9]*'); $(tail -n 3 "$mh_dir/restored.err" 2>/dev/null | tr '\n' ' ')"
  if ((steps_done == 4)) && grep -q resized "$mh_dir/grow.out" && ((onlined == 4)) &&
    ((grown > 500000 && grown <= 524288)) && ((filled == 640)) &&
    grep -q 'hotplug_size' "$mh_dir/over.out" && ! grep -q 'status 0' "$mh_dir/over.out" && grep -q 'responded with 4' "$mh_dir/over.out" &&
    tr -d ' \n' <"$mh_dir/info.json" | grep -o '"memory":{[^}]*}' | grep -q '"size":1073741824' &&
    grep -q snapshotted "$mh_dir/snap.out" && [[ $restored_total == "$after" && $restored_md5 == "$md5" && ${#md5} == 32 ]] && ((boots == 0)) &&
    ((restored_status == 0)) && tr -d ' \n' <"$mh_dir/restored-info.json" | grep -o '"memory":{[^}]*}' | grep -q '"size":1073741824'; then
    pass "memhotplug: --memory size=512M,hotplug_size=512M (MemTotal $before kB); ch-remote resize --memory 1024M: the guest onlined 4 hot-added 128 MiB blocks and MemTotal grew by $grown kB; a tmpfs then held $filled MiB (more than the boot RAM); resize --memory 2048M refused with $(grep -o 'responded with 4[0-9]*' "$mh_dir/over.out") naming hotplug_size; vm.info memory size 1073741824; paused, snapshotted, VMM killed, restored in a new VMM: MemTotal still $restored_total kB, the file's md5 $restored_md5 unchanged, no kernel boot, vm.info 1073741824, poweroff status 0"
  else
    fail "memhotplug: steps $steps_done/4, first VMM status $vmm_status (killed after the snapshot), restored VMM status $restored_status, captures [${captures[*]:-}], restored [${restored_line:-}]"
  fi
  rm -rf "$mh_dir"
}
