import PCI
import Testing

/// A table with `vectors` entries and its routing recorder.
private func makeTable(vectors: Int = 8) throws -> (MSIXConfiguration, RecordingRouting) {
    let routing = RecordingRouting()
    return (try MSIXConfiguration(vectors: vectors, routing: routing), routing)
}

/// Programs entry `vector` with a message and clears its mask bit.
private func program(_ table: inout MSIXConfiguration, vector: Int, address: UInt64, data: UInt32, unmask: Bool = true) {
    let base = UInt64(vector * 16)
    table.writeTable(offset: base, size: 8, value: address)
    table.writeTable(offset: base + 8, size: 4, value: UInt64(data))
    if unmask { table.writeTable(offset: base + 12, size: 4, value: 0) }
}

@Suite("MSI-X")
struct MSIXTests {
    @Test func capabilityLayout() throws {
        var config = PCIConfiguration.sample()
        let (table, _) = try makeTable(vectors: 16)
        let offset = try config.addCapability(table.capability(tableBAR: 2, tableOffset: 0x2000, pbaBAR: 3, pbaOffset: 0x100))
        #expect(config.read(offset: offset, size: 1) == 0x11)
        #expect(config.read(offset: offset + 2, size: 2) == 15)
        #expect(config.read(offset: offset + 4, size: 4) == 0x2002)
        #expect(config.read(offset: offset + 8, size: 4) == 0x103)
        // Only enable and function mask are writable; the table size is fixed.
        let result = config.write(offset: offset + 2, size: 2, value: 0xffff)
        #expect(result.msixMessageControl == 0xc00f)
        #expect(config.read(offset: offset + 2, size: 2) == 0xc00f)
        #expect(config.write(offset: offset, size: 4, value: 0).msixMessageControl == 0x000f)
        #expect(config.write(offset: offset + 4, size: 4, value: 0).msixMessageControl == nil)
        #expect(config.read(offset: offset + 4, size: 4) == 0x2002)
        #expect(table.tableSize == 256 && table.pbaSize == 8)
    }

    @Test func vectorCountIsValidated() {
        #expect(throws: PCIError.invalidMSIXVectorCount(0)) { try makeTable(vectors: 0) }
        #expect(throws: PCIError.invalidMSIXVectorCount(2049)) { try makeTable(vectors: 2049) }
    }

    @Test func entriesStartMasked() throws {
        let (table, _) = try makeTable()
        #expect(table.readTable(offset: 12, size: 4) == 1)
        #expect(table.readTable(offset: 0, size: 8) == 0)
        #expect(table.entries.allSatisfy { $0.masked })
    }

    @Test func tableReadsAndWritesOf4And8Bytes() throws {
        var (table, _) = try makeTable()
        table.writeTable(offset: 0x20, size: 4, value: 0xfee0_0000)
        table.writeTable(offset: 0x24, size: 4, value: 0x1)
        table.writeTable(offset: 0x28, size: 8, value: 0x0000_0001_0000_0041)
        #expect(table.readTable(offset: 0x20, size: 8) == 0x1_fee0_0000)
        #expect(table.readTable(offset: 0x28, size: 4) == 0x41)
        #expect(table.readTable(offset: 0x2c, size: 4) == 1)
        #expect(table.entries[2].address == 0x1_fee0_0000 && table.entries[2].data == 0x41)
        // Vector control keeps only its mask bit.
        table.writeTable(offset: 0x2c, size: 4, value: 0xffff_fffe)
        #expect(table.readTable(offset: 0x2c, size: 4) == 0)
    }

    @Test func badTableAccessesAreIgnored() throws {
        var (table, routing) = try makeTable()
        for (offset, size) in [(UInt64(2), 4), (4, 8), (0, 2), (0, 1), (128, 4), (1 << 40, 8)] {
            table.writeTable(offset: offset, size: size, value: .max)
            #expect(table.readTable(offset: offset, size: size) == 0)
        }
        #expect(table.entries == Array(repeating: MSIXTableEntry(), count: 8))
        #expect(routing.updates.isEmpty)
    }

    @Test func enablingRoutesEveryVector() throws {
        var (table, routing) = try makeTable(vectors: 4)
        program(&table, vector: 1, address: 0xfee0_0000, data: 0x31)
        #expect(routing.updates.isEmpty)  // disabled: nothing routed yet
        table.setMessageControl(0x8000)
        #expect(table.enabled && !table.functionMasked)
        #expect(routing.updates.count == 4)
        #expect(routing.updates[1] == .init(vector: 1, address: 0xfee0_0000, data: 0x31, masked: false))
        #expect(routing.updates[0].masked && routing.updates[2].masked)
    }

    @Test func entryChangesAreRoutedWhileEnabled() throws {
        var (table, routing) = try makeTable()
        table.setMessageControl(0x8000)
        routing.reset()
        program(&table, vector: 3, address: 0xfee0_1000, data: 0x45)
        #expect(routing.updates.last == .init(vector: 3, address: 0xfee0_1000, data: 0x45, masked: false))
        #expect(routing.updates.dropLast().allSatisfy { $0.masked })
        routing.reset()
        table.writeTable(offset: 3 * 16 + 8, size: 4, value: 0x45)  // unchanged
        #expect(routing.updates.isEmpty)
    }

    @Test func deliveryWhenUnmasked() throws {
        var (table, routing) = try makeTable()
        table.setMessageControl(0x8000)
        program(&table, vector: 2, address: 0xfee0_0000, data: 0x40)
        #expect(table.trigger(vector: 2) == .delivered)
        #expect(routing.deliveries == [2])
        #expect(!table.isPending(vector: 2))
    }

    @Test func triggerWhileDisabledOrOutOfRangeIsDropped() throws {
        var (table, routing) = try makeTable()
        program(&table, vector: 0, address: 0xfee0_0000, data: 0x40)
        #expect(table.trigger(vector: 0) == .dropped)
        table.setMessageControl(0x8000)
        #expect(table.trigger(vector: 8) == .dropped)
        #expect(table.trigger(vector: -1) == .dropped)
        #expect(routing.deliveries.isEmpty && table.pendingBits == [0])
    }

    @Test func perVectorMaskSetsPendingAndUnmaskDelivers() throws {
        var (table, routing) = try makeTable()
        table.setMessageControl(0x8000)
        program(&table, vector: 5, address: 0xfee0_0000, data: 0x50, unmask: false)
        #expect(table.trigger(vector: 5) == .pending)
        #expect(table.isPending(vector: 5))
        #expect(table.readPBA(offset: 0, size: 8) == 1 << 5)
        #expect(table.readPBA(offset: 0, size: 4) == 1 << 5)
        #expect(routing.deliveries.isEmpty)
        table.writeTable(offset: 5 * 16 + 12, size: 4, value: 0)
        #expect(routing.deliveries == [5])
        #expect(!table.isPending(vector: 5) && table.readPBA(offset: 0, size: 8) == 0)
    }

    @Test func functionMaskHoldsEveryVector() throws {
        var (table, routing) = try makeTable()
        table.setMessageControl(0x8000)
        program(&table, vector: 1, address: 0xfee0_0000, data: 0x41)
        program(&table, vector: 6, address: 0xfee0_0000, data: 0x46)
        routing.reset()
        table.setMessageControl(0xc000)
        #expect(table.functionMasked)
        #expect(routing.updates.count == 8 && routing.updates.allSatisfy { $0.masked })
        #expect(table.trigger(vector: 1) == .pending)
        #expect(table.trigger(vector: 6) == .pending)
        #expect(table.readPBA(offset: 0, size: 8) == 0b0100_0010)
        routing.reset()
        table.setMessageControl(0x8000)
        #expect(routing.deliveries == [1, 6])
        #expect(routing.updates.filter { !$0.masked }.map(\.vector) == [1, 6])
        #expect(table.pendingBits == [0])
    }

    @Test func unmaskingTheFunctionKeepsMaskedVectorsPending() throws {
        var (table, routing) = try makeTable()
        table.setMessageControl(0xc000)
        program(&table, vector: 0, address: 0xfee0_0000, data: 0x40)
        program(&table, vector: 1, address: 0xfee0_0000, data: 0x41, unmask: false)
        #expect(table.trigger(vector: 0) == .pending)
        #expect(table.trigger(vector: 1) == .pending)
        table.setMessageControl(0x8000)
        #expect(routing.deliveries == [0])
        #expect(table.isPending(vector: 1) && !table.isPending(vector: 0))
        // Clearing the entry mask while the function is masked delivers nothing yet.
        table.setMessageControl(0xc000)
        table.writeTable(offset: 16 + 12, size: 4, value: 0)
        #expect(routing.deliveries == [0] && table.isPending(vector: 1))
        table.setMessageControl(0x8000)
        #expect(routing.deliveries == [0, 1])
    }

    @Test func pbaSpansSeveralQwords() throws {
        var (table, _) = try makeTable(vectors: 100)
        table.setMessageControl(0xc000)
        table.trigger(vector: 70)
        table.trigger(vector: 99)
        #expect(table.pbaSize == 16)
        #expect(table.readPBA(offset: 8, size: 8) == (1 << 6) | (1 << 35))
        #expect(table.readPBA(offset: 8, size: 4) == 1 << 6)
        #expect(table.readPBA(offset: 12, size: 4) == 1 << 3)
        #expect(table.readPBA(offset: 16, size: 8) == 0)
        #expect(table.readPBA(offset: 4, size: 8) == 0)
        table.writePBA(offset: 8, size: 8, value: 0)
        #expect(table.isPending(vector: 70))
    }

    @Test func configWritesReachTheTableThroughADevice() throws {
        let device = try TestDevice()
        let control = device.msixOffset + 2
        _ = device.writeConfigRegister(control / 4, offset: control % 4, size: 2, value: 0x8000)
        #expect(device.msix.enabled)
        device.writeBAR(index: 2, offset: 0, size: 8, value: 0xfee0_0000)
        device.writeBAR(index: 2, offset: 8, size: 8, value: 0x0000_0001_0000_0030)
        #expect(device.trigger(vector: 0) == .pending)
        #expect(device.readBAR(index: 2, offset: UInt64(TestDevice.pbaOffset), size: 8) == 1)
        device.writeBAR(index: 2, offset: 12, size: 4, value: 0)
        #expect(device.routing.deliveries == [0])
        #expect(device.readBAR(index: 2, offset: 8, size: 4) == 0x30)
    }
}
