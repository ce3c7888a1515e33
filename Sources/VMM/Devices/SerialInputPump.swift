import CLinux
import Devices
import HostSystem
import Logging
import Synchronization

/// Carries host input (a terminal, a pty) into the UART's 64-byte receive FIFO on the event
/// loop, with backpressure instead of loss: it reads only as many bytes as the FIFO can take,
/// and while the FIFO is full it stops watching the input and re-checks every millisecond
/// until the guest has drained some. What waits meanwhile stays in the kernel's terminal or
/// pipe buffer, so host-side buffering stays bounded and nothing typed is dropped.
final class SerialInputPump: Sendable {
    let serial: Serial16550
    let descriptor: Int32
    let events: EventManager
    let timer: TimerFD
    let logger: Logger
    private let watching = Mutex(false)

    init(serial: Serial16550, descriptor: Int32, events: EventManager, logger: Logger) throws {
        self.serial = serial
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
        let space = serial.receiveSpace
        guard space > 0 else {
            pause()
            return
        }
        var buffer = [UInt8](repeating: 0, count: space)
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count > 0 {
            // Only this thread fills the FIFO and the guest only drains it: it all fits.
            _ = serial.enqueueInput(buffer[0..<count])
        } else if count == 0 || (count < 0 && clinux_errno() != EAGAIN && clinux_errno() != EINTR) {
            // End of input (a closed pipe or a hung-up terminal): stop watching it.
            logger.debug("serial input: end of input on descriptor \(descriptor)")
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
        guard serial.receiveSpace > 0, !watching.withLock({ $0 }) else { return }
        try? timer.disarm()
        do {
            try watch()
        } catch {
            logger.warning("serial input: cannot watch descriptor \(descriptor) again: \(error)")
        }
    }
}
