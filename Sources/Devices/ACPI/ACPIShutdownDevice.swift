import DeviceModel
import Synchronization

/// What a device calls when the guest asks the machine to power off (ACPI S5). Cloud
/// Hypervisor writes its exit eventfd here; the handler runs on the vCPU thread that made
/// the access, so keep it short and never call back into the device.
public typealias ShutdownHandler = @Sendable () -> Void

/// Cloud Hypervisor's x86-64 ACPI shutdown device: the hardware-reduced sleep control,
/// sleep status and reset registers, all one byte-wide I/O port.
///
/// It is mapped at port `0x600` with a length of 4 (``portBase``, ``portLength``); the
/// FADT's `SLEEP_CONTROL_REG`, `SLEEP_STATUS_REG` and `RESET_REG` all point at `0x600`
/// (one byte, byte access) and its `RESET_VALUE` is 1. Like Cloud Hypervisor's
/// `AcpiShutdownDevice`, it ignores the offset inside the mapping and decodes whole bytes:
///
/// | byte written | meaning | action |
/// |---|---|---|
/// | `0x01` | the FADT reset value | calls the reset handler |
/// | `0x34` | sleep control: `SLP_TYP` = 5 (S5, bits 4-2) with `SLP_EN` (bit 5) | calls the shutdown handler |
/// | anything else | for example `0x80`, Linux clearing `WAK_STS` before sleeping | ignored |
///
/// The S5 sleep type 5 is the value of the DSDT's `\_S5_` package. Reads return 0 (no
/// wake status). Accesses wider than one byte read 0 and are ignored on write, as Cloud
/// Hypervisor ignores them (with a warning).
public final class ACPIShutdownDevice: BusDevice {
    /// The I/O port the device is mapped at.
    public static let portBase: UInt64 = 0x600
    /// How many ports the mapping covers.
    public static let portLength: UInt64 = 4
    /// The byte that requests a reset (the FADT's `RESET_VALUE`).
    public static let resetValue: UInt8 = 1
    /// The sleep type of S5 (soft off), as in `\_S5_`.
    public static let s5SleepType: UInt8 = 5
    /// The position of `SLP_TYP` in the sleep control register.
    public static let sleepTypeShift: UInt8 = 2
    /// The `SLP_EN` bit of the sleep control register.
    public static let sleepEnable: UInt8 = 1 << 5
    /// The byte that requests power off: `SLP_TYP` = 5 with `SLP_EN`, `0x34`.
    public static let shutdownValue: UInt8 = s5SleepType << sleepTypeShift | sleepEnable

    /// The name used in logs and bus errors.
    public let name: String
    private let onShutdown: ShutdownHandler
    private let onReset: ResetHandler
    private let shutdowns = Atomic<Int>(0)
    private let resets = Atomic<Int>(0)

    /// Creates the device.
    ///
    /// - Parameters:
    ///   - name: the name in logs and bus errors.
    ///   - onShutdown: called on the vCPU thread each time the guest writes ``shutdownValue``.
    ///   - onReset: called on the vCPU thread each time the guest writes ``resetValue``.
    public init(name: String = "acpi-shutdown", onShutdown: @escaping ShutdownHandler, onReset: @escaping ResetHandler) {
        self.name = name
        self.onShutdown = onShutdown
        self.onReset = onReset
    }

    /// How many power-off requests the guest has made.
    public var shutdownRequests: Int { shutdowns.load(ordering: .relaxed) }

    /// How many reset requests the guest has made.
    public var resetRequests: Int { resets.load(ordering: .relaxed) }

    /// Every register reads 0: no wake status.
    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }

    /// A byte ``resetValue`` resets, a byte ``shutdownValue`` powers off, anything else is ignored.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard size == 1 else { return }
        switch UInt8(truncatingIfNeeded: value) {
        case Self.resetValue:
            resets.add(1, ordering: .relaxed)
            onReset()
        case Self.shutdownValue:
            shutdowns.add(1, ordering: .relaxed)
            onShutdown()
        default:
            break
        }
    }
}

extension ACPIShutdownDevice: StatefulDevice {
    /// The shutdown device's saved state, which is empty: its registers read 0 and its
    /// writes act at once, so it keeps nothing the guest can observe. The request counts are
    /// the VMM's statistics, not device state.
    public struct State: Codable, Equatable, Sendable {
        /// The only (empty) state.
        public init() {}
    }

    /// The empty state.
    public func saveState() -> State { State() }

    /// Accepts the empty state; there is nothing to check or to change.
    public func restoreState(_ state: State) throws(DeviceStateError) {}
}
