/// The PrimeCell identification bytes every AMBA device shows at offsets 0xFE0-0xFFC
/// (peripheral IDs 0-3 then cell IDs 0-3, one per 32-bit register).
enum PrimeCellID {
    /// The offset of the first ID register.
    static let firstOffset: UInt64 = 0xFE0

    /// The ID byte at `offset` for a device whose part number's low byte is `part`, or nil
    /// outside the ID registers.
    static func byte(at offset: UInt64, part: UInt8) -> UInt32? {
        guard offset >= firstOffset, offset < 0x1000 else { return nil }
        let bytes: [UInt8] = [part, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1]
        return UInt32(bytes[Int((offset - firstOffset) >> 2)])
    }
}

/// What a PL011 register access or input asks the owner to do once the state changed.
public struct PL011Effects: Hashable, Sendable {
    /// A byte the guest wrote to UARTDR, for the output backend.
    public var transmitted: UInt8?
    /// Whether an interrupt edge must be delivered.
    public var interrupt = false
}

/// The ARM PrimeCell UART (PL011) registers and their rules, without any I/O: Cloud
/// Hypervisor's `uart_pl011.rs` behaviour, as one value a snapshot can hold.
///
/// The transmitter is always empty (bytes leave at once). The receive FIFO holds 16 bytes
/// with the FIFOs enabled (UARTLCR_H.FEN) and 1 without; the RX interrupt is raised for the
/// first byte (a trigger level of 1, as Cloud Hypervisor) and cleared when the FIFO is
/// drained. The TX interrupt is raised by every UARTDR write and cleared through UARTICR.
public struct PL011State: Hashable, Sendable, Codable {
    /// Register offsets (bytes from the base).
    public enum Register: UInt64, Sendable, CaseIterable {
        /// UARTDR: receive (read) and transmit (write).
        case data = 0x000
        /// UARTRSR (read) / UARTECR (write: clears the errors).
        case receiveStatus = 0x004
        /// UARTFR: flags (read-only).
        case flags = 0x018
        /// UARTILPR: IrDA low-power counter.
        case irdaLowPower = 0x020
        /// UARTIBRD: integer baud divisor.
        case integerBaudRate = 0x024
        /// UARTFBRD: fractional baud divisor.
        case fractionalBaudRate = 0x028
        /// UARTLCR_H: line control.
        case lineControl = 0x02C
        /// UARTCR: control.
        case control = 0x030
        /// UARTIFLS: FIFO level select.
        case fifoLevelSelect = 0x034
        /// UARTIMSC: interrupt mask set/clear.
        case interruptMask = 0x038
        /// UARTRIS: raw interrupt status (read-only).
        case rawInterruptStatus = 0x03C
        /// UARTMIS: masked interrupt status (read-only).
        case maskedInterruptStatus = 0x040
        /// UARTICR: interrupt clear (write-only).
        case interruptClear = 0x044
        /// UARTDMACR: DMA control (DMA is not emulated).
        case dmaControl = 0x048
        /// Cloud Hypervisor's debug register (boot progress codes), at 0xF00.
        case debug = 0xF00
    }

    /// UARTFR bits.
    public enum Flag {
        /// Receive FIFO empty.
        public static let receiveEmpty: UInt32 = 0x10
        /// Transmit FIFO full.
        public static let transmitFull: UInt32 = 0x20
        /// Receive FIFO full.
        public static let receiveFull: UInt32 = 0x40
        /// Transmit FIFO empty.
        public static let transmitEmpty: UInt32 = 0x80
    }

    /// Interrupt bits of UARTIMSC/UARTRIS/UARTMIS/UARTICR.
    public enum Interrupt {
        /// Receive.
        public static let receive: UInt32 = 0x10
        /// Transmit.
        public static let transmit: UInt32 = 0x20
    }

    /// UARTLCR_H's FIFO enable bit.
    static let fifoEnable: UInt32 = 0x10
    /// Receive FIFO depth with the FIFOs enabled.
    public static let fifoDepth = 16

    /// UARTFR (reset: transmit and receive FIFOs empty).
    public var flags: UInt32 = Flag.transmitEmpty | Flag.receiveEmpty
    /// UARTLCR_H.
    public var lineControl: UInt32 = 0
    /// UARTRSR.
    public var receiveStatus: UInt32 = 0
    /// UARTCR (reset: TXE and RXE set).
    public var control: UInt32 = 0x300
    /// UARTDMACR.
    public var dmaControl: UInt32 = 0
    /// The last value written to the debug register.
    public var debug: UInt32 = 0
    /// UARTIMSC.
    public var interruptMask: UInt32 = 0
    /// UARTRIS.
    public var rawInterrupts: UInt32 = 0
    /// Bytes received and not yet read.
    public var receiveFIFO: [UInt8] = []
    /// UARTILPR.
    public var irdaLowPower: UInt32 = 0
    /// UARTIBRD.
    public var integerBaudRate: UInt32 = 0
    /// UARTFBRD.
    public var fractionalBaudRate: UInt32 = 0
    /// UARTIFLS (reset: 1/2 full both ways).
    public var fifoLevelSelect: UInt32 = 0x12

    /// The reset state.
    public init() {}

    /// The JSON names, in snake case as Cloud Hypervisor's serde writes them.
    enum CodingKeys: String, CodingKey {
        case flags
        case lineControl = "line_control"
        case receiveStatus = "receive_status"
        case control
        case dmaControl = "dma_control"
        case debug
        case interruptMask = "interrupt_mask"
        case rawInterrupts = "raw_interrupts"
        case receiveFIFO = "receive_fifo"
        case irdaLowPower = "irda_low_power"
        case integerBaudRate = "integer_baud_rate"
        case fractionalBaudRate = "fractional_baud_rate"
        case fifoLevelSelect = "fifo_level_select"
    }

    /// Why no PL011 could have been in this state, or `nil` when it could.
    func problem() -> String? {
        if receiveFIFO.count > receiveCapacity {
            return "receive_fifo holds \(receiveFIFO.count) bytes, more than the \(receiveCapacity) the FIFO has "
                + "with line_control \(hex(lineControl))"
        }
        let expectedFlags = Flag.transmitEmpty | (receiveFIFO.isEmpty ? Flag.receiveEmpty : 0)
            | (receiveFIFO.count >= receiveCapacity ? Flag.receiveFull : 0)
        if flags != expectedFlags {
            return "flags \(hex(flags)) contradicts the FIFOs (the transmitter is always empty, receive_fifo holds "
                + "\(receiveFIFO.count) of \(receiveCapacity) bytes): expected \(hex(expectedFlags))"
        }
        if interruptMask & ~0x7FF != 0 {
            return "interrupt_mask \(hex(interruptMask)) sets bits above bit 10, which UARTIMSC does not have"
        }
        if rawInterrupts & ~(Interrupt.receive | Interrupt.transmit) != 0 {
            return "raw_interrupts \(hex(rawInterrupts)) sets sources other than receive (0x10) and transmit (0x20), "
                + "the only ones emulated"
        }
        if rawInterrupts & Interrupt.receive != 0, receiveFIFO.isEmpty {
            return "raw_interrupts has the receive interrupt (0x10) raised with an empty receive_fifo"
        }
        return nil
    }

    /// How many bytes the receive FIFO holds now (16 with FEN set, else 1).
    public var receiveCapacity: Int { lineControl & Self.fifoEnable != 0 ? Self.fifoDepth : 1 }

    /// UARTMIS: the raised interrupts the guest enabled.
    public var maskedInterrupts: UInt32 { rawInterrupts & interruptMask }

    /// The baud rate the divisors give from the 24 MHz APB clock, or 0 before they are set.
    public var baudRate: UInt32 {
        let divisor = (integerBaudRate << 6) + fractionalBaudRate
        guard fractionalBaudRate != 0, divisor != 0 else { return 0 }
        return (24_000_000 / divisor) << 2
    }

    /// Reads the 32-bit register at `offset`, applying its read side effects; unknown
    /// offsets read 0.
    public mutating func read(offset: UInt64) -> UInt32 {
        if let id = PrimeCellID.byte(at: offset, part: 0x11) { return id }
        switch Register(rawValue: offset) {
        case .data:
            guard !receiveFIFO.isEmpty else { return 0 }
            let byte = receiveFIFO.removeFirst()
            updateReceiveFlags()
            if receiveFIFO.isEmpty { rawInterrupts &= ~Interrupt.receive }
            return UInt32(byte)
        case .receiveStatus: return receiveStatus
        case .flags: return flags
        case .irdaLowPower: return irdaLowPower
        case .integerBaudRate: return integerBaudRate
        case .fractionalBaudRate: return fractionalBaudRate
        case .lineControl: return lineControl
        case .control: return control
        case .fifoLevelSelect: return fifoLevelSelect
        case .interruptMask: return interruptMask
        case .rawInterruptStatus: return rawInterrupts
        case .maskedInterruptStatus: return maskedInterrupts
        case .dmaControl: return dmaControl
        case .debug: return debug
        case .interruptClear, nil: return 0
        }
    }

    /// Writes `value` to the register at `offset` and reports what must follow; writes to
    /// read-only or unknown offsets are ignored.
    public mutating func write(offset: UInt64, value: UInt32) -> PL011Effects {
        var effects = PL011Effects()
        let before = maskedInterrupts
        switch Register(rawValue: offset) {
        case .data:
            effects.transmitted = UInt8(truncatingIfNeeded: value)
            rawInterrupts |= Interrupt.transmit
            // Each transmitted byte is a new TX event: an edge when TX is enabled.
            effects.interrupt = interruptMask & Interrupt.transmit != 0
            return effects
        case .receiveStatus: receiveStatus = 0
        case .irdaLowPower: irdaLowPower = value
        case .integerBaudRate: integerBaudRate = value
        case .fractionalBaudRate: fractionalBaudRate = value
        case .lineControl:
            if (lineControl ^ value) & Self.fifoEnable != 0 {
                // Turning the FIFOs on or off flushes them.
                receiveFIFO.removeAll()
                rawInterrupts &= ~Interrupt.receive
            }
            lineControl = value
            updateReceiveFlags()
        case .control: control = value
        case .fifoLevelSelect: fifoLevelSelect = value
        case .interruptMask: interruptMask = value & 0x7FF
        case .interruptClear: rawInterrupts &= ~value
        case .dmaControl: dmaControl = value
        case .debug: debug = value
        case .flags, .rawInterruptStatus, .maskedInterruptStatus, nil: break
        }
        // Unmasking a raised source is an edge too.
        effects.interrupt = maskedInterrupts & ~before != 0
        return effects
    }

    /// Takes bytes from the front of `bytes` until the receive FIFO is full.
    ///
    /// - Returns: how many bytes were accepted and whether an interrupt edge is due.
    public mutating func receive(_ bytes: some Collection<UInt8>) -> (accepted: Int, interrupt: Bool) {
        let room = max(0, receiveCapacity - receiveFIFO.count)
        let taken = Array(bytes.prefix(room))
        guard !taken.isEmpty else { return (0, false) }
        receiveFIFO += taken
        updateReceiveFlags()
        rawInterrupts |= Interrupt.receive
        return (taken.count, interruptMask & Interrupt.receive != 0)
    }

    private mutating func updateReceiveFlags() {
        flags &= ~(Flag.receiveEmpty | Flag.receiveFull)
        if receiveFIFO.isEmpty { flags |= Flag.receiveEmpty }
        if receiveFIFO.count >= receiveCapacity { flags |= Flag.receiveFull }
    }
}
