#!/bin/sh
# shellcheck shell=sh
# /init of the level-2 initramfs (built by prepare.sh; runs under busybox sh).
#
# Level 2 is the guest of the VMM under test. This init mounts proc, sys, devtmpfs,
# loads the virtio drivers that exist for the kernel, and prints
#   L2-INIT-READY uptime=SECONDS
# on the console. Then, with ch_test="CMD" on the kernel command line (the kernel hands
# it to init as an environment variable), it runs CMD with /bin/sh -c, prints
#   L2-TEST-EXIT=N
# and powers off; without it, a shell with job control runs on the console (ttyS0 or
# whatever console= names) for a test to type into; `poweroff -f` ends the guest.
export PATH=/bin

# /dev first, then reopen the console on it (so that output is never lost). With
# console=hvc0 the console exists only once virtio_console is loaded (below): a failed
# redirection would end init, so each reopening checks first.
mount -t devtmpfs devtmpfs /dev 2>/dev/null
reopen_console() {
  if (: </dev/console) 2>/dev/null; then exec </dev/console >/dev/console 2>&1; fi
}
reopen_console
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run

# Virtio drivers in dependency order (prepare.sh wrote the list; built-in ones are not
# in it). Their absence is not fatal: a test checks for the devices it needs.
while read -r mod; do
  [ -f "/lib/modules/$mod" ] && { insmod "/lib/modules/$mod" || echo "L2: insmod $mod failed"; }
done </etc/ch-modules
reopen_console
hostname l2

read -r uptime _ </proc/uptime
echo "L2-INIT-READY uptime=$uptime"

if [ -n "${ch_test:-}" ]; then
  echo "L2-TEST-START"
  /bin/sh -c "$ch_test"
  echo "L2-TEST-EXIT=$?"
  sync
  poweroff -f
fi

# An interactive shell on the console's real tty (cttyhack finds it and makes it the
# controlling terminal, so job control and Ctrl-C work). Restarted if it exits, since
# init must not end.
export PS1='L2 # '
while :; do
  setsid cttyhack /bin/sh
done
