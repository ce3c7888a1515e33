import Hypervisor
import Testing

/// The backend-neutral types, with no KVM needed.
@Suite("Hypervisor types")
struct HypervisorUnitTests {
    @Test("ExitData reads and writes little-endian values in place")
    func exitData() {
        var storage = [UInt8](repeating: 0, count: 16)
        storage.withUnsafeMutableBytes { raw in
            let data = ExitData(storage: raw.baseAddress!, size: 4)
            data.set(0x1122_3344_5566)
            #expect(data.value == 0x3344_5566, "truncated to the access width")
            #expect(data.bytes == [0x66, 0x55, 0x44, 0x33])
            let repeated = ExitData(storage: raw.baseAddress!, size: 2, count: 3)
            repeated.setBytes([1, 2, 3, 4, 5])
            #expect(repeated.value(at: 0) == 0x0201 && repeated.value(at: 1) == 0x0403 && repeated.value(at: 2) == 0x0005)
            repeated.set(0xAABB, at: 2)
            #expect(repeated.bytes == [1, 2, 3, 4, 0xBB, 0xAA])
        }
    }

    @Test("The x86 legacy routes cover the PIC (without the cascade) and 24 IOAPIC pins")
    func legacyRoutes() {
        let routes = InterruptRoute.x86LegacyRoutes()
        #expect(routes.count == 15 + 24)
        #expect(!routes.contains(.irqchip(gsi: 2, chip: .picMaster, pin: 2)))
        #expect(routes.contains(.irqchip(gsi: 9, chip: .picSlave, pin: 1)))
        #expect(routes.contains(.irqchip(gsi: 23, chip: .ioapic, pin: 23)))
        #expect(InterruptRoute.msi(gsi: 40, address: 0xFEE0_0000, data: 0x30).gsi == 40)
    }

    @Test("Memory slots overlap exactly when they share a byte, including at the top of memory")
    func slotOverlap() {
        let host = UnsafeMutableRawPointer(bitPattern: 0x1000)!
        let a = MemorySlot(slot: 0, guestAddress: 0, size: 0x1000, hostAddress: host)
        let b = MemorySlot(slot: 1, guestAddress: 0x1000, size: 0x1000, hostAddress: host)
        let c = MemorySlot(slot: 2, guestAddress: 0xFFF, size: 0x2, hostAddress: host)
        let top = MemorySlot(slot: 3, guestAddress: UInt64.max - 0xFFF, size: 0x1000, hostAddress: host)
        let belowTop = MemorySlot(slot: 4, guestAddress: UInt64.max - 0x1FFF, size: 0x1000, hostAddress: host)
        #expect(!a.overlaps(b) && !b.overlaps(a))
        #expect(a.overlaps(c) && c.overlaps(b))
        #expect(!top.overlaps(belowTop) && top.overlaps(top))
    }

    @Test("LAPIC registers are 32-bit little-endian words in the page")
    func lapicRegisters() {
        var lapic = LAPICState()
        lapic.setRegister(at: LAPICState.lint0Register, 0x0000_0700)
        #expect(lapic.registers[0x350] == 0x00 && lapic.registers[0x351] == 0x07)
        #expect(lapic.register(at: LAPICState.lint0Register) == 0x700)
    }

    @Test("Errors describe themselves")
    func errorText() {
        #expect(HypervisorError.unsupportedAPIVersion(11).description.contains("version 12"))
        #expect(HypervisorError.missingCapability(name: "KVM_CAP_IRQFD", number: 32).description.contains("KVM_CAP_IRQFD"))
        #expect(InternalError(suberror: 1, data: [0x10]).description == "emulation failure [0x10]")
        #expect(MPState.halted.description == "halted")
    }
}
