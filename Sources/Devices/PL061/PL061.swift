import DeviceModel
import Synchronization

/// The ARM PL061 GPIO controller's registers (8 lines), as one value a snapshot can hold,
/// following Cloud Hypervisor's `gpio_pl061.rs` and the PL061 TRM.
///
/// The data register is addressed through bits 2-9 of the offset (offsets 0x000-0x3FC):
/// those bits mask which lines a read returns and a write changes; writes only change output
/// lines (GPIODIR bit set). Input lines change through ``setInput(line:high:)``; an edge
/// (GPIOIS clear) on a line raises its GPIORIS bit when GPIOIBE is set or the new level
/// matches GPIOIEV; a level (GPIOIS set) raises it while the level matches GPIOIEV.
public struct PL061State: Hashable, Sendable, Codable {
    /// Register offsets (bytes from the base), above the data window.
    public enum Register: UInt64, Sendable, CaseIterable {
        /// GPIODIR: 1 = output.
        case direction = 0x400
        /// GPIOIS: 1 = level-sensitive.
        case interruptSense = 0x404
        /// GPIOIBE: 1 = both edges.
        case interruptBothEdges = 0x408
        /// GPIOIEV: 1 = rising edge / high level.
        case interruptEvent = 0x40C
        /// GPIOIE: interrupt mask (1 = enabled).
        case interruptMask = 0x410
        /// GPIORIS: raw interrupt status (read-only).
        case rawInterruptStatus = 0x414
        /// GPIOMIS: masked interrupt status (read-only).
        case maskedInterruptStatus = 0x418
        /// GPIOIC: interrupt clear (write-only).
        case interruptClear = 0x41C
        /// GPIOAFSEL: hardware (alternate function) control.
        case alternateFunction = 0x420
    }

    /// The number of lines.
    public static let lineCount = 8

    /// The line levels (inputs as driven by the host, outputs as written by the guest).
    public var data: UInt32 = 0
    /// The input levels when interrupts were last evaluated.
    public var previousInputs: UInt32 = 0
    /// GPIODIR.
    public var direction: UInt32 = 0
    /// GPIOIS.
    public var interruptSense: UInt32 = 0
    /// GPIOIBE.
    public var interruptBothEdges: UInt32 = 0
    /// GPIOIEV.
    public var interruptEvent: UInt32 = 0
    /// GPIOIE.
    public var interruptMask: UInt32 = 0
    /// GPIORIS.
    public var rawInterrupts: UInt32 = 0
    /// GPIOAFSEL.
    public var alternateFunction: UInt32 = 0

    /// The reset state: all lines inputs at 0, interrupts masked.
    public init() {}

    /// The JSON names, in snake case as Cloud Hypervisor's serde writes them.
    enum CodingKeys: String, CodingKey {
        case data
        case previousInputs = "previous_inputs"
        case direction
        case interruptSense = "interrupt_sense"
        case interruptBothEdges = "interrupt_both_edges"
        case interruptEvent = "interrupt_event"
        case interruptMask = "interrupt_mask"
        case rawInterrupts = "raw_interrupts"
        case alternateFunction = "alternate_function"
    }

    /// Why no PL061 could have been in this state, or `nil` when it could.
    func problem() -> String? {
        let registers: [(String, UInt32)] = [
            ("data", data), ("previous_inputs", previousInputs), ("direction", direction),
            ("interrupt_sense", interruptSense), ("interrupt_both_edges", interruptBothEdges),
            ("interrupt_event", interruptEvent), ("interrupt_mask", interruptMask),
            ("raw_interrupts", rawInterrupts), ("alternate_function", alternateFunction),
        ]
        for (field, value) in registers where value & ~0xFF != 0 {
            return "\(field) \(hex(value)) sets bits above the \(Self.lineCount) lines"
        }
        let inputs = ~direction & 0xFF
        if (previousInputs ^ data) & inputs != 0 {
            return "previous_inputs \(hex(previousInputs)) differs from data \(hex(data)) on input lines "
                + "(\(hex(inputs))): the controller records every input change as it happens"
        }
        let levelRaised = interruptSense & ~(data ^ interruptEvent) & inputs
        if rawInterrupts & levelRaised != levelRaised {
            return "raw_interrupts \(hex(rawInterrupts)) lacks level-sensitive lines whose level matches "
                + "(\(hex(levelRaised))): a matching level keeps its status raised"
        }
        return nil
    }

    /// GPIOMIS.
    public var maskedInterrupts: UInt32 { rawInterrupts & interruptMask }

    /// Reads the register at `offset`; unknown offsets read 0.
    public func read(offset: UInt64) -> UInt32 {
        if let id = PrimeCellID.byte(at: offset, part: 0x61) { return id }
        if offset < 0x400 { return data & UInt32((offset >> 2) & 0xFF) }
        switch Register(rawValue: offset) {
        case .direction: return direction
        case .interruptSense: return interruptSense
        case .interruptBothEdges: return interruptBothEdges
        case .interruptEvent: return interruptEvent
        case .interruptMask: return interruptMask
        case .rawInterruptStatus: return rawInterrupts
        case .maskedInterruptStatus: return maskedInterrupts
        case .alternateFunction: return alternateFunction
        case .interruptClear, nil: return 0
        }
    }

    /// Writes `value` to the register at `offset`; returns whether an interrupt edge is due
    /// (a masked status bit that was not raised before is raised now).
    public mutating func write(offset: UInt64, value: UInt32) -> Bool {
        let before = maskedInterrupts
        let byte = value & 0xFF
        if offset < 0x400 {
            let mask = UInt32((offset >> 2) & 0xFF) & direction
            data = (data & ~mask) | (byte & mask)
        } else {
            switch Register(rawValue: offset) {
            case .direction: direction = byte
            case .interruptSense: interruptSense = byte
            case .interruptBothEdges: interruptBothEdges = byte
            case .interruptEvent: interruptEvent = byte
            case .interruptMask: interruptMask = byte
            case .interruptClear: rawInterrupts &= ~byte
            case .alternateFunction: alternateFunction = byte
            case .rawInterruptStatus, .maskedInterruptStatus, nil: return false
            }
        }
        evaluate()
        return maskedInterrupts & ~before != 0
    }

    /// Drives input `line` to `high`. Returns whether an interrupt edge is due, or nil when
    /// the line does not exist or the guest made it an output.
    public mutating func setInput(line: Int, high: Bool) -> Bool? {
        guard line >= 0, line < Self.lineCount else { return nil }
        let bit = UInt32(1) << line
        guard direction & bit == 0 else { return nil }
        let before = maskedInterrupts
        data = high ? data | bit : data & ~bit
        evaluate()
        return maskedInterrupts & ~before != 0
    }

    /// Raises interrupt status from input changes (edges) and matching levels.
    private mutating func evaluate() {
        let inputs = ~direction & 0xFF
        let changed = (previousInputs ^ data) & inputs
        let matching = ~(data ^ interruptEvent) & 0xFF
        let edgeLines = changed & ~interruptSense
        rawInterrupts |= edgeLines & (interruptBothEdges | matching)
        rawInterrupts |= interruptSense & matching & inputs
        previousInputs = (previousInputs & ~inputs) | (data & inputs)
    }
}

/// The PL061 GPIO controller of an arm64 VM as a passive ``BusDevice`` over one 4 KiB page,
/// with the power button on line 3 (the device tree's `gpio-keys` node maps it to
/// `KEY_POWER`). Interrupts are edges on the injected ``InterruptLine``.
public final class PL061: BusDevice {
    /// The MMIO size the device decodes.
    public static let mmioSize: UInt64 = 0x1000
    /// The line the power button drives (Cloud Hypervisor's `gpios = <&gpio 3 0>`).
    public static let powerButtonLine = 3

    /// The name used in logs and bus errors.
    public let name: String
    private let interrupt: any InterruptLine
    private let state: Mutex<(registers: PL061State, failures: Int)>

    /// Creates the controller from `state` (the reset state by default, or a snapshot's,
    /// which is not checked here: ``restoreState(_:)`` checks it).
    public init(name: String = "gpio", interrupt: any InterruptLine, state: PL061State = PL061State()) {
        self.name = name
        self.interrupt = interrupt
        self.state = Mutex((state, 0))
    }

    /// A copy of the registers (for a snapshot).
    public var currentState: PL061State { state.withLock { $0.registers } }

    /// How many interrupt deliveries failed (the line's `trigger()` threw).
    public var interruptFailures: Int { state.withLock { $0.failures } }

    /// Reads the register at `offset` (accesses of 1 to 4 bytes; others read 0).
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard size >= 1, size <= 4 else { return 0 }
        let value = state.withLock { $0.registers.read(offset: offset) }
        return primeCellReadValue(value, size: size)
    }

    /// Writes the low `size` bytes of `value` to the register at `offset`.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard size >= 1, size <= 4 else { return }
        state.withLock { device in
            if device.registers.write(offset: offset, value: UInt32(truncatingIfNeeded: value)) { deliver(&device.failures) }
        }
    }

    /// Drives input `line`; returns false when the line does not exist or is an output.
    @discardableResult
    public func setInput(line: Int, high: Bool) -> Bool {
        state.withLock { device in
            guard let raise = device.registers.setInput(line: line, high: high) else { return false }
            if raise { deliver(&device.failures) }
            return true
        }
    }

    /// Presses the power button (drives line 3 high); the guest's gpio-keys reports
    /// `KEY_POWER` down. Cloud Hypervisor's `power-button` leaves it pressed; call
    /// ``releasePowerButton()`` before the next press so the guest sees a new key-down.
    @discardableResult
    public func pressPowerButton() -> Bool { setInput(line: Self.powerButtonLine, high: true) }

    /// Releases the power button (drives line 3 low).
    @discardableResult
    public func releasePowerButton() -> Bool { setInput(line: Self.powerButtonLine, high: false) }

    private func deliver(_ failures: inout Int) {
        do { try interrupt.trigger() } catch { failures += 1 }
    }
}

extension PL061: StatefulDevice {
    /// The PL061's saved state is its register value, ``PL061State``.
    public typealias State = PL061State

    /// The registers and line levels, taken under the controller's lock (as ``currentState``).
    public func saveState() -> PL061State { currentState }

    /// Replaces the registers and line levels with `saved`, then delivers an interrupt edge
    /// when `saved` has an enabled interrupt raised (GPIOMIS non-zero). Refuses, changing
    /// nothing, a state no PL061 could be in: bits above the 8 lines, recorded inputs that
    /// differ from the input levels, a matching level-sensitive line without its status.
    public func restoreState(_ saved: PL061State) throws(DeviceStateError) {
        if let problem = saved.problem() { throw DeviceStateError(device: name, reason: problem) }
        state.withLock { device in
            device.registers = saved
            if saved.maskedInterrupts != 0 { deliver(&device.failures) }
        }
    }
}
