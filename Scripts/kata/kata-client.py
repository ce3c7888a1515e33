#!/usr/bin/env python3
"""Replays Kata Containers' Cloud Hypervisor driver against a VMM's API socket.

The request bodies are Kata's own (Tests/CloudHypervisorAPITests/Fixtures/kata, recorded from
its generated Go client and clh.go), sent in Kata's order over a Unix socket; vm.add-net goes
on a new connection as one sendmsg with a TAP descriptor in SCM_RIGHTS, as Kata sends it.
Only what a test machine cannot offer is changed: the kernel, initramfs and command line to
boot, a scratch image for Kata's rootfs disk, the serial port on the VMM's terminal so the
guest can be followed, 512 MiB instead of Kata's 2 GiB, the vsock's host socket moved next to
the API socket (Kata's /run/vc/vm/<id> directory does not exist here), and the virtio-fs device
left out because no virtiofsd listens at Kata's socket path here (the fs scenario tests
virtio-fs with one). The full body is sent first: every device it asks for exists, so it is
created (204) and deleted again. Kata's two PCI segments (`platform.num_pci_segments` 2) stay.

Usage: kata-client.py start SOCKET KERNEL INITRAMFS CMDLINE IMAGE TAPNAME HOSTIP/PREFIX
       kata-client.py stop SOCKET
Prints KATA-CLIENT lines; exits non-zero at the first answer Kata would not accept.
"""
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import time

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "CloudHypervisorAPITests", "Fixtures", "kata")


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def exchange(sock, raw, fds=()):
    """Sends one request (with descriptors) and reads one response: (status, body)."""
    if fds:
        socket.send_fds(sock, [raw], list(fds))
    else:
        sock.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before an answer")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(rest) < length:
        rest += sock.recv(65536)
    return status, rest[:length]


def request(path, method, endpoint, body=None, fds=()):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)  # vm.boot loads the kernel over 9p in level 1: seconds under load
    sock.connect(path)
    head = f"{method} /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
    raw = head.encode() + b"\r\n" + (body or b"")
    try:
        return exchange(sock, raw, fds)
    finally:
        sock.close()


def expect(condition, what):
    print(f"KATA-CLIENT {'OK' if condition else 'FAIL'} {what}", flush=True)
    if not condition:
        sys.exit(1)


def open_tap(name):
    """A TAP descriptor as Kata hands it over: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    ifr = struct.pack("16sH", name.encode(), 0x0002 | 0x1000 | 0x4000)
    fcntl.ioctl(fd, 0x400454CA, ifr)  # TUNSETIFF
    return fd


def start(path, kernel, initramfs, cmdline, image, tap_name, host_ip):
    deadline = time.time() + 10
    while True:
        try:
            status, body = request(path, "GET", "vmm.ping")
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.01)
    expect(status == 200 and json.loads(body).get("version"), f"vmm.ping {status}")

    full = fixture("vm.create.json")
    status, body = request(path, "PUT", "vm.create", full)
    expect(status == 204, f"vm.create with Kata's full body (virtio-fs on PCI segment 1, vsock) accepted: {status} {body[:200]!r}")
    status, body = request(path, "PUT", "vm.delete")
    expect(status == 204, f"vm.delete of the full body's VM: {status} {body[:200]!r}")

    config = json.loads(full)
    config.pop("fs")
    expect(config["platform"]["num_pci_segments"] == 2, "Kata's body asks for two PCI segments")
    config["vsock"]["socket"] = os.path.join(os.path.dirname(os.path.abspath(path)), "kata-vsock.sock")
    config["payload"].update({"kernel": kernel, "initramfs": initramfs, "cmdline": cmdline})
    config["disks"][0]["path"] = image
    config["serial"]["mode"] = "Tty"
    config["memory"]["size"] = 512 << 20
    status, body = request(path, "PUT", "vm.create", json.dumps(config).encode())
    expect(status == 204, f"vm.create {status} {body[:200]!r}")
    status, body = request(path, "GET", "vm.info")
    expect(status == 200 and json.loads(body)["state"] == "Created", "vm.info Created")

    tap = open_tap(tap_name)
    subprocess.run(["ip", "addr", "add", host_ip, "dev", tap_name], check=True)
    subprocess.run(["ip", "link", "set", tap_name, "up"], check=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    status, body = exchange(sock, fixture("vm.add-net.http"), [tap])
    sock.close()
    os.close(tap)  # the VMM holds its own copy now
    expect(status == 204, f"vm.add-net with the TAP in SCM_RIGHTS {status} {body[:200]!r}")

    status, body = request(path, "PUT", "vm.boot")
    expect(status == 204, f"vm.boot {status} {body[:200]!r}")
    status, body = request(path, "GET", "vm.info")
    info = json.loads(body)
    expect(info["state"] == "Running" and info["memory_actual_size"] == 512 << 20, "vm.info Running, memory_actual_size")
    tree = info.get("device_tree") or {}
    expect(info["config"]["platform"]["num_pci_segments"] == 2 and "_vsock0" in tree,
           f"vm.info: two PCI segments and the vsock device ({sorted(tree)})")
    status, body = request(path, "PUT", "vm.resize", fixture("vm.resize.json"))
    expect(status == 204, f"vm.resize to the current vCPU count {status}")


def stop(path):
    status, _ = request(path, "GET", "vmm.ping")
    expect(status == 200, "vmm.ping before stop")
    status, _ = request(path, "PUT", "vmm.shutdown")
    expect(status == 200, f"vmm.shutdown {status}")


if __name__ == "__main__":
    if len(sys.argv) == 9 and sys.argv[1] == "start":
        start(*sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "stop":
        stop(sys.argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
