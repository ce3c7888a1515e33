# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The PCI segments scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures, $base, $append and $binary.

# scenario_segments: a VM with `--platform num_pci_segments=2`: a disk on segment 0, and a
# disk of random bytes and the virtio-rng on segment 1. The guest lists its PCI functions
# (segment 1's host bridge and its two devices appear as 0001:00:*), finds the disk whose
# sysfs path is under pci0001:00 and reads it (md5 as level 1's), reads /dev/hwrng through
# the segment-1 rng with MSI-X, and reads the segment-0 disk too. Both segment-1 functions
# must have BAR 0 in segment 1's 64-bit window (0x8000000000 and up, as Cloud Hypervisor
# places them) and the kernel must log no BAR "no space" / "failed to assign".
scenario_segments() {
  local sg_dir one_sum zero_sum
  sg_dir="$(mktemp -d)"
  head -c 4194304 /dev/urandom >"$sg_dir/one.raw"
  head -c 2097152 /dev/urandom >"$sg_dir/zero.raw"
  one_sum="$(md5sum <"$sg_dir/one.raw" | cut -c1-32)"
  zero_sum="$(md5sum <"$sg_dir/zero.raw" | cut -c1-32)"
  # seg N: the /dev/vdX whose PCI function is on segment N (a missing path otherwise).
  local steps='L2-INIT-READY|||seg() { r=/missing-disk-$1; for d in /sys/block/vd*; do readlink -f $d | grep -q "/pci000$1:00/" && r=/dev/${d##*/}; done; echo $r; }; ls /sys/bus/pci/devices; grep "PCI Bus 000" /proc/iomem; echo SG-A-$(ls /sys/bus/pci/devices | grep -c "^0001:00:")-$(cat /sys/bus/pci/devices/0001:00:00.0/vendor)
  SG-A-([0-9]+-0x[0-9a-f]+)|||echo SG-B-$(md5sum <$(seg 1) | cut -c1-32)-$(md5sum <$(seg 0) | cut -c1-32)
  SG-B-([0-9a-f]{32}-[0-9a-f]{32})|||echo SG-C-$(cat /sys/class/misc/hw_random/rng_current)-$(readlink -f /sys/bus/virtio/drivers/virtio_rng/virtio* | grep -c /pci0001:00/)-$(head -c 4096 /dev/hwrng | wc -c)
  SG-C-([a-z_0-9.]+-[0-9]+-[0-9]+)|||n=0; for f in /sys/bus/pci/devices/0001:00:0[1-9].0/resource; do a=$(head -n 1 $f | cut -d" " -f1); [ $((a)) -ge $((0x8000000000)) ] && n=$((n+1)); done; echo SG-D-$n-$(dmesg | grep -c -e "no space for" -e "failed to assign")
  SG-D-([0-9]+-[0-9]+)|||poweroff -f'
  run_l2 segments "$steps" "$binary" -v "${base[@]}" --cpus boot=1 --memory size=256M --cmdline "$append" \
    --platform num_pci_segments=2 --disk "path=$sg_dir/zero.raw" "path=$sg_dir/one.raw,pci_segment=1" \
    --rng "src=/dev/urandom,pci_segment=1"
  if ((steps_done == 5)) && ((vmm_status == 0)) && [[ ${captures[0]} == 3-0x8086 && ${captures[1]} == "$one_sum-$zero_sum" &&
    ${captures[2]} == virtio_rng.0-1-4096 && ${captures[3]} == 2-0 ]]; then
    pass "segments: --platform num_pci_segments=2: the guest sees segment 1's host bridge (8086) and its disk and rng as 0001:00:*, both with BAR 0 in segment 1's 64-bit window (0x8000000000 and up) and no BAR 'no space'/'failed to assign' message, reads the segment-1 disk (md5 $one_sum, level 1's) and the segment-0 one, and 4096 bytes from /dev/hwrng through the segment-1 virtio-rng (VMM status 0)"
  else
    fail "segments: steps $steps_done/5, VMM status $vmm_status, captures [${captures[*]:-}], level 1: segment-1 disk $one_sum, segment-0 disk $zero_sum"
  fi
  rm -rf "$sg_dir"
}
