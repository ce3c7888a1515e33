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
public struct DebugPortEvent: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The byte written.
    public let code: UInt8
    /// Nanoseconds between the device's creation and the write.
    public let elapsedNanoseconds: UInt64

    /// Creates an event for `code` written `elapsedNanoseconds` after the device was created.
    public init(code: UInt8, elapsedNanoseconds: UInt64) {
        self.code = code
        self.elapsedNanoseconds = elapsedNanoseconds
    }

    /// The JSON names, in snake case as Cloud Hypervisor's serde writes them.
    enum CodingKeys: String, CodingKey {
        case code
        case elapsedNanoseconds = "elapsed_nanoseconds"
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
/// the time elapsed since the device was created (or, after ``restoreState(_:)``, since the
/// saved device was created), measured on the injected
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
    private let log: @Sendable (String) -> Void
    private let state: Mutex<DebugPortState>

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
        self.state = Mutex(DebugPortState(start: clock.nanoseconds()))
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
        let capacity = eventCapacity
        let event = state.withLock { state in
            let event = DebugPortEvent(
                code: UInt8(truncatingIfNeeded: value), elapsedNanoseconds: state.elapsed(now: clock.nanoseconds()))
            if state.events.count < capacity {
                state.events.append(event)
            } else {
                state.dropped += 1
            }
            return event
        }
        log(event.description)
    }
}

/// Everything the debug port's lock protects.
struct DebugPortState: Sendable {
    /// The clock reading elapsed times are measured from.
    var start: UInt64
    /// Nanoseconds already elapsed at `start` (0, or a restored snapshot's elapsed time).
    var carried: UInt64 = 0
    var events: [DebugPortEvent] = []
    var dropped = 0

    /// The elapsed time at clock reading `now` (a clock that went backwards counts as no time).
    func elapsed(now: UInt64) -> UInt64 {
        carried &+ (now >= start ? now - start : 0)
    }
}

extension DebugPort: StatefulDevice {
    /// The debug port's saved state. The guest cannot read the port back, so this is what
    /// the VMM reports: the time elapsed since the device was created (a restore carries it
    /// over, so codes written after it are timed from the original boot, not from the
    /// restore) and the events kept and dropped so far.
    public struct State: Codable, Equatable, Sendable {
        /// Nanoseconds elapsed since the device was created, when the state was saved.
        public var elapsedNanoseconds: UInt64
        /// The events kept, oldest first.
        public var events: [DebugPortEvent]
        /// How many events arrived after `events` was full.
        public var droppedEvents: Int

        /// A state with these values.
        public init(elapsedNanoseconds: UInt64, events: [DebugPortEvent], droppedEvents: Int) {
            self.elapsedNanoseconds = elapsedNanoseconds
            self.events = events
            self.droppedEvents = droppedEvents
        }

        /// The JSON names, in snake case as Cloud Hypervisor's serde writes them.
        enum CodingKeys: String, CodingKey {
            case elapsedNanoseconds = "elapsed_nanoseconds"
            case events
            case droppedEvents = "dropped_events"
        }
    }

    /// The elapsed time and the events, taken under the device's lock.
    public func saveState() -> State {
        state.withLock { state in
            State(elapsedNanoseconds: state.elapsed(now: clock.nanoseconds()), events: state.events,
                  droppedEvents: state.dropped)
        }
    }

    /// Replaces the events and continues the elapsed time from `saved`. Refuses, changing
    /// nothing, more events than this port keeps (``eventCapacity``), a negative drop count
    /// or drops while there was room, and events out of time order or later than the save.
    public func restoreState(_ saved: State) throws(DeviceStateError) {
        func refuse(_ reason: String) -> DeviceStateError { DeviceStateError(device: name, reason: reason) }
        guard saved.events.count <= eventCapacity else {
            throw refuse("events holds \(saved.events.count) events, more than this port's capacity of \(eventCapacity)")
        }
        guard saved.droppedEvents >= 0 else {
            throw refuse("dropped_events is \(saved.droppedEvents); a count cannot be negative")
        }
        guard saved.droppedEvents == 0 || saved.events.count == eventCapacity else {
            throw refuse("dropped_events is \(saved.droppedEvents) while events (\(saved.events.count)) "
                + "is below the capacity of \(eventCapacity): events are only dropped when full")
        }
        let times = saved.events.map(\.elapsedNanoseconds)
        if let index = times.indices.dropFirst().first(where: { times[$0] < times[$0 - 1] }) {
            throw refuse("events[\(index)] is timed before events[\(index - 1)]: events are kept in time order")
        }
        if let last = times.last, last > saved.elapsedNanoseconds {
            throw refuse("the last event is timed at \(last) ns, after elapsed_nanoseconds (\(saved.elapsedNanoseconds))")
        }
        state.withLock { state in
            state.start = clock.nanoseconds()
            state.carried = saved.elapsedNanoseconds
            state.events = saved.events
            state.dropped = saved.droppedEvents
        }
    }
}
