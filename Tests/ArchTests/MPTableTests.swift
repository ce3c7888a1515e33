import Testing
import GuestMemory
@testable import Arch

@Suite("MP table")
struct MPTableTests {
    func byteSum(_ bytes: some Sequence<UInt8>) -> UInt8 { bytes.reduce(0) { $0 &+ $1 } }

    @Test func checksumsAndHeader() throws {
        let memory = try makeRAM(1 << 20)
        try MPTable(cpuCount: 4).write(to: memory)
        let floating = try memory.readBytes(count: 16, at: GuestAddress(0x9FC00))
        #expect(Array(floating[0..<4]) == Array("_MP_".utf8))
        #expect(floating.get(UInt32.self, at: 4) == 0x9FC10)
        #expect(floating[8] == 1 && floating[9] == 4)
        #expect(byteSum(floating) == 0)

        let length = Int(try read(memory, UInt16.self, at: 0x9FC10 + 4))
        #expect(length == 44 + 4 * 20 + 8 + 8 + 16 * 8 + 2 * 8)
        let table = try memory.readBytes(count: length, at: GuestAddress(0x9FC10))
        #expect(Array(table[0..<4]) == Array("PCMP".utf8))
        #expect(table[6] == 4)
        #expect(byteSum(table) == 0)
        #expect(Array(table[8..<16]) == Array("CLOUDHV ".utf8))
        #expect(table.get(UInt16.self, at: 34) == 4 + 1 + 1 + 16 + 2)
        #expect(table.get(UInt32.self, at: 36) == 0xFEE0_0000)
    }

    @Test func entriesInOrder() throws {
        let bytes = try MPTable(cpuCount: 2).encode(at: GuestAddress(0x9FC00))
        var offset = 60
        var types: [UInt8] = []
        while offset < bytes.count {
            types.append(bytes[offset])
            offset += bytes[offset] == 0 ? 20 : 8
        }
        #expect(offset == bytes.count)
        #expect(types == [0, 0, 1, 2] + Array(repeating: 3, count: 16) + [4, 4])
        // Processors: APIC IDs 0 and 1, version 0x14, enabled, BSP only on the first.
        #expect(Array(bytes[60..<64]) == [0, 0, 0x14, 3])
        #expect(Array(bytes[80..<84]) == [0, 1, 0x14, 1])
        #expect(bytes.get(UInt32.self, at: 68) == 0x201)
        // Bus, then the IOAPIC with ID = number of CPUs, version 0x11, at 0xFEC00000.
        #expect(Array(bytes[102..<108]) == Array("ISA   ".utf8))
        #expect(Array(bytes[108..<112]) == [2, 2, 0x11, 1])
        #expect(bytes.get(UInt32.self, at: 112) == 0xFEC0_0000)
        // ISA IRQ 9 to IOAPIC pin 9.
        let irq9 = 116 + 9 * 8
        #expect(Array(bytes[irq9..<(irq9 + 8)]) == [3, 0, 0, 0, 0, 9, 2, 9])
        // ExtINT on LINT0 of APIC 0, NMI on LINT1 of all.
        #expect(Array(bytes[244..<252]) == [4, 3, 0, 0, 0, 0, 0, 0])
        #expect(Array(bytes[252..<260]) == [4, 1, 0, 0, 0, 0, 0xFF, 1])
    }

    @Test func sparseAPICIDsMoveTheIOAPIC() throws {
        let table = try MPTable(cpuCount: 6, topology: CPUTopology(threadsPerCore: 3, coresPerDie: 2))
        #expect(table.apicIDs == [0, 1, 2, 4, 5, 6])
        #expect(table.ioapicID == 7)
        #expect(try MPTable(cpuCount: 6).ioapicID == 6)
    }

    @Test func sizeLimitsAndCPUCounts() throws {
        let memory = try makeRAM(1 << 20)
        try MPTable(cpuCount: 40).write(to: memory)
        let error = #expect(throws: ArchError.self) { try MPTable(cpuCount: 41).write(to: memory) }
        #expect(error == .mpTableDoesNotFit(size: MPTable.size(cpuCount: 41), address: 0x9FC00, limit: 0xA0000))
        #expect(error?.description.contains("1024 bytes fit below 0xa0000") == true)
        // Elsewhere (the BIOS area) a large table fits.
        try MPTable(cpuCount: 254).write(to: memory, at: GuestAddress(0xF0000), limit: GuestAddress(0x100000))
        let table = try memory.readBytes(count: Int(try read(memory, UInt16.self, at: 0xF0010 + 4)), at: GuestAddress(0xF0010))
        #expect(byteSum(table) == 0)
        #expect(throws: ArchError.tooManyCPUsForMPTable(count: 255, max: 254)) { _ = try MPTable(cpuCount: 255) }
        #expect(throws: ArchError.tooManyCPUsForMPTable(count: 0, max: 254)) { _ = try MPTable(cpuCount: 0) }
    }
}
