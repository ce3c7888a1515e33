import DeviceModel
import Synchronization

/// The ARM PL011 UART of an arm64 VM (Cloud Hypervisor's `ttyAMA0`, `console=ttyAMA0`,
/// `earlycon=pl011,mmio32,0x9000000`), as a passive ``BusDevice`` of 32-bit registers over
/// one 4 KiB page. The registers and their rules live in ``PL011State``.
///
/// Transmitted bytes go to the injected ``SerialOutput``; host input enters through
/// ``enqueueInput(_:)``; interrupts are edges on the injected ``InterruptLine`` (the FDT
/// describes the SPI as edge-rising). Accesses of 1, 2 or 4 bytes are accepted (the value's
/// low bytes, as Cloud Hypervisor); wider ones read 0 and are ignored.
///
/// Thread-safe: the state sits behind a `Mutex`; the output and the line are called with it held.
public final class PL011: BusDevice {
    /// The MMIO size the device decodes.
    public static let mmioSize: UInt64 = 0x1000

    /// The name used in logs and bus errors.
    public let name: String
    private let interrupt: any InterruptLine
    private let output: any SerialOutput
    private let state: Mutex<(registers: PL011State, failures: Int)>

    /// Creates the UART from `state` (the reset state by default, or a snapshot's, which
    /// is not checked here: ``restoreState(_:)`` checks it).
    public init(name: String = "serial", interrupt: any InterruptLine,
                output: any SerialOutput = DiscardingSerialOutput(), state: PL011State = PL011State()) {
        self.name = name
        self.interrupt = interrupt
        self.output = output
        self.state = Mutex((state, 0))
    }

    /// A copy of the registers (for a snapshot).
    public var currentState: PL011State { state.withLock { $0.registers } }

    /// How many interrupt deliveries failed (the line's `trigger()` threw).
    public var interruptFailures: Int { state.withLock { $0.failures } }

    /// Reads the register at `offset`.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard size >= 1, size <= 4 else { return 0 }
        let value = state.withLock { $0.registers.read(offset: offset) }
        return primeCellReadValue(value, size: size)
    }

    /// Writes the low `size` bytes of `value` to the register at `offset`.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard size >= 1, size <= 4 else { return }
        state.withLock { device in
            let effects = device.registers.write(offset: offset, value: UInt32(truncatingIfNeeded: value))
            if let byte = effects.transmitted { output.write(byte) }
            if effects.interrupt { deliver(&device.failures) }
        }
    }

    /// Queues host bytes for the guest; returns how many fit in the receive FIFO.
    @discardableResult
    public func enqueueInput(_ bytes: some Collection<UInt8>) -> Int {
        state.withLock { device in
            let (accepted, raise) = device.registers.receive(bytes)
            if raise { deliver(&device.failures) }
            return accepted
        }
    }

    /// How many more host bytes ``enqueueInput(_:)`` would accept now.
    public var receiveSpace: Int {
        state.withLock { max(0, $0.registers.receiveCapacity - $0.registers.receiveFIFO.count) }
    }

    private func deliver(_ failures: inout Int) {
        do { try interrupt.trigger() } catch { failures += 1 }
    }
}

extension PL011: StatefulDevice {
    /// The PL011's saved state is its register value, ``PL011State``.
    public typealias State = PL011State

    /// The registers and received bytes, taken under the UART's lock (as ``currentState``).
    public func saveState() -> PL011State { currentState }

    /// Replaces the registers and received bytes with `saved`, then delivers an interrupt
    /// edge when `saved` has an enabled interrupt raised (UARTMIS non-zero). Refuses,
    /// changing nothing, a state no PL011 could be in: a receive FIFO longer than UARTLCR_H
    /// allows, flags that contradict the FIFO, unknown mask or raw interrupt bits, a receive
    /// interrupt with nothing received.
    public func restoreState(_ saved: PL011State) throws(DeviceStateError) {
        if let problem = saved.problem() { throw DeviceStateError(device: name, reason: problem) }
        state.withLock { device in
            device.registers = saved
            if saved.maskedInterrupts != 0 { deliver(&device.failures) }
        }
    }
}
