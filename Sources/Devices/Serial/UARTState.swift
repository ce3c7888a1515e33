/// Bit assignments of the 16550A registers (National Semiconductor PC16550D datasheet).
enum UARTBits {
    // Interrupt Enable Register.
    static let ierReceivedData: UInt8 = 0x01
    static let ierTHREmpty: UInt8 = 0x02
    static let ierLineStatus: UInt8 = 0x04
    static let ierModemStatus: UInt8 = 0x08
    /// Bits 4-7 of IER always read as zero on a 16550A.
    static let ierWritable: UInt8 = 0x0f

    // Interrupt Identification Register.
    static let iirNoInterrupt: UInt8 = 0x01
    static let iirModemStatus: UInt8 = 0x00
    static let iirTHREmpty: UInt8 = 0x02
    static let iirReceivedData: UInt8 = 0x04
    static let iirLineStatus: UInt8 = 0x06
    static let iirFIFOsEnabled: UInt8 = 0xc0

    // FIFO Control Register.
    static let fcrEnable: UInt8 = 0x01
    static let fcrClearReceive: UInt8 = 0x02
    static let fcrTriggerLevel: UInt8 = 0xc0

    // Line Control Register.
    static let lcrDivisorLatch: UInt8 = 0x80

    // Modem Control Register.
    static let mcrDTR: UInt8 = 0x01
    static let mcrRTS: UInt8 = 0x02
    static let mcrOut1: UInt8 = 0x04
    static let mcrOut2: UInt8 = 0x08
    static let mcrLoopback: UInt8 = 0x10
    /// Bits 5-7 of MCR always read as zero on a 16550A.
    static let mcrWritable: UInt8 = 0x1f

    // Line Status Register.
    static let lsrDataReady: UInt8 = 0x01
    static let lsrOverrun: UInt8 = 0x02
    static let lsrTHREmpty: UInt8 = 0x20
    static let lsrTransmitterEmpty: UInt8 = 0x40

    // Modem Status Register.
    static let msrDeltaCTS: UInt8 = 0x01
    static let msrDeltaDSR: UInt8 = 0x02
    static let msrTrailingEdgeRI: UInt8 = 0x04
    static let msrDeltaDCD: UInt8 = 0x08
    static let msrCTS: UInt8 = 0x10
    static let msrDSR: UInt8 = 0x20
    static let msrRI: UInt8 = 0x40
    static let msrDCD: UInt8 = 0x80
}

/// What one register access asks the device's owner to do once the state has changed.
struct UARTEffects: Sendable {
    /// A byte the guest transmitted, for the output backend.
    var transmitted: UInt8?
    /// Whether an interrupt edge must be delivered.
    var interrupt = false
}

/// The 16550A's registers and the rules tying them together, without any I/O.
///
/// Interrupt sources are derived from state rather than latched bits, except THR-empty,
/// which the datasheet defines as an event cleared by reading IIR or writing THR.
struct UARTState: Sendable {
    /// Interrupt Enable Register (bits 0-3).
    var interruptEnable: UInt8 = 0
    /// Line Control Register (8 data bits, no parity, 1 stop bit: the BIOS default).
    var lineControl: UInt8 = 0x03
    /// Modem Control Register (OUT2 set, as Cloud Hypervisor starts it).
    var modemControl: UInt8 = UARTBits.mcrOut2
    /// Scratch Register.
    var scratch: UInt8 = 0
    /// Divisor latch (12: 9600 baud from the 1.8432 MHz clock).
    var divisor: UInt16 = 12
    /// FIFO Control Register as last programmed (enable and trigger-level bits only).
    var fifoControl: UInt8 = 0
    /// Whether a received byte was lost because the FIFO was full (LSR bit 1).
    var overrun = false
    /// Modem status change bits (MSR bits 0-3), cleared by reading MSR.
    var modemStatusDeltas: UInt8 = 0
    /// The THR-empty event, waiting to be reported through IIR.
    var thrEmptyPending = false
    /// Bytes received and not yet read by the guest.
    var receiveFIFO = ReceiveFIFO()
    /// Whether the guest read RBR since the last character-timeout check (not saved in a
    /// snapshot: a restored UART simply counts as not yet read).
    var readSinceTimeoutCheck = false

    var divisorLatchSelected: Bool { lineControl & UARTBits.lcrDivisorLatch != 0 }
    var loopback: Bool { modemControl & UARTBits.mcrLoopback != 0 }
    var fifosEnabled: Bool { fifoControl & UARTBits.fcrEnable != 0 }

    /// The highest-priority pending, enabled interrupt as its IIR code, or `nil`.
    ///
    /// Priority (highest first): line status, received data, THR empty, modem status.
    var pendingInterrupt: UInt8? {
        if interruptEnable & UARTBits.ierLineStatus != 0, overrun {
            return UARTBits.iirLineStatus
        }
        if interruptEnable & UARTBits.ierReceivedData != 0, !receiveFIFO.isEmpty {
            return UARTBits.iirReceivedData
        }
        if interruptEnable & UARTBits.ierTHREmpty != 0, thrEmptyPending {
            return UARTBits.iirTHREmpty
        }
        if interruptEnable & UARTBits.ierModemStatus != 0, modemStatusDeltas != 0 {
            return UARTBits.iirModemStatus
        }
        return nil
    }

    /// The modem input lines (MSR bits 4-7): in loopback they mirror the MCR outputs
    /// (DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD); otherwise a connected, ready line
    /// (DCD, DSR and CTS set), as Cloud Hypervisor reports.
    var modemInputs: UInt8 {
        guard loopback else { return UARTBits.msrDCD | UARTBits.msrDSR | UARTBits.msrCTS }
        var lines: UInt8 = 0
        if modemControl & UARTBits.mcrDTR != 0 { lines |= UARTBits.msrDSR }
        if modemControl & UARTBits.mcrRTS != 0 { lines |= UARTBits.msrCTS }
        if modemControl & UARTBits.mcrOut1 != 0 { lines |= UARTBits.msrRI }
        if modemControl & UARTBits.mcrOut2 != 0 { lines |= UARTBits.msrDCD }
        return lines
    }

    /// Line Status Register: data ready, overrun, and an always-empty transmitter
    /// (transmission is instantaneous).
    var lineStatus: UInt8 {
        var status = UARTBits.lsrTHREmpty | UARTBits.lsrTransmitterEmpty
        if !receiveFIFO.isEmpty { status |= UARTBits.lsrDataReady }
        if overrun { status |= UARTBits.lsrOverrun }
        return status
    }

    // MARK: Register reads

    /// Reads the register at `offset` (0-7), applying its read side effects.
    mutating func read(offset: UInt64) -> UInt8 {
        switch offset {
        case 0:
            if divisorLatchSelected { return UInt8(truncatingIfNeeded: divisor) }
            readSinceTimeoutCheck = true
            return receiveFIFO.pop() ?? 0
        case 1:
            if divisorLatchSelected { return UInt8(truncatingIfNeeded: divisor >> 8) }
            return interruptEnable
        case 2:
            return readInterruptIdentification()
        case 3:
            return lineControl
        case 4:
            return modemControl
        case 5:
            // Reading LSR clears the error bits (and with them the line status interrupt).
            let status = lineStatus
            overrun = false
            return status
        case 6:
            // Reading MSR clears the change bits (and with them the modem status interrupt).
            let status = modemInputs | modemStatusDeltas
            modemStatusDeltas = 0
            return status
        case 7:
            return scratch
        default:
            return 0
        }
    }

    /// IIR: the pending source's code (or "none"), with the FIFO bits when FIFOs are
    /// enabled. Reading it acknowledges a THR-empty interrupt when that is the source.
    private mutating func readInterruptIdentification() -> UInt8 {
        let source = pendingInterrupt
        if source == UARTBits.iirTHREmpty { thrEmptyPending = false }
        let fifoBits = fifosEnabled ? UARTBits.iirFIFOsEnabled : 0
        return (source ?? UARTBits.iirNoInterrupt) | fifoBits
    }

    // MARK: Register writes

    /// Writes `value` to the register at `offset` (0-7) and reports what must follow.
    mutating func write(offset: UInt64, value: UInt8) -> UARTEffects {
        var effects = UARTEffects()
        switch offset {
        case 0:
            if divisorLatchSelected {
                divisor = (divisor & 0xff00) | UInt16(value)
            } else {
                effects = transmit(value)
            }
        case 1:
            if divisorLatchSelected {
                divisor = (divisor & 0x00ff) | UInt16(value) << 8
            } else {
                effects.interrupt = writeInterruptEnable(value)
            }
        case 2:
            writeFIFOControl(value)
        case 3:
            lineControl = value
        case 4:
            effects.interrupt = writeModemControl(value)
        case 7:
            scratch = value
        default:
            // LSR and MSR are read-only (writes only serve factory tests); offsets past 7
            // decode nothing.
            break
        }
        return effects
    }

    /// THR: sends `byte` out (or, in loopback, back into the receive FIFO). The
    /// transmitter empties at once, which raises a THR-empty event.
    private mutating func transmit(_ byte: UInt8) -> UARTEffects {
        var effects = UARTEffects()
        if loopback {
            if receiveFIFO.push(byte) {
                effects.interrupt = interruptEnable & UARTBits.ierReceivedData != 0
            } else {
                overrun = true
                effects.interrupt = interruptEnable & UARTBits.ierLineStatus != 0
            }
        } else {
            effects.transmitted = byte
        }
        thrEmptyPending = true
        if interruptEnable & UARTBits.ierTHREmpty != 0 { effects.interrupt = true }
        return effects
    }

    /// IER: stores the enable bits. Enabling a source whose condition already holds
    /// raises it; in particular enabling THR-empty while the transmitter is empty (it
    /// always is) raises a fresh THR-empty event, which Linux's 8250 driver checks for.
    private mutating func writeInterruptEnable(_ value: UInt8) -> Bool {
        let previous = interruptEnable
        interruptEnable = value & UARTBits.ierWritable
        let enabled = interruptEnable & ~previous
        var raise = false
        if enabled & UARTBits.ierTHREmpty != 0 {
            thrEmptyPending = true
            raise = true
        }
        if enabled & UARTBits.ierReceivedData != 0, !receiveFIFO.isEmpty { raise = true }
        if enabled & UARTBits.ierLineStatus != 0, overrun { raise = true }
        if enabled & UARTBits.ierModemStatus != 0, modemStatusDeltas != 0 { raise = true }
        return raise
    }

    /// FCR: turning the FIFOs on or off empties them; "clear receive FIFO" only acts
    /// while the enable bit is written as 1, as the datasheet requires.
    private mutating func writeFIFOControl(_ value: UInt8) {
        let enable = value & UARTBits.fcrEnable != 0
        if enable != fifosEnabled { receiveFIFO.removeAll() }
        if enable, value & UARTBits.fcrClearReceive != 0 { receiveFIFO.removeAll() }
        fifoControl = enable ? value & (UARTBits.fcrEnable | UARTBits.fcrTriggerLevel) : 0
    }

    /// MCR: stores the outputs; in loopback changed outputs show up as modem status
    /// changes, which may raise the modem status interrupt.
    private mutating func writeModemControl(_ value: UInt8) -> Bool {
        let before = modemInputs
        modemControl = value & UARTBits.mcrWritable
        let after = modemInputs
        let changed = before ^ after
        var deltas: UInt8 = 0
        if changed & UARTBits.msrCTS != 0 { deltas |= UARTBits.msrDeltaCTS }
        if changed & UARTBits.msrDSR != 0 { deltas |= UARTBits.msrDeltaDSR }
        if before & UARTBits.msrRI != 0, after & UARTBits.msrRI == 0 { deltas |= UARTBits.msrTrailingEdgeRI }
        if changed & UARTBits.msrDCD != 0 { deltas |= UARTBits.msrDeltaDCD }
        let newDeltas = deltas & ~modemStatusDeltas
        modemStatusDeltas |= deltas
        return newDeltas != 0 && interruptEnable & UARTBits.ierModemStatus != 0
    }

    // MARK: Host input

    /// The 16550's character timeout, checked by the owner every few milliseconds while
    /// bytes wait: bytes that sat in the FIFO since the previous check without the guest
    /// reading any raise the received-data interrupt again (the chip's timeout indication),
    /// so an edge the guest missed (its interrupt pin masked at that moment) is not the end
    /// of its input.
    mutating func checkReceiveTimeout() -> (outcome: ReceiveTimeoutOutcome, interrupt: Bool) {
        defer { readSinceTimeoutCheck = false }
        if receiveFIFO.isEmpty { return (.empty, false) }
        if readSinceTimeoutCheck { return (.draining, false) }
        return (.stale, interruptEnable & UARTBits.ierReceivedData != 0)
    }

    /// Queues host bytes for the guest; returns how many fit and whether to interrupt.
    /// In loopback the receiver listens to the transmitter only, so nothing is accepted.
    mutating func receive(_ bytes: some Collection<UInt8>) -> (accepted: Int, interrupt: Bool) {
        guard !loopback else { return (0, false) }
        var accepted = 0
        for byte in bytes {
            guard receiveFIFO.push(byte) else { break }
            accepted += 1
        }
        return (accepted, accepted > 0 && interruptEnable & UARTBits.ierReceivedData != 0)
    }
}
