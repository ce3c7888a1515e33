// TCP stream sockets for point-to-point transfers (live migration): listen on a host and port,
// accept one peer, connect to one. Blocking, close-on-exec, Nagle off.
import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A blocking TCP socket: a listener or one end of a connection (IPv4 or IPv6).
///
/// Reading and writing go through ``descriptor`` (`read(2)`/`write(2)` of
/// ``OwnedFileDescriptor``); connections have `TCP_NODELAY` set, since the protocols on them
/// wait for short answers.
public final class TCPSocket: Sendable, CustomStringConvertible {
    /// The descriptor.
    public let descriptor: OwnedFileDescriptor

    /// Takes ownership of a TCP socket descriptor.
    public init(adopting descriptor: OwnedFileDescriptor) {
        self.descriptor = descriptor
    }

    /// `"tcp socket fd N"`.
    public var description: String { "tcp socket \(descriptor)" }

    /// Splits `HOST:PORT` or `[IPV6]:PORT` as Cloud Hypervisor's migration URLs write them.
    ///
    /// - Throws: `SystemError` with `EINVAL` naming what is missing.
    public static func split(_ address: String) throws(SystemError) -> (host: String, port: UInt16) {
        let host: Substring
        let port: Substring
        if address.hasPrefix("[") {
            guard let close = address.firstIndex(of: "]") else {
                throw SystemError(call: "parse \(address): no closing ']' after the IPv6 address", errno: EINVAL)
            }
            host = address[address.index(after: address.startIndex)..<close]
            let rest = address[address.index(after: close)...]
            guard rest.hasPrefix(":") else { throw SystemError(call: "parse \(address): no ':PORT' after the IPv6 address", errno: EINVAL) }
            port = rest.dropFirst()
        } else {
            guard let colon = address.lastIndex(of: ":") else { throw SystemError(call: "parse \(address): no ':PORT'", errno: EINVAL) }
            host = address[..<colon]
            port = address[address.index(after: colon)...]
        }
        guard !host.isEmpty else { throw SystemError(call: "parse \(address): the host is empty", errno: EINVAL) }
        guard let number = UInt16(port) else { throw SystemError(call: "parse \(address): '\(port)' is not a port (0-65535)", errno: EINVAL) }
        return (String(host), number)
    }

    /// Resolves `host` (a name or a numeric address) and calls `body` with each address until
    /// it returns a socket.
    private static func withAddresses(_ host: String, _ port: UInt16, passive: Bool, call: String,
                                      _ body: (UnsafePointer<addrinfo>) throws(SystemError) -> TCPSocket?) throws(SystemError) -> TCPSocket {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = passive ? AI_PASSIVE : 0
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let list else {
            throw SystemError(call: "\(call): getaddrinfo(\(host)): \(String(cString: gai_strerror(status)))", errno: EINVAL)
        }
        defer { freeaddrinfo(list) }
        var last = SystemError(call: "\(call): no address for \(host)", errno: EADDRNOTAVAIL)
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let current = entry {
            do {
                if let socket = try body(current) { return socket }
            } catch {
                last = error
            }
            entry = current.pointee.ai_next
        }
        throw last
    }

    private static func makeSocket(_ info: UnsafePointer<addrinfo>, call: String) throws(SystemError) -> OwnedFileDescriptor {
        let type = info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue)
        let fd = try checked("\(call): socket") { socket(info.pointee.ai_family, type, info.pointee.ai_protocol) }
        return OwnedFileDescriptor(adopting: fd)
    }

    private static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, call: String) throws(SystemError) {
        var one: Int32 = 1
        // SAFETY: a 4-byte option value, a local the kernel reads during the call.
        _ = try checked("\(call): setsockopt") { setsockopt(fd, level, name, &one, socklen_t(MemoryLayout<Int32>.size)) }
    }

    /// A listener bound to `host:port` (`SO_REUSEADDR`, so a port of a finished migration can
    /// be bound again at once).
    ///
    /// The corresponding system calls are `getaddrinfo(3)`, `socket(2)`, `bind(2)` and `listen(2)`.
    public static func listening(host: String, port: UInt16, backlog: Int32 = 16) throws(SystemError) -> TCPSocket {
        let call = "listen on \(host):\(port)"
        return try withAddresses(host, port, passive: true, call: call) { (info) throws(SystemError) -> TCPSocket? in
            let fd = try makeSocket(info, call: call)
            try setOption(fd.rawValue, SOL_SOCKET, SO_REUSEADDR, call: call)
            _ = try checked("\(call): bind") { bind(fd.rawValue, info.pointee.ai_addr, info.pointee.ai_addrlen) }
            _ = try checked("\(call): listen") { listen(fd.rawValue, backlog) }
            return TCPSocket(adopting: fd)
        }
    }

    /// A connection to `host:port`.
    ///
    /// The corresponding system calls are `getaddrinfo(3)`, `socket(2)` and `connect(2)`.
    public static func connect(host: String, port: UInt16) throws(SystemError) -> TCPSocket {
        let call = "connect to \(host):\(port)"
        return try withAddresses(host, port, passive: false, call: call) { (info) throws(SystemError) -> TCPSocket? in
            let fd = try makeSocket(info, call: call)
            _ = try checked("\(call): connect") { Glibc.connect(fd.rawValue, info.pointee.ai_addr, info.pointee.ai_addrlen) }
            try setOption(fd.rawValue, Int32(IPPROTO_TCP), TCP_NODELAY, call: call)
            return TCPSocket(adopting: fd)
        }
    }

    /// The port this socket is bound to (for a listener asked for port 0).
    ///
    /// The corresponding system call is `getsockname(2)`.
    public func localPort() throws(SystemError) -> UInt16 {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = descriptor.rawValue
        // SAFETY: the kernel writes at most `length` bytes into the local sockaddr_storage.
        _ = try checked("getsockname(\(descriptor))") {
            withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        }
        // sin_port and sin6_port sit at the same offset, in network order.
        return withUnsafeBytes(of: &storage) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) }
    }

    /// Waits for one connection, for at most `timeoutMilliseconds` (-1: no limit); nil on timeout.
    ///
    /// The corresponding system calls are `poll(2)` and `accept4(2)` with `SOCK_CLOEXEC`.
    public func accept(timeoutMilliseconds: Int32 = -1) throws(SystemError) -> TCPSocket? {
        var entry = pollfd(fd: descriptor.rawValue, events: Int16(POLLIN), revents: 0)
        // SAFETY: one pollfd, a local the kernel updates during the call.
        guard try retryingInterrupts("poll(\(descriptor))", { poll(&entry, 1, timeoutMilliseconds) }) > 0 else { return nil }
        let fd = try retryingInterrupts("accept4(\(descriptor))") { clinux_accept4(descriptor.rawValue, Int32(SOCK_CLOEXEC.rawValue)) }
        try Self.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, call: "accept4(\(descriptor))")
        return TCPSocket(adopting: OwnedFileDescriptor(adopting: fd))
    }

    /// Ends both directions of a connection, which wakes a peer (or a thread of this process)
    /// blocked reading it.
    ///
    /// The corresponding system call is `shutdown(2)` with `SHUT_RDWR`.
    public func shutdown() throws(SystemError) {
        _ = try checked("shutdown(\(descriptor))") { Glibc.shutdown(descriptor.rawValue, Int32(SHUT_RDWR)) }
    }
}

extension OwnedFileDescriptor {
    /// Writes up to `buffer.count` bytes to a connected socket of any family, and returns how
    /// many went; a peer that went away is `EPIPE`, never a `SIGPIPE` that ends the process.
    ///
    /// The corresponding system call is `send(2)` with `MSG_NOSIGNAL` (retried on `EINTR`).
    public func sendWithoutSignal(_ buffer: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        try retryingInterrupts("send(\(self))") { Glibc.send(rawValue, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL)) }
    }
}
