#!/usr/bin/env python3
"""Hotplug latency of cloud-hypervisor against QEMU, inside level 1.

Run by bench-snapshot.sh --hotplug through run-l1.sh; prints `ch-bench: hotplug ...` lines.

The same level-2 guest (Debian kernel, busybox initramfs, one boot vCPU, 512 MiB) waits in a
shell loop for each new piece of hardware to appear in sysfs and prints a marker on its serial
console the moment it does:

- a vCPU: `/sys/devices/system/cpu/cpu1` exists (the ACPI processor was added);
- a disk: `/sys/block/vda` exists (the virtio-blk driver probed the new PCI function);
- memory: `/sys/devices/system/memory` holds more memory blocks than at boot.

Each figure is the time from the request leaving the client to the marker arriving on the
console pipe. The requests are what each VMM's clients send:

- cloud-hypervisor: HTTP on its API socket, as Kata and libvirt send it: `vm.resize
  {"desired_vcpus":2}`, `vm.add-disk {"path":...}`, `vm.resize {"desired_ram":...}`;
- QEMU: QMP `device_add` of the CPU `query-hotpluggable-cpus` offers, `blockdev-add` then
  `device_add virtio-blk-pci`, `object-add memory-backend-ram` then `device_add pc-dimm`.

Runs alternate which VMM goes first. Figures are medians with their spread (min-max); the ratio
is the median of the per-run ratios cloud-hypervisor / QEMU. A kind one VMM refuses is reported
with the refusal and left out of the ratio.
"""
import json
import os
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import QMP, Guest, spread, wait_path  # noqa: E402

binary, remote, vmlinux, initrd = sys.argv[1:5]
runs = int(sys.argv[5]) if len(sys.argv) > 5 else 5
SIZE_MIB = 512
KINDS = ("cpu", "disk", "memory")


def log(text):
    print(f"hotplug-bench: {text}", flush=True)


# Busybox sh: `[` and `set --` with a glob are builtins, so the loops fork nothing. The block
# count is taken before the first marker, so no hot-added memory can be counted as boot memory.
GUEST_SCRIPT = ("set -- /sys/devices/system/memory/memory*; blocks=$#; echo HP-READY-$((6*7)); "
                "while [ ! -e /sys/devices/system/cpu/cpu1 ]; do :; done; echo HP-SEEN-cpu-$((6*7)); "
                "while [ ! -e /sys/block/vda ]; do :; done; echo HP-SEEN-disk-$((6*7)); "
                "while :; do set -- /sys/devices/system/memory/memory*; [ $# -gt $blocks ] && break; done; "
                "echo HP-SEEN-memory-$((6*7)); sleep 1000")
CMDLINE = f"console=ttyS0 panic=-1 ch_test=\"{GUEST_SCRIPT}\""


class Console:
    """Waits for a marker on a guest's console log, reading only what is new."""

    def __init__(self, guest):
        self.guest, self.seen, self.offset = guest, "", 0

    def wait(self, marker, seconds):
        deadline = time.monotonic() + seconds
        with open(self.guest.log_path, "rb") as f:
            while time.monotonic() < deadline:
                f.seek(self.offset)
                chunk = f.read()
                if chunk:
                    self.offset += len(chunk)
                    self.seen += chunk.decode(errors="replace")
                    if marker in self.seen:
                        return time.monotonic()
                elif self.guest.proc.poll() is not None:
                    break
                time.sleep(0.0005)
        raise RuntimeError(f"no {marker} on the console: {self.seen[-400:]}")


def api_put(path, endpoint, body):
    """One HTTP request on cloud-hypervisor's API socket: (status, response body)."""
    data = json.dumps(body).encode()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(f"PUT /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        head, _, rest = reply.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest.decode(errors="replace")


def make_image(work):
    image = os.path.join(work, "disk.raw")
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    return image


def ch_round(work):
    """One cloud-hypervisor guest: {kind: seconds or the refusal}."""
    api = os.path.join(work, "ch.sock")
    image = make_image(work)
    guest = Guest([binary, "--api-socket", api, "--kernel", vmlinux, "--initramfs", initrd, "--cmdline", CMDLINE,
                   "--cpus", "boot=1,max=2", "--memory", f"size={SIZE_MIB}M,hotplug_size={SIZE_MIB}M",
                   "--serial", "tty", "--console", "off"], os.path.join(work, "ch.log"))
    requests = {"cpu": ("vm.resize", {"desired_vcpus": 2}),
                "disk": ("vm.add-disk", {"path": image}),
                "memory": ("vm.resize", {"desired_ram": 2 * SIZE_MIB << 20})}
    results = {}
    try:
        console = Console(guest)
        console.wait("HP-READY-42", 300)
        wait_path(api)
        for kind in KINDS:
            endpoint, body = requests[kind]
            start = time.monotonic()
            status, answer = api_put(api, endpoint, body)
            if status >= 300:
                results[kind] = f"refused ({status}: {answer.strip()[:160]})"
                break  # the guest waits for each kind in turn
            results[kind] = console.wait(f"HP-SEEN-{kind}-42", 60) - start
        return results
    finally:
        guest.kill()


def qemu_round(work):
    """One QEMU guest: {kind: seconds}."""
    qmp_path = os.path.join(work, "qemu.qmp")
    image = make_image(work)
    guest = Guest(["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-smp", "1,maxcpus=2",
                   "-m", f"{SIZE_MIB}M,slots=2,maxmem={3 * SIZE_MIB}M", "-nographic", "-no-reboot", "-nic", "none",
                   "-kernel", vmlinux, "-initrd", initrd, "-append", CMDLINE, "-qmp", f"unix:{qmp_path},server=on,wait=off"],
                  os.path.join(work, "qemu.log"))
    results = {}
    try:
        console = Console(guest)
        console.wait("HP-READY-42", 300)
        qmp = QMP(qmp_path)
        cpus = [c for c in qmp.call("query-hotpluggable-cpus") if "qom-path" not in c]
        if not cpus:
            raise RuntimeError("QEMU offers no CPU to hot-add")

        def cpu():
            qmp.call("device_add", driver=cpus[0]["type"], id="cpu1", **cpus[0]["props"])

        def disk():
            qmp.call("blockdev-add", **{"driver": "raw", "node-name": "hd1",
                                        "file": {"driver": "file", "filename": image}})
            qmp.call("device_add", driver="virtio-blk-pci", drive="hd1", id="disk1")

        def memory():
            qmp.call("object-add", **{"qom-type": "memory-backend-ram", "id": "mem1", "size": SIZE_MIB << 20})
            qmp.call("device_add", driver="pc-dimm", id="dimm1", memdev="mem1")

        for kind, request in (("cpu", cpu), ("disk", disk), ("memory", memory)):
            start = time.monotonic()
            request()
            results[kind] = console.wait(f"HP-SEEN-{kind}-42", 60) - start
        return results
    finally:
        guest.kill()


def shown(value):
    if isinstance(value, float):
        return f"{value * 1000:.1f} ms"
    return value or "-"


def main():
    failures = 0
    ours = {k: [] for k in KINDS}
    theirs = {k: [] for k in KINDS}
    ratios = {k: [] for k in KINDS}
    refusals = {}
    for run in range(runs):
        work = tempfile.mkdtemp(prefix="hpbench.")
        try:
            got = {}
            for vmm in (("ch", "qemu") if run % 2 == 0 else ("qemu", "ch")):
                got[vmm] = ch_round(work) if vmm == "ch" else qemu_round(work)
            for kind in KINDS:
                a, b = got["ch"].get(kind), got["qemu"].get(kind)
                if isinstance(a, str):
                    refusals[kind] = a
                if isinstance(a, float):
                    ours[kind].append(a)
                if isinstance(b, float):
                    theirs[kind].append(b)
                if isinstance(a, float) and isinstance(b, float) and b > 0:
                    ratios[kind].append(a / b)
            log(f"run {run + 1}: " + "; ".join(
                f"{kind} cloud-hypervisor {shown(got['ch'].get(kind))}, QEMU {shown(got['qemu'].get(kind))}" for kind in KINDS))
        except Exception as error:  # a failed run is reported, the others still count
            failures += 1
            log(f"run {run + 1} FAILED: {error}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for kind in KINDS:
        if ratios[kind]:
            print(f"ch-bench: hotplug {kind} ({len(ratios[kind])} runs, request to the guest seeing it): "
                  f"cloud-hypervisor {spread([t * 1000 for t in ours[kind]], ' ms', 1)}, "
                  f"QEMU {spread([t * 1000 for t in theirs[kind]], ' ms', 1)}, ratio {spread(ratios[kind], 'x', 2)}", flush=True)
        elif kind in refusals:
            print(f"ch-bench: hotplug {kind}: cloud-hypervisor {refusals[kind]}; QEMU "
                  f"{spread([t * 1000 for t in theirs[kind]], ' ms', 1) if theirs[kind] else 'no run'}", flush=True)
        else:
            print(f"ch-bench: hotplug {kind}: no complete run", flush=True)
    print(f"hotplug-bench: {failures} failed run(s)", flush=True)
    return 1 if failures else 0


sys.exit(main())
