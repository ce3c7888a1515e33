#!/usr/bin/env python3
"""Throughput of the vhost-user devices under cloud-hypervisor against QEMU, inside level 1.

Run by bench-snapshot.sh --devices through run-l1.sh; prints `ch-bench: device ...` lines.

The same level-2 guest (Debian kernel, busybox initramfs, 1 vCPU, 512 MiB of shared memory)
under each VMM, with the same back-end process in level 1, so the figures compare the VMMs'
front-ends (the data path itself runs between the guest and the back-end):

- virtio-fs: Debian's virtiofsd (`cache=none`) serves a tmpfs directory; the guest reads a
  128 MiB file and writes 128 MiB with `conv=fsync`;
- vhost-user-blk: this package's vhost_user_block serves a 128 MiB raw image; the guest's
  ch-blkbench times O_DIRECT sequential reads and writes in 1 MiB blocks and 4 KiB random reads;
  cloud-hypervisor also boots once with the image as its own in-VMM virtio-blk disk;
- vsock: cloud-hypervisor's hybrid vsock against QEMU's vhost-vsock-pci (level 1 loads
  vhost_vsock): level 1's ch-vsockbench connects (`CONNECT 1234` on the socket, or AF_VSOCK to
  CID 3) to the guest's listener and both send 32 MiB at once; MiB/s of both directions
  together, from level 1's clock.

cloud-hypervisor runs `--memory size=512M,shared=on` with `--fs` / `--disk vhost_user=on`;
QEMU runs a memfd memory backend with `vhost-user-fs-pci` / `vhost-user-blk-pci`. Each run
boots both VMMs, alternating which goes first; MiB/s come from the guest's own clock
(`/proc/uptime` for virtio-fs, ch-blkbench's for the disk; level 1's for vsock). Figures are medians with their
spread; the ratio is the median of per-run ratios cloud-hypervisor / QEMU (higher is better).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import Guest, spread, wait_path  # noqa: E402

binary, remote, vmlinux, initrd = sys.argv[1:5]
runs = int(sys.argv[5]) if len(sys.argv) > 5 else 5
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
VSOCKBENCH = os.path.join(os.environ.get("CH_NESTED_CACHE", os.path.expanduser("~/.cache/cloud-hypervisor-swift/nested")), "ch-vsockbench")
BACKEND = os.path.join(os.path.dirname(binary), "vhost_user_block")
CMDLINE = "console=ttyS0 panic=-1"
MIB = 128
# Each direction of the vsock exchange: the guest keeps what it sends and receives in its tmpfs.
VSOCK_MIB = 32


def log(text):
    print(f"devices-bench: {text}", flush=True)


class Shell:
    """The guest's serial shell: type a line, wait for a marker the guest computed."""

    def __init__(self, guest):
        self.guest = guest
        self.seen = 0
        self.counter = 0

    def run(self, command, seconds=300):
        """Runs `command`; returns what it printed before the end marker."""
        self.counter += 1
        marker = f"DB-END-{self.counter}"
        self.guest.type(f"{command}; echo DB-END-$(({self.counter} + 0))")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            text = self.guest.text()
            at = text.find(marker + "\n", self.seen)
            if at < 0:
                at = text.find(marker + "\r", self.seen)
            if at >= 0:
                out = text[self.seen:at]
                self.seen = at + len(marker)
                return out
            if self.guest.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"no {marker} after `{command}`: {self.guest.text()[-400:]}")


def uptime_rate(shell, command):
    """MiB/s of `command` moving MIB MiB, from the guest's /proc/uptime around it."""
    out = shell.run(f"read a _ </proc/uptime; {command}; read b _ </proc/uptime; echo DB-T $a $b")
    match = re.search(r"DB-T ([0-9.]+) ([0-9.]+)", out)
    if not match:
        raise RuntimeError(f"no timing from `{command}`: {out[-300:]}")
    seconds = float(match.group(2)) - float(match.group(1))
    return MIB / max(seconds, 0.01)


def boot(argv, work, name):
    guest = Guest(argv, os.path.join(work, f"{name}.log"))
    if not guest.wait_for("L2-INIT-READY", 300):
        guest.kill()
        raise RuntimeError(f"{name}: no init marker: {guest.text()[-300:]}")
    time.sleep(1)  # the shell's prompt
    return guest


def fs_round(vmm, work):
    """virtio-fs read and write MiB/s under `vmm`."""
    shared = os.path.join(work, "shared")
    os.makedirs(shared, exist_ok=True)
    with open(os.path.join(shared, "big"), "wb") as f:
        f.write(os.urandom(MIB << 20))
    sock = os.path.join(work, "fs.sock")
    daemon = subprocess.Popen([VIRTIOFSD, f"--socket-path={sock}", "-o", f"source={shared}", "-o", "cache=none",
                               "-o", "sandbox=chroot"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    guest = None
    try:
        wait_path(sock)
        if vmm == "ch":
            argv = [binary, "--kernel", vmlinux, "--initramfs", initrd, "--cmdline", CMDLINE, "--cpus", "boot=1",
                    "--memory", "size=512M,shared=on", "--serial", "tty", "--console", "off", "--fs", f"tag=bench,socket={sock}"]
        else:
            argv = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-smp", "1", "-m", "512", "-nographic", "-no-reboot",
                    "-nic", "none", "-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-machine", "memory-backend=mem",
                    "-chardev", f"socket,id=fs,path={sock}", "-device", "vhost-user-fs-pci,chardev=fs,tag=bench",
                    "-kernel", vmlinux, "-initrd", initrd, "-append", CMDLINE]
        guest = boot(argv, work, f"{vmm}-fs")
        shell = Shell(guest)
        shell.run("mkdir -p /mnt && mount -t virtiofs bench /mnt")
        read = uptime_rate(shell, "cat /mnt/big >/dev/null")
        write = uptime_rate(shell, f"dd if=/dev/zero of=/mnt/w bs=1048576 count={MIB} conv=fsync 2>/dev/null")
        shell.run("umount /mnt")
        return read, write
    finally:
        if guest:
            guest.kill()
        daemon.kill()
        daemon.wait()
        shutil.rmtree(shared, ignore_errors=True)


def blk_round(vmm, work):
    """vhost-user-blk sequential read, write and random read MiB/s under `vmm`."""
    image = os.path.join(work, "disk.raw")
    with open(image, "wb") as f:
        f.write(b"\0" * (MIB << 20))
    sock = os.path.join(work, "blk.sock")
    daemon = subprocess.Popen([BACKEND, "--block-backend", f"path={image},socket={sock},num_queues=1,queue_size=128"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    guest = None
    try:
        wait_path(sock)
        if vmm == "ch":
            argv = [binary, "--kernel", vmlinux, "--initramfs", initrd, "--cmdline", CMDLINE, "--cpus", "boot=1",
                    "--memory", "size=512M,shared=on", "--serial", "tty", "--console", "off",
                    "--disk", f"vhost_user=on,socket={sock},num_queues=1,queue_size=128"]
        else:
            argv = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-smp", "1", "-m", "512", "-nographic", "-no-reboot",
                    "-nic", "none", "-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-machine", "memory-backend=mem",
                    "-chardev", f"socket,id=blk,path={sock}", "-device", "vhost-user-blk-pci,chardev=blk,num-queues=1",
                    "-kernel", vmlinux, "-initrd", initrd, "-append", CMDLINE]
        guest = boot(argv, work, f"{vmm}-blk")
        rates = blkbench(guest, vmm)
        if vmm == "ch":
            # The same image as an in-VMM virtio-blk disk, for the back-end's cost against it.
            guest.kill()
            guest = boot(argv[:-2] + ["--disk", f"path={image},num_queues=1,queue_size=128"], work, "ch-virtio-blk")
            rates += blkbench(guest, "ch-virtio-blk")
        return tuple(rates)
    finally:
        if guest:
            guest.kill()
        daemon.kill()
        daemon.wait()


def blkbench(guest, name):
    shell = Shell(guest)
    rates = []
    for mode, size, count in (("read", 1048576, 64), ("write", 1048576, 64), ("randread", 4096, 2048)):
        out = shell.run(f"ch-blkbench /dev/vda {mode} {size} {count}")
        match = re.search(rf"CH-BLKBENCH {mode} [0-9]+ [0-9]+ ([0-9.]+)", out)
        if not match:
            raise RuntimeError(f"{name}: no ch-blkbench {mode} figure: {out[-300:]}")
        rates.append(float(match.group(1)))
    return rates


def vsock_round(vmm, work):
    """vsock MiB/s both ways at once (each side sends VSOCK_MIB MiB) under `vmm`."""
    sock = os.path.join(work, "vsock.sock")
    send = os.path.join(work, "to-guest")
    with open(send, "wb") as f:
        f.write(os.urandom(VSOCK_MIB << 20))
    if vmm == "ch":
        argv = [binary, "--kernel", vmlinux, "--initramfs", initrd, "--cmdline", CMDLINE, "--cpus", "boot=1",
                "--memory", "size=512M", "--serial", "tty", "--console", "off", "--vsock", f"cid=3,socket={sock}"]
        host = [VSOCKBENCH, "unix-connect", sock, "1234", send, os.path.join(work, "from-guest")]
    else:
        argv = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-smp", "1", "-m", "512", "-nographic", "-no-reboot",
                "-nic", "none", "-device", "vhost-vsock-pci,guest-cid=3", "-kernel", vmlinux, "-initrd", initrd, "-append", CMDLINE]
        host = [VSOCKBENCH, "vsock-connect", "3", "1234", send, os.path.join(work, "from-guest")]
    guest = boot(argv, work, f"{vmm}-vsock")
    try:
        shell = Shell(guest)
        shell.run(f"head -c {VSOCK_MIB << 20} /dev/urandom >/tmp/s; (ch-vsockbench vsock-listen 1234 /tmp/s /tmp/r >/tmp/vl.log 2>&1 &); sleep 1")
        result = subprocess.run(host, capture_output=True, text=True, timeout=600)
        match = re.search(r"CH-VSOCKBENCH \S+ sent ([0-9]+) received ([0-9]+) ([0-9.]+)", result.stdout)
        if not match or int(match.group(1)) != VSOCK_MIB << 20 or int(match.group(2)) != VSOCK_MIB << 20:
            raise RuntimeError(f"{vmm}: vsock exchange incomplete: {result.stdout.strip()} {result.stderr.strip()}")
        return ((int(match.group(1)) + int(match.group(2))) / 1048576 / max(float(match.group(3)), 0.001),)
    finally:
        guest.kill()


def main():
    failures = 0
    figures, inside = {}, {}
    benches = [("vsock", vsock_round, ("both ways at once",)),
               ("virtio-fs", fs_round, ("read", "write")),
               ("vhost-user-blk", blk_round, ("sequential read", "sequential write", "4 KiB random read"))]
    for run in range(runs):
        work = tempfile.mkdtemp(prefix="devbench.")
        try:
            for name, round_, labels in benches:
                got = {}
                try:
                    for vmm in (("ch", "qemu") if run % 2 == 0 else ("qemu", "ch")):
                        got[vmm] = round_(vmm, work)
                except Exception as error:  # one device failing leaves the others' figures
                    failures += 1
                    log(f"run {run + 1} {name} FAILED: {error}")
                    continue
                for i, label in enumerate(labels):
                    figures.setdefault((name, label), []).append((got["ch"][i], got["qemu"][i]))
                    if len(got["ch"]) > len(labels):  # the in-VMM device's figures follow
                        inside.setdefault((name, label), []).append((got["ch"][i], got["ch"][len(labels) + i]))
                log(f"run {run + 1} {name}: " + "; ".join(
                    f"{label} cloud-hypervisor {got['ch'][i]:.1f} MiB/s, QEMU {got['qemu'][i]:.1f} MiB/s" for i, label in enumerate(labels)))
        except Exception as error:  # a failed run is reported, the others still count
            failures += 1
            log(f"run {run + 1} FAILED: {error}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for (name, label), pairs in figures.items():
        ours, theirs = [a for a, _ in pairs], [b for _, b in pairs]
        ratios = [a / b for a, b in pairs if b > 0]
        print(f"ch-bench: device {name} {label} ({len(pairs)} runs, same back-end under both): cloud-hypervisor "
              f"{spread(ours, ' MiB/s', 1)}, QEMU {spread(theirs, ' MiB/s', 1)}, ratio {spread(ratios, 'x', 2)} (higher is better)",
              flush=True)
    for (name, label), pairs in inside.items():
        ratios = [a / b for a, b in pairs if b > 0]
        print(f"ch-bench: device {name} {label} against cloud-hypervisor's in-VMM virtio-blk on the same image ({len(pairs)} runs): "
              f"vhost-user {spread([a for a, _ in pairs], ' MiB/s', 1)}, in-VMM {spread([b for _, b in pairs], ' MiB/s', 1)}, "
              f"ratio {spread(ratios, 'x', 2)}", flush=True)
    print(f"devices-bench: {failures} failed run(s)", flush=True)
    return 1 if failures else 0


sys.exit(main())
