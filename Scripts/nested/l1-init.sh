#!/bin/sh
# shellcheck shell=sh
# /init of the level-1 initramfs (built by prepare.sh; runs under busybox sh).
#
# Level 1 is a Debian kernel under QEMU TCG. This init loads KVM (kvm-amd on QEMU's
# emulated SVM) and the 9p/virtio modules, mounts the host's root tree (9p tag hostroot,
# read-only) at /host, sets up /dev, /proc, /sys and /run (with TMPDIR=/run/tmp) for it, and runs the
# command under test in a chroot of /host, so that binaries built on the host run as
# they are. Parameters come from the kernel command line (the kernel hands name=value
# words it does not know to init as environment variables):
#   ch_work=DIR     a host directory shared writable (9p tag chwork); mounted at the same
#                   path inside the chroot; the exit status is written to DIR/status
#   ch_script=FILE  an executable (path inside the chroot) to run; or
#   ch_cmd="CMD"    a command line for /bin/sh -c inside the chroot
# With neither, a busybox shell runs on the console. The serial console shows
#   CH-L1-START uptime=SECONDS   just before the command starts
#   CH-L1-END status=N           after it ended, with its exit status
# and level 1 then powers off (QEMU runs with -no-reboot, so it exits).
export PATH=/bin

# /dev first, then reopen the console on it (so that output is never lost).
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

say() { echo "CH-L1: $*"; }

# finish STATUS: report STATUS on the console and in the shared directory, power off.
finish() {
  echo "CH-L1-END status=$1"
  [ -z "${heartbeat:-}" ] || kill "$heartbeat" 2>/dev/null
  if [ -n "${ch_work:-}" ] && [ -d "/host$ch_work" ]; then
    echo "$1" >"/host$ch_work/status" || say "cannot write $ch_work/status"
    sync
    umount "/host$ch_work" 2>/dev/null
  fi
  sync
  poweroff -f
}

# Modules in dependency order (prepare.sh wrote the list).
while read -r mod; do
  insmod "/lib/modules/$mod" || say "warning: insmod $mod failed"
done </etc/ch-modules
if [ ! -c /dev/kvm ]; then
  say "warning: no /dev/kvm (kvm-amd did not load): does the CPU show svm? $(grep -c -w svm /proc/cpuinfo) of $(grep -c ^processor /proc/cpuinfo) CPUs do"
fi

# The host's root tree, read-only. msize raises 9p's message size (default 8 KiB) for
# faster reads; cache=loose lets the guest cache what it read (the tree does not change
# under a test).
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host ||
  { say "cannot mount the host tree (9p tag hostroot)"; finish 125; }

# What a program in the chroot expects: devices (with /dev/kvm), pts, shm, proc, sys, and
# a writable /run with a temporary directory (TMPDIR=/run/tmp). The host's /tmp stays
# visible (read-only, like the rest of the tree): the command or its checkout may live there.
mkdir -p /dev/pts /dev/shm
mount -o bind /dev /host/dev
mount -t devpts devpts /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t tmpfs -o mode=755 tmpfs /host/run
mkdir -p /host/run/tmp && chmod 1777 /host/run/tmp

# The writable shared directory, at the same path as on the host (its directory exists in
# the host tree already).
if [ -n "${ch_work:-}" ]; then
  mkdir -p "/host$ch_work" 2>/dev/null
  mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=512000 chwork "/host$ch_work" ||
    { say "cannot mount $ch_work (9p tag chwork)"; finish 125; }
fi

# A heartbeat in the shared directory: level 1's uptime, rewritten every 10 s while the
# command runs. run-l1.sh counts a level 1 whose heartbeat and console both stop as frozen
# (far sooner than console silence alone could tell).
heartbeat=""
if [ -n "${ch_work:-}" ]; then
  (while :; do read -r up _ </proc/uptime && echo "$up" >"/host$ch_work/alive"; sleep 10; done) </dev/null >/dev/null 2>&1 &
  heartbeat=$!
fi

read -r uptime _ </proc/uptime
echo "CH-L1-START uptime=$uptime"
# A clean environment for the command, as a login on the host would have.
set -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root TERM=dumb LANG=C.UTF-8 TMPDIR=/run/tmp CH_NESTED_LEVEL=1 CH_NESTED_WORK="${ch_work:-}" /bin/chroot /host
if [ -n "${ch_script:-}" ]; then
  "$@" "$ch_script"
elif [ -n "${ch_cmd:-}" ]; then
  "$@" /bin/sh -c "$ch_cmd"
else
  say "no ch_script or ch_cmd: busybox shell (the host tree is at /host; exit powers off)"
  setsid cttyhack sh
fi
finish $?
