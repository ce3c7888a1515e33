import CLinux
import Glibc

/// Why a TAP interface could not be opened or configured; each case names the interface.
public struct TapError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The interface (or the name pattern asked for).
    public let interface: String
    /// What was being done, for example `"create"` or `"set address 192.168.249.1"`.
    public let action: String
    /// The failed call.
    public let cause: SystemError

    /// Creates an error for `action` on `interface`.
    public init(interface: String, action: String, cause: SystemError) {
        self.interface = interface
        self.action = action
        self.cause = cause
    }

    /// A sentence naming the interface, what failed and, for `EPERM`, the missing privilege.
    public var description: String {
        var text = "TAP interface \(interface): cannot \(action): \(cause)"
        if cause.errno == EPERM || cause.errno == EACCES {
            text += "; this needs CAP_NET_ADMIN (run as root, or hand over an open TAP with fd=)"
        } else if cause.errno == ENOENT && cause.call.hasPrefix("open(/dev/net/tun") {
            text += "; the tun module is not loaded (modprobe tun)"
        } else if cause.errno == EINVAL && action.hasPrefix("attach") {
            text += "; an existing interface must be a TAP whose flags (multi-queue, vnet header) match"
        }
        return text
    }
}

/// A host TAP interface opened with a virtio-net header on every packet (`IFF_VNET_HDR`,
/// 12-byte `virtio_net_hdr_v1`): one non-blocking descriptor per queue (`IFF_MULTI_QUEUE`
/// when there are several), and the host-side settings Cloud Hypervisor's `--net` makes
/// (IPv4 address and netmask, Ethernet address, MTU, link up).
///
/// ```swift
/// let tap = try TapInterface.open(name: nil, queueCount: 1)   // vmtap0, vmtap1...
/// try tap.setIPv4(address: "192.168.249.1", netmask: "255.255.255.0")
/// try tap.setUp()
/// ```
public final class TapInterface: Sendable {
    /// The header size every packet carries (`struct virtio_net_hdr_v1`).
    public static let vnetHeaderSize: Int32 = 12
    /// The name pattern used when no name is given (the kernel fills in `%d`).
    public static let defaultNamePattern = "vmtap%d"

    /// The interface name the kernel gave (for example `vmtap0`).
    public let name: String
    /// One descriptor per queue, non-blocking, each a queue of the same interface.
    public let queues: [OwnedFileDescriptor]

    private init(name: String, queues: [OwnedFileDescriptor]) {
        self.name = name
        self.queues = queues
    }

    /// Creates interface `name` (or attaches to an existing one of that name), or a new one
    /// named after ``defaultNamePattern`` when `name` is `nil` or empty, with `queueCount`
    /// queues.
    ///
    /// - Throws: ``TapError`` naming the interface; `EPERM` means `CAP_NET_ADMIN` is missing.
    public static func open(name: String?, queueCount: Int = 1) throws(TapError) -> TapInterface {
        let requested = (name?.isEmpty ?? true) ? defaultNamePattern : name!
        guard queueCount >= 1 else {
            throw TapError(interface: requested, action: "open 0 queues", cause: SystemError(call: "open", errno: EINVAL))
        }
        var flags = Int32(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        if queueCount > 1 { flags |= Int32(IFF_MULTI_QUEUE) }
        var queues: [OwnedFileDescriptor] = []
        var actual = requested
        for index in 0..<queueCount {
            let fd: OwnedFileDescriptor
            do {
                fd = try OwnedFileDescriptor(path: "/dev/net/tun", flags: O_RDWR | O_NONBLOCK)
            } catch {
                throw TapError(interface: requested, action: "open /dev/net/tun", cause: error)
            }
            var buffer = [CChar](repeating: 0, count: 16)
            let result = actual.withCString { clinux_tun_set_iff(fd.rawValue, $0, flags, &buffer) }
            if result != 0 {
                let action = index == 0 ? (name == nil || name!.isEmpty ? "create" : "create or attach") : "attach queue \(index)"
                throw TapError(interface: actual, action: action, cause: .current("ioctl(TUNSETIFF)"))
            }
            actual = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            try setHeaderSize(fd, interface: actual)
            queues.append(fd)
        }
        return TapInterface(name: actual, queues: queues)
    }

    /// Takes over TAP descriptors opened by someone else (`fd=`, how orchestrators hand TAPs
    /// over): checks each is a TAP with a virtio-net header, sets the header size and
    /// makes it non-blocking. The object owns duplicates (`F_DUPFD_CLOEXEC`): the caller's
    /// descriptors stay open, so a VM rebuilt on reboot can adopt them again.
    public static func adopt(_ descriptors: [Int32]) throws(TapError) -> TapInterface {
        var queues: [OwnedFileDescriptor] = []
        var interface = ""
        for raw in descriptors {
            guard raw >= 0, clinux_fcntl_val(raw, F_GETFD, 0) != -1 else {
                throw TapError(interface: "fd \(raw)", action: "adopt it", cause: SystemError(call: "fcntl(F_GETFD)", errno: EBADF))
            }
            var buffer = [CChar](repeating: 0, count: 16)
            var flags: Int32 = 0
            guard clinux_tun_get_iff(raw, &buffer, &flags) == 0 else {
                throw TapError(interface: "fd \(raw)", action: "adopt it (not a TAP descriptor)", cause: .current("ioctl(TUNGETIFF)"))
            }
            let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard flags & Int32(IFF_TAP) != 0, flags & Int32(IFF_VNET_HDR) != 0, flags & Int32(IFF_NO_PI) != 0 else {
                throw TapError(interface: name, action: "adopt fd \(raw): it must be a TAP opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR",
                               cause: SystemError(call: "ioctl(TUNGETIFF)", errno: EINVAL))
            }
            if !interface.isEmpty, interface != name {
                throw TapError(interface: name, action: "adopt fd \(raw) with queues of \(interface)",
                               cause: SystemError(call: "ioctl(TUNGETIFF)", errno: EINVAL))
            }
            interface = name
            let copy = clinux_fcntl_val(raw, F_DUPFD_CLOEXEC, 0)
            guard copy >= 0 else { throw TapError(interface: name, action: "duplicate fd \(raw)", cause: .current("fcntl(F_DUPFD_CLOEXEC)")) }
            let fd = OwnedFileDescriptor(adopting: copy)
            do { try fd.setNonBlocking(true) } catch { throw TapError(interface: name, action: "make fd \(raw) non-blocking", cause: error) }
            try setHeaderSize(fd, interface: name)
            queues.append(fd)
        }
        guard !queues.isEmpty else {
            throw TapError(interface: "fd=", action: "adopt an empty list", cause: SystemError(call: "adopt", errno: EINVAL))
        }
        return TapInterface(name: interface, queues: queues)
    }

    private static func setHeaderSize(_ fd: OwnedFileDescriptor, interface: String) throws(TapError) {
        var size = vnetHeaderSize
        guard clinux_ioctl_ptr(fd.rawValue, IOCTL_TUNSETVNETHDRSZ, &size) == 0 else {
            throw TapError(interface: interface, action: "set the virtio-net header size", cause: .current("ioctl(TUNSETVNETHDRSZ)"))
        }
    }

    /// Tells the interface which offloaded packets the guest accepts (`TUNSETOFFLOAD` with
    /// `TUN_F_*` bits) through queue descriptor `descriptor`.
    public static func setOffloads(_ tunFlags: UInt32, descriptor: Int32) throws(SystemError) {
        _ = try checked("ioctl(TUNSETOFFLOAD)") { clinux_ioctl_val(descriptor, IOCTL_TUNSETOFFLOAD, UInt(tunFlags)) }
    }

    /// Closes every queue's descriptor now, rather than when the last owner goes: a
    /// non-persistent interface then disappears at once, so its name can be taken again.
    /// Call it only once nothing reads or writes the queues any more (removed from the event
    /// loop, the device stopped); a late use then fails with `EBADF` instead of reaching
    /// whatever file took the number.
    ///
    /// The corresponding system call is `close(2)`.
    public func close() {
        for queue in queues {
            let fd = queue.take()
            if fd >= 0 { _ = Glibc.close(fd) }
        }
    }

    /// Gives the host side of the interface an IPv4 address and netmask (dotted quads).
    public func setIPv4(address: String, netmask: String) throws(TapError) {
        guard let addressValue = Self.parseIPv4(address) else {
            throw TapError(interface: name, action: "set address '\(address)' (not an IPv4 address)", cause: SystemError(call: "inet_pton", errno: EINVAL))
        }
        guard let maskValue = Self.parseIPv4(netmask) else {
            throw TapError(interface: name, action: "set netmask '\(netmask)' (not an IPv4 netmask)", cause: SystemError(call: "inet_pton", errno: EINVAL))
        }
        guard name.withCString({ clinux_if_set_ipv4($0, addressValue.bigEndian, maskValue.bigEndian) }) == 0 else {
            throw TapError(interface: name, action: "set address \(address)/\(netmask)", cause: .current("ioctl(SIOCSIFADDR)"))
        }
    }

    /// Sets the host side as Cloud Hypervisor does for a TAP it opened: the Ethernet address and
    /// MTU when given, the IPv4 address and netmask when given (the netmask defaults to
    /// 255.255.255.0), then brings the link up.
    public func configureHostSide(mac: [UInt8]?, mtu: Int?, ipv4: String?, netmask: String?) throws(TapError) {
        if let mac { try setMACAddress(mac) }
        if let mtu { try setMTU(mtu) }
        if let ipv4 { try setIPv4(address: ipv4, netmask: netmask ?? "255.255.255.0") }
        try setUp()
    }

    /// Brings the interface up.
    public func setUp() throws(TapError) {
        guard name.withCString({ clinux_if_set_up($0) }) == 0 else {
            throw TapError(interface: name, action: "bring it up", cause: .current("ioctl(SIOCSIFFLAGS)"))
        }
    }

    /// The host side's Ethernet address.
    public func macAddress() throws(TapError) -> [UInt8] {
        var mac = [UInt8](repeating: 0, count: 6)
        guard name.withCString({ clinux_if_get_hwaddr($0, &mac) }) == 0 else {
            throw TapError(interface: name, action: "read its Ethernet address", cause: .current("ioctl(SIOCGIFHWADDR)"))
        }
        return mac
    }

    /// Sets the host side's Ethernet address (`host_mac=`).
    public func setMACAddress(_ mac: [UInt8]) throws(TapError) {
        guard mac.count == 6 else {
            throw TapError(interface: name, action: "set a \(mac.count)-byte Ethernet address", cause: SystemError(call: "SIOCSIFHWADDR", errno: EINVAL))
        }
        guard name.withCString({ clinux_if_set_hwaddr($0, mac) }) == 0 else {
            throw TapError(interface: name, action: "set its Ethernet address", cause: .current("ioctl(SIOCSIFHWADDR)"))
        }
    }

    /// The interface MTU.
    public func mtu() throws(TapError) -> Int {
        var value: Int32 = 0
        guard name.withCString({ clinux_if_get_mtu($0, &value) }) == 0 else {
            throw TapError(interface: name, action: "read its MTU", cause: .current("ioctl(SIOCGIFMTU)"))
        }
        return Int(value)
    }

    /// Sets the interface MTU.
    public func setMTU(_ mtu: Int) throws(TapError) {
        guard name.withCString({ clinux_if_set_mtu($0, Int32(clamping: mtu)) }) == 0 else {
            throw TapError(interface: name, action: "set MTU \(mtu)", cause: .current("ioctl(SIOCSIFMTU)"))
        }
    }

    /// Parses a dotted-quad IPv4 address into a host-order integer (`nil` when malformed).
    public static func parseIPv4(_ text: String) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), let byte = UInt8(part) else { return nil }
            value = value << 8 | UInt32(byte)
        }
        return value
    }
}
