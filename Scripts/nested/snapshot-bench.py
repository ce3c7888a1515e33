#!/usr/bin/env python3
"""Snapshot and restore latency of cloud-hypervisor against QEMU, inside level 1.

Run by bench-snapshot.sh through run-l1.sh; prints `ch-bench: ...` lines.

For each guest size, the same level-2 guest (Debian kernel, busybox initramfs, one vCPU) fills
a quarter of its RAM with random bytes in a tmpfs and idles. Then, repeated and alternating
which VMM goes first:

- cloud-hypervisor: `ch-remote pause`, then `ch-remote snapshot file://DIR` is timed (the call,
  which returns once config.json, state.json and memory-ranges are written and synced). A new,
  empty VMM (`--api-socket`) is started and `ch-remote restore source_url=...` is timed, once
  with memory_restore_mode=copy and once with ondemand (userfaultfd: memory comes in on first
  touch, so the call returns before the pages are read). Each restored guest is resumed and
  must answer on its serial console.
- QEMU: QMP `stop`, then `migrate` to `exec:cat > FILE` is timed until query-migrate says
  completed (what `virsh save` does; QEMU's savevm needs a qcow2 disk to hold the state). A new
  QEMU with `-incoming defer` is started and `migrate-incoming` from `exec:cat FILE` is timed
  until the incoming migration completed. The restored guest is resumed (`cont`) and must answer.

The snapshot files live on level 1's tmpfs, so both VMMs read and write memory, not a disk.
Each figure is the median of the runs with its spread (min-max); the ratio is the median of the
per-run ratios cloud-hypervisor / QEMU (below 1.0: cloud-hypervisor is faster).
"""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import QMP, Guest, spread, wait_path  # noqa: E402
from bench_common import ch_remote as remote_call  # noqa: E402

binary, remote, vmlinux, initrd = sys.argv[1:5]
sizes = [int(s) for s in (sys.argv[5] if len(sys.argv) > 5 else "128 1024").split()]
runs = int(sys.argv[6]) if len(sys.argv) > 6 else 5


def ch_remote(sock, *args):
    remote_call(remote, sock, *args)


def log(text):
    print(f"snapshot-bench: {text}", flush=True)


def cmdline(size_mib):
    fill = size_mib // 4
    # The guest answers a line typed on its console with ECHO-<line>, to check it is alive.
    test = (f"mkdir -p /fill && mount -t tmpfs -o size={fill + 8}M tmpfs /fill && "
            f"head -c $(({fill} * 1048576)) /dev/urandom > /fill/data && echo BENCH-$((6 * 7))-FILLED && "
            "while read -r line; do echo ECHO-$line; done")
    return f"console=ttyS0 panic=-1 ch_test=\"{test}\""


def ch_round(size, work):
    """One cloud-hypervisor run: the snapshot time and the restore times (copy, ondemand)."""
    snap = os.path.join(work, "ch-snap")
    api = os.path.join(work, "ch.sock")
    guest = Guest([binary, "--api-socket", api, "--kernel", vmlinux, "--initramfs", initrd, "--cmdline", cmdline(size),
                   "--cpus", "boot=1", "--memory", f"size={size}M", "--serial", "tty", "--console", "off"],
                  os.path.join(work, "ch-first.log"))
    try:
        if not guest.wait_for("BENCH-42-FILLED", 600):
            raise RuntimeError(f"cloud-hypervisor guest never filled its memory: {guest.text()[-400:]}")
        ch_remote(api, "pause")
        os.mkdir(snap)
        start = time.monotonic()
        ch_remote(api, "snapshot", f"file://{snap}")
        snapshot_s = time.monotonic() - start
    finally:
        guest.kill()
    on_disk = sum(os.stat(os.path.join(snap, f)).st_blocks * 512 for f in os.listdir(snap))
    restores = {}
    for mode in ("copy", "ondemand"):
        api2 = os.path.join(work, f"ch-{mode}.sock")
        restored = Guest([binary, "--api-socket", api2], os.path.join(work, f"ch-{mode}.log"))
        try:
            wait_path(api2)
            start = time.monotonic()
            ch_remote(api2, "restore", f"source_url=file://{snap},memory_restore_mode={mode}")
            restores[mode] = time.monotonic() - start
            ch_remote(api2, "resume")
            restored.type(f"alive-{mode}")
            if not restored.wait_for(f"ECHO-alive-{mode}", 120):
                raise RuntimeError(f"the guest restored by cloud-hypervisor ({mode}) did not answer: {restored.text()[-400:]}")
        finally:
            restored.kill()
    shutil.rmtree(snap)
    return snapshot_s, restores, on_disk


def qemu_args(size, qmp):
    return ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-smp", "1", "-m", str(size), "-nographic",
            "-no-reboot", "-nic", "none", "-kernel", vmlinux, "-initrd", initrd, "-append", cmdline(size),
            "-qmp", f"unix:{qmp},server=on,wait=off"]


def qemu_round(size, work):
    """One QEMU run: the save time (migrate to a file) and the restore time (-incoming)."""
    state = os.path.join(work, "qemu.state")
    qmp_path = os.path.join(work, "qemu.qmp")
    guest = Guest(qemu_args(size, qmp_path), os.path.join(work, "qemu-first.log"))
    try:
        if not guest.wait_for("BENCH-42-FILLED", 600):
            raise RuntimeError(f"QEMU guest never filled its memory: {guest.text()[-400:]}")
        qmp = QMP(qmp_path)
        qmp.call("stop")
        start = time.monotonic()
        qmp.call("migrate", uri=f"exec:cat > {state}")
        qmp.wait_migration()
        save_s = time.monotonic() - start
    finally:
        guest.kill()
    on_disk = os.stat(state).st_blocks * 512
    qmp2 = os.path.join(work, "qemu2.qmp")
    restored = Guest(qemu_args(size, qmp2) + ["-incoming", "defer"], os.path.join(work, "qemu-restore.log"))
    try:
        qmp = QMP(qmp2)
        start = time.monotonic()
        qmp.call("migrate-incoming", uri=f"exec:cat {state}")
        qmp.wait_migration()
        restore_s = time.monotonic() - start
        qmp.call("cont")
        restored.type("alive-qemu")
        if not restored.wait_for("ECHO-alive-qemu", 120):
            raise RuntimeError(f"the guest restored by QEMU did not answer: {restored.text()[-400:]}")
    finally:
        restored.kill()
    os.unlink(state)
    return save_s, restore_s, on_disk


def main():
    failures = 0
    for size in sizes:
        ch_snap, ch_copy, ch_lazy, q_save, q_restore, ch_disk, q_disk = [], [], [], [], [], 0, 0
        for run in range(runs):
            work = tempfile.mkdtemp(prefix="snapbench.")
            try:
                order = ("ch", "qemu") if run % 2 == 0 else ("qemu", "ch")
                for vmm in order:
                    if vmm == "ch":
                        snapshot_s, restores, ch_disk = ch_round(size, work)
                        ch_snap.append(snapshot_s)
                        ch_copy.append(restores["copy"])
                        ch_lazy.append(restores["ondemand"])
                    else:
                        save_s, restore_s, q_disk = qemu_round(size, work)
                        q_save.append(save_s)
                        q_restore.append(restore_s)
                log(f"{size} MiB run {run + 1}: cloud-hypervisor snapshot {ch_snap[-1]:.3f} s, restore copy "
                    f"{ch_copy[-1]:.3f} s, ondemand {ch_lazy[-1]:.4f} s; QEMU save {q_save[-1]:.3f} s, restore {q_restore[-1]:.3f} s")
            except Exception as error:  # a failed run is reported, the others still count
                failures += 1
                log(f"{size} MiB run {run + 1} FAILED: {error}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        pairs = min(len(ch_snap), len(q_save))
        if pairs == 0:
            print(f"ch-bench: snapshot/restore {size} MiB: no complete run", flush=True)
            continue
        ratio = lambda ours, theirs: [a / b for a, b in zip(ours, theirs) if b > 0]
        label = f"{size} MiB guest, {size // 4} MiB of data, {pairs} runs"
        print(f"ch-bench: snapshot {label}: cloud-hypervisor {spread(ch_snap)}, QEMU migrate-to-file {spread(q_save)}, "
              f"ratio {spread(ratio(ch_snap, q_save), 'x', 2)}; on disk {ch_disk >> 20} MiB vs {q_disk >> 20} MiB", flush=True)
        print(f"ch-bench: restore {label}: cloud-hypervisor copy {spread(ch_copy)}, ondemand {spread(ch_lazy, ' s', 4)}, "
              f"QEMU -incoming {spread(q_restore)}, ratio copy {spread(ratio(ch_copy, q_restore), 'x', 2)}, "
              f"ondemand {spread(ratio(ch_lazy, q_restore), 'x', 3)}", flush=True)
    print(f"snapshot-bench: {failures} failed run(s)", flush=True)
    return 1 if failures else 0


sys.exit(main())
