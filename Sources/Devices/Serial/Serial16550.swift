import DeviceModel
import Synchronization

/// Where a UART's transmitted bytes go: a terminal, a file, a socket, a log buffer.
///
/// Called on the vCPU thread that wrote the byte, while the UART's lock is held (so
/// bytes from several vCPUs keep their order): never call back into the UART from here.
public protocol SerialOutput: Sendable {
    /// Takes one byte the guest wrote to the transmit holding register.
    func write(_ byte: UInt8)
}

/// A ``SerialOutput`` that drops every byte: the UART with nothing attached
/// (Cloud Hypervisor's `--serial off` / `null`).
public struct DiscardingSerialOutput: SerialOutput {
    /// Creates the discarding output.
    public init() {}

    /// Drops `byte`.
    public func write(_ byte: UInt8) {}
}

/// A 16550A UART, the PC's COM port, as a passive ``BusDevice`` of 8 byte-wide registers.
///
/// Decoded registers (offsets from the base, usually `0x3f8` for COM1 on IRQ 4):
///
/// | offset | read | write |
/// |---|---|---|
/// | 0 | RBR (receive buffer), or DLL when LCR.DLAB = 1 | THR (transmit), or DLL |
/// | 1 | IER (interrupt enable), or DLM when LCR.DLAB = 1 | IER, or DLM |
/// | 2 | IIR (interrupt identification) | FCR (FIFO control) |
/// | 3 | LCR (line control) | LCR |
/// | 4 | MCR (modem control) | MCR |
/// | 5 | LSR (line status) | ignored |
/// | 6 | MSR (modem status) | ignored |
/// | 7 | SCR (scratch) | SCR |
///
/// Transmitted bytes go straight to the injected ``SerialOutput``: the transmitter is
/// always empty (LSR.THRE and LSR.TEMT stay set). Host input enters through
/// ``enqueueInput(_:)`` into a 64-byte receive FIFO that never grows. Interrupts are
/// reported in priority order line status (overrun) > received data > THR empty >
/// modem status, and delivered as edges on the injected ``InterruptLine`` (Cloud
/// Hypervisor binds the line to an irqfd): one edge each time an enabled condition
/// arises. Accesses wider than one byte read 0 and are ignored on write, as in Cloud
/// Hypervisor. Line settings (divisor, LCR) are stored but do not pace transmission.
///
/// Thread-safe: registers sit behind a `Mutex`; the output and the interrupt line are
/// called with it held.
public final class Serial16550: BusDevice {
    /// The register offsets of a 16550A, for embedders and tests.
    public enum Register: UInt64, Sendable, CaseIterable {
        /// RBR on read, THR on write; DLL while LCR.DLAB is set.
        case data = 0
        /// IER; DLM while LCR.DLAB is set.
        case interruptEnable = 1
        /// IIR on read, FCR on write.
        case interruptIdentification = 2
        /// LCR.
        case lineControl = 3
        /// MCR.
        case modemControl = 4
        /// LSR.
        case lineStatus = 5
        /// MSR.
        case modemStatus = 6
        /// SCR.
        case scratch = 7
    }

    /// COM1's first I/O port.
    public static let com1Base: UInt64 = 0x3f8
    /// COM1's legacy IRQ (IOAPIC pin / GSI).
    public static let com1IRQ: UInt32 = 4
    /// How many consecutive ports a 16550A decodes.
    public static let registerCount: UInt64 = 8
    /// How many received bytes the UART holds before ``enqueueInput(_:)`` refuses more.
    public static let receiveFIFOCapacity = ReceiveFIFO.capacity

    /// The name used in logs and bus errors.
    public let name: String
    private let interrupt: any InterruptLine
    private let output: any SerialOutput
    let state = Mutex(SerialDeviceState())

    /// Creates a UART in its reset state (8N1 at 9600 baud, interrupts disabled, FIFOs off).
    ///
    /// - Parameters:
    ///   - name: the name in logs and bus errors.
    ///   - interrupt: the line raised for each interrupt event (an irqfd in the VMM).
    ///   - output: where transmitted bytes go.
    public init(
        name: String = "serial", interrupt: any InterruptLine,
        output: any SerialOutput = DiscardingSerialOutput()
    ) {
        self.name = name
        self.interrupt = interrupt
        self.output = output
    }

    /// Reads the byte-wide register at `offset`; other widths and offsets read 0.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard size == 1 else { return 0 }
        return UInt64(state.withLock { $0.registers.read(offset: offset) })
    }

    /// Writes the low byte of `value` to the register at `offset`; other widths are ignored.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard size == 1 else { return }
        state.withLock { device in
            let effects = device.registers.write(offset: offset, value: UInt8(truncatingIfNeeded: value))
            if let byte = effects.transmitted { output.write(byte) }
            if effects.interrupt { deliverInterrupt(&device) }
        }
    }

    /// Queues bytes from the host (a terminal, a socket) for the guest to read.
    ///
    /// Takes bytes from the front of `bytes` until the receive FIFO is full and raises
    /// the received-data interrupt if the guest enabled it. Nothing is accepted while the
    /// guest has the UART in loopback mode. The caller keeps what was refused and offers
    /// it again later (``receiveSpace`` says how much fits).
    ///
    /// - Returns: how many bytes were accepted, from 0 to `bytes.count`.
    @discardableResult
    public func enqueueInput(_ bytes: some Collection<UInt8>) -> Int {
        state.withLock { device in
            let (accepted, raise) = device.registers.receive(bytes)
            if raise { deliverInterrupt(&device) }
            return accepted
        }
    }

    /// The 16550's character timeout: the owner calls this every few milliseconds while
    /// host bytes wait in the receive FIFO. Bytes the guest did not touch since the previous
    /// call raise the received-data interrupt again (if enabled), as the chip's timeout
    /// indication does, so a guest that missed an edge still reads its input.
    ///
    /// - Returns: whether the FIFO is empty, being drained, or untouched since the last call.
    @discardableResult
    public func checkReceiveTimeout() -> ReceiveTimeoutOutcome {
        state.withLock { device in
            let (outcome, raise) = device.registers.checkReceiveTimeout()
            if raise { deliverInterrupt(&device) }
            return outcome
        }
    }

    /// How many more host bytes ``enqueueInput(_:)`` would accept now.
    public var receiveSpace: Int {
        state.withLock { $0.registers.loopback ? 0 : $0.registers.receiveFIFO.freeSpace }
    }

    /// Whether a byte written to the transmit register may reach the UART late without the
    /// guest telling the difference before its next exit: the THR-empty interrupt is off and
    /// the UART is not looped back (where a written byte becomes received data). A VMM may
    /// then let such writes wait in the hypervisor's coalesced ring (the guest reads LSR,
    /// which exits, before each byte it writes).
    public var transmitMayWait: Bool {
        state.withLock { $0.registers.interruptEnable & UARTBits.ierTHREmpty == 0 && !$0.registers.loopback }
    }

    /// Whether an enabled interrupt condition is pending (what IIR bit 0 would report,
    /// inverted): the level a level-triggered interrupt line would carry.
    public var interruptPending: Bool {
        state.withLock { $0.registers.pendingInterrupt != nil }
    }

    /// How many interrupt deliveries failed (the line's `trigger()` threw).
    public var interruptFailures: Int {
        state.withLock { $0.interruptFailures }
    }

    /// The error of the latest failed interrupt delivery, if any.
    public var lastInterruptError: (any Error)? {
        state.withLock { $0.lastInterruptError }
    }

    /// Triggers the interrupt line, keeping count of failures instead of throwing into
    /// the vCPU loop (a lost edge is logged by the VMM, not fatal to the guest).
    func deliverInterrupt(_ device: inout SerialDeviceState) {
        do {
            try interrupt.trigger()
        } catch {
            device.interruptFailures += 1
            device.lastInterruptError = error
        }
    }
}

/// What a UART's character-timeout check found in its receive FIFO.
public enum ReceiveTimeoutOutcome: Sendable, Equatable {
    /// No byte waits: nothing to check until more input arrives.
    case empty
    /// Bytes wait and the guest read some since the previous check.
    case draining
    /// Bytes wait untouched since the previous check (the interrupt was raised again if the
    /// guest enabled it).
    case stale
}

/// Everything the UART's lock protects.
struct SerialDeviceState: Sendable {
    var registers = UARTState()
    var interruptFailures = 0
    var lastInterruptError: (any Error)?
}
