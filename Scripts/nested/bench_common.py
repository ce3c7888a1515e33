"""Helpers of the nested benchmarks (snapshot-bench.py, migration-bench.py), inside level 1:
a VMM process whose serial console is a pipe, QMP, ch-remote, level 1's KVM statistics of a VM,
and medians with their spread."""
import glob
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import threading
import time


class Guest:
    """A VMM process whose serial console is a pipe we read and write.

    With `stamp` (a regular expression with one group, a number), every console line it matches
    is recorded with the host's monotonic time of its arrival in `stamps` as (seconds, number):
    a reader thread copies the console to the log file as it comes."""

    def __init__(self, argv, log_path, stamp=None):
        self.log_path = log_path
        self.out = open(log_path, "wb")
        self.stamps = []
        self.reader = None
        if stamp is None:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self.out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            return
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        pattern = re.compile(stamp.encode())
        self.reader = threading.Thread(target=self._copy, args=(pattern,), daemon=True)
        self.reader.start()

    def _copy(self, pattern):
        for line in self.proc.stdout:
            now = time.monotonic()
            self.out.write(line)
            self.out.flush()
            match = pattern.search(line)
            if match:
                self.stamps.append((now, int(match.group(1))))

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_for(self, marker, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if marker in self.text():
                return True
            if self.proc.poll() is not None:
                return marker in self.text()
            time.sleep(0.05)
        return False

    def type(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.reader:
            self.reader.join(timeout=5)
        self.out.close()


def kvm_stats(pid):
    """The counters level 1's KVM keeps for the VM of process `pid` (/sys/kernel/debug/kvm/PID-FD/)."""
    found = {}
    for directory in glob.glob(f"/sys/kernel/debug/kvm/{pid}-*"):
        for name in os.listdir(directory):
            try:
                with open(os.path.join(directory, name)) as f:
                    found[name] = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return found


def wait_path(path, seconds=20):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.005)


def ch_remote(remote, sock, *args):
    result = subprocess.run([remote, "--api-socket", sock, *args], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"ch-remote {' '.join(args)}: {result.stderr.strip()}")


class QMP:
    def __init__(self, path):
        wait_path(path)
        self.sock = socket.socket(socket.AF_UNIX)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.file = self.sock.makefile("rwb")
        self.file.readline()  # greeting
        self.call("qmp_capabilities")

    def call(self, command, **arguments):
        message = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")
            return reply.get("return")

    def wait_migration(self, seconds=600):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status = self.call("query-migrate").get("status")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise RuntimeError(f"QEMU migration {status}")
            time.sleep(0.001)
        raise RuntimeError("QEMU migration did not complete")


def switch_gap(before, after):
    """The gap in a guest's serial counter across a switch of VMM process: the host time from
    the last count the first process printed whole to the first count the second one printed,
    and whether the second went on where the first stopped (the next number, or the one after
    when the line between was cut in two by the switch; no count repeated or lost)."""
    if not before or not after:
        raise RuntimeError("no serial count on one side of the switch")
    last_time, last = before[-1]
    first_time, first = after[0]
    return first_time - last_time, first in (last + 1, last + 2)


def spread(values, unit=" s", digits=3):
    return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"
