import CLinux
import Devices
import HostSystem
import Logging
import Synchronization
import VirtioDevices

/// Where host input goes: the UART's receive FIFO or the virtio console's input buffer.
struct HostInputSink: Sendable {
    /// How many bytes the device can take now.
    let space: @Sendable () -> Int
    /// Hands bytes to the device; returns how many it took.
    let enqueue: @Sendable (ArraySlice<UInt8>) -> Int

    /// The 16550's 64-byte receive FIFO.
    static func serial(_ serial: Serial16550) -> HostInputSink {
        HostInputSink(space: { serial.receiveSpace }, enqueue: { serial.enqueueInput($0) })
    }

    /// The virtio console's bounded input buffer.
    static func console(_ console: VirtioConsole) -> HostInputSink {
        HostInputSink(space: { console.receiveSpace }, enqueue: { console.enqueueInput($0) })
    }
}

/// Carries host input (a terminal, a pty) into a device on the event loop, with backpressure
/// instead of loss: it reads only as many bytes as the device can take, and while the device
/// is full it stops watching the input and re-checks every millisecond until the guest has
/// drained some. What waits meanwhile stays in the kernel's terminal or pipe buffer, so
/// host-side buffering stays bounded and nothing typed is dropped.
final class HostInputPump: Sendable {
    let sink: HostInputSink
    let name: String
    let descriptor: Int32
    let events: EventManager
    let timer: TimerFD
    let logger: Logger
    private let watching = Mutex(false)

    init(sink: HostInputSink, name: String, descriptor: Int32, events: EventManager, logger: Logger) throws {
        self.sink = sink
        self.name = name
        self.descriptor = descriptor
        self.events = events
        self.logger = logger
        timer = try TimerFD()
    }

    /// Starts watching the input. Throws `EPERM` for a descriptor epoll cannot watch
    /// (a regular file, /dev/null).
    func start() throws {
        try events.add(timer.rawValue, events: [.readable]) { [weak self] _ in self?.retry() }
        do {
            try watch()
        } catch {
            try? events.remove(timer.rawValue)
            throw error
        }
    }

    /// Stops watching input and the retry timer.
    func stop() {
        if watching.withLock({ $0 }) { try? events.remove(descriptor) }
        try? events.remove(timer.rawValue)
    }

    private func watch() throws(SystemError) {
        try events.add(descriptor, events: [.readable]) { [weak self] ready in self?.readable(ready) }
        watching.withLock { $0 = true }
    }

    private func readable(_ ready: EpollEvents) {
        let space = sink.space()
        guard space > 0 else {
            pause()
            return
        }
        var buffer = [UInt8](repeating: 0, count: space)
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count > 0 {
            // Only this thread fills the device and the guest only drains it: it all fits.
            _ = sink.enqueue(buffer[0..<count])
        } else if count == 0 || (count < 0 && clinux_errno() != EAGAIN && clinux_errno() != EINTR) {
            // End of input (a closed pipe or a hung-up terminal): stop watching it.
            logger.debug("\(name) input: end of input on descriptor \(descriptor)")
            try? events.remove(descriptor)
            watching.withLock { $0 = false }
        }
    }

    private func pause() {
        try? events.remove(descriptor)
        watching.withLock { $0 = false }
        try? timer.arm(afterNanoseconds: 1_000_000, intervalNanoseconds: 1_000_000)
    }

    private func retry() {
        _ = timer.expirations()
        guard sink.space() > 0, !watching.withLock({ $0 }) else { return }
        try? timer.disarm()
        do {
            try watch()
        } catch {
            logger.warning("\(name) input: cannot watch descriptor \(descriptor) again: \(error)")
        }
    }
}
