# shellcheck shell=bash
# The `debian` scenario of ch-e2e.sh: a real distribution guest. Sourced by ch-e2e.sh inside
# level 1; uses its run_l2, pass, fail, captures, steps_done, vmm_status and the paths of
# common.sh. The image comes from debian-image.sh, which must have run on the host first
# (level 1 sees the cache read-only).
#
# debian_scenario BINARY: boots the cached Debian 12 image (systemd, debootstrap) under
# cloud-hypervisor: PVH vmlinux, the image's initramfs, root on virtio-blk through a qcow2
# overlay over the read-only cached image (backing_files=on), one virtio-net NIC on a TAP the
# VMM creates (host side 192.168.249.1/24; the guest's systemd-networkd sets 192.168.249.2/24),
# 2 vCPUs, 1 GiB. The image's ch-report.service prints CH-DEBIAN-* lines on ttyS0 once the
# boot has finished and powers off. Passes when the system state is `running` (not
# `degraded`), no unit failed, /dev/rtc0 exists and `hwclock -r` works, the NIC has its
# address and 3/3 pings of the host side are answered, and the VMM exits 0 after
# `systemctl poweroff`.
# Environment: CH_NESTED_DEBIAN_TIMEOUT (seconds for the whole boot, default 900),
# CH_NESTED_L2_STALL (seconds without console output counted as a stall, here 300 unless set),
# CH_NESTED_L2_APPEND (extra guest kernel parameters).

debian_scenario() {
  local binary="$1"
  local image="$CH_NESTED_CACHE/debian/rootfs.ext4" initrd="$CH_NESTED_CACHE/debian/initrd.img"
  if [[ ! -s $image || ! -s $initrd ]]; then
    fail "debian: no image in $CH_NESTED_CACHE/debian (run Scripts/nested/debian-image.sh on the host before level 1 starts)"
    return
  fi
  # run_l2 reads these (dynamic scope): systemd under nested TCG takes minutes, and has quiet spells.
  local l2_timeout="${CH_NESTED_DEBIAN_TIMEOUT:-900}"
  local CH_NESTED_L2_STALL="${CH_NESTED_L2_STALL:-300}"
  local dir overlay
  dir="$(mktemp -d)"
  overlay="$dir/root.qcow2"
  # Guest writes land in the overlay on level 1's tmpfs; the cached image stays untouched.
  qemu-img create -q -f qcow2 -b "$image" -F raw "$overlay" || { fail "debian: qemu-img create failed"; rm -rf "$dir"; return; }
  local steps='CH-DEBIAN-STATE ([a-z-]+)|||!debian_state_s=$(nested_secs "$start_ns" "$(nested_now_ns)")
CH-DEBIAN-FAILED ([0-9]+)|||
CH-DEBIAN-RTC (.*)|||
CH-DEBIAN-NET (.*)|||
CH-DEBIAN-TIME (.*)|||
CH-DEBIAN-DONE|||'
  debian_state_s="?"
  # nested=off (Cloud Hypervisor's --cpus key) hides SVM from the guest: otherwise udev loads
  # kvm_amd in it, a third level of virtualisation over TCG's emulated SVM, and the guest was
  # seen to reset right after (twice in one run); this scenario is about the distribution.
  local attempt retried=""
  for attempt in 1 2; do
    run_l2 debian "$steps" "$binary" --kernel "$nested_vmlinux" --initramfs "$initrd" \
      --cmdline "console=ttyS0 root=/dev/vda rw panic=-1 ${CH_NESTED_L2_APPEND:-}" \
      --disk "path=$overlay,backing_files=on" --net "tap=,ip=192.168.249.1,mask=255.255.255.0" \
      --serial tty --console off --cpus boot=2,nested=off --memory size=1G
    # A guest that never reached its report (no line at all) is booted once more, on a fresh
    # overlay: in this bench the level-2 Debian guest was once seen to take a triple fault
    # (one in four boots, not seen again in later runs; cause unknown). Its kernel's warning
    # "XSAVE consistency problem: size 2696 != kernel_size 576" is level 1's doing, not the
    # VMM's, and is harmless (see the README's troubleshooting). A report with a wrong figure is
    # never retried.
    ((steps_done == 0 && attempt == 1)) || break
    retried=" (second boot: the first never reached its report, see the log above)"
    echo "ch-e2e: [debian] the guest did not reach its report; booting it once more on a fresh overlay"
    rm -f "$overlay"
    qemu-img create -q -f qcow2 -b "$image" -F raw "$overlay" || break
  done
  local state="${captures[0]:-}" failed="${captures[1]:-}" rtc="${captures[2]:-}" net="${captures[3]:-}" times="${captures[4]:-}"
  # systemd-analyze: "... graphical.target reached after 1min 21.170s in userspace" (the
  # default target, which multi-user.target is part of).
  local multi_user
  multi_user="$(sed -n 's/.* \([a-z-]*\.target reached after .*\) in userspace.*/\1/p' <<<"$times")"
  local figures="state '$state', $failed failed units, RTC '$rtc', NIC '$net', systemd-analyze '$times', CH-DEBIAN-STATE ${debian_state_s}s after the VMM started"
  if ((steps_done == 6)) && ((vmm_status == 0)) && [[ $state == running && $failed == 0 &&
    $rtc == "rtc0=yes hwclock=ok"* && $net == *=192.168.249.2/24\ ping=3/3* ]]; then
    pass "debian: Debian 12 with systemd booted (${multi_user:-?} in userspace; ${debian_state_s}s from the VMM's start to the report), state running, 0 failed units, /dev/rtc0 and hwclock -r work, NIC ${net}, systemctl poweroff ended the VMM (status 0)$retried"
  else
    fail "debian: steps $steps_done/6, VMM status $vmm_status; $figures"
  fi
  rm -rf "$dir"
}
