import DeviceModel
import Synchronization

/// The part of the guest software stack a debug-port code belongs to, by Cloud
/// Hypervisor's convention for port `0x80`.
public enum DebugPortRange: String, Sendable, CaseIterable {
    /// Codes `0x00 ... 0x1F`.
    case firmware = "Firmware"
    /// Codes `0x20 ... 0x3F`.
    case bootloader = "Bootloader"
    /// Codes `0x40 ... 0x5F`.
    case kernel = "Kernel"
    /// Codes `0x60 ... 0x7F`.
    case userspace = "Userspace"
    /// Codes `0x80 ... 0xFF`.
    case custom = "Custom"

    /// The range `code` falls in.
    public init(code: UInt8) {
        switch code {
        case 0x00...0x1f: self = .firmware
        case 0x20...0x3f: self = .bootloader
        case 0x40...0x5f: self = .kernel
        case 0x60...0x7f: self = .userspace
        default: self = .custom
        }
    }
}

/// One code the guest wrote to the debug port.
public struct DebugPortEvent: Hashable, Sendable, CustomStringConvertible {
    /// The byte written.
    public let code: UInt8
    /// Nanoseconds between the device's creation and the write.
    public let elapsedNanoseconds: UInt64

    /// Creates an event for `code` written `elapsedNanoseconds` after the device was created.
    public init(code: UInt8, elapsedNanoseconds: UInt64) {
        self.code = code
        self.elapsedNanoseconds = elapsedNanoseconds
    }

    /// The stack component the code belongs to.
    public var range: DebugPortRange { DebugPortRange(code: code) }

    /// The log line Cloud Hypervisor prints for this event, for example
    /// `[Debug I/O port: Kernel code 0x41] 1.250000 seconds`.
    public var description: String {
        let microseconds = elapsedNanoseconds / 1000
        let fraction = String(microseconds % 1_000_000)
        let padded = String(repeating: "0", count: 6 - fraction.count) + fraction
        return "[Debug I/O port: \(range.rawValue) code 0x\(String(code, radix: 16))] "
            + "\(microseconds / 1_000_000).\(padded) seconds"
    }
}

/// The POST/debug port `0x80`: the guest writes byte codes to mark boot progress and the
/// VMM timestamps them.
///
/// Each write (of any width; the low byte is the code) records a ``DebugPortEvent`` with
/// the time elapsed since the device was created, measured on the injected
/// ``MonotonicClock``, and passes its description (Cloud Hypervisor's log line) to the
/// log sink. Reads return 0 (Cloud Hypervisor logs them as invalid and returns nothing).
/// The first ``eventCapacity`` events are kept in memory for boot-time reports; later
/// ones are still logged but only counted (``droppedEvents``), so a guest writing the
/// port in a loop cannot grow the VMM's memory.
public final class DebugPort: BusDevice {
    /// The debug port's address.
    public static let port: UInt64 = 0x80
    /// How many ports the device decodes.
    public static let portLength: UInt64 = 1

    /// The name used in logs and bus errors.
    public let name: String
    /// How many events are kept in ``events``.
    public let eventCapacity: Int
    private let clock: any MonotonicClock
    private let start: UInt64
    private let log: @Sendable (String) -> Void
    private let state = Mutex(DebugPortState())

    /// Creates the debug port and starts its stopwatch.
    ///
    /// - Parameters:
    ///   - clock: the clock elapsed times are measured on; read once now as the origin.
    ///   - eventCapacity: how many events to keep (negative values count as 0).
    ///   - name: the name in logs and bus errors.
    ///   - log: receives one line per write, on the vCPU thread (not under the device's lock).
    public init(
        clock: any MonotonicClock = SystemMonotonicClock(), eventCapacity: Int = 256,
        name: String = "debug-port", log: @escaping @Sendable (String) -> Void
    ) {
        self.name = name
        self.clock = clock
        self.start = clock.nanoseconds()
        self.eventCapacity = max(0, eventCapacity)
        self.log = log
    }

    /// The events recorded so far, oldest first (at most ``eventCapacity``).
    public var events: [DebugPortEvent] {
        state.withLock { $0.events }
    }

    /// How many events arrived after ``events`` was full.
    public var droppedEvents: Int {
        state.withLock { $0.dropped }
    }

    /// Reads return 0: the port is write-only.
    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }

    /// Records the low byte of `value` as a code and logs it.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        let now = clock.nanoseconds()
        let event = DebugPortEvent(
            code: UInt8(truncatingIfNeeded: value),
            elapsedNanoseconds: now >= start ? now - start : 0)
        let capacity = eventCapacity
        state.withLock { state in
            if state.events.count < capacity {
                state.events.append(event)
            } else {
                state.dropped += 1
            }
        }
        log(event.description)
    }
}

/// Everything the debug port's lock protects.
struct DebugPortState: Sendable {
    var events: [DebugPortEvent] = []
    var dropped = 0
}
