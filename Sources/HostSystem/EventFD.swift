import CLinux

/// A Linux eventfd: a 64-bit counter that one side increments and another side reads,
/// waking pollers in between.
///
/// KVM uses eventfds in both directions: `ioeventfd` (a guest write signals the VMM
/// without a vCPU exit) and `irqfd` (the VMM signals an interrupt into the guest).
public final class EventFD: Sendable {
    /// The descriptor.
    public let descriptor: OwnedFileDescriptor

    /// Creates an eventfd with `initialValue`; `nonBlocking` reads return `nil` instead of
    /// waiting when the counter is zero. `semaphore` makes each read take 1 instead of all.
    ///
    /// The corresponding system call is `eventfd2(2)`.
    public init(initialValue: UInt32 = 0, nonBlocking: Bool = true, semaphore: Bool = false) throws(SystemError) {
        var flags = Int32(EFD_CLOEXEC)
        if nonBlocking { flags |= Int32(EFD_NONBLOCK) }
        if semaphore { flags |= Int32(EFD_SEMAPHORE) }
        let fd = try checked("eventfd") { eventfd(initialValue, flags) }
        descriptor = OwnedFileDescriptor(adopting: fd)
    }

    /// The descriptor number, for epoll and KVM registration.
    public var rawValue: Int32 { descriptor.rawValue }

    /// Adds `value` to the counter (1 by default), waking any reader.
    public func signal(_ value: UInt64 = 1) throws(SystemError) {
        var v = value
        while true {
            let written = withUnsafeBytes(of: &v) { unistdWrite(descriptor.rawValue, $0.baseAddress, 8) }
            if written == 8 { return }
            let error = SystemError.current("write(eventfd)")
            if !error.isInterrupted { throw error }
        }
    }

    /// Reads and resets the counter. Returns `nil` when a non-blocking eventfd is at zero.
    public func read() throws(SystemError) -> UInt64? {
        var value: UInt64 = 0
        let count = withUnsafeMutableBytes(of: &value) { bytes in
            unistdRead(descriptor.rawValue, bytes.baseAddress, 8)
        }
        if count == 8 { return value }
        let error = SystemError.current("read(eventfd)")
        if error.isWouldBlock { return nil }
        if error.isInterrupted { return try read() }
        throw error
    }
}
