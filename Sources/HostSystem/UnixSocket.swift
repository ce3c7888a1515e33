// AF_UNIX stream sockets: listening at a path or on an inherited descriptor, accepting,
// connecting, and moving bytes together with file descriptors (SCM_RIGHTS).
import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What one `recvmsg(2)` delivered: bytes and the descriptors that came with them.
public struct ReceivedMessage: Sendable {
    /// The bytes read; empty when the peer closed its writing side (end of stream).
    public var bytes: [UInt8]
    /// The descriptors passed with them (`SCM_RIGHTS`), owned by the receiver, close-on-exec.
    public var descriptors: [OwnedFileDescriptor]

    /// Creates a message.
    public init(bytes: [UInt8], descriptors: [OwnedFileDescriptor]) {
        self.bytes = bytes
        self.descriptors = descriptors
    }

    /// Whether this is the end of the stream (nothing read, nothing passed).
    public var isEndOfStream: Bool { bytes.isEmpty && descriptors.isEmpty }
}

/// An `AF_UNIX` `SOCK_STREAM` socket: a listener (at a path, or inherited) or one end of a
/// connection. Besides bytes, a connection carries file descriptors as `SCM_RIGHTS`
/// ancillary data, which `read(2)`/`write(2)` would silently drop.
///
/// Every socket is created close-on-exec; listeners and accepted connections are
/// non-blocking (for an epoll loop), connections made by ``connect(to:)`` block.
public final class UnixSocket: Sendable, CustomStringConvertible {
    /// The descriptor.
    public let descriptor: OwnedFileDescriptor

    /// The most descriptors one `recvmsg` accepts by default. The kernel passes at most 253
    /// (`SCM_MAX_FD`) per message.
    public static let defaultMaxDescriptors = 32

    /// Takes ownership of a socket descriptor.
    public init(adopting descriptor: OwnedFileDescriptor) {
        self.descriptor = descriptor
    }

    /// The descriptor number, for epoll.
    public var rawValue: Int32 { descriptor.rawValue }

    /// `"unix socket fd N"`.
    public var description: String { "unix socket \(descriptor)" }

    // MARK: - Creating

    /// A new, unconnected socket.
    private static func makeSocket(nonBlocking: Bool) throws(SystemError) -> OwnedFileDescriptor {
        var type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        if nonBlocking { type |= Int32(SOCK_NONBLOCK.rawValue) }
        let fd = try checked("socket(AF_UNIX, SOCK_STREAM)") { socket(AF_UNIX, type, 0) }
        return OwnedFileDescriptor(adopting: fd)
    }

    /// Runs `body` with `path` as a `sockaddr_un`, or fails with `ENAMETOOLONG` when the path
    /// (108 bytes with its terminating zero) does not fit.
    private static func withAddress<T>(_ path: String, call: String,
                                       _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) throws(SystemError) -> T {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else {
            throw SystemError(call: call, errno: bytes.isEmpty || bytes.contains(0) ? EINVAL : ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) { pointer in
            // SAFETY: sockaddr_un starts with the sockaddr header; the kernel reads `length` bytes of it.
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// Whether a server accepts connections at `path` now: a connection attempt that is
    /// accepted (or finds a full backlog) says yes; a missing file, a stale socket file
    /// (`ECONNREFUSED`) or a file that is not a socket says no. Never blocks.
    public static func hasListener(at path: String) -> Bool {
        guard let probe = try? makeSocket(nonBlocking: true) else { return false }
        let result = try? withAddress(path, call: "connect(\(path))") { address, length in
            Glibc.connect(probe.rawValue, address, length)
        }
        guard let result else { return false }
        if result == 0 { return true }
        let code = clinux_errno()
        return code == EAGAIN || code == EINPROGRESS
    }

    /// Removes the socket file at `path` that a listener created, if it is still a socket
    /// file (anything else is left alone). Returns whether a file was removed.
    ///
    /// The corresponding system call is `unlink(2)`.
    @discardableResult
    public static func removeSocketFile(at path: String) -> Bool {
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK else { return false }
        return unlink(path) == 0
    }

    /// A listening, non-blocking socket bound at `path`.
    ///
    /// A socket file left at `path` by a process that is gone (nobody accepts on it) is
    /// removed first; one a live server answers on is left alone and refused with
    /// `EADDRINUSE`; any other file there makes `bind` fail.
    ///
    /// The corresponding system calls are `socket(2)`, `unlink(2)`, `bind(2)` and `listen(2)`.
    public static func listening(at path: String, backlog: Int32 = 128) throws(SystemError) -> UnixSocket {
        var status = stat()
        if stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK {
            if hasListener(at: path) { throw SystemError(call: "bind(\(path)): a server answers there", errno: EADDRINUSE) }
            _ = try checked("unlink(\(path))") { unlink(path) }
        }
        let socket = UnixSocket(adopting: try makeSocket(nonBlocking: true))
        let bound = try withAddress(path, call: "bind(\(path))") { address, length in bind(socket.rawValue, address, length) }
        if bound != 0 { throw SystemError.current("bind(\(path))") }
        _ = try checked("listen(\(path))") { listen(socket.rawValue, backlog) }
        return socket
    }

    /// Why an inherited descriptor cannot serve as a listener.
    public enum AdoptionProblem: Error, Equatable, Sendable, CustomStringConvertible {
        /// The number is not an open descriptor.
        case notOpen(SystemError)
        /// It is open but not a socket.
        case notASocket
        /// It is a socket of another family.
        case notUnix
        /// It is a Unix socket of another type (datagram, seqpacket).
        case notStream
        /// `listen(2)` refused it (typically: it is not bound).
        case listenFailed(SystemError)

        /// A short clause, for example `"it is not a socket"`.
        public var description: String {
            switch self {
            case let .notOpen(error): "it is not open (\(error.reason))"
            case .notASocket: "it is not a socket"
            case .notUnix: "it is not an AF_UNIX socket"
            case .notStream: "it is not a stream socket"
            case let .listenFailed(error): "listen failed (\(error.reason)); is it bound?"
            }
        }
    }

    /// Adopts an inherited, bound `AF_UNIX` stream socket (`--api-socket fd=N`) as a
    /// listener: checks its family and type, calls `listen(2)` (harmless if it already
    /// listens) and makes it non-blocking and close-on-exec. On success the socket owns `fd`;
    /// on failure `fd` is left open and untouched apart from the checks.
    ///
    /// The corresponding system calls are `fstat(2)`, `getsockopt(SO_DOMAIN, SO_TYPE)`,
    /// `listen(2)` and `fcntl(2)`.
    public static func adoptingListener(_ fd: Int32, backlog: Int32 = 128) throws(AdoptionProblem) -> UnixSocket {
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw .notOpen(.current("fstat(fd \(fd))")) }
        guard status.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket }
        guard let domain = try? option(fd, SO_DOMAIN), domain == AF_UNIX else { throw .notUnix }
        guard let type = try? option(fd, SO_TYPE), type == Int32(SOCK_STREAM.rawValue) else { throw .notStream }
        do {
            _ = try checked("listen(fd \(fd))") { listen(fd, backlog) }
            _ = try checked("fcntl(F_SETFD)") { clinux_fcntl_val(fd, F_SETFD, Int(FD_CLOEXEC)) }
        } catch {
            throw .listenFailed(error)
        }
        let socket = UnixSocket(adopting: OwnedFileDescriptor(adopting: fd))
        do {
            try socket.descriptor.setNonBlocking(true)
        } catch {
            _ = socket.descriptor.take()
            throw .listenFailed(error)
        }
        return socket
    }

    /// An `int` socket option at `SOL_SOCKET` level.
    private static func option(_ fd: Int32, _ name: Int32) throws(SystemError) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        // SAFETY: `value` holds the `length` bytes the kernel may write.
        _ = try checked("getsockopt(fd \(fd), \(name))") { getsockopt(fd, SOL_SOCKET, name, &value, &length) }
        return value
    }

    /// A blocking connection to the server listening at `path`.
    ///
    /// The corresponding system call is `connect(2)`.
    public static func connect(to path: String) throws(SystemError) -> UnixSocket {
        let socket = UnixSocket(adopting: try makeSocket(nonBlocking: false))
        // A blocking connect interrupted by a signal goes on in the background; wait for it then.
        let result = try withAddress(path, call: "connect(\(path))") { address, length in
            Glibc.connect(socket.rawValue, address, length)
        }
        if result != 0 {
            let error = SystemError.current("connect(\(path))")
            guard error.isInterrupted, try socket.wait(for: .writable, timeoutMilliseconds: -1) else { throw error }
        }
        return socket
    }

    /// A non-blocking connection to the server listening at `path` that never waits: a
    /// server whose backlog is full is refused with `EAGAIN` instead of waited for.
    ///
    /// The corresponding system calls are `socket(2)` with `SOCK_NONBLOCK` and `connect(2)`.
    public static func connectNonBlocking(to path: String) throws(SystemError) -> UnixSocket {
        let socket = UnixSocket(adopting: try makeSocket(nonBlocking: true))
        let result = try withAddress(path, call: "connect(\(path))") { address, length in
            Glibc.connect(socket.rawValue, address, length)
        }
        if result != 0 {
            let error = SystemError.current("connect(\(path))")
            // A Unix stream connect completes at once or fails; EAGAIN means a full backlog.
            throw error.errno == EINPROGRESS ? SystemError(call: "connect(\(path))", errno: EAGAIN) : error
        }
        return socket
    }

    /// Two connected, blocking sockets (`socketpair(2)`), for tests and in-process channels.
    public static func pair() throws(SystemError) -> (UnixSocket, UnixSocket) {
        var fds: [Int32] = [-1, -1]
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        // SAFETY: `fds` has room for the two descriptors socketpair writes.
        _ = try checked("socketpair(AF_UNIX, SOCK_STREAM)") { socketpair(AF_UNIX, type, 0, &fds) }
        return (UnixSocket(adopting: OwnedFileDescriptor(adopting: fds[0])),
                UnixSocket(adopting: OwnedFileDescriptor(adopting: fds[1])))
    }

    // MARK: - Listening

    /// Accepts one pending connection as a non-blocking, close-on-exec socket, or returns
    /// `nil` when none is pending.
    ///
    /// The corresponding system call is `accept4(2)` with `SOCK_CLOEXEC | SOCK_NONBLOCK`.
    public func accept() throws(SystemError) -> UnixSocket? {
        let flags = Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        while true {
            let fd = clinux_accept4(rawValue, flags)
            if fd >= 0 { return UnixSocket(adopting: OwnedFileDescriptor(adopting: fd)) }
            let error = SystemError.current("accept4(\(descriptor))")
            if error.isInterrupted { continue }
            // A connection that was reset before we took it is not our error.
            if error.isWouldBlock || error.errno == ECONNABORTED { return nil }
            throw error
        }
    }

    // MARK: - Moving bytes and descriptors

    /// `CMSG_ALIGN`: control message parts are aligned to `size_t`.
    private static func controlAlign(_ length: Int) -> Int {
        let alignment = MemoryLayout<Int>.size
        return (length + alignment - 1) & ~(alignment - 1)
    }

    /// `CMSG_LEN(n)`: a control message header plus `n` bytes of data.
    private static func controlLength(_ dataLength: Int) -> Int {
        controlAlign(MemoryLayout<cmsghdr>.size) + dataLength
    }

    /// `CMSG_SPACE(n)`: the room one control message with `n` data bytes takes.
    private static func controlSpace(_ dataLength: Int) -> Int {
        controlAlign(MemoryLayout<cmsghdr>.size) + controlAlign(dataLength)
    }

    /// Reads up to `maxBytes` bytes and the descriptors passed with them (at most
    /// `maxDescriptors`). Returns `nil` when a non-blocking socket has nothing to read, and
    /// an empty message at the end of the stream.
    ///
    /// Received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`). When the sender passed
    /// more than `maxDescriptors` (the kernel sets `MSG_CTRUNC` and discards the rest), the
    /// ones that did arrive are closed and the call fails with `EMSGSIZE`; the bytes of that
    /// read are lost with them.
    ///
    /// The corresponding system call is `recvmsg(2)`.
    public func receive(maxBytes: Int = 65536, maxDescriptors: Int = UnixSocket.defaultMaxDescriptors) throws(SystemError) -> ReceivedMessage? {
        precondition(maxBytes > 0 && maxDescriptors >= 0, "receive needs room for at least one byte")
        let call = "recvmsg(\(descriptor))"
        // Room for one SCM_RIGHTS message, in Int units so the buffer is aligned for cmsghdr.
        let controlBytes = maxDescriptors > 0 ? Self.controlSpace(maxDescriptors * MemoryLayout<Int32>.size) : 0
        var control = [Int](repeating: 0, count: (controlBytes + MemoryLayout<Int>.size - 1) / MemoryLayout<Int>.size)
        var outcome = (count: 0, code: Int32(0), received: [Int32](), truncated: false)
        let bytes = [UInt8](unsafeUninitializedCapacity: maxBytes) { data, initialized in
            control.withUnsafeMutableBytes { controlBuffer in
                var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
                withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var header = msghdr()
                    header.msg_iov = vectorPointer
                    header.msg_iovlen = 1
                    header.msg_control = controlBytes > 0 ? controlBuffer.baseAddress : nil
                    header.msg_controllen = controlBytes
                    var count: Int
                    repeat {
                        // SAFETY: `header` points at one iovec over `data` and at `controlBytes` bytes
                        // of `controlBuffer`, all alive for the call; the kernel writes only inside them.
                        count = recvmsg(rawValue, &header, Int32(MSG_CMSG_CLOEXEC))
                    } while count < 0 && clinux_errno() == EINTR
                    outcome.count = count
                    outcome.code = count < 0 ? clinux_errno() : 0
                    outcome.received = count < 0 ? [] : Self.parseRights(controlBuffer, length: Int(header.msg_controllen))
                    outcome.truncated = count >= 0 && header.msg_flags & Int32(MSG_CTRUNC) != 0
                }
            }
            // The kernel wrote `count` bytes at the front.
            initialized = max(0, outcome.count)
        }
        let (count, code, received, truncated) = outcome
        if count < 0 {
            if code == EAGAIN || code == EWOULDBLOCK { return nil }
            throw SystemError(call: call, errno: code)
        }
        let descriptors = received.map { OwnedFileDescriptor(adopting: $0) }
        if truncated {
            // Dropping the owners closes what did arrive.
            throw SystemError(call: "\(call): more than \(maxDescriptors) descriptors passed (MSG_CTRUNC)", errno: EMSGSIZE)
        }
        return ReceivedMessage(bytes: bytes, descriptors: descriptors)
    }

    /// The descriptors in every `SCM_RIGHTS` message among the first `length` bytes of
    /// `control`, read with explicit bounds checks (no message may claim more than is there).
    private static func parseRights(_ control: UnsafeMutableRawBufferPointer, length: Int) -> [Int32] {
        var found: [Int32] = []
        let headerSize = MemoryLayout<cmsghdr>.size
        let end = min(length, control.count)
        var offset = 0
        while offset + headerSize <= end {
            // SAFETY: `offset` is size_t-aligned (CMSG_ALIGN steps) and a whole header lies before `end`.
            let header = control.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
            let messageLength = Int(header.cmsg_len)
            guard messageLength >= controlLength(0), offset + messageLength <= end else { break }
            if header.cmsg_level == SOL_SOCKET, header.cmsg_type == Int32(SCM_RIGHTS) {
                let dataStart = offset + controlLength(0)
                let count = (messageLength - controlLength(0)) / MemoryLayout<Int32>.size
                for index in 0..<count {
                    // SAFETY: `dataStart + 4 * (index + 1) <= offset + messageLength <= end`.
                    found.append(control.loadUnaligned(fromByteOffset: dataStart + index * 4, as: Int32.self))
                }
            }
            offset += controlAlign(messageLength)
        }
        return found.filter { $0 >= 0 }
    }

    /// Sends bytes from `bytes`, passing `descriptors` with them (`SCM_RIGHTS`; the kernel
    /// duplicates them into the receiver, the caller keeps its own). Returns how many bytes
    /// went out; `nil` when a non-blocking socket's buffer is full. `MSG_NOSIGNAL` is set: a
    /// peer that went away is `EPIPE`, never `SIGPIPE`.
    ///
    /// The corresponding system call is `sendmsg(2)`.
    public func send(_ bytes: some Collection<UInt8>, descriptors: [Int32] = []) throws(SystemError) -> Int? {
        let data = Array(bytes)
        precondition(!data.isEmpty || !descriptors.isEmpty, "send needs bytes or descriptors")
        precondition(descriptors.count <= 253, "the kernel passes at most 253 descriptors per message (SCM_MAX_FD)")
        let call = "sendmsg(\(descriptor))"
        let payloadLength = descriptors.count * MemoryLayout<Int32>.size
        let controlBytes = descriptors.isEmpty ? 0 : Self.controlSpace(payloadLength)
        var control = [Int](repeating: 0, count: (controlBytes + MemoryLayout<Int>.size - 1) / MemoryLayout<Int>.size)
        // Linux refuses an empty stream message that only carries descriptors; send one byte of nothing instead.
        var payload = data
        let padded = payload.isEmpty
        if padded { payload = [0] }
        let (count, code) = payload.withUnsafeMutableBytes { dataBuffer in
            control.withUnsafeMutableBytes { controlBuffer in
                if controlBytes > 0 {
                    var header = cmsghdr()
                    header.cmsg_len = Int(Self.controlLength(payloadLength))
                    header.cmsg_level = SOL_SOCKET
                    header.cmsg_type = Int32(SCM_RIGHTS)
                    // SAFETY: the buffer holds CMSG_SPACE(payloadLength) bytes: the header, then the descriptors.
                    controlBuffer.storeBytes(of: header, toByteOffset: 0, as: cmsghdr.self)
                    for (index, fd) in descriptors.enumerated() {
                        controlBuffer.storeBytes(of: fd, toByteOffset: Self.controlLength(0) + index * 4, as: Int32.self)
                    }
                }
                var vector = iovec(iov_base: dataBuffer.baseAddress, iov_len: dataBuffer.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var header = msghdr()
                    header.msg_iov = vectorPointer
                    header.msg_iovlen = 1
                    header.msg_control = controlBytes > 0 ? controlBuffer.baseAddress : nil
                    header.msg_controllen = controlBytes
                    var count: Int
                    repeat {
                        // SAFETY: `header` points at one iovec over `dataBuffer` and at the filled control
                        // buffer, alive for the call; the kernel only reads them.
                        count = sendmsg(rawValue, &header, Int32(MSG_NOSIGNAL))
                    } while count < 0 && clinux_errno() == EINTR
                    return (count, count < 0 ? clinux_errno() : 0)
                }
            }
        }
        if count < 0 {
            if code == EAGAIN || code == EWOULDBLOCK { return nil }
            throw SystemError(call: call, errno: code)
        }
        return padded ? 0 : count
    }

    /// Sends all of `bytes` on a blocking socket, the descriptors with the first part.
    public func sendAll(_ bytes: some Collection<UInt8>, descriptors: [Int32] = []) throws(SystemError) {
        let data = Array(bytes)
        var done = 0
        var pending = descriptors
        repeat {
            guard let sent = try send(data[done...], descriptors: pending) else {
                // A non-blocking socket that is full: wait until it drains.
                _ = try wait(for: .writable, timeoutMilliseconds: -1)
                continue
            }
            pending = []
            done += sent
        } while done < data.count
    }

    /// Which half of a connection ``shutdown(_:)`` ends.
    public enum Direction: Sendable {
        /// No more receiving (`SHUT_RD`).
        case reading
        /// No more sending (`SHUT_WR`): the peer reads end of stream.
        case writing
        /// Both (`SHUT_RDWR`).
        case both
    }

    /// Ends one or both directions of the connection.
    ///
    /// The corresponding system call is `shutdown(2)`.
    public func shutdown(_ direction: Direction) throws(SystemError) {
        let how = switch direction {
        case .reading: Int32(SHUT_RD)
        case .writing: Int32(SHUT_WR)
        case .both: Int32(SHUT_RDWR)
        }
        _ = try checked("shutdown(\(descriptor))") { Glibc.shutdown(rawValue, how) }
    }

    /// Waits until the socket is readable or writable as asked (hang-ups and errors count as
    /// ready), for at most `timeoutMilliseconds` (-1: no limit). Returns false on timeout.
    ///
    /// The corresponding system call is `poll(2)`.
    public func wait(for events: EpollEvents, timeoutMilliseconds: Int32) throws(SystemError) -> Bool {
        var mask: Int16 = 0
        if events.contains(.readable) { mask |= Int16(POLLIN) }
        if events.contains(.writable) { mask |= Int16(POLLOUT) }
        var entry = pollfd(fd: rawValue, events: mask, revents: 0)
        // SAFETY: one pollfd, a local the kernel updates during the call.
        let ready = try retryingInterrupts("poll(\(descriptor))") { poll(&entry, 1, timeoutMilliseconds) }
        return ready > 0
    }
}
