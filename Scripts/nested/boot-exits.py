#!/usr/bin/env python3
"""Where a nested boot's VM exits go: cloud-hypervisor against QEMU, inside level 1.

Usage (on this machine):
  flock /tmp/nested.lock Scripts/nested/run-l1.sh python3 Scripts/nested/boot-exits.py \\
      name=.build/release/cloud-hypervisor [name2=OTHER-BINARY ...] qemu=qemu

Boots the guest of boot-bench.py (same kernel, initramfs, command line, 2 vCPUs, 512 MiB) once
per NAME=BINARY (`qemu` boots qemu-system-x86_64 -enable-kvm -cpu host), with `perf record` of
level 1's KVM tracepoints running, until the init's `L2-INIT-READY` line. Prints per boot
(`boot-exits: NAME ...` lines): wall and guest time to init, level 1's KVM statistics for the
VM (debugfs), the exits by reason, userspace exits, port I/O by port, MSR accesses, MMIO by
page, injected vectors and exits per 5 s. The recording slows level 1 down (each boot takes
several times longer than in boot-bench.py): compare counts, not times.
"""
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import Guest, kvm_stats  # noqa: E402

CACHE = os.environ["CH_NESTED_CACHE"]  # exported by run-l1.sh
VMLINUX, INITRD = os.path.join(CACHE, "vmlinux"), os.path.join(CACHE, "l2-initramfs.cpio.gz")
CMDLINE = "console=ttyS0 panic=-1"  # boot-bench.py's
EVENTS = ["kvm:kvm_exit", "kvm:kvm_userspace_exit", "kvm:kvm_pio", "kvm:kvm_msr", "kvm:kvm_mmio", "kvm:kvm_inj_virq"]


def argv_for(binary):
    if binary == "qemu":
        return ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-smp", "2", "-m", "512", "-nographic", "-no-reboot",
                "-nic", "none", "-kernel", VMLINUX, "-initrd", INITRD, "-append", CMDLINE]
    return [binary, "--kernel", VMLINUX, "--initramfs", INITRD, "--cmdline", CMDLINE, "--cpus", "boot=2",
            "--memory", "size=512M", "--serial", "tty", "--console", "off"]


def summarise(name, data):
    script = subprocess.run(["perf", "script", "-i", data, "-F", "time,event,trace"], capture_output=True, text=True)
    counts = {title: collections.Counter() for title in
              ("exit reasons", "userspace exits", "port I/O", "MSR", "MMIO pages", "injected", "exits per 5 s")}
    start = None
    for line in script.stdout.splitlines():
        match = re.search(r"(\d+\.\d+):\s+kvm:(\w+):\s*(.*)", line)
        if not match:
            continue
        stamp, event, rest = float(match.group(1)), match.group(2), match.group(3)
        start = stamp if start is None else start
        if event == "kvm_exit":
            reason = re.search(r"reason (\S+)", rest)
            counts["exit reasons"][reason.group(1) if reason else rest[:30]] += 1
            counts["exits per 5 s"][int(stamp - start) // 5 * 5] += 1
        elif event == "kvm_userspace_exit":
            counts["userspace exits"][rest[:40]] += 1
        elif event == "kvm_pio":
            port = re.search(r"(pio_\w+) at (0x[0-9a-f]+)", rest)
            counts["port I/O"][f"{port.group(1)} {port.group(2)}" if port else rest[:30]] += 1
        elif event == "kvm_msr":
            msr = re.search(r"(msr_\w+) ([0-9a-f]+)", rest)
            counts["MSR"][f"{msr.group(1)} {msr.group(2)}" if msr else rest[:30]] += 1
        elif event == "kvm_mmio":
            mmio = re.search(r"(\w+) len \d+ gpa (0x[0-9a-f]+)", rest)
            counts["MMIO pages"][f"{mmio.group(1)} {mmio.group(2)[:-3]}000" if mmio else rest[:30]] += 1
        elif event == "kvm_inj_virq":
            vector = re.search(r"irq (0x[0-9a-f]+|\d+)", rest, re.IGNORECASE)
            counts["injected"][vector.group(1) if vector else rest[:20]] += 1
    for title, counter in counts.items():
        items = sorted(counter.items()) if title == "exits per 5 s" else counter.most_common(20)
        print(f"boot-exits: {name} {title} (total {sum(counter.values())}): "
              + ", ".join(f"{key}={value}" for key, value in items), flush=True)


def main():
    if not os.path.isdir("/sys/kernel/debug/kvm"):
        subprocess.run(["mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug"], check=False)
    work = tempfile.mkdtemp(prefix="boot-exits.")
    for spec in sys.argv[1:]:
        name, _, binary = spec.partition("=")
        data = os.path.join(work, f"{name}.perf")
        perf = subprocess.Popen(["perf", "record", "-q", "-a", "-o", data] + [x for e in EVENTS for x in ("-e", e)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        start = time.monotonic()
        guest = Guest(argv_for(binary or name), os.path.join(work, f"{name}.log"))
        ready, stats = None, {}
        while time.monotonic() - start < 600 and guest.proc.poll() is None:
            if "L2-INIT-READY" in guest.text():
                ready, stats = time.monotonic() - start, kvm_stats(guest.proc.pid)
                break
            time.sleep(0.01)
        guest.kill()
        perf.send_signal(signal.SIGINT)
        perf.wait()
        uptime = re.search(r"L2-INIT-READY uptime=([0-9.]+)", guest.text())
        print(f"boot-exits: {name}: " + (f"init after {ready:.1f} s wall, {uptime.group(1)} s guest" if ready and uptime
                                          else "no init within 600 s (counts up to then)"), flush=True)
        print(f"boot-exits: {name} KVM statistics: " + " ".join(f"{k}={v}" for k, v in sorted(stats.items()) if v), flush=True)
        summarise(name, data)
        os.remove(data)


main()
