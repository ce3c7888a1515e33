import DeviceModel
import Synchronization

/// The ARM PL031 real-time clock's registers, as one value a snapshot can hold: a 32-bit
/// seconds counter kept as an offset from the host's wall clock.
///
/// As in Cloud Hypervisor's `rtc_pl031.rs`: the counter always runs (UARTCR reads 1 and
/// writes are ignored), UARTLR sets it, the match register is stored but its alarm
/// interrupt is not emulated (RIS and MIS read 0), and IMSC reads back what was written.
public struct PL031State: Hashable, Sendable, Codable {
    /// Register offsets (bytes from the base).
    public enum Register: UInt64, Sendable, CaseIterable {
        /// RTCDR: the current counter (read-only).
        case data = 0x00
        /// RTCMR: match value.
        case match = 0x04
        /// RTCLR: load value (writing it sets the counter).
        case load = 0x08
        /// RTCCR: control (bit 0 start; always 1 here).
        case control = 0x0C
        /// RTCIMSC: interrupt mask.
        case interruptMask = 0x10
        /// RTCRIS: raw interrupt status.
        case rawInterruptStatus = 0x14
        /// RTCMIS: masked interrupt status.
        case maskedInterruptStatus = 0x18
        /// RTCICR: interrupt clear (write-only).
        case interruptClear = 0x1C
    }

    /// Counter nanoseconds minus host wall-clock nanoseconds (0: the counter is the Unix time).
    public var offsetNanoseconds: Int64 = 0
    /// RTCMR.
    public var match: UInt32 = 0
    /// RTCLR, the last value loaded.
    public var load: UInt32 = 0
    /// RTCIMSC as written.
    public var interruptMask: UInt32 = 0

    /// The reset state: the counter shows the host's Unix time.
    public init() {}

    /// The JSON names, in snake case as Cloud Hypervisor's serde writes them.
    enum CodingKeys: String, CodingKey {
        case offsetNanoseconds = "offset_nanoseconds"
        case match
        case load
        case interruptMask = "interrupt_mask"
    }

    /// The counter at host time `now` (nanoseconds since the epoch).
    public func counter(now: Int64) -> UInt32 {
        UInt32(truncatingIfNeeded: (now &+ offsetNanoseconds) / 1_000_000_000)
    }

    /// Reads the register at `offset` at host time `now`; unknown offsets read 0.
    public func read(offset: UInt64, now: Int64) -> UInt32 {
        if let id = PrimeCellID.byte(at: offset, part: 0x31) { return id }
        switch Register(rawValue: offset) {
        case .data: return counter(now: now)
        case .match: return match
        case .load: return load
        case .control: return 1
        case .interruptMask: return interruptMask
        case .rawInterruptStatus, .maskedInterruptStatus, .interruptClear, nil: return 0
        }
    }

    /// Writes `value` to the register at `offset` at host time `now`.
    public mutating func write(offset: UInt64, value: UInt32, now: Int64) {
        switch Register(rawValue: offset) {
        case .match: match = value
        case .load:
            load = value
            offsetNanoseconds = Int64(value) * 1_000_000_000 - now
        case .interruptMask: interruptMask = value & 1
        case .data, .control, .rawInterruptStatus, .maskedInterruptStatus, .interruptClear, nil: break
        }
    }
}

/// The PL031 RTC of an arm64 VM (`rtc-pl031`, `/dev/rtc0`) as a passive ``BusDevice`` over
/// one 4 KiB page, reading the injected ``WallClock``. Accesses of 1 to 4 bytes are accepted.
public final class PL031: BusDevice {
    /// The MMIO size the device decodes.
    public static let mmioSize: UInt64 = 0x1000

    /// The name used in logs and bus errors.
    public let name: String
    private let clock: any WallClock
    private let state: Mutex<PL031State>

    /// Creates the RTC from `state` (the host's time by default, or a snapshot's, which is
    /// not checked here: ``restoreState(_:)`` checks it).
    public init(name: String = "rtc", clock: any WallClock = SystemWallClock(), state: PL031State = PL031State()) {
        self.name = name
        self.clock = clock
        self.state = Mutex(state)
    }

    /// A copy of the registers (for a snapshot).
    public var currentState: PL031State { state.withLock { $0 } }

    private var now: Int64 {
        let time = clock.now()
        return time.seconds &* 1_000_000_000 &+ Int64(time.nanoseconds)
    }

    /// Reads the register at `offset`.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard size >= 1, size <= 4 else { return 0 }
        let time = now
        let value = state.withLock { $0.read(offset: offset, now: time) }
        return primeCellReadValue(value, size: size)
    }

    /// Writes the low `size` bytes of `value` to the register at `offset`.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard size >= 1, size <= 4 else { return }
        let time = now
        state.withLock { $0.write(offset: offset, value: UInt32(truncatingIfNeeded: value), now: time) }
    }
}

extension PL031: StatefulDevice {
    /// The PL031's saved state is its register value, ``PL031State``. Its time is an offset
    /// from the host's wall clock, so restored on the same host (or one with a synchronised
    /// clock) the counter goes on from where the guest set it, counting the time between
    /// the save and the restore, as a battery-backed RTC would.
    public typealias State = PL031State

    /// The registers and the time offset, taken under the RTC's lock (as ``currentState``).
    public func saveState() -> PL031State { currentState }

    /// Replaces the registers and the time offset with `saved`. Refuses, changing nothing,
    /// an interrupt mask with bits other than bit 0 (the only one RTCIMSC has).
    public func restoreState(_ saved: PL031State) throws(DeviceStateError) {
        guard saved.interruptMask & ~1 == 0 else {
            throw DeviceStateError(device: name, reason: "interrupt_mask \(hex(saved.interruptMask)) sets bits other "
                + "than bit 0, the only one RTCIMSC has")
        }
        state.withLock { $0 = saved }
    }
}
