import DeviceModel

/// The ACPI power-management timer, as Cloud Hypervisor's `AcpiPmTimerDevice`: a free
/// running 32-bit counter at 3.579545 MHz that the guest reads through one dword port.
///
/// Cloud Hypervisor maps it at port `0x608` (``portBase``, length 4) and points the FADT's
/// `X_PM_TMR_BLK` at it (32 bits, dword access; the FADT's `TMR_VAL_EXT` flag says the
/// counter is 32 bits wide). A 4-byte read returns the ticks elapsed since the device was
/// created, modulo 2^32; reads of other widths return 0 (Cloud Hypervisor leaves them
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
    private let start: UInt64

    /// Creates the timer, counting from 0 now.
    ///
    /// - Parameters:
    ///   - clock: where elapsed time comes from.
    ///   - name: the name in logs and bus errors.
    public init(clock: any MonotonicClock = SystemMonotonicClock(), name: String = "acpi-pm-timer") {
        self.clock = clock
        self.name = name
        start = clock.nanoseconds()
    }

    /// The counter value now: elapsed nanoseconds times 3.579545 MHz, truncated to 32 bits.
    public var counter: UInt32 {
        let elapsed = clock.nanoseconds() &- start
        // A 128-bit product keeps the tick count exact for any elapsed time (a 64-bit one
        // would overflow after 85 minutes); its high word is below 2^22, so the quotient fits.
        let product = elapsed.multipliedFullWidth(by: Self.frequency)
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
