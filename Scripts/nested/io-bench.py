#!/usr/bin/env python3
"""Disk and network throughput of cloud-hypervisor against QEMU, repeated, inside level 1.

Run by bench-snapshot.sh --io through run-l1.sh; prints `ch-bench: io ...` lines (only the
network ones with --net-only).

The same level-2 guest (Debian's kernel as a PVH vmlinux, busybox initramfs, 1 vCPU, 256 MiB,
serial console) boots `runs` times under each VMM, alternating which goes first, with one raw
128 MiB disk and one NIC on the same TAP interface of level 1 (192.168.249.1/24, no vhost):

- cloud-hypervisor: `--disk path=IMG` (io_uring where the host has it) and `--net tap=chbtap0`;
- QEMU: `-drive format=raw,aio=io_uring` with `virtio-blk-pci`, and `-netdev tap,vhost=off` with
  `virtio-net-pci`.

In each boot the guest (typing into its console) runs ch-blkbench with O_DIRECT on /dev/vda
(sequential 1 MiB reads and writes, random 4 KiB reads one at a time and 32 in flight), then
20 pings to level 1 and 128 MiB over one TCP connection each way with ch-netbench (level 1 is
the other end; the receiver's figure counts).

Figures are medians with their spread (min-max) over the runs; each ratio is the median of the
per-run ratios, expressed so that above 1.0x means cloud-hypervisor did better (more MiB/s,
less time, a shorter round trip).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import Guest, spread  # noqa: E402

binary, remote, vmlinux, initrd = sys.argv[1:5]
runs = int(sys.argv[5]) if len(sys.argv) > 5 else 5
netbench = sys.argv[6]
# bench-snapshot.sh --io --net-only: the network figures only (the guest keeps its disk).
NET_ONLY = len(sys.argv) > 7 and sys.argv[7] == "net-only"
CMDLINE = "console=ttyS0 panic=-1"
TAP, HOST_IP, GUEST_IP, MAC = "chbtap0", "192.168.249.1", "192.168.249.2", "52:54:00:00:00:20"
NET_BYTES = 128 << 20
MARK = "$((6*7))"  # computed by the guest's shell, so the echoed command line never matches

# (figure, guest command printing one CH-BLKBENCH line, the capture's meaning)
DISK = [("seq read 1 MiB x64", "ch-blkbench /dev/vda read 1048576 64"),
        ("seq write 1 MiB x64", "ch-blkbench /dev/vda write 1048576 64"),
        ("rand read 4 KiB x2048, QD1", "ch-blkbench /dev/vda randread 4096 2048"),
        ("rand read 4 KiB x8192, QD32", "ch-blkbench /dev/vda randread 4096 8192 32")]


def log(text):
    print(f"io-bench: {text}", flush=True)


def step(guest, name, command, pattern, seconds=300):
    """Types `command; echo IOB-<name>-42 <output>` and returns the regex groups after the marker."""
    marker = f"IOB-{name}-42"
    guest.type(f"echo IOB-{name}-{MARK} $({command})")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        match = re.search(re.escape(marker) + r" " + pattern, guest.text())
        if match:
            return match.groups()
        if guest.proc.poll() is not None:
            break
        time.sleep(0.02)
    text = guest.text()
    why = ""
    if text.count("L2-INIT-READY") > 1:
        why = " (the level-2 guest reset and booted again)"
    elif guest.proc.poll() is not None:
        why = f" (the VMM exited with status {guest.proc.returncode}: with -no-reboot, QEMU's answer to a guest reset)"
    raise RuntimeError(f"{name}: no result{why}: {text[-400:]}")


def one_boot(argv, work, name):
    """One boot of one VMM: {figure: value}; disk figures in seconds, network in MiB/s and ms."""
    guest = Guest(argv, os.path.join(work, f"{name}.log"))
    figures = {}
    try:
        if not guest.wait_for("L2-INIT-READY", 300):
            raise RuntimeError(f"{name}: no init marker: {guest.text()[-300:]}")
        time.sleep(0.5)
        for index, (label, command) in enumerate([] if NET_ONLY else DISK):
            (seconds,) = step(guest, f"BLK{index}", command, r"CH-BLKBENCH \S+ \d+ \d+ ([0-9.]+)")
            figures[label] = float(seconds)
        (ping,) = step(guest, "PING", f"ip link set eth0 up; ip addr add {GUEST_IP}/24 dev eth0; "
                       f"ping -c 2 -W 5 {HOST_IP} >/dev/null; ping -c 20 -i 0.2 -W 3 {HOST_IP} "
                       "| sed -n 's|.*min/avg/max = [0-9.]*/\\([0-9.]*\\)/.*|\\1|p'", r"([0-9.]+)")
        figures["ping"] = float(ping)
        receiver = subprocess.Popen([netbench, "recv", "5201", "-"], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            step(guest, "TX", f"ch-netbench send {HOST_IP} 5201 zero:{NET_BYTES} >/dev/null; echo sent", r"sent")
            out, _ = receiver.communicate(timeout=120)
        finally:
            if receiver.poll() is None:
                receiver.kill()
        figures["tcp guest to host"] = float(out.split()[4])
        step(guest, "RXREADY", "ch-netbench recv 5202 - >/tmp/rx.log 2>&1 & echo listening", r"listening")
        time.sleep(0.5)
        subprocess.run([netbench, "send", GUEST_IP, "5202", f"zero:{NET_BYTES}"], stdout=subprocess.DEVNULL,
                       check=True, timeout=120)
        (rate,) = step(guest, "RX", "wait; cat /tmp/rx.log", r"CH-NETBENCH recv \d+ [0-9.]+ ([0-9.]+)")
        figures["tcp host to guest"] = float(rate)
        guest.type("poweroff -f")
        guest.wait_for("reboot: Power down", 20)
        return figures
    finally:
        guest.kill()


def main():
    work_root = tempfile.mkdtemp(prefix="iobench.")
    disk = os.path.join(work_root, "disk.img")
    with open(disk, "wb") as f:
        f.truncate(128 << 20)
    subprocess.run(["ip", "tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"], check=True)
    subprocess.run(["ip", "addr", "add", f"{HOST_IP}/24", "dev", TAP], check=True)
    subprocess.run(["ip", "link", "set", TAP, "up"], check=True)
    ch_argv = [binary, "--kernel", vmlinux, "--initramfs", initrd, "--cmdline", CMDLINE, "--cpus", "boot=1",
               "--memory", "size=256M", "--serial", "tty", "--console", "off",
               "--disk", f"path={disk}", "--net", f"tap={TAP},mac={MAC}"]
    qemu_argv = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-smp", "1", "-m", "256", "-nographic",
                 "-no-reboot", "-kernel", vmlinux, "-initrd", initrd, "-append", CMDLINE,
                 "-drive", f"file={disk},if=none,id=d0,format=raw,aio=io_uring", "-device", "virtio-blk-pci,drive=d0",
                 "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off",
                 "-device", f"virtio-net-pci,netdev=n0,mac={MAC}"]
    ours, theirs, failures = {}, {}, 0
    try:
        for run in range(runs):
            work = tempfile.mkdtemp(dir=work_root)
            try:
                got = {}
                for vmm in (("ch", "qemu") if run % 2 == 0 else ("qemu", "ch")):
                    try:
                        got[vmm] = one_boot(ch_argv if vmm == "ch" else qemu_argv, work, vmm)
                    except Exception as error:
                        raise RuntimeError(f"{'cloud-hypervisor' if vmm == 'ch' else 'QEMU'}: {error}") from error
                for figure in got["ch"]:
                    ours.setdefault(figure, []).append(got["ch"][figure])
                    theirs.setdefault(figure, []).append(got["qemu"][figure])
                log(f"run {run + 1}: " + "; ".join(f"{k} {got['ch'][k]:.3f} vs {got['qemu'][k]:.3f}" for k in got["ch"]))
            except Exception as error:  # a failed run is reported, the others still count
                failures += 1
                log(f"run {run + 1} FAILED: {error}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        subprocess.run(["ip", "link", "del", TAP], check=False)
        shutil.rmtree(work_root, ignore_errors=True)
    for figure, values in ours.items():
        higher_is_better = figure.startswith("tcp")
        unit = " MiB/s" if higher_is_better else (" ms" if figure == "ping" else " s")
        ratios = [(a / b if higher_is_better else b / a) for a, b in zip(values, theirs[figure]) if a > 0 and b > 0]
        print(f"ch-bench: io {figure} ({len(values)} runs): cloud-hypervisor {spread(values, unit, 3)}, "
              f"QEMU {spread(theirs[figure], unit, 3)}, ratio {spread(ratios, 'x', 2)} QEMU (above 1.0x: better)",
              flush=True)
    print(f"io-bench: {failures} failed run(s)", flush=True)
    return 1 if failures else 0


sys.exit(main())
