# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The virtio-fs scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures, $base, $append and $binary.

# scenario_fs: Debian's virtiofsd (the C one of QEMU 7.2, /usr/lib/qemu/virtiofsd) serves a
# directory on level 1's tmpfs; the guest boots with --memory shared=on and --fs
# tag=myfs,socket=PATH (the vhost-user front-end hands guest RAM and the queues to
# virtiofsd), mounts -t virtiofs myfs, reads level 1's 1 MiB random file (md5 as level 1's)
# and a marker file, writes 64 KiB of its own that level 1 then finds with the same md5,
# and unmounts; the device sits on PCI segment 1 (--platform num_pci_segments=2, pci_segment=1),
# where Kata puts it. Also: the same --fs without shared=on is refused with Cloud Hypervisor's
# words before anything starts.
scenario_fs() {
  local fs_dir sock shared host_sum marker virtiofsd=/usr/lib/qemu/virtiofsd fs_pid
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
  FS-C-42-([0-9]+-[0-9a-f:.]*)|||poweroff -f'
  # On PCI segment 1, where Kata puts its virtio-fs device.
  run_l2 fs "$steps" "$binary" -v "${base[@]}" --cpus boot=1 --memory size=512M,shared=on --cmdline "$append" \
    --platform num_pci_segments=2 --fs "tag=myfs,socket=$sock,pci_segment=1"
  local guest_sum=""
  [[ -f $shared/guest.bin ]] && guest_sum="$(md5sum <"$shared/guest.bin" | cut -c1-32)"
  kill "$fs_pid" 2>/dev/null || true
  wait "$fs_pid" 2>/dev/null || true
  if ((steps_done == 4)) && ((vmm_status == 0)) && [[ ${captures[0]} == "$host_sum-$marker" && -n $guest_sum &&
    ${captures[1]} == "$guest_sum" && ${captures[2]} == 0-0001:00:* ]] && ((status != 0)) &&
    [[ $refused == *"Using vhost-user requires using shared memory or huge pages"* ]]; then
    pass "fs: virtiofsd served $shared over vhost-user; the guest (--memory shared=on) mounted -t virtiofs myfs, read level 1's 1 MiB file (md5 $host_sum) and marker through the device at ${captures[2]#0-} (PCI segment 1, as Kata places it), wrote 64 KiB that level 1 reads with the guest's md5 $guest_sum, unmounted; VMM status 0; without shared=on --fs is refused (status $status)"
  else
    fail "fs: steps $steps_done/4, VMM status $vmm_status, captures [${captures[*]:-}], level 1: host md5 $host_sum, marker $marker, guest file md5 '${guest_sum}', refusal (status $status): ${refused:0:300}; virtiofsd: $(tail -n 5 "$fs_dir/virtiofsd.log" | tr '\n' ' ')"
  fi
  rm -rf "$fs_dir"
}
