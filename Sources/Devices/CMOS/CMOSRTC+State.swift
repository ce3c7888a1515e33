import DeviceModel

extension CMOSRTC: StatefulDevice {
    /// The CMOS's saved state: its 128 bytes and the index port.
    ///
    /// There is no time to save: the time registers always show the host's wall clock
    /// (guest writes to them are ignored, as in Cloud Hypervisor), so after a restore on the
    /// same host the guest reads the right time with no offset carried over. The bytes keep
    /// register A's rate bits, register B's modes, the alarm registers (`0x01`, `0x03`,
    /// `0x05`), the memory-size bytes and the rest of the RAM as the guest left them; the
    /// slots of the live registers (time, century, C, D) are kept at 0. The reset count is
    /// the VMM's statistic, not device state.
    public struct State: Codable, Equatable, Sendable {
        /// The 128 CMOS bytes, index 0 first.
        public var memory: [UInt8]
        /// The last byte written to port `0x70`, NMI-disable bit (bit 7) included.
        public var index: UInt8

        /// A state with `memory` and `index`.
        public init(memory: [UInt8], index: UInt8) {
            self.memory = memory
            self.index = index
        }

        /// Why no CMOS of this device could have held this state, or `nil` when it could.
        func problem() -> String? {
            guard memory.count == CMOSRTC.size else {
                return "memory holds \(memory.count) bytes; the CMOS has exactly \(CMOSRTC.size)"
            }
            if memory[Index.registerA] & CMOSRTC.updateInProgress != 0 {
                return "memory[0x0a] (register A) \(hex(memory[Index.registerA])) sets update-in-progress "
                    + "(bit 7), which is live, never stored"
            }
            for slot in CMOSRTC.liveSlots where memory[slot] != 0 {
                return "memory[\(hex(UInt8(slot)))] is \(hex(memory[slot])) but that slot belongs to a live "
                    + "register (time, century, register C or D) and is always 0"
            }
            return nil
        }
    }

    /// The slots whose reads come from the clock or constants, never from memory.
    static let liveSlots = [
        Index.seconds, Index.minutes, Index.hours, Index.weekday, Index.day, Index.month, Index.year,
        Index.century, Index.registerC, Index.registerD,
    ]

    /// The 128 bytes and the index port, taken under the device's lock.
    public func saveState() -> State {
        state.withLock { State(memory: $0.memory, index: $0.rawIndex) }
    }

    /// Replaces the 128 bytes and the index port with `saved`. Refuses, changing nothing,
    /// a memory that is not 128 bytes long or that holds values in the live registers' slots.
    public func restoreState(_ saved: State) throws(DeviceStateError) {
        if let problem = saved.problem() { throw DeviceStateError(device: name, reason: problem) }
        state.withLock { device in
            device.memory = saved.memory
            device.rawIndex = saved.index
        }
    }
}
