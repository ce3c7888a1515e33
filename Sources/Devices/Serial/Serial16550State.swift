import DeviceModel

extension Serial16550 {
    /// Everything a 16550A keeps that the guest can observe, for snapshot and restore (the
    /// counterpart of vm-superio's `SerialState`): the registers, the pending THR-empty
    /// event, the modem status changes, the overrun flag and the received bytes not yet
    /// read. The interrupt line and the output are not part of it: the VMM builds them again.
    public struct State: Codable, Equatable, Sendable {
        /// The divisor latch (DLM in the high byte, DLL in the low byte).
        public var divisor: UInt16
        /// IER (bits 0-3; bits 4-7 read as zero on a 16550A).
        public var interruptEnable: UInt8
        /// LCR.
        public var lineControl: UInt8
        /// MCR (bits 0-4; bits 5-7 read as zero).
        public var modemControl: UInt8
        /// SCR.
        public var scratch: UInt8
        /// FCR as last programmed: 0 (FIFOs off), or the enable bit with the trigger-level bits.
        public var fifoControl: UInt8
        /// Whether a received byte was lost (LSR bit 1), until the guest reads LSR.
        public var overrun: Bool
        /// MSR bits 0-3 (delta CTS, delta DSR, trailing edge RI, delta DCD), until the guest reads MSR.
        public var modemStatusDeltas: UInt8
        /// Whether a THR-empty interrupt event waits to be reported through IIR.
        public var thrEmptyPending: Bool
        /// The received bytes the guest has not read, oldest first (at most 64).
        public var receiveFIFO: [UInt8]

        /// The state of a UART just created: 8N1 at 9600 baud, interrupts off, FIFOs off.
        public init() {
            self.init(UARTState())
        }

        init(_ registers: UARTState) {
            divisor = registers.divisor
            interruptEnable = registers.interruptEnable
            lineControl = registers.lineControl
            modemControl = registers.modemControl
            scratch = registers.scratch
            fifoControl = registers.fifoControl
            overrun = registers.overrun
            modemStatusDeltas = registers.modemStatusDeltas
            thrEmptyPending = registers.thrEmptyPending
            receiveFIFO = registers.receiveFIFO.contents
        }

        /// The JSON names, in snake case as Cloud Hypervisor's serde writes them.
        enum CodingKeys: String, CodingKey {
            case divisor
            case interruptEnable = "interrupt_enable"
            case lineControl = "line_control"
            case modemControl = "modem_control"
            case scratch
            case fifoControl = "fifo_control"
            case overrun
            case modemStatusDeltas = "modem_status_deltas"
            case thrEmptyPending = "thr_empty_pending"
            case receiveFIFO = "receive_fifo"
        }

        /// Why no 16550A could have been in this state, or `nil` when it could.
        func problem() -> String? {
            if interruptEnable & ~UARTBits.ierWritable != 0 {
                return "interrupt_enable \(hex(interruptEnable)) sets bits 4-7, which a 16550A keeps at zero"
            }
            if modemControl & ~UARTBits.mcrWritable != 0 {
                return "modem_control \(hex(modemControl)) sets bits 5-7, which a 16550A keeps at zero"
            }
            let fifoBits = UARTBits.fcrEnable | UARTBits.fcrTriggerLevel
            if fifoControl != 0, fifoControl & UARTBits.fcrEnable == 0 || fifoControl & ~fifoBits != 0 {
                return "fifo_control \(hex(fifoControl)) is neither 0 nor the enable bit with trigger-level bits (0x01 | 0xc0)"
            }
            if modemStatusDeltas & 0xf0 != 0 {
                return "modem_status_deltas \(hex(modemStatusDeltas)) sets bits 4-7, which are modem lines, not changes"
            }
            if receiveFIFO.count > ReceiveFIFO.capacity {
                return "receive_fifo holds \(receiveFIFO.count) bytes, more than the \(ReceiveFIFO.capacity) the FIFO has"
            }
            return nil
        }

        /// The registers this state describes (call ``problem()`` first).
        var registers: UARTState {
            var registers = UARTState()
            registers.divisor = divisor
            registers.interruptEnable = interruptEnable
            registers.lineControl = lineControl
            registers.modemControl = modemControl
            registers.scratch = scratch
            registers.fifoControl = fifoControl
            registers.overrun = overrun
            registers.modemStatusDeltas = modemStatusDeltas
            registers.thrEmptyPending = thrEmptyPending
            registers.receiveFIFO = ReceiveFIFO(contents: receiveFIFO)
            return registers
        }
    }
}

extension Serial16550: StatefulDevice {
    /// The registers and received bytes, taken under the UART's lock.
    public func saveState() -> State {
        state.withLock { State($0.registers) }
    }

    /// Replaces the registers and received bytes with `saved`, then delivers an interrupt
    /// edge when `saved` has an enabled condition pending (so a guest snapshotted between
    /// the event and its handler still gets it). Refuses, changing nothing, a state no
    /// 16550A could be in (bits that read as zero set, a FIFO longer than 64 bytes...).
    public func restoreState(_ saved: State) throws(DeviceStateError) {
        if let problem = saved.problem() { throw DeviceStateError(device: name, reason: problem) }
        state.withLock { device in
            device.registers = saved.registers
            if device.registers.pendingInterrupt != nil { deliverInterrupt(&device) }
        }
    }
}

/// `value` as `0x` and two hex digits, for error messages.
func hex(_ value: UInt8) -> String {
    let digits = String(value, radix: 16)
    return "0x" + (digits.count < 2 ? "0" : "") + digits
}

/// `value` as `0x` and hex digits, for error messages.
func hex(_ value: UInt32) -> String { "0x" + String(value, radix: 16) }
