import DeviceModel
import Foundation
import PCI
import Testing

@Suite("PCI state")
struct PCIStateTests {
    func makeConfiguration() throws -> PCIConfiguration {
        var configuration = PCIConfiguration(vendorID: 0x1af4, deviceID: 0x1042, classCode: .other)
        try configuration.addBAR(PCIBAR(index: 0, kind: .memory64, size: 0x8_0000, address: 0xe000_0000))
        try configuration.addBAR(PCIBAR(index: 2, kind: .memory32, size: 0x1000, address: 0xd000_0000))
        _ = try configuration.addCapability(MSICapability(vectors: 4, is64Bit: true, perVectorMasking: true))
        return configuration
    }

    @Test func configurationRoundTripsWithMovedBARAndMSI() throws {
        var configuration = try makeConfiguration()
        configuration.write(offset: 0x04, size: 2, value: 0x0006)
        configuration.write(offset: 0x3c, size: 1, value: 11)
        // The guest moves BAR 2 and programs MSI.
        let move = configuration.write(offset: 0x18, size: 4, value: 0xc000_0000)
        #expect(move.barReprogram?.newAddress == 0xc000_0000)
        let msi = configuration.msiCapabilityOffset!
        configuration.write(offset: msi + 4, size: 4, value: 0xfee0_0000)
        configuration.write(offset: msi + 12, size: 2, value: 0x41)
        configuration.write(offset: msi + 2, size: 2, value: 0x21)
        let saved = try JSONDecoder().decode(PCIConfigurationState.self, from: JSONEncoder().encode(configuration.saveState()))
        #expect(saved.command == 0x0006 && saved.interruptLine == 11)

        var fresh = try makeConfiguration()
        try fresh.restoreState(saved)
        #expect(fresh.saveState() == configuration.saveState())
        #expect(fresh.bar(2)?.address == 0xc000_0000)
        #expect(fresh.memorySpaceEnabled && fresh.busMasterEnabled)
        #expect(MSIState(configuration: fresh) == MSIState(configuration: configuration))
        #expect(MSIState(configuration: fresh)?.enabled == true)
    }

    @Test func configurationRefusesDamagedStates() throws {
        let configuration = try makeConfiguration()
        let good = configuration.saveState()
        var misaligned = good
        misaligned.barAddresses[0] = 0xe000_1000
        var above4G = good
        above4G.barAddresses[2] = 0x1_0000_0000
        var missing = good
        missing.barAddresses[2] = nil
        var otherDevice = good
        otherDevice.registers[0] = 0x1041_1af4
        var short = good
        short.registers.removeLast()
        for (bad, mention) in [(misaligned, "barAddresses[0]"), (above4G, "barAddresses[2]"), (missing, "barAddresses[2]"),
                               (otherDevice, "registers[0]"), (short, "registers")] {
            var target = try makeConfiguration()
            do {
                try target.restoreState(bad)
                Issue.record("accepted a damaged state mentioning \(mention)")
            } catch {
                #expect(error.reason.hasPrefix(mention))
            }
            #expect(target.saveState() == good)
        }
    }

    @Test func msixRoundTripsAndRebuildsRoutes() throws {
        let routing = RecordingRouting()
        var msix = try MSIXConfiguration(vectors: 3, routing: routing)
        msix.setMessageControl(0x8000)
        msix.writeTable(offset: 16, size: 8, value: 0xfee0_1000)
        msix.writeTable(offset: 24, size: 8, value: 0x0000_0000_0000_0031)
        msix.trigger(vector: 2)
        #expect(msix.isPending(vector: 2))
        let saved = try JSONDecoder().decode(MSIXState.self, from: JSONEncoder().encode(msix.saveState()))

        let fresh = RecordingRouting()
        var restored = try MSIXConfiguration(vectors: 3, routing: fresh)
        try restored.restoreState(saved)
        #expect(restored.saveState() == msix.saveState())
        #expect(fresh.updates.count == 3)
        #expect(fresh.updates[1] == .init(vector: 1, address: 0xfee0_1000, data: 0x31, masked: false))
        #expect(fresh.deliveries.isEmpty)
        // Unmasking the pending vector delivers it, as it would have before the snapshot.
        restored.writeTable(offset: 44, size: 4, value: 0)
        #expect(fresh.deliveries == [2])
    }

    @Test func msixRefusesDamagedStates() throws {
        let msix = try MSIXConfiguration(vectors: 3, routing: RecordingRouting())
        let good = msix.saveState()
        var tooMany = good
        tooMany.entries.append(MSIXTableEntry())
        var control = good
        control.entries[0].vectorControl = 0x3
        var pending = good
        pending.pendingBits[0] = 1 << 5
        for bad in [tooMany, control, pending] {
            let routing = RecordingRouting()
            var target = try MSIXConfiguration(vectors: 3, routing: routing)
            #expect(throws: DeviceStateError.self) { try target.restoreState(bad) }
            #expect(target.saveState() == good)
            #expect(routing.updates.isEmpty)
        }
    }
}
