# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The memhotplug scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures, $in, $base, $append, $binary and $remote.

# mh_type LINE: types LINE into the guest's console (from a step that runs in level 1).
mh_type() { printf '%s\n' "$1" >&"$in"; }

# scenario_memhotplug: a guest booted with --memory size=512M,hotplug_size=512M (ACPI memory
# hotplug as Cloud Hypervisor describes it). `ch-remote resize --memory 1024M` hot-adds 512 MiB:
# the guest's kernel learns of it through the GED and \_SB_.MHPC.MSCN, its memory blocks appear
# offline (Debian's kernel does not online hot-added memory by itself, and there is no udev
# here), the shell onlines them and MemTotal grows by about 512 MiB. A tmpfs then holds 640 MiB
# of data, more than the boot RAM could. `resize --memory 2048M` is refused with a 4xx naming
# hotplug_size, and vm.info reports the new size.
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
    mh_type 'echo CH-MH-DONE-$((40+2))'
  }
  local fill='mkdir -p /tmp/mh && mount -t tmpfs -o size=900m tmpfs /tmp/mh && dd if=/dev/zero of=/tmp/mh/fill bs=1048576 count=640 2>/dev/null; echo CH-MH-FILLED-$(($(stat -c %s /tmp/mh/fill) / 1048576))_$(awk "/MemFree/ {print \$2}" /proc/meminfo)'
  local steps="L2-INIT-READY|||echo CH-MH-BOOT-\$(awk '/MemTotal/ {print \$2}' /proc/meminfo)
  CH-MH-BOOT-([0-9]+)|||!mh_grow
  CH-MH-GROWN-([0-9]+_[0-9]+)|||$fill
  CH-MH-FILLED-([0-9]+_[0-9]+)|||!mh_final
  CH-MH-DONE-([0-9]+)|||poweroff -f"
  local vm=(--api-socket "path=$sock" "${base[@]}" --cpus boot=1 --memory size=512M,hotplug_size=512M --cmdline "$append")
  run_l2 memhotplug "$steps" "$binary" "${vm[@]}"
  local before=${captures[0]:-0} onlined=0 after=0 filled=0 free=0
  IFS=_ read -r onlined after <<<"${captures[1]:-0_0}"
  IFS=_ read -r filled free <<<"${captures[2]:-0_0}"
  local grown=$((after - before))
  echo "ch-e2e: [memhotplug] MemTotal $before kB, after resize $after kB ($onlined blocks onlined, +$grown kB); tmpfs filled with $filled MiB, MemFree $free kB; grow: $(tr '\n' ' ' <"$mh_dir/grow.out" 2>/dev/null); resize 2048M: $(tr '\n' ' ' <"$mh_dir/over.out" 2>/dev/null); memory in info: $(tr -d ' \n' <"$mh_dir/info.json" 2>/dev/null | grep -o '"memory":{[^}]*}' | grep -o '"size":[0-9]*')"
  if ((steps_done == 5)) && ((vmm_status == 0)) && grep -q resized "$mh_dir/grow.out" && ((onlined == 4)) &&
    ((grown > 500000 && grown <= 524288)) && ((filled == 640)) &&
    grep -q 'hotplug_size' "$mh_dir/over.out" && ! grep -q 'status 0' "$mh_dir/over.out" && grep -q 'responded with 4' "$mh_dir/over.out" &&
    tr -d ' \n' <"$mh_dir/info.json" | grep -o '"memory":{[^}]*}' | grep -q '"size":1073741824'; then
    pass "memhotplug: --memory size=512M,hotplug_size=512M (MemTotal $before kB); ch-remote resize --memory 1024M: the guest onlined 4 hot-added 128 MiB blocks and MemTotal grew by $grown kB; a tmpfs then held $filled MiB (more than the boot RAM); resize --memory 2048M refused with $(grep -o 'responded with 4[0-9]*' "$mh_dir/over.out") naming hotplug_size; vm.info memory size 1073741824; VMM status 0"
  else
    fail "memhotplug: steps $steps_done/5, VMM status $vmm_status, captures [${captures[*]:-}]"
  fi
  rm -rf "$mh_dir"
}
