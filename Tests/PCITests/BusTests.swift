import DeviceModel
import PCI
import Testing

/// The CF8 address selecting (bus, device, function, register) with the enable bit set.
private func cf8(bus: Int = 0, device: Int, function: Int = 0, register: Int) -> UInt64 {
    0x8000_0000 | UInt64(bus) << 16 | UInt64(device) << 11 | UInt64(function) << 8 | UInt64(register & 0xfc)
}

@Suite("PCI bus")
struct PCIBusTests {
    @Test func hostBridgeIdentityThroughECAM() {
        let segment = PCISegment(id: 0, ecamBase: 0xe800_0000)
        let ecam = segment.ecam
        #expect(ecam.read(offset: 0, size: 4) == 0x0d57_8086)
        #expect(ecam.read(offset: 0, size: 2) == 0x8086)
        #expect(ecam.read(offset: 2, size: 2) == 0x0d57)
        #expect(ecam.read(offset: 0x0b, size: 1) == 0x06)
        #expect(ecam.read(offset: 0x0a, size: 1) == 0x00)
        #expect(ecam.read(offset: 0x0e, size: 1) == 0x00)
        #expect(ecam.read(offset: 0x10, size: 4) == 0)
        #expect(segment.ecamSize == 1 << 20)
    }

    @Test func hostBridgeIdentityThroughCF8() {
        let bus = PCIBus()
        let io = PCIConfigIO(bus: bus)
        io.write(offset: 0, size: 4, value: cf8(device: 0, register: 0))
        #expect(io.read(offset: 4, size: 4) == 0x0d57_8086)
        #expect(io.read(offset: 6, size: 2) == 0x0d57)
        #expect(io.read(offset: 5, size: 1) == 0x80)
        io.write(offset: 0, size: 4, value: cf8(device: 0, register: 8))
        #expect(io.read(offset: 7, size: 1) == 0x06)
    }

    @Test func cf8AddressRegisterReadsBackAndMasksReservedBits() {
        let io = PCIConfigIO(bus: PCIBus())
        io.write(offset: 0, size: 4, value: 0x8000_0000)
        #expect(io.read(offset: 0, size: 4) == 0x8000_0000)
        io.write(offset: 0, size: 4, value: 0xffff_ffff)
        #expect(io.read(offset: 0, size: 4) == 0x80ff_fffc)
        io.write(offset: 3, size: 1, value: 0x01)
        #expect(io.read(offset: 0, size: 4) == 0x00ff_fffc)
        io.write(offset: 0, size: 2, value: 0x0810)
        #expect(io.configAddress == 0x00ff_0810)
        #expect(io.read(offset: 2, size: 2) == 0x00ff)
    }

    @Test func cf8DataWithoutEnableBitReadsAllOnes() {
        let io = PCIConfigIO(bus: PCIBus())
        io.write(offset: 0, size: 4, value: 0x0000_0000)
        #expect(io.read(offset: 4, size: 4) == 0xffff_ffff)
        #expect(io.read(offset: 4, size: 1) == 0xff)
        io.write(offset: 4, size: 4, value: 0)  // dropped, no crash
    }

    @Test func cf8BadWidthsAndOverrunsAreRejected() {
        let io = PCIConfigIO(bus: PCIBus())
        io.write(offset: 0, size: 4, value: cf8(device: 0, register: 0))
        #expect(io.read(offset: 6, size: 4) == 0xffff_ffff)
        #expect(io.read(offset: 4, size: 8) == .max)
        #expect(io.read(offset: 2, size: 4) == 0xffff_ffff)
        io.write(offset: 2, size: 4, value: 0)
        #expect(io.configAddress == 0x8000_0000)
    }

    @Test func absentDevicesAndFunctionsReadAllOnes() {
        let bus = PCIBus()
        let io = PCIConfigIO(bus: bus)
        let ecam = PCIConfigMMIO(bus: bus)
        for device in 1..<32 {
            #expect(ecam.read(offset: PCIConfigMMIO.offset(bus: 0, device: device, function: 0, register: 0), size: 4) == 0xffff_ffff)
            io.write(offset: 0, size: 4, value: cf8(device: device, register: 0))
            #expect(io.read(offset: 4, size: 2) == 0xffff)
        }
        #expect(ecam.read(offset: PCIConfigMMIO.offset(bus: 0, device: 0, function: 1, register: 0), size: 4) == 0xffff_ffff)
        #expect(ecam.read(offset: PCIConfigMMIO.offset(bus: 1, device: 0, function: 0, register: 0), size: 4) == 0xffff_ffff)
        #expect(ecam.read(offset: PCIConfigMMIO.offset(bus: 0, device: 0, function: 0, register: 0x100), size: 4) == 0xffff_ffff)
        io.write(offset: 0, size: 4, value: cf8(device: 0, function: 7, register: 0))
        #expect(io.read(offset: 4, size: 4) == 0xffff_ffff)
        #expect(ecam.read(offset: 1 << 30, size: 4) == 0xffff_ffff)
        ecam.write(offset: PCIConfigMMIO.offset(bus: 0, device: 9, function: 0, register: 4), size: 2, value: 6)
    }

    @Test func ecamOffsetsRoundTrip() {
        let offset = PCIConfigMMIO.offset(bus: 3, device: 17, function: 5, register: 0x344)
        #expect(offset == 3 << 20 | 17 << 15 | 5 << 12 | 0x344)
        let decoded = PCIConfigMMIO.decode(offset)
        #expect(decoded.bus == 3 && decoded.device == 17 && decoded.function == 5 && decoded.offset == 0x344)
    }

    @Test func addedDeviceIsReachableThroughBothMechanisms() throws {
        let bus = PCIBus()
        let device = try TestDevice()
        let number = try bus.add(device)
        #expect(number == 1)
        let ecam = PCIConfigMMIO(bus: bus)
        let io = PCIConfigIO(bus: bus)
        #expect(ecam.read(offset: PCIConfigMMIO.offset(bus: 0, device: 1, function: 0, register: 0), size: 4) == 0x1234_1af4)
        io.write(offset: 0, size: 4, value: cf8(device: 1, register: 0x2c))
        #expect(io.read(offset: 4, size: 4) == 0x0042_1af4)
        // The capability pointer leads to MSI, then MSI-X, then the vendor capability.
        io.write(offset: 0, size: 4, value: cf8(device: 1, register: 0x34))
        #expect(io.read(offset: 4, size: 1) == UInt64(device.msiOffset))
        // Enable memory decoding through CF8, read the command back through ECAM.
        io.write(offset: 0, size: 4, value: cf8(device: 1, register: 0x04))
        io.write(offset: 4, size: 2, value: 0x0006)
        #expect(ecam.read(offset: PCIConfigMMIO.offset(bus: 0, device: 1, function: 0, register: 4), size: 2) == 0x0006)
        #expect(device.configuration.busMasterEnabled)
    }

    @Test func deviceNumberAllocation() throws {
        let bus = PCIBus()
        #expect(try bus.add(TestDevice(name: "a")) == 1)
        #expect(try bus.add(TestDevice(name: "b"), at: 5) == 5)
        #expect(try bus.add(TestDevice(name: "c")) == 2)
        #expect(throws: PCIError.deviceNumberInUse(number: 5, existing: "b")) { try bus.add(TestDevice(name: "d"), at: 5) }
        #expect(throws: PCIError.deviceNumberOutOfRange(32)) { try bus.add(TestDevice(), at: 32) }
        for _ in bus.deviceNumbers.count..<32 { try bus.add(TestDevice()) }
        #expect(throws: PCIError.busFull) { try bus.add(TestDevice()) }
        #expect(try bus.remove(at: 5).name == "b")
        #expect(throws: PCIError.noDevice(number: 5)) { try bus.remove(at: 5) }
        #expect(try bus.add(TestDevice(name: "e")) == 5)
        #expect(bus.device(at: 0) is PCIHostBridge)
    }

    @Test func removedDeviceReadsAllOnes() throws {
        let bus = PCIBus()
        let number = try bus.add(TestDevice())
        let ecam = PCIConfigMMIO(bus: bus)
        let offset = PCIConfigMMIO.offset(bus: 0, device: number, function: 0, register: 0)
        #expect(ecam.read(offset: offset, size: 4) != 0xffff_ffff)
        try bus.remove(at: number)
        #expect(ecam.read(offset: offset, size: 4) == 0xffff_ffff)
    }

    @Test func barSizingThroughECAM() throws {
        let bus = PCIBus()
        let number = try bus.add(TestDevice())
        let ecam = PCIConfigMMIO(bus: bus)
        func bar(_ index: Int) -> UInt64 { PCIConfigMMIO.offset(bus: 0, device: number, function: 0, register: 0x10 + index * 4) }
        var masks: [UInt64] = []
        for index in 0..<6 {
            let saved = ecam.read(offset: bar(index), size: 4)
            ecam.write(offset: bar(index), size: 4, value: 0xffff_ffff)
            masks.append(ecam.read(offset: bar(index), size: 4))
            ecam.write(offset: bar(index), size: 4, value: saved)
        }
        #expect(masks == [0xffff_f000, 0, 0xffff_000c, 0xffff_ffff, 0xffff_ffe1, 0])
    }

    @Test func barMoveGoesToRelocationThenDevice() throws {
        let relocation = RecordingRelocation()
        let bus = PCIBus(relocation: relocation)
        let device = try TestDevice()
        let number = try bus.add(device)
        let io = PCIConfigIO(bus: bus)
        io.write(offset: 0, size: 4, value: cf8(device: number, register: 0x18))
        io.write(offset: 4, size: 4, value: 0xf000_000c)
        #expect(relocation.changes.isEmpty)
        io.write(offset: 0, size: 4, value: cf8(device: number, register: 0x1c))
        io.write(offset: 4, size: 4, value: 0x0000_0002)
        let expected = BARReprogram(index: 2, kind: .memory64, oldAddress: 0x8_0000_0000, newAddress: 0x2_f000_0000, size: 0x1_0000)
        #expect(relocation.changes == [expected])
        #expect(relocation.deviceNames == ["test-device"])
        #expect(device.moves == [expected])
        #expect(device.bars.first { $0.index == 2 }?.address == 0x2_f000_0000)
    }

    @Test func barRegionMapsOnAnMMIOBusAndFollowsAMove() throws {
        let mmio = DeviceModel.Bus(name: "MMIO bus")
        let device = try TestDevice()
        let bar0 = try #require(device.bars.first)
        try mmio.insert(PCIBARRegion(device: device, index: 0), base: bar0.address, length: bar0.size)
        mmio.write(address: bar0.address + 8, size: 8, value: 0x1122_3344_5566_7788)
        #expect(mmio.read(address: bar0.address + 8, size: 8) == 0x1122_3344_5566_7788)
        // The guest moves BAR 0; the VMM's relocation remaps the region.
        let change = try #require(device.writeConfigRegister(4, offset: 0, size: 4, value: 0xc010_0000))
        let region = try mmio.remove(base: change.oldAddress)
        try mmio.insert(region, base: change.newAddress, length: change.size)
        #expect(mmio.read(address: 0xc010_0008, size: 8) == 0x1122_3344_5566_7788)
        #expect(mmio.read(address: bar0.address + 8, size: 8) == nil)
        #expect(region.name == "test-device BAR 0")
    }

    @Test func hostBridgeAcceptsOnlyScratchWrites() {
        let bridge = PCIHostBridge()
        for register in 0..<64 { _ = bridge.writeConfigRegister(register, offset: 0, size: 4, value: 0xffff_ffff) }
        #expect(bridge.readConfigRegister(0) == 0x0d57_8086)
        #expect(bridge.readConfigRegister(2) == 0x0600_0000)
        #expect(bridge.readConfigRegister(4) == 0)
        #expect(bridge.readConfigRegister(15) == 0xff)
        #expect(bridge.bars.isEmpty)
        #expect(bridge.writeConfigRegister(-1, offset: 0, size: 4, value: 0) == nil)
        #expect(bridge.writeConfigRegister(4, offset: 9, size: 4, value: 0) == nil)
    }

    @Test func severalSegmentsKeepSeparateBuses() throws {
        var table = PCISegmentTable()
        let base: UInt64 = 0xe800_0000
        try table.add(PCISegment(id: 0, ecamBase: PCISegment.ecamBase(forSegment: 0, windowBase: base)))
        try table.add(PCISegment(id: 1, ecamBase: PCISegment.ecamBase(forSegment: 1, windowBase: base)))
        #expect(throws: PCIError.duplicateSegment(id: 1)) { try table.add(PCISegment(id: 1, ecamBase: 0)) }
        let one = try #require(table.segment(1))
        #expect(one.ecamBase == base + (1 << 20))
        try one.bus.add(TestDevice(), at: 3)
        // Map both ECAM windows on one MMIO bus, as the VMM does.
        let mmio = DeviceModel.Bus(name: "MMIO bus")
        for segment in table.segments { try mmio.insert(segment.ecam, base: segment.ecamBase, length: segment.ecamSize) }
        let devfn3: UInt64 = 3 << 15
        #expect(mmio.read(address: base + devfn3, size: 4) == 0xffff_ffff)
        #expect(mmio.read(address: one.ecamBase + devfn3, size: 4) == 0x1234_1af4)
        #expect(mmio.read(address: base, size: 4) == 0x0d57_8086)
        #expect(mmio.read(address: one.ecamBase, size: 4) == 0x0d57_8086)
        #expect(table.segment(7) == nil)
    }
}
