#!/usr/bin/env python3
"""Live-migration time and downtime of cloud-hypervisor against QEMU, inside level 1.

Run by bench-snapshot.sh --migration through run-l1.sh; prints `ch-bench: migration ...` lines.

The same level-2 guest (Debian kernel, busybox initramfs, one vCPU, 512 MiB by default) fills
a quarter of its RAM with random bytes in a tmpfs; "busy" guests then keep rewriting 16 MiB of
it in a loop while they migrate. Each run migrates one guest between two processes of the same
VMM on loopback TCP, alternating which VMM goes first:

- cloud-hypervisor: `ch-remote receive-migration receiver_url=tcp:...` on an empty VMM, then
  `ch-remote send-migration destination_url=tcp:...,downtime_ms=300`; the total time and the
  downtime are the source VMM's own measure (its `migration completed` log line: from the
  first request to the destination's last answer, and from the pause to that answer).
- QEMU: a destination with `-incoming tcp:...`, then QMP `migrate-set-parameters`
  downtime-limit 300 and `migrate`; the figures are QEMU's own (`total-time`, `downtime` of
  query-migrate).

Both guests also print a counter on their serial console every 20 ms; the downtime the guest's
user sees is measured the same way for both VMMs: the host time from the last count the source
printed to the first count the destination printed (which must be the next number).

Each migrated guest must answer a line typed on its serial console. Figures are medians with
their spread (min-max); the ratio is the median of the per-run ratios cloud-hypervisor / QEMU.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import QMP, Guest, spread, switch_gap, wait_path  # noqa: E402
from bench_common import ch_remote as remote_call  # noqa: E402

binary, remote, vmlinux, initrd = sys.argv[1:5]
size = int(sys.argv[5]) if len(sys.argv) > 5 else 512
runs = int(sys.argv[6]) if len(sys.argv) > 6 else 5
PORT = 6801
TICK = r"^TICK-([0-9]+)\r?$"


def log(text):
    print(f"migration-bench: {text}", flush=True)


def cmdline(busy):
    fill = size // 4
    churn = ("(while :; do dd if=/dev/urandom of=/fill/churn bs=64k count=256 conv=notrunc 2>/dev/null; done) & "
             if busy else "")
    test = (f"mkdir -p /fill && mount -t tmpfs -o size={fill + 24}M tmpfs /fill && "
            f"head -c $(({fill} * 1048576)) /dev/urandom > /fill/data && {churn}echo BENCH-$((6 * 7))-FILLED && "
            "(i=0; while :; do i=$((i+1)); echo TICK-$i; usleep 20000; done) & "
            "while read -r line; do echo ECHO-$line; done")
    return f"console=ttyS0 panic=-1 ch_test=\"{test}\""


def check_alive(guest, label):
    # The first byte typed into a guest that just arrived is sometimes lost (seen with QEMU's
    # destination: 'alive-qemu' came back as 'ECHO-live-qemu'), so a lost line is typed again.
    for attempt in range(3):
        guest.type(f"alive-{label}-{attempt}")
        if guest.wait_for(f"ECHO-alive-{label}-{attempt}", 40):
            return
    raise RuntimeError(f"the migrated guest ({label}) did not answer: {guest.text()[-400:]}")


def ch_round(busy, work):
    """One cloud-hypervisor migration: (total seconds, downtime seconds, serial gap seconds)."""
    src_api, dst_api = os.path.join(work, "src.sock"), os.path.join(work, "dst.sock")
    source = Guest([binary, "-v", "--api-socket", src_api, "--kernel", vmlinux, "--initramfs", initrd, "--cmdline", cmdline(busy),
                    "--cpus", "boot=1", "--memory", f"size={size}M", "--serial", "tty", "--console", "off"],
                   os.path.join(work, "ch-src.log"), stamp=TICK)
    destination = Guest([binary, "-v", "--api-socket", dst_api], os.path.join(work, "ch-dst.log"), stamp=TICK)
    receiver = None
    try:
        if not source.wait_for("BENCH-42-FILLED", 600):
            raise RuntimeError(f"the guest never filled its memory: {source.text()[-400:]}")
        wait_path(dst_api)
        receiver = subprocess.Popen([remote, "--api-socket", dst_api, "receive-migration", f"receiver_url=tcp:127.0.0.1:{PORT}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(0.5)
        remote_call(remote, src_api, "send-migration", f"destination_url=tcp:127.0.0.1:{PORT},downtime_ms=300")
        output = receiver.communicate(timeout=600)[0].decode(errors="replace")
        if receiver.returncode != 0:
            raise RuntimeError(f"receive-migration failed: {output.strip()}")
        deadline = time.monotonic() + 60
        match = None
        while time.monotonic() < deadline and not match:
            match = re.search(r"migration completed: ([0-9.]+) s, downtime ([0-9.]+) ms", source.text())
            time.sleep(0.05)
        if not match:
            raise RuntimeError(f"the source never logged the completed migration: {source.text()[-400:]}")
        check_alive(destination, "ch")
        parts = re.search(r"migration completed: [^\n]*\(downtime: ([^\n]*)\)", source.text())
        received = re.search(r"migration received: ([^\n]*)", destination.text())
        if parts:
            log(f"cloud-hypervisor downtime parts: {parts.group(1)}; destination: {received.group(1) if received else '?'}")
        return float(match.group(1)), float(match.group(2)) / 1000, serial_gap(source, destination, "cloud-hypervisor")
    finally:
        if receiver and receiver.poll() is None:
            receiver.kill()
        source.kill()
        destination.kill()


def serial_gap(source, destination, name):
    """The gap in the guest's serial counter across the switch (see switch_gap)."""
    # The destination's first count may come late (that is the gap being measured): wait for it.
    deadline = time.monotonic() + 90
    while not destination.stamps and time.monotonic() < deadline:
        time.sleep(0.05)
    before, after = list(source.stamps), list(destination.stamps)
    if not before or not after:
        raise RuntimeError(f"{name}: {len(before)} serial count(s) from the source, {len(after)} from the destination; "
                           f"source ends {source.text()[-300:]!r}; destination ends {destination.text()[-300:]!r}")
    gap, continuous = switch_gap(before, after)
    if not continuous:
        raise RuntimeError(f"{name}: the count did not go on from the source's last one "
                           f"({source.stamps[-1][1]} then {destination.stamps[0][1]})")
    return gap


def qemu_args(qmp, busy):
    return ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-smp", "1", "-m", str(size), "-nographic",
            "-no-reboot", "-nic", "none", "-kernel", vmlinux, "-initrd", initrd, "-append", cmdline(busy),
            "-qmp", f"unix:{qmp},server=on,wait=off"]


def qemu_round(busy, work):
    """One QEMU migration: (total seconds, downtime seconds, serial gap seconds), the first two QEMU's own."""
    src_qmp, dst_qmp = os.path.join(work, "src.qmp"), os.path.join(work, "dst.qmp")
    source = Guest(qemu_args(src_qmp, busy), os.path.join(work, "qemu-src.log"), stamp=TICK)
    destination = Guest(qemu_args(dst_qmp, busy) + ["-incoming", f"tcp:127.0.0.1:{PORT + 1}"], os.path.join(work, "qemu-dst.log"),
                        stamp=TICK)
    try:
        if not source.wait_for("BENCH-42-FILLED", 600):
            raise RuntimeError(f"the QEMU guest never filled its memory: {source.text()[-400:]}")
        qmp = QMP(src_qmp)
        QMP(dst_qmp)
        qmp.call("migrate-set-parameters", **{"downtime-limit": 300})
        qmp.call("migrate", uri=f"tcp:127.0.0.1:{PORT + 1}")
        deadline = time.monotonic() + 600
        while True:
            info = qmp.call("query-migrate")
            if info.get("status") == "completed":
                break
            if info.get("status") in ("failed", "cancelled") or time.monotonic() > deadline:
                raise RuntimeError(f"QEMU migration {info.get('status')}")
            time.sleep(0.005)
        check_alive(destination, "qemu")
        return info["total-time"] / 1000, info["downtime"] / 1000, serial_gap(source, destination, "QEMU")
    finally:
        source.kill()
        destination.kill()


def main():
    failures = 0
    for busy in (False, True):
        ch_total, ch_down, ch_gap, q_total, q_down, q_gap = [], [], [], [], [], []
        label = "busy" if busy else "idle"
        for run in range(runs):
            work = tempfile.mkdtemp(prefix="migbench.")
            try:
                figures = {}
                for vmm in (("ch", "qemu") if run % 2 == 0 else ("qemu", "ch")):
                    figures[vmm] = ch_round(busy, work) if vmm == "ch" else qemu_round(busy, work)
                # A run counts only when both VMMs completed it, so the per-run ratios pair up.
                for (total, down, gap), lists in ((figures["ch"], (ch_total, ch_down, ch_gap)),
                                                  (figures["qemu"], (q_total, q_down, q_gap))):
                    for value, target in zip((total, down, gap), lists):
                        target.append(value)
                log(f"{label} run {run + 1}: cloud-hypervisor {ch_total[-1]:.3f} s (downtime {ch_down[-1] * 1000:.1f} ms, "
                    f"serial gap {ch_gap[-1] * 1000:.0f} ms), QEMU {q_total[-1]:.3f} s (downtime {q_down[-1] * 1000:.1f} ms, "
                    f"serial gap {q_gap[-1] * 1000:.0f} ms)")
            except Exception as error:  # a failed run is reported, the others still count
                failures += 1
                log(f"{label} run {run + 1} FAILED: {error}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        pairs = len(ch_total)
        if pairs == 0:
            print(f"ch-bench: migration {label}: no complete run", flush=True)
            continue

        def ratio(ours, theirs):
            return [a / b for a, b in zip(ours, theirs) if b > 0]
        print(f"ch-bench: migration {size} MiB {label} guest ({pairs} runs, tcp loopback, downtime_ms=300): "
              f"total cloud-hypervisor {spread(ch_total)}, QEMU {spread(q_total)}, ratio {spread(ratio(ch_total, q_total), 'x', 2)}; "
              f"downtime cloud-hypervisor {spread([d * 1000 for d in ch_down], ' ms', 1)}, QEMU {spread([d * 1000 for d in q_down], ' ms', 1)}, "
              f"ratio {spread(ratio(ch_down, q_down), 'x', 2)}; "
              f"serial-counter gap cloud-hypervisor {spread([g * 1000 for g in ch_gap], ' ms', 0)}, "
              f"QEMU {spread([g * 1000 for g in q_gap], ' ms', 0)}, ratio {spread(ratio(ch_gap, q_gap), 'x', 2)}", flush=True)
    print(f"migration-bench: {failures} failed run(s)", flush=True)
    return 1 if failures else 0


sys.exit(main())
