#!/usr/bin/env python3
"""What one TCP transfer costs under cloud-hypervisor and under QEMU, inside level 1.

Usage (on this machine):
  flock /tmp/nested.lock Scripts/nested/run-l1.sh python3 Scripts/nested/net-exits.py \\
      [--direction tx|rx] [--mib 128] [--trace | --profile] name=.build/release/cloud-hypervisor [name2=BINARY ...] qemu=qemu

Boots io-bench.py's guest (1 vCPU, 256 MiB, a NIC on level 1's TAP, no vhost) once per
NAME=BINARY (`qemu` boots qemu-system-x86_64 -enable-kvm -cpu host with virtio-net-pci) and
sends MIB MiB over one TCP connection with ch-netbench, guest to level 1 (`tx`, the default) or
level 1 to guest (`rx`). Prints per boot (`net-exits: NAME ...` lines): the receiver's MiB/s;
level 1's KVM statistics for the VM (debugfs) during the transfer, per MiB; the CPU time of
each VMM thread during the transfer; the guest's interrupts per virtio queue (its
/proc/interrupts before and after) and its own CPU time by kind (user, system, irq, softirq,
steal... from its /proc/stat); level 1's TAP counters. With --trace, `perf record` of the
VMM process during the transfer adds its system calls per thread and its vCPU's exits by reason
(the recording slows level 1: compare counts, not rates). With --profile, `perf record` of
the VMM process's CPU samples during the transfer adds where its threads spend their time (by
thread, object and symbol; the host kernel's share included). Counts, not the one throughput figure, are the point: the
throughput of single nested runs swings widely (io-bench.py repeats and alternates).
"""
import collections
import glob
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
NETBENCH = os.path.join(CACHE, "ch-netbench")
CMDLINE = "console=ttyS0 panic=-1"
TAP, HOST_IP, GUEST_IP, MAC = "chbtap0", "192.168.249.1", "192.168.249.2", "52:54:00:00:00:20"
MARK = "$((6*7))"
TICK = os.sysconf("SC_CLK_TCK")
TRACE_EVENTS = ["raw_syscalls:sys_enter", "kvm:kvm_exit", "kvm:kvm_mmio", "kvm:kvm_inj_virq", "kvm:kvm_userspace_exit",
                "kvm:kvm_pio", "kvm:kvm_msr"]


def tap_counters():
    """Level 1's counters of the TAP: {name: value}."""
    found = {}
    for name in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped"):
        with open(f"/sys/class/net/{TAP}/statistics/{name}") as f:
            found[name] = int(f.read())
    return found


def summarise_trace(name, data, size):
    """Counts per MiB of the recorded events: system calls by thread, exits by reason."""
    script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,tid,event,trace"], capture_output=True, text=True)
    syscalls, exits, other = collections.Counter(), collections.Counter(), collections.Counter()
    for line in script.stdout.splitlines():
        match = re.search(r"^\s*(\S.*?)\s+(\d+)\s+(\S+):\s*(.*)$", line)
        if not match:
            continue
        comm, event, rest = match.group(1), match.group(3), match.group(4)
        if event.endswith("sys_enter"):
            number = re.search(r"NR (\d+)", rest)
            syscalls[f"{comm}:{number.group(1) if number else '?'}"] += 1
        elif event.endswith("kvm_exit"):
            reason = re.search(r"reason (\S+)", rest)
            exits[reason.group(1) if reason else rest[:30]] += 1
        elif event.endswith("kvm_pio"):
            port = re.search(r"(pio_\w+) at (0x[0-9a-f]+)", rest)
            other[f"{port.group(1)} {port.group(2)}" if port else rest[:30]] += 1
        elif event.endswith("kvm_msr"):
            msr = re.search(r"(msr_\w+) ([0-9a-f]+)", rest)
            other[f"{msr.group(1)} {msr.group(2)}" if msr else rest[:30]] += 1
        else:
            other[event.split(":")[-1]] += 1
    for title, counter in (("system calls (thread:number)", syscalls), ("exits by reason", exits), ("other events", other)):
        print(f"net-exits: {name} {title} per MiB (total {sum(counter.values())}): "
              + ", ".join(f"{key}={value / size:.1f}" for key, value in counter.most_common(25)), flush=True)


def argv_for(binary):
    if binary == "qemu":
        return ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-smp", "1", "-m", "256", "-nographic",
                "-no-reboot", "-kernel", VMLINUX, "-initrd", INITRD, "-append", CMDLINE,
                "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off",
                "-device", f"virtio-net-pci,netdev=n0,mac={MAC}"]
    return [binary, "--kernel", VMLINUX, "--initramfs", INITRD, "--cmdline", CMDLINE, "--cpus", "boot=1",
            "--memory", "size=256M", "--serial", "tty", "--console", "off", "--net", f"tap={TAP},mac={MAC}"]


def thread_times(pid):
    """{thread name (tid): user+system seconds} of every thread of `pid`."""
    found = {}
    for stat in glob.glob(f"/proc/{pid}/task/*/stat"):
        try:
            with open(stat) as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        found[f"{name} ({stat.split('/')[4]})"] = (int(fields[11]) + int(fields[12])) / TICK
    return found


def step(guest, name, command, pattern, seconds=300):
    """Types `command` after a marker echo and returns the regex groups after the marker."""
    marker = f"NEX-{name}-42"
    guest.type(f"echo NEX-{name}-{MARK} $({command})")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        match = re.search(re.escape(marker) + r" " + pattern, guest.text(), re.S)
        if match:
            return match.groups()
        if guest.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{name}: no result: {guest.text()[-400:]}")


def guest_interrupts(guest, name):
    """{interrupt name: count} of the guest's virtio lines (one console line, `;`-separated)."""
    (line,) = step(guest, name, "grep virtio /proc/interrupts | awk '{printf \"%s=%s;\", $NF, $2}'", r"(\S*);\s")
    return {key: int(value) for key, value in (item.split("=") for item in line.split(";") if "=" in item)}


GUEST_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def guest_cpu(guest, name):
    """The guest's own CPU time by kind ({field: ticks}, /proc/stat's first line)."""
    (line,) = step(guest, name, "head -n 1 /proc/stat", r"cpu\s+([0-9 ]+)")
    return dict(zip(GUEST_CPU_FIELDS, (int(x) for x in line.split())))


def summarise_profile(name, data):
    """The recorded CPU samples by thread name and object, then the heaviest symbols."""
    for sort, limit in (("comm,dso", "0.5"), ("comm,dso,sym", "0.7")):
        report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort,
                                 "--percent-limit", limit], capture_output=True, text=True)
        for line in report.stdout.splitlines():
            if line.strip() and not line.startswith("#"):
                print(f"net-exits: {name} profile: {line.strip()}", flush=True)


def one(name, binary, direction, size, work, trace, profile=False):
    guest = Guest(argv_for(binary), os.path.join(work, f"{name}.log"))
    try:
        if not guest.wait_for("L2-INIT-READY", 300):
            raise RuntimeError(f"{name}: no init marker: {guest.text()[-300:]}")
        time.sleep(0.5)
        step(guest, "UP", f"ip link set eth0 up; ip addr add {GUEST_IP}/24 dev eth0; "
             f"ping -c 3 -W 5 {HOST_IP} >/dev/null; echo up", r"(up)")
        before_irq = guest_interrupts(guest, "IRQ0")
        before_cpu = guest_cpu(guest, "CPU0")
        before_tap = tap_counters()
        perf, data = None, os.path.join(work, f"{name}.perf")
        if trace:
            perf = subprocess.Popen(["perf", "record", "-q", "-p", str(guest.proc.pid), "-o", data]
                                    + [x for e in TRACE_EVENTS for x in ("-e", e)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)
        elif profile:
            perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "-p", str(guest.proc.pid), "-o", data],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)
        if direction == "tx":
            receiver = subprocess.Popen([NETBENCH, "recv", "5201", "-"], stdout=subprocess.PIPE, text=True)
            time.sleep(0.3)
            stats, times = kvm_stats(guest.proc.pid), thread_times(guest.proc.pid)
            step(guest, "TX", f"ch-netbench send {HOST_IP} 5201 zero:{size << 20} >/dev/null; echo sent", r"(sent)")
            out, _ = receiver.communicate(timeout=120)
            rate = float(out.split()[4])
        else:
            step(guest, "RXREADY", "ch-netbench recv 5202 - >/tmp/rx.log 2>&1 & echo listening", r"(listening)")
            time.sleep(0.5)
            stats, times = kvm_stats(guest.proc.pid), thread_times(guest.proc.pid)
            subprocess.run([NETBENCH, "send", GUEST_IP, "5202", f"zero:{size << 20}"], stdout=subprocess.DEVNULL,
                           check=True, timeout=120)
            (rate,) = step(guest, "RX", "wait; cat /tmp/rx.log", r"CH-NETBENCH recv \d+ [0-9.]+ ([0-9.]+)")
            rate = float(rate)
        after_stats, after_times = kvm_stats(guest.proc.pid), thread_times(guest.proc.pid)
        after_tap = tap_counters()
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        after_cpu = guest_cpu(guest, "CPU1")
        after_irq = guest_interrupts(guest, "IRQ1")
        print(f"net-exits: {name} {direction}: {rate:.1f} MiB/s over {size} MiB", flush=True)
        deltas = {key: after_stats[key] - stats.get(key, 0) for key in after_stats}
        print(f"net-exits: {name} KVM statistics per MiB: "
              + " ".join(f"{key}={value / size:.1f}" for key, value in sorted(deltas.items()) if value), flush=True)
        used = {key: after_times[key] - times.get(key, 0) for key in after_times}
        print(f"net-exits: {name} thread CPU seconds: "
              + ", ".join(f"{key}={value:.2f}" for key, value in sorted(used.items(), key=lambda x: -x[1]) if value),
              flush=True)
        print(f"net-exits: {name} guest interrupts: "
              + ", ".join(f"{key}={after_irq[key] - before_irq.get(key, 0)}" for key in sorted(after_irq)), flush=True)
        print(f"net-exits: {name} guest CPU seconds (its /proc/stat, transfer and two console commands): "
              + ", ".join(f"{key}={(after_cpu[key] - before_cpu.get(key, 0)) / 100:.2f}" for key in GUEST_CPU_FIELDS
                          if key in after_cpu), flush=True)
        print(f"net-exits: {name} level 1's TAP: "
              + ", ".join(f"{key}={after_tap[key] - before_tap[key]}" for key in after_tap), flush=True)
        if perf:
            summarise_trace(name, data, size) if trace else summarise_profile(name, data)
            os.remove(data)
        guest.type("poweroff -f")
        guest.wait_for("reboot: Power down", 20)
    finally:
        guest.kill()


def main():
    args = sys.argv[1:]
    direction, size, trace, profile = "tx", 128, False, False
    while args and args[0].startswith("--"):
        if args[0] == "--trace":
            trace, args = True, args[1:]
            continue
        if args[0] == "--profile":
            profile, args = True, args[1:]
            continue
        if args[0] == "--direction":
            direction = args[1]
        elif args[0] == "--mib":
            size = int(args[1])
        else:
            sys.exit(f"net-exits: unknown option {args[0]} (--direction tx|rx, --mib N, --trace, --profile)")
        args = args[2:]
    if direction not in ("tx", "rx"):
        sys.exit(f"net-exits: --direction takes tx or rx, not {direction}")
    if not os.path.isdir("/sys/kernel/debug/kvm"):
        subprocess.run(["mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug"], check=False)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    subprocess.run(["ip", "tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"], check=True)
    subprocess.run(["ip", "addr", "add", f"{HOST_IP}/24", "dev", TAP], check=True)
    subprocess.run(["ip", "link", "set", TAP, "up"], check=True)
    work = tempfile.mkdtemp(prefix="net-exits.")
    try:
        for spec in args:
            name, _, binary = spec.partition("=")
            try:
                one(name, binary or name, direction, size, work, trace, profile)
            except Exception as error:  # one failed boot is reported, the others still run
                print(f"net-exits: {name} FAILED: {error}", flush=True)
    finally:
        subprocess.run(["ip", "link", "del", TAP], check=False)


main()
