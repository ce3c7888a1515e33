"""Helpers of the nested benchmarks (snapshot-bench.py, migration-bench.py), inside level 1:
a VMM process whose serial console is a pipe, QMP, ch-remote, and medians with their spread."""
import json
import os
import signal
import socket
import statistics
import subprocess
import time


class Guest:
    """A VMM process whose serial console is a pipe we read and write."""

    def __init__(self, argv, log_path):
        self.log_path = log_path
        self.out = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

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
        self.out.close()


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


def spread(values, unit=" s", digits=3):
    return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"
