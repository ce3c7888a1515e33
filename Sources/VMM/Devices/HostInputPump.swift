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
    /// The device's character timeout, checked every few milliseconds while bytes wait
    /// (a UART raises its interrupt again for bytes the guest left untouched); nil for a
    /// device that needs none.
    var checkTimeout: (@Sendable () -> ReceiveTimeoutOutcome)? = nil

    /// The 16550's 64-byte receive FIFO, with its character timeout.
    static func serial(_ serial: Serial16550) -> HostInputSink {
        HostInputSink(
            space: { serial.receiveSpace }, enqueue: { serial.enqueueInput($0) },
            checkTimeout: { serial.checkReceiveTimeout() })
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
/// host-side buffering stays bounded and nothing typed is dropped. While bytes wait in a
/// device with a character timeout (the UART), a second timer checks it every 10 ms, backing
/// off to once a second while the guest reads nothing (its port closed).
final class HostInputPump: Sendable {
    let sink: HostInputSink
    let name: String
    let descriptor: Int32
    let events: EventManager
    let timer: TimerFD
    let timeoutTimer: TimerFD
    let logger: Logger
    private let watching = Mutex(false)
    /// The character-timeout period now in force, or nil while that timer is disarmed.
    private let timeoutPeriod = Mutex<UInt64?>(nil)
    /// The character-timeout period while the guest reads (10 ms).
    static let timeoutNanoseconds: UInt64 = 10_000_000
    /// The longest period, reached by doubling while the guest reads nothing (1 s).
    static let longestTimeoutNanoseconds: UInt64 = 1_000_000_000

    init(sink: HostInputSink, name: String, descriptor: Int32, events: EventManager, logger: Logger) throws {
        self.sink = sink
        self.name = name
        self.descriptor = descriptor
        self.events = events
        self.logger = logger
        timer = try TimerFD()
        timeoutTimer = try TimerFD()
    }

    /// Starts watching the input. Throws `EPERM` for a descriptor epoll cannot watch
    /// (a regular file, /dev/null).
    func start() throws {
        try events.add(timer.rawValue, events: [.readable]) { [weak self] _ in self?.retry() }
        do {
            if sink.checkTimeout != nil {
                try events.add(timeoutTimer.rawValue, events: [.readable]) { [weak self] _ in self?.timedOut() }
            }
            try watch()
        } catch {
            try? events.remove(timer.rawValue)
            if sink.checkTimeout != nil { try? events.remove(timeoutTimer.rawValue) }
            throw error
        }
    }

    /// Stops watching input and the timers.
    func stop() {
        if watching.withLock({ $0 }) { try? events.remove(descriptor) }
        try? events.remove(timer.rawValue)
        if sink.checkTimeout != nil { try? events.remove(timeoutTimer.rawValue) }
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
            armTimeout(Self.timeoutNanoseconds, onlyIfDisarmed: true)
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

    /// Arms the character-timeout timer with `period` (left as it is when already armed and
    /// `onlyIfDisarmed`).
    private func armTimeout(_ period: UInt64, onlyIfDisarmed: Bool) {
        guard sink.checkTimeout != nil else { return }
        let changed = timeoutPeriod.withLock { current -> Bool in
            if onlyIfDisarmed, current != nil { return false }
            if current == period { return false }
            current = period
            return true
        }
        if changed { try? timeoutTimer.arm(afterNanoseconds: period, intervalNanoseconds: period) }
    }

    /// The character-timeout timer fired: checks the device; stops once the bytes are gone,
    /// keeps 10 ms while the guest reads, and doubles the period while it reads nothing.
    private func timedOut() {
        _ = timeoutTimer.expirations()
        guard let check = sink.checkTimeout else { return }
        switch check() {
        case .empty:
            timeoutPeriod.withLock { $0 = nil }
            try? timeoutTimer.disarm()
        case .draining:
            armTimeout(Self.timeoutNanoseconds, onlyIfDisarmed: false)
        case .stale:
            let current = timeoutPeriod.withLock { $0 } ?? Self.timeoutNanoseconds
            armTimeout(min(current * 2, Self.longestTimeoutNanoseconds), onlyIfDisarmed: false)
        }
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
