#!/usr/bin/env python3
"""Boot time of cloud-hypervisor against QEMU, repeated, inside level 1.

Run by bench-snapshot.sh --boot through run-l1.sh; prints `ch-bench: boot ...` lines.

The same level-2 guest (Debian's kernel as a PVH vmlinux, busybox initramfs, 2 vCPUs,
512 MiB, serial console only) boots `runs` times under each VMM, alternating which goes first.
Two figures per boot:

- wall: from the VMM's process start to the init's `L2-INIT-READY` line on the console pipe
  (everything: the VMM's start-up, the kernel, the initramfs, TCG noise in level 1);
- guest: the `uptime=` the init prints with that line, read from the guest's own
  `/proc/uptime`: the time from the kernel's clock start to init, in guest time, which host
  noise touches less (what Cloud Hypervisor times through its debug port, without a patched
  guest).

Figures are medians with their spread (min-max); the ratio is the median of the per-run
ratios cloud-hypervisor / QEMU (lower is faster).
"""
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import Guest, spread  # noqa: E402

binary, remote, vmlinux, initrd = sys.argv[1:5]
runs = int(sys.argv[5]) if len(sys.argv) > 5 else 5
CMDLINE = "console=ttyS0 panic=-1"


def log(text):
    print(f"boot-bench: {text}", flush=True)


def boot(argv, work, name):
    """One boot: (wall seconds, guest seconds)."""
    start = time.monotonic()
    guest = Guest(argv, os.path.join(work, f"{name}.log"))
    try:
        deadline = start + 300
        while time.monotonic() < deadline:
            match = re.search(r"L2-INIT-READY uptime=([0-9.]+)", guest.text())
            if match:
                return time.monotonic() - start, float(match.group(1))
            if guest.proc.poll() is not None:
                break
            time.sleep(0.002)
        raise RuntimeError(f"{name}: no init marker: {guest.text()[-300:]}")
    finally:
        guest.kill()


def main():
    ch_argv = [binary, "--kernel", vmlinux, "--initramfs", initrd, "--cmdline", CMDLINE, "--cpus", "boot=2",
               "--memory", "size=512M", "--serial", "tty", "--console", "off"]
    qemu_argv = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-smp", "2", "-m", "512", "-nographic", "-no-reboot",
                 "-nic", "none", "-kernel", vmlinux, "-initrd", initrd, "-append", CMDLINE]
    ours = {"wall": [], "guest": []}
    theirs = {"wall": [], "guest": []}
    failures = 0
    for run in range(runs):
        work = tempfile.mkdtemp(prefix="bootbench.")
        try:
            got = {}
            for vmm in (("ch", "qemu") if run % 2 == 0 else ("qemu", "ch")):
                got[vmm] = boot(ch_argv if vmm == "ch" else qemu_argv, work, vmm)
            for i, kind in enumerate(("wall", "guest")):
                ours[kind].append(got["ch"][i])
                theirs[kind].append(got["qemu"][i])
            log(f"run {run + 1}: cloud-hypervisor {got['ch'][0]:.2f} s wall, {got['ch'][1]:.2f} s guest; "
                f"QEMU {got['qemu'][0]:.2f} s wall, {got['qemu'][1]:.2f} s guest")
        except Exception as error:  # a failed run is reported, the others still count
            failures += 1
            log(f"run {run + 1} FAILED: {error}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for kind, what in (("wall", "VMM start to init, wall"), ("guest", "kernel clock start to init, guest time")):
        if not ours[kind]:
            print(f"ch-bench: boot {kind}: no complete run", flush=True)
            continue
        ratios = [a / b for a, b in zip(ours[kind], theirs[kind]) if b > 0]
        print(f"ch-bench: boot {kind} ({len(ratios)} runs, {what}, PVH vmlinux, 2 vCPUs, 512 MiB): "
              f"cloud-hypervisor {spread(ours[kind], ' s', 2)}, QEMU {spread(theirs[kind], ' s', 2)}, "
              f"ratio {spread(ratios, 'x', 2)} (target 0.70x or lower)", flush=True)
    print(f"boot-bench: {failures} failed run(s)", flush=True)
    return 1 if failures else 0


sys.exit(main())
