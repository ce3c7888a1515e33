import HostSystem
import Logging
import Synchronization
import VirtioDevices

/// One host-side vsock connection on a non-blocking Unix stream socket.
final class UnixVsockStream: VsockHostStream {
    let socket: UnixSocket

    init(_ socket: UnixSocket) { self.socket = socket }

    var pollDescriptor: Int32 { socket.rawValue }

    func read(maxCount: Int) -> (VsockIOResult, [UInt8]) {
        do {
            guard let message = try socket.receive(maxBytes: max(1, maxCount), maxDescriptors: 0) else { return (.wouldBlock, []) }
            if message.bytes.isEmpty { return (.endOfStream, []) }
            return (.bytes(message.bytes.count), message.bytes)
        } catch {
            return (.failed("\(error)"), [])
        }
    }

    func write(_ bytes: ArraySlice<UInt8>) -> VsockIOResult {
        guard !bytes.isEmpty else { return .bytes(0) }
        do {
            guard let sent = try socket.send(bytes) else { return .wouldBlock }
            return sent > 0 ? .bytes(sent) : .wouldBlock
        } catch {
            return .failed("\(error)")
        }
    }

    func shutdownWrite() {
        try? socket.shutdown(.writing)
    }
}

/// Cloud Hypervisor's hybrid vsock host side: a listening socket at `path` for host
/// clients, and `path_<port>` for the host listeners guest connections reach.
final class UnixVsockBackend: VsockHostBackend {
    let path: String
    let listener: UnixSocket

    /// Binds the listening socket at `path` (a stale socket file there is replaced).
    init(path: String) throws(SystemError) {
        self.path = path
        listener = try UnixSocket.listening(at: path)
    }

    var listenerDescriptor: Int32 { listener.rawValue }

    func accept() -> (any VsockHostStream)? {
        guard let socket = try? listener.accept() else { return nil }
        return UnixVsockStream(socket)
    }

    func connect(port: UInt32) throws(VirtioDeviceError) -> any VsockHostStream {
        let target = "\(path)_\(port)"
        do {
            // Never waits: a listener with a full backlog refuses (Cloud Hypervisor's blocking connect would wait).
            return UnixVsockStream(try UnixSocket.connectNonBlocking(to: target))
        } catch {
            throw .backend("connecting to \(target): \(error)")
        }
    }

    /// Removes the socket file (the VM is going away), as Cloud Hypervisor's shutdown does.
    func removeSocketFile() {
        UnixSocket.removeSocketFile(at: path)
    }
}

/// Watches the vsock device's host descriptors on the VMM's event loop, level-triggered,
/// and hands readiness to the device.
final class EventLoopVsockWatcher: VsockEventWatcher {
    private let events: EventManager
    private let logger: Logger
    private let device = Mutex<VirtioVsock?>(nil)

    init(events: EventManager, logger: Logger) {
        self.events = events
        self.logger = logger
    }

    /// The device that gets the readiness (set once, right after it is made).
    func serve(_ vsock: VirtioVsock) { device.withLock { $0 = vsock } }

    /// Drops the device reference (it and this watcher refer to each other).
    func detach() { device.withLock { $0 = nil } }

    func watch(_ descriptor: Int32, interest: VsockInterest) {
        var watched: EpollEvents = []
        if interest.contains(.readable) { watched.insert(.readable) }
        if interest.contains(.writable) { watched.insert(.writable) }
        do {
            do {
                try events.modify(descriptor, events: watched)
            } catch {
                try events.add(descriptor, events: watched) { [weak self] ready in self?.deliver(descriptor, ready) }
            }
        } catch {
            logger.error("vsock: cannot watch descriptor \(descriptor): \(error)")
        }
    }

    func unwatch(_ descriptor: Int32) {
        try? events.remove(descriptor)
    }

    private func deliver(_ descriptor: Int32, _ ready: EpollEvents) {
        var events: VsockInterest = []
        if ready.contains(.readable) { events.insert(.readable) }
        if ready.contains(.writable) { events.insert(.writable) }
        if ready.contains(.hangUp) || ready.contains(.error) { events.insert(.hangUp) }
        device.withLock { $0 }?.hostReady(descriptor: descriptor, events: events)
    }
}
