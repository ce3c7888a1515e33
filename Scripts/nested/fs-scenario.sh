# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The virtio-fs scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures, $in, $pid, $base, $append, $binary and $remote.

# fsh_type LINE: types LINE into the guest's console (from a step that runs in level 1).
fsh_type() { printf '%s\n' "$1" >&"$in"; }

# fsh_vmm: the VMM's pid (the child of run_l2's timeout).
fsh_vmm() {
  local vmm
  vmm="$(pgrep -P "$pid" | head -n 1 || true)"
  echo "${vmm:-$pid}"
}

# fsh_add N: cycle N of the virtio-fs hotplug: a new virtiofsd serves $fsh_dir/hot on its own
# socket, ch-remote add-fs tag=hotfs hot-adds it; the guest waits until it can mount hotfs
# (acpiphp found the function, the virtiofs driver bound it), reads level 1's file, writes
# guest-N.bin, unmounts and prints both md5s and the device's BDF (busybox's readlink takes
# one path at a time). Cycle 0 also records the
# VMM's open descriptors before any hot-add.
fsh_add() {
  local n="$1" out
  if ((n == 0)); then ls /proc/"$(fsh_vmm)"/fd | wc -l >"$fsh_dir/fds.before"; fi
  "$virtiofsd" --socket-path="$fsh_dir/hot-$n.sock" -o source="$fsh_dir/hot" -o cache=none -o sandbox=chroot >"$fsh_dir/virtiofsd-$n.log" 2>&1 &
  echo $! >"$fsh_dir/virtiofsd-$n.pid"
  local tries=0
  while [[ ! -S $fsh_dir/hot-$n.sock ]] && ((tries < 100)); do sleep 0.1; tries=$((tries + 1)); done
  out="$("$remote" --api-socket "$fsh_sock" add-fs "tag=hotfs,socket=$fsh_dir/hot-$n.sock" 2>&1)" || out="add-fs failed: $out"
  printf '%s\n' "$out" >"$fsh_dir/add-$n.out"
  fsh_type "mkdir -p /hot; t=0; until mount -t virtiofs hotfs /hot 2>/dev/null; do [ \$t -lt 300 ] || break; sleep 0.2; t=\$((t+1)); done; h=\$(md5sum </hot/hot.bin | cut -c1-32); head -c 32768 /dev/urandom >/tmp/h; cp /tmp/h /hot/guest-$n.bin; sync; g=\$(md5sum </tmp/h | cut -c1-32); d=\$(for v in /sys/bus/virtio/drivers/virtiofs/virtio*; do readlink -f \$v; done | grep -o '0000:00:[0-9a-f.]*' | head -n 1); umount /hot; u=\$?; echo FS-H-\$(($n*1))-\$h-\$g-\$d-\$u"
}

# fsh_remove N: ch-remote remove-device of cycle N's id; the guest waits until the function
# left /sys/bus/pci/devices (it ejected it) and says so.
fsh_remove() {
  local n="$1" id bdf
  id="$(grep -o '"id":"[^"]*"' "$fsh_dir/add-$n.out" | cut -d'"' -f4)" || true
  bdf="$(grep -o '"bdf":"[^"]*"' "$fsh_dir/add-$n.out" | cut -d'"' -f4)" || true
  "$remote" --api-socket "$fsh_sock" remove-device "$id" >"$fsh_dir/remove-$n.out" 2>&1 && echo removed >>"$fsh_dir/remove-$n.out"
  fsh_type "t=0; while [ -e /sys/bus/pci/devices/$bdf ] && [ \$t -lt 300 ]; do sleep 0.2; t=\$((t+1)); done; [ -e /sys/bus/pci/devices/$bdf ] && r=present || r=gone; echo FS-R-\$(($n*1))-\$r"
}

# fsh_check N: after the guest ejected cycle N's device, the VMM's device tree no longer has
# it and that cycle's virtiofsd exited (its connection closed); one line per cycle goes to
# $fsh_dir/cycles. Then cycle N+1 starts, or after the last the descriptors are counted and
# the guest reboots.
fsh_check() {
  local n="$1" id vpid tries=0 tree=gone daemon=exited
  id="$(grep -o '"id":"[^"]*"' "$fsh_dir/add-$n.out" | cut -d'"' -f4)" || true
  while "$remote" --api-socket "$fsh_sock" info 2>/dev/null | grep -q "\"$id\""; do
    ((tries < 150)) || { tree=present; break; }
    sleep 0.2
    tries=$((tries + 1))
  done
  vpid="$(cat "$fsh_dir/virtiofsd-$n.pid")"
  tries=0
  while kill -0 "$vpid" 2>/dev/null; do
    ((tries < 100)) || { daemon=running; break; }
    sleep 0.1
    tries=$((tries + 1))
  done
  echo "cycle $n $id tree-$tree virtiofsd-$daemon" >>"$fsh_dir/cycles"
  if ((n < fsh_cycles)); then
    fsh_add $((n + 1))
  else
    ls /proc/"$(fsh_vmm)"/fd | wc -l >"$fsh_dir/fds.after"
    fsh_type 'reboot -f'
  fi
}

# scenario_fs: Debian's virtiofsd (the C one of QEMU 7.2, /usr/lib/qemu/virtiofsd) serves a
# directory on level 1's tmpfs; the guest boots with --memory shared=on and --fs
# tag=myfs,socket=PATH (the vhost-user front-end hands guest RAM and the queues to
# virtiofsd), mounts -t virtiofs myfs, reads level 1's 1 MiB random file (md5 as level 1's)
# and a marker file, writes 64 KiB of its own that level 1 then finds with the same md5,
# and unmounts; the device sits on PCI segment 1 (--platform num_pci_segments=2, pci_segment=1),
# where Kata puts it. Then PCI hotplug (segment 0): a second virtiofsd serves another
# directory and ch-remote add-fs tag=hotfs,socket=... hot-adds it to the running VM; the guest
# (acpiphp) finds the function, mounts hotfs, reads level 1's file and writes one level 1 then
# finds, unmounts; ch-remote remove-device makes it eject the function, the VMM drops it and
# closes the connection (virtiofsd exits). 5 more add/remove cycles, each with its own
# virtiofsd, leave the VMM's open descriptors as they were before the first. Then `reboot -f`:
# the rebuilt VM keeps the boot device's virtiofsd connection (virtiofsd serves one connection
# and exits when it closes) and the guest mounts myfs again and reads both files. Also: the same
# --fs without shared=on is refused with Cloud Hypervisor's words before anything starts.
scenario_fs() {
  local fs_dir sock shared host_sum marker virtiofsd=/usr/lib/qemu/virtiofsd fs_pid fsh_dir fsh_sock fsh_cycles=5 hot_sum
  # 6 hot-add/remove cycles in a nested guest take minutes: run_l2 reads this timeout.
  local l2_timeout=$((${CH_NESTED_L2_TIMEOUT:-300} + 300))
  if [[ ! -x $virtiofsd ]]; then
    fail "fs: $virtiofsd is missing in level 1 (Debian's qemu-system-common provides it)"
    return
  fi
  fs_dir="$(mktemp -d)"
  sock="$fs_dir/virtiofsd.sock"
  shared="$fs_dir/shared"
  mkdir -p "$shared"
  head -c 1048576 /dev/urandom >"$shared/host.bin"
  host_sum="$(md5sum <"$shared/host.bin" | cut -c1-32)"
  marker="virtiofs-$RANDOM$RANDOM"
  printf '%s\n' "$marker" >"$shared/hello.txt"
  fsh_dir="$fs_dir"
  fsh_sock="$fs_dir/api.sock"
  mkdir -p "$fsh_dir/hot"
  head -c 524288 /dev/urandom >"$fsh_dir/hot/hot.bin"
  hot_sum="$(md5sum <"$fsh_dir/hot/hot.bin" | cut -c1-32)"

  # Without shared memory a vhost-user device is refused before the VM is built.
  local refused status=0
  refused="$("$binary" "${base[@]}" --cpus boot=1 --memory size=256M --cmdline "$append" --fs "tag=myfs,socket=$sock" 2>&1)" || status=$?

  # Level 1 is a chroot over a read-only 9p root: virtiofsd's namespace sandbox cannot
  # pivot_root there, its chroot sandbox can.
  "$virtiofsd" --socket-path="$sock" -o source="$shared" -o cache=none -o sandbox=chroot >"$fs_dir/virtiofsd.log" 2>&1 &
  fs_pid=$!
  local tries=0
  while [[ ! -S $sock ]] && ((tries < 100)); do sleep 0.1; tries=$((tries + 1)); done

  local steps='L2-INIT-READY|||mkdir -p /mnt && mount -t virtiofs myfs /mnt; echo FS-A-$(md5sum </mnt/host.bin | cut -c1-32)-$(cat /mnt/hello.txt)
  FS-A-([0-9a-f]{32}-[a-z0-9-]+)|||head -c 65536 /dev/urandom >/tmp/w; cp /tmp/w /mnt/guest.bin; sync; echo FS-B-$(md5sum </mnt/guest.bin | cut -c1-32)
  FS-B-([0-9a-f]{32})|||umount /mnt; s=$?; echo FS-C-$((40+2))-$s-$(readlink -f /sys/bus/virtio/drivers/virtiofs/virtio* | grep -o "0001:00:[0-9a-f.]*" | head -n 1)
  FS-C-42-([0-9]+-[0-9a-f:.]*)|||!fsh_add 0'
  local n
  for n in $(seq 0 "$fsh_cycles"); do
    steps+="
  FS-H-$n-([0-9a-f]{32}-[0-9a-f]{32}-[0-9a-f:.]*-[0-9]+)|||!fsh_remove $n
  FS-R-$n-([a-z]+)|||!fsh_check $n"
  done
  steps+='
  L2-INIT-READY|||mkdir -p /mnt && mount -t virtiofs myfs /mnt; echo FS-D-$(md5sum </mnt/host.bin | cut -c1-32)-$(md5sum </mnt/guest.bin | cut -c1-32)
  FS-D-([0-9a-f]{32}-[0-9a-f]{32})|||poweroff -f'
  # The boot device on PCI segment 1, where Kata puts its virtio-fs device; the hot-added ones
  # on segment 0, which has the hotplug slots.
  run_l2 fs "$steps" "$binary" -v "${base[@]}" --cpus boot=1 --memory size=512M,shared=on --cmdline "$append" \
    --platform num_pci_segments=2 --fs "tag=myfs,socket=$sock,pci_segment=1" --api-socket "path=$fsh_sock"
  local guest_sum=""
  [[ -f $shared/guest.bin ]] && guest_sum="$(md5sum <"$shared/guest.bin" | cut -c1-32)"
  kill "$fs_pid" 2>/dev/null || true
  wait "$fs_pid" 2>/dev/null || true
  # Each cycle: add-fs answered an id and a BDF on segment 0; the guest read level 1's file
  # (md5 $hot_sum), wrote one level 1 finds with the guest's md5, saw the function at that
  # BDF, unmounted (0); ejected it; the VMM dropped it and virtiofsd exited.
  local hot_ok=1 hot_cycles=0 first_id="" first_bdf="" ids=() fds_before fds_after
  for n in $(seq 0 "$fsh_cycles"); do
    local id bdf cap_h cap_r written=""
    id="$(grep -o '"id":"[^"]*"' "$fsh_dir/add-$n.out" 2>/dev/null | cut -d'"' -f4)" || true
    bdf="$(grep -o '"bdf":"[^"]*"' "$fsh_dir/add-$n.out" 2>/dev/null | cut -d'"' -f4)" || true
    cap_h="${captures[3 + 2 * n]:-}"
    cap_r="${captures[4 + 2 * n]:-}"
    [[ -f $fsh_dir/hot/guest-$n.bin ]] && written="$(md5sum <"$fsh_dir/hot/guest-$n.bin" | cut -c1-32)"
    if [[ $id == _fs* && $bdf == 0000:00:* && $cap_h == "$hot_sum-$written-$bdf-0" && -n $written && $cap_r == gone ]] &&
      grep -q removed "$fsh_dir/remove-$n.out" && grep -q "^cycle $n $id tree-gone virtiofsd-exited" "$fsh_dir/cycles"; then
      hot_cycles=$((hot_cycles + 1))
      ids+=("$id")
      ((n == 0)) && first_id="$id" first_bdf="$bdf"
    else
      hot_ok=0
      echo "ch-e2e: [fs] hotplug cycle $n: add: $(tr '\n' ' ' <"$fsh_dir/add-$n.out" 2>/dev/null); guest: $cap_h (level 1: $hot_sum, guest file $written); ejected: $cap_r; remove: $(tr '\n' ' ' <"$fsh_dir/remove-$n.out" 2>/dev/null); $(grep "^cycle $n " "$fsh_dir/cycles" 2>/dev/null); virtiofsd: $(tail -n 3 "$fsh_dir/virtiofsd-$n.log" 2>/dev/null | tr '\n' ' ')"
    fi
  done
  fds_before="$(cat "$fsh_dir/fds.before" 2>/dev/null || echo ?)"
  fds_after="$(cat "$fsh_dir/fds.after" 2>/dev/null || echo ??)"
  local steps_all=$((6 + 2 * (fsh_cycles + 1))) rebooted="${captures[3 + 2 * (fsh_cycles + 1)]:-}"
  if ((steps_done == steps_all)) && ((vmm_status == 0)) && [[ ${captures[0]} == "$host_sum-$marker" && -n $guest_sum &&
    $rebooted == "$host_sum-$guest_sum" &&
    ${captures[1]} == "$guest_sum" && ${captures[2]} == 0-0001:00:* ]] && ((status != 0)) &&
    [[ $refused == *"Using vhost-user requires using shared memory or huge pages"* ]] &&
    ((hot_ok == 1 && hot_cycles == fsh_cycles + 1)) && [[ $fds_before == "$fds_after" ]]; then
    pass "fs: virtiofsd served $shared over vhost-user; the guest (--memory shared=on) mounted -t virtiofs myfs, read level 1's 1 MiB file (md5 $host_sum) and marker through the device at ${captures[2]#0-} (PCI segment 1, as Kata places it), wrote 64 KiB that level 1 reads with the guest's md5 $guest_sum, unmounted; ch-remote add-fs tag=hotfs on the running VM answered $first_id at $first_bdf: the guest (acpiphp) mounted hotfs from a second virtiofsd, read level 1's 512 KiB file (md5 $hot_sum) and wrote 32 KiB level 1 read with the guest's md5, unmounted; remove-device: the guest ejected it, the VMM dropped it and virtiofsd exited; $hot_cycles add/remove cycles in all (ids ${ids[*]}), each with its own virtiofsd, the VMM's open descriptors $fds_before before and $fds_after after; after reboot -f the rebuilt VM kept the boot virtiofsd's connection and the guest mounted myfs again and read both files (md5s as before); VMM status 0; without shared=on --fs is refused (status $status)"
  else
    fail "fs: steps $steps_done/$steps_all, VMM status $vmm_status, after the reboot '$rebooted', captures [${captures[*]:-}], level 1: host md5 $host_sum, marker $marker, guest file md5 '${guest_sum}', hotplug cycles $hot_cycles/$((fsh_cycles + 1)), fds $fds_before -> $fds_after, refusal (status $status): ${refused:0:300}; virtiofsd: $(tail -n 5 "$fs_dir/virtiofsd.log" | tr '\n' ' ')"
  fi
  for n in $(seq 0 "$fsh_cycles"); do
    [[ -f $fsh_dir/virtiofsd-$n.pid ]] && kill "$(cat "$fsh_dir/virtiofsd-$n.pid")" 2>/dev/null || true
  done
  rm -rf "$fs_dir"
}
