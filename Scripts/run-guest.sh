#!/usr/bin/env bash
# The README's run command: boots the default guest (Debian's stock kernel as a PVH vmlinux
# with a busybox initramfs, prepared by Scripts/nested/prepare.sh and cached outside the
# repository) with cloud-hypervisor, on this terminal, to a shell prompt on the serial console:
#
#   cloud-hypervisor --kernel vmlinux --initramfs l2-initramfs.cpio.gz \
#       --cmdline "console=ttyS0" --serial tty --console off --cpus boot=2 --memory size=512M
#
# Extra arguments are passed to cloud-hypervisor (they override the defaults above).
# In the guest, `poweroff -f` ends the VM and `reboot -f` restarts it.
#
# Where this host's /dev/kvm is the PVM module (nested virtualisation without hardware
# support, see ../shared/HOST.md), a stock kernel cannot run on it; the same command then
# runs inside the nested level-1 machine (Scripts/nested/run-l1.sh), and this script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && case ":$PATH:" in *":/opt/swift/usr/bin:"*) ;; *) PATH="$PATH:/opt/swift/usr/bin" ;; esac
Scripts/install-deps.sh
Scripts/nested/prepare.sh >&2
# shellcheck source=nested/common.sh
source Scripts/nested/common.sh

swift build -c release --product cloud-hypervisor >&2
binary="$(swift build -c release --show-bin-path)/cloud-hypervisor"
command=("$binary" --kernel "$nested_vmlinux" --initramfs "$nested_l2_initrd" --cmdline "console=ttyS0"
  --serial tty --console off --cpus boot=2 --memory size=512M "$@")

if [[ -d /sys/module/kvm_pvm ]]; then
  echo "run-guest: this host's KVM is PVM, which cannot run a stock Linux kernel;" >&2
  echo "run-guest: running cloud-hypervisor inside the nested level-1 machine (QEMU TCG with kvm-amd)." >&2
  echo "run-guest: level 1 takes about 10 s to start and the guest about 20 s more; Ctrl-A x leaves QEMU." >&2
  CH_NESTED_INTERACTIVE=1 CH_NESTED_TIMEOUT="${CH_NESTED_TIMEOUT:-86400}" exec Scripts/nested/run-l1.sh "${command[@]}"
fi
exec "${command[@]}"
