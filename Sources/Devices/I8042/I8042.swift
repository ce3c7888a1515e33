import DeviceModel
import Synchronization

/// Just enough of the i8042 keyboard controller for a guest to reset the machine.
///
/// Like Cloud Hypervisor's `I8042Device`, it is mapped at port `0x61` with a length of 4
/// (``portBase``, ``portLength``), so it decodes two byte-wide ports:
///
/// | port | offset | read | write |
/// |---|---|---|---|
/// | `0x61` (system control port B) | 0 | `0x20` | ignored |
/// | `0x62`, `0x63` | 1, 2 | 0 | ignored |
/// | `0x64` (controller status / command) | 3 | 0: no data, controller idle | `0xFE` pulses the reset line: calls the reset handler; other commands are ignored |
///
/// Port `0x61` reads with bit 5 (the PIT channel 2 output) set, as kvmtool and Cloud
/// Hypervisor do, so Linux's `pit_calibrate_tsc()` does not spin forever. The status of
/// 0 tells Linux's i8042 driver no byte is waiting; with no reply to its commands it
/// gives up on the controller. The keyboard data port `0x60` is not decoded: the VMM
/// answers it as unmapped, as Cloud Hypervisor does. Accesses wider than one byte read
/// 0 and are ignored on write.
public final class I8042: BusDevice {
    /// The first port the device is mapped at (system control port B).
    public static let portBase: UInt64 = 0x61
    /// How many ports the mapping covers (`0x61 ... 0x64`).
    public static let portLength: UInt64 = 4
    /// The command that pulses the CPU reset line.
    public static let resetCommand: UInt8 = 0xfe

    /// The offset of port `0x61` from ``portBase``.
    static let portBOffset: UInt64 = 0
    /// The offset of port `0x64` from ``portBase``.
    static let commandOffset: UInt64 = 3
    /// Port B's value: PIT channel 2 output high.
    static let portBValue: UInt64 = 0x20

    /// The name used in logs and bus errors.
    public let name: String
    private let onReset: ResetHandler
    private let resets = Atomic<Int>(0)

    /// Creates the controller.
    ///
    /// - Parameters:
    ///   - name: the name in logs and bus errors.
    ///   - onReset: called on the vCPU thread each time the guest writes ``resetCommand``
    ///     to port `0x64`.
    public init(name: String = "i8042", onReset: @escaping ResetHandler) {
        self.name = name
        self.onReset = onReset
    }

    /// How many reset commands the guest has sent.
    public var resetRequests: Int { resets.load(ordering: .relaxed) }

    /// Port `0x61` reads `0x20`, every other decoded port reads 0.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard size == 1, offset == Self.portBOffset else { return 0 }
        return Self.portBValue
    }

    /// A byte `0xFE` written to port `0x64` requests a reset; anything else is ignored.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard size == 1, offset == Self.commandOffset, UInt8(truncatingIfNeeded: value) == Self.resetCommand
        else { return }
        resets.add(1, ordering: .relaxed)
        onReset()
    }
}

extension I8042: StatefulDevice {
    /// The i8042's saved state, which is empty: like Cloud Hypervisor's `I8042Device`, this
    /// controller keeps nothing the guest can observe (port B and the status port read
    /// constants, there is no command byte, output buffer or keyboard queue, and the reset
    /// command acts at once). ``resetRequests`` is the VMM's statistic, not device state.
    public struct State: Codable, Equatable, Sendable {
        /// The only (empty) state.
        public init() {}
    }

    /// The empty state.
    public func saveState() -> State { State() }

    /// Accepts the empty state; there is nothing to check or to change.
    public func restoreState(_ state: State) throws(DeviceStateError) {}
}
