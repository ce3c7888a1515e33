import CLinux

/// A failed system call: which call failed and the `errno` it left.
///
/// Every wrapper in `HostSystem` throws this, so an error always names the operation
/// (`"mmap"`, `"ioctl(KVM_RUN)"`) and the kernel's reason.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The call that failed, as a person would name it (for example `"open(/dev/kvm)"`).
    public let call: String
    /// The `errno` value the call left.
    public let errno: Int32

    /// Creates an error for `call` that failed with `errno`.
    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    /// Creates an error for `call` from the calling thread's current `errno`.
    public static func current(_ call: String) -> SystemError {
        SystemError(call: call, errno: clinux_errno())
    }

    /// The kernel's text for `errno` (`strerror`).
    public var reason: String {
        guard let text = strerror(errno) else { return "errno \(errno)" }
        return String(cString: text)
    }

    /// `"<call> failed: <reason> (errno N)"`.
    public var description: String { "\(call) failed: \(reason) (errno \(errno))" }

    /// The interrupted-call error (`EINTR`).
    public var isInterrupted: Bool { errno == EINTR }
    /// The try-again error (`EAGAIN`/`EWOULDBLOCK`).
    public var isWouldBlock: Bool { errno == EAGAIN || errno == EWOULDBLOCK }
    /// The message-too-long error (`EMSGSIZE`), which ``UnixSocket/receive(maxBytes:maxDescriptors:)``
    /// also uses for descriptors that did not fit (`MSG_CTRUNC`).
    public var isMessageTooLong: Bool { errno == EMSGSIZE }
}

/// Runs a system call that returns -1 on failure, retrying while it fails with `EINTR`.
///
/// - Parameters:
///   - call: the name used in the error if the call fails.
///   - body: the call; it must leave `errno` set when it returns -1.
/// - Returns: the call's non-negative result.
@inlinable
public func retryingInterrupts<T: BinaryInteger>(_ call: @autoclosure () -> String, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = clinux_errno()
        if code == EINTR { continue }
        throw SystemError(call: call(), errno: code)
    }
}

/// Runs a system call once (no `EINTR` retry), turning -1 into a `SystemError`.
@inlinable
public func checked<T: BinaryInteger>(_ call: @autoclosure () -> String, _ body: () -> T) throws(SystemError) -> T {
    let result = body()
    if result == -1 { throw SystemError(call: call(), errno: clinux_errno()) }
    return result
}
