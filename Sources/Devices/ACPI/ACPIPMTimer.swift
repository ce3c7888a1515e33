import DeviceModel
import Synchronization

/// The ACPI power-management timer, as Cloud Hypervisor's `AcpiPmTimerDevice`: a free
/// running 32-bit counter at 3.579545 MHz that the guest reads through one dword port.
///
/// Cloud Hypervisor maps it at port `0x608` (``portBase``, length 4) and points the FADT's
/// `X_PM_TMR_BLK` at it (32 bits, dword access; the FADT's `TMR_VAL_EXT` flag says the
/// counter is 32 bits wide). A 4-byte read returns the ticks elapsed since the device was
/// created (or, after ``restoreState(_:)``, since the saved device was created), modulo
/// 2^32; reads of other widths return 0 (Cloud Hypervisor leaves them
/// unanswered); writes are ignored.
public final class ACPIPMTimer: BusDevice {
    /// The I/O port Cloud Hypervisor maps the timer at.
    public static let portBase: UInt64 = 0x608
    /// How many ports the mapping covers.
    public static let portLength: UInt64 = 4
    /// The counter frequency in hertz.
    public static let frequency: UInt64 = 3_579_545

    /// The name used in logs and bus errors.
    public let name: String
    private let clock: any MonotonicClock
    /// The clock reading counting starts from, and the nanoseconds already counted before it
    /// (0, or a restored snapshot's elapsed time).
    private let origin: Mutex<(start: UInt64, carried: UInt64)>

    /// Creates the timer, counting from 0 now.
    ///
    /// - Parameters:
    ///   - clock: where elapsed time comes from.
    ///   - name: the name in logs and bus errors.
    public init(clock: any MonotonicClock = SystemMonotonicClock(), name: String = "acpi-pm-timer") {
        self.clock = clock
        self.name = name
        origin = Mutex((clock.nanoseconds(), 0))
    }

    /// Nanoseconds the counter has run, read under the device's lock.
    private var elapsedNanoseconds: UInt64 {
        origin.withLock { $0.carried &+ (clock.nanoseconds() &- $0.start) }
    }

    /// The counter value now: elapsed nanoseconds times 3.579545 MHz, truncated to 32 bits.
    public var counter: UInt32 {
        Self.ticks(elapsedNanoseconds: elapsedNanoseconds)
    }

    /// The counter after `elapsed` nanoseconds, truncated to 32 bits.
    static func ticks(elapsedNanoseconds elapsed: UInt64) -> UInt32 {
        // A 128-bit product keeps the tick count exact for any elapsed time (a 64-bit one
        // would overflow after 85 minutes); its high word is below 2^22, so the quotient fits.
        let product = elapsed.multipliedFullWidth(by: frequency)
        let ticks = UInt64(1_000_000_000).dividingFullWidth((product.high, product.low)).quotient
        return UInt32(truncatingIfNeeded: ticks)
    }

    /// A dword read returns ``counter``; other widths read 0.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        size == 4 ? UInt64(counter) : 0
    }

    /// Writes are ignored: the timer is read-only.
    public func write(offset: UInt64, size: Int, value: UInt64) {}
}

extension ACPIPMTimer: StatefulDevice {
    /// The PM timer's saved state: how long the counter has run. A restore carries it over,
    /// so the guest's counter continues from the value it had at the snapshot rather than
    /// from 0, whatever the new process's monotonic clock reads. Every value is valid.
    public struct State: Codable, Equatable, Sendable {
        /// Nanoseconds the counter had run when the state was saved.
        public var elapsedNanoseconds: UInt64

        /// A state for a counter that has run `elapsedNanoseconds`.
        public init(elapsedNanoseconds: UInt64) {
            self.elapsedNanoseconds = elapsedNanoseconds
        }

        /// The counter value this state shows (before any further time passes).
        public var counter: UInt32 { ACPIPMTimer.ticks(elapsedNanoseconds: elapsedNanoseconds) }

        /// The JSON names, in snake case as Cloud Hypervisor's serde writes them.
        enum CodingKeys: String, CodingKey {
            case elapsedNanoseconds = "elapsed_nanoseconds"
        }
    }

    /// The time the counter has run, read under the device's lock.
    public func saveState() -> State {
        State(elapsedNanoseconds: elapsedNanoseconds)
    }

    /// Continues counting from `state`: the counter reads the saved value now and advances
    /// from there. Never refuses (any elapsed time is one a timer can have run).
    public func restoreState(_ state: State) throws(DeviceStateError) {
        origin.withLock { $0 = (clock.nanoseconds(), state.elapsedNanoseconds) }
    }
}
