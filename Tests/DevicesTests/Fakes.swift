import DeviceModel
import Devices
import Synchronization

/// An interrupt line that counts edges and level changes.
final class RecordingInterruptLine: InterruptLine {
    private let edges = Mutex(0)

    /// How many edges were triggered so far.
    var count: Int { edges.withLock { $0 } }

    /// Returns the edges counted since the last call and resets the count.
    func take() -> Int { edges.withLock { count in defer { count = 0 }; return count } }

    func trigger() throws { edges.withLock { $0 += 1 } }
}

/// An interrupt line whose delivery always fails.
struct FailingInterruptLine: InterruptLine {
    struct DeliveryFailed: Error, Equatable {}
    func trigger() throws { throw DeliveryFailed() }
}

/// Collects transmitted bytes in memory.
final class BufferSerialOutput: SerialOutput {
    private let storage = Mutex<[UInt8]>([])

    var bytes: [UInt8] { storage.withLock { $0 } }
    var text: String { String(decoding: bytes, as: UTF8.self) }

    func write(_ byte: UInt8) { storage.withLock { $0.append(byte) } }
}

/// A wall clock stuck at one instant, adjustable by tests.
final class FixedWallClock: WallClock {
    private let time: Mutex<WallClockTime>

    init(seconds: Int64, nanoseconds: UInt32 = 0) {
        time = Mutex(WallClockTime(seconds: seconds, nanoseconds: nanoseconds))
    }

    func set(seconds: Int64, nanoseconds: UInt32 = 0) {
        time.withLock { $0 = WallClockTime(seconds: seconds, nanoseconds: nanoseconds) }
    }

    func now() -> WallClockTime { time.withLock { $0 } }
}

/// A monotonic clock that only moves when a test advances it.
final class ManualMonotonicClock: MonotonicClock {
    private let value: Atomic<UInt64>

    init(start: UInt64) { value = Atomic(start) }

    func advance(byNanoseconds delta: UInt64) { value.add(delta, ordering: .relaxed) }

    func nanoseconds() -> UInt64 { value.load(ordering: .relaxed) }
}

/// Collects log lines.
final class LogRecorder: Sendable {
    private let storage = Mutex<[String]>([])

    var lines: [String] { storage.withLock { $0 } }

    var sink: @Sendable (String) -> Void {
        { line in self.storage.withLock { $0.append(line) } }
    }
}

/// Counts reset requests.
final class ResetCounter: Sendable {
    private let value = Atomic(0)

    var count: Int { value.load(ordering: .relaxed) }

    var handler: ResetHandler {
        { self.value.add(1, ordering: .relaxed) }
    }
}


extension BusDevice {
    /// Reads one byte at `offset`.
    func readByte(_ offset: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: read(offset: offset, size: 1)) }

    /// Writes one byte at `offset`.
    func writeByte(_ offset: UInt64, _ value: UInt8) { write(offset: offset, size: 1, value: UInt64(value)) }
}
