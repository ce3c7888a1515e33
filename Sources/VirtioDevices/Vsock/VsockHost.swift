// What the vsock device needs from the host: streams it reads and writes without blocking,
// a listener for host-initiated connections, a way to reach host listeners for
// guest-initiated ones, and someone to watch the descriptors. The VMM supplies Unix
// sockets and its epoll loop; tests supply in-memory fakes.

/// The outcome of one non-blocking read or write on a host stream.
public enum VsockIOResult: Equatable, Sendable {
    /// This many bytes moved (more than zero).
    case bytes(Int)
    /// Nothing can move now (`EAGAIN`).
    case wouldBlock
    /// The peer closed its writing side (reads only).
    case endOfStream
    /// The stream failed; the sentence says how.
    case failed(String)
}

/// One host-side connection of the hybrid vsock: a non-blocking byte stream.
///
/// The device owns it while the connection lives and drops it to close it.
public protocol VsockHostStream: AnyObject, Sendable {
    /// The descriptor the ``VsockEventWatcher`` watches (unique among live streams).
    var pollDescriptor: Int32 { get }
    /// Reads at most `maxCount` bytes.
    func read(maxCount: Int) -> (VsockIOResult, [UInt8])
    /// Writes a prefix of `bytes`.
    func write(_ bytes: ArraySlice<UInt8>) -> VsockIOResult
    /// Ends the writing side: the host peer reads end of stream.
    func shutdownWrite()
}

/// The hybrid vsock's host side: the listening socket at `PATH` and the listeners at
/// `PATH_<port>` that guest connections reach.
public protocol VsockHostBackend: Sendable {
    /// The listening socket's descriptor (watched for readability).
    var listenerDescriptor: Int32 { get }
    /// Accepts one pending host connection, non-blocking; nil when none is pending.
    func accept() -> (any VsockHostStream)?
    /// Connects to the host listener for guest port `port` (`PATH_<port>`), non-blocking
    /// afterwards.
    ///
    /// - Throws: ``VirtioDeviceError/backend(_:)`` when nobody listens there.
    func connect(port: UInt32) throws(VirtioDeviceError) -> any VsockHostStream
}

/// The readiness a vsock host stream is watched for.
public struct VsockInterest: OptionSet, Sendable, Hashable {
    /// The raw bits.
    public let rawValue: UInt8
    /// Creates a set from raw bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Readable (`EPOLLIN`).
    public static let readable = VsockInterest(rawValue: 1)
    /// Writable (`EPOLLOUT`).
    public static let writable = VsockInterest(rawValue: 2)
    /// Hang-up only (`EPOLLHUP`, which epoll reports whether asked for or not).
    public static let hangUp = VsockInterest(rawValue: 4)
}

/// Watches host descriptors for the device and calls
/// ``VirtioVsock/hostReady(descriptor:events:)`` when one is ready.
///
/// The device calls it with its own lock held: it must not call back into the device.
public protocol VsockEventWatcher: Sendable {
    /// Watches `descriptor` for `interest` (adds it or changes what is watched).
    func watch(_ descriptor: Int32, interest: VsockInterest)
    /// Stops watching `descriptor` (before it is closed).
    func unwatch(_ descriptor: Int32)
}
