import PCI
import Testing

@Suite("Configuration header")
struct ConfigurationHeaderTests {
    @Test func identityRegistersReadBack() {
        let config = PCIConfiguration.sample()
        #expect(config.read(offset: 0x00, size: 2) == 0x1af4)
        #expect(config.read(offset: 0x02, size: 2) == 0x1041)
        #expect(config.read(offset: 0x00, size: 4) == 0x1041_1af4)
        #expect(config.read(offset: 0x08, size: 4) == 0x0200_0001)
        #expect(config.read(offset: 0x0b, size: 1) == 0x02)
        #expect(config.read(offset: 0x2c, size: 4) == 0x1100_1af4)
        #expect(config.read(offset: 0x3d, size: 1) == 1)
        #expect(config.headerType == 0 && config.size == 256)
        #expect(config.classCode == .ethernet && config.revision == 1)
    }

    @Test func readOnlyIdentitySurvivesWrites() {
        var config = PCIConfiguration.sample()
        let before = (0..<16).map { config.readRegister($0) }
        for offset in [0x00, 0x02, 0x08, 0x09, 0x0a, 0x0b, 0x0e, 0x0f, 0x28, 0x2c, 0x2e, 0x30, 0x34, 0x3d, 0x3e, 0x3f] {
            config.write(offset: offset, size: 1, value: 0x5a)
        }
        for register in [0, 2, 10, 11, 12, 13] {
            config.write(offset: register * 4, size: 4, value: 0xdead_beef)
        }
        #expect(config.readRegister(0) == before[0])
        #expect(config.readRegister(2) == before[2])
        #expect(config.readRegister(11) == before[11])
        #expect(config.readRegister(13) == before[13])
        #expect(config.read(offset: 0x0e, size: 1) == 0)
        #expect(config.interruptPin == 1)
        #expect(config.vendorID == 0x1af4 && config.deviceID == 0x1041)
    }

    @Test func commandKeepsOnlyImplementedBits() {
        var config = PCIConfiguration.sample()
        config.write(offset: 0x04, size: 2, value: 0xffff)
        #expect(config.command == PCIConfiguration.commandWritableBits)
        #expect(config.memorySpaceEnabled && config.ioSpaceEnabled && config.busMasterEnabled && config.intxDisabled)
        config.write(offset: 0x04, size: 2, value: 0x0002)
        #expect(config.command == 0x0002)
        #expect(!config.ioSpaceEnabled && config.memorySpaceEnabled)
    }

    @Test func statusErrorBitsAreWriteOneToClear() {
        var config = PCIConfiguration.sample()
        config.setStatusBits(0xf900)
        #expect(config.status == 0xf900)
        // Writing 0s leaves them; writing 1 to two of them clears just those.
        config.write(offset: 0x06, size: 2, value: 0x0000)
        #expect(config.status == 0xf900)
        config.write(offset: 0x06, size: 2, value: 0x8100)
        #expect(config.status == 0x7800)
        // A dword write to command+status clears status bits and sets command bits at once.
        config.write(offset: 0x04, size: 4, value: 0x7800_0006)
        #expect(config.status == 0 && config.command == 0x0006)
    }

    @Test func statusReadOnlyBitsIgnoreWrites() {
        var config = PCIConfiguration.sample()
        config.setInterruptStatus(true)
        config.write(offset: 0x06, size: 2, value: 0x06ff)
        #expect(config.status == PCIConfiguration.statusInterrupt)
        config.setInterruptStatus(false)
        #expect(config.status == 0)
    }

    @Test func cacheLineAndInterruptLineAreScratch() {
        var config = PCIConfiguration.sample()
        config.write(offset: 0x0c, size: 4, value: 0xffff_ffff)
        #expect(config.read(offset: 0x0c, size: 4) == 0x0000_00ff)
        config.write(offset: 0x3c, size: 2, value: 0xff0b)
        #expect(config.interruptLine == 0x0b && config.interruptPin == 1)
    }

    @Test func multiFunctionSetsHeaderBit() {
        let config = PCIConfiguration(vendorID: 1, deviceID: 2, classCode: .other, multiFunction: true)
        #expect(config.read(offset: 0x0e, size: 1) == 0x80)
    }

    @Test(arguments: [(0x01, 4), (0x03, 2), (0x02, 4), (0x00, 3), (0x00, 8), (0x100, 4), (-4, 4)])
    func invalidAccessesReadAllOnesAndWriteNothing(offset: Int, size: Int) {
        var config = PCIConfiguration.sample()
        let ones: UInt32 = size >= 4 ? 0xffff_ffff : (1 << UInt32(size * 8)) - 1
        #expect(config.read(offset: offset, size: size) == ones)
        config.write(offset: 0x3c, size: 1, value: 0x11)
        config.write(offset: offset, size: size, value: 0)
        #expect(config.interruptLine == 0x11)
    }

    @Test func unalignedNarrowAccessesInsideADword() {
        var config = PCIConfiguration.sample()
        #expect(config.read(offset: 0x01, size: 1) == 0x1a)
        #expect(config.read(offset: 0x01, size: 2) == 0x411a)
        #expect(config.read(offset: 0x03, size: 1) == 0x10)
        config.write(offset: 0x3c, size: 1, value: 0x7f)
        #expect(config.read(offset: 0x3c, size: 4) == 0x0000_017f)
    }

    @Test func expansionROMIsAbsent() {
        var config = PCIConfiguration.sample()
        config.write(offset: 0x30, size: 4, value: 0xffff_f800)
        #expect(config.read(offset: 0x30, size: 4) == 0)
    }

    @Test func extendedSpaceReadsZeroWhenPresentAndAllOnesWhenNot() {
        #expect(PCIConfiguration.sample(extendedSpace: true).read(offset: 0x100, size: 4) == 0)
        #expect(PCIConfiguration.sample(extendedSpace: true).size == 4096)
        #expect(PCIConfiguration.sample().read(offset: 0x100, size: 4) == 0xffff_ffff)
        #expect(PCIConfiguration.sample().readRegister(64) == 0xffff_ffff)
    }
}

@Suite("BARs")
struct BARTests {
    @Test func sizing32BitMemoryBAR() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 0, kind: .memory32, size: 0x1000, address: 0xc000_0000))
        #expect(config.read(offset: 0x10, size: 4) == 0xc000_0000)
        #expect(config.sizeBAR(0) == 0xffff_f000)
        #expect(config.read(offset: 0x10, size: 4) == 0xc000_0000)
    }

    @Test func sizingPrefetchable32BitBARKeepsFlags() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 1, kind: .memory32, size: 0x10_0000, address: 0xd000_0000, prefetchable: true))
        #expect(config.read(offset: 0x14, size: 4) == 0xd000_0008)
        #expect(config.sizeBAR(1) == 0xfff0_0008)
    }

    @Test func sizing64BitMemoryBAR() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 2, kind: .memory64, size: 0x2_0000_0000, address: 0x40_0000_0000, prefetchable: true))
        #expect(config.read(offset: 0x18, size: 4) == 0x0000_000c)
        #expect(config.read(offset: 0x1c, size: 4) == 0x40)
        // Size: write all ones to both halves, read, combine.
        config.write(offset: 0x18, size: 4, value: 0xffff_ffff)
        config.write(offset: 0x1c, size: 4, value: 0xffff_ffff)
        let low = UInt64(config.read(offset: 0x18, size: 4) & ~0xf)
        let high = UInt64(config.read(offset: 0x1c, size: 4))
        #expect(~(high << 32 | low) &+ 1 == 0x2_0000_0000)
        #expect(config.read(offset: 0x18, size: 4) & 0xf == 0xc)
    }

    @Test func sizingSmall64BitMemoryBAR() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 0, kind: .memory64, size: 0x4000, address: 0x1_0000_0000))
        #expect(config.sizeBAR(0) == 0xffff_c004)
        #expect(config.sizeBAR(1) == 0xffff_ffff)
        #expect(config.bar(0)?.address == 0x1_0000_0000)
    }

    @Test func sizingIOBAR() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 5, kind: .io, size: 0x40, address: 0x6000, prefetchable: true))
        #expect(config.read(offset: 0x24, size: 4) == 0x6001)
        #expect(config.sizeBAR(5) == 0xffff_ffc1)
        #expect(config.bar(5)?.prefetchable == false)
    }

    @Test func unimplementedBARsReadZero() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 0, kind: .memory64, size: 0x1000, address: 0x1000_0000))
        for index in 2..<6 { #expect(config.sizeBAR(index) == 0) }
        #expect(config.bars.map(\.index) == [0])
    }

    @Test func barValidation() throws {
        var config = PCIConfiguration.sample()
        #expect(throws: PCIError.barIndexOutOfRange(index: 6)) {
            try config.addBAR(PCIBAR(index: 6, kind: .memory32, size: 0x1000, address: 0))
        }
        #expect(throws: PCIError.bar64AtLastIndex) {
            try config.addBAR(PCIBAR(index: 5, kind: .memory64, size: 0x1000, address: 0))
        }
        #expect(throws: PCIError.invalidBARSize(index: 0, size: 0x1800, minimum: 16)) {
            try config.addBAR(PCIBAR(index: 0, kind: .memory32, size: 0x1800, address: 0))
        }
        #expect(throws: PCIError.invalidBARSize(index: 0, size: 2, minimum: 4)) {
            try config.addBAR(PCIBAR(index: 0, kind: .io, size: 2, address: 0))
        }
        #expect(throws: PCIError.misalignedBAR(index: 0, address: 0x800, size: 0x1000)) {
            try config.addBAR(PCIBAR(index: 0, kind: .memory32, size: 0x1000, address: 0x800))
        }
        #expect(throws: PCIError.barAbove4GiB(index: 0, address: 0x1_0000_0000, size: 0x1000)) {
            try config.addBAR(PCIBAR(index: 0, kind: .memory32, size: 0x1000, address: 0x1_0000_0000))
        }
        try config.addBAR(PCIBAR(index: 1, kind: .memory64, size: 0x1000, address: 0))
        #expect(throws: PCIError.barIndexInUse(index: 2)) {
            try config.addBAR(PCIBAR(index: 2, kind: .memory32, size: 0x1000, address: 0))
        }
        #expect(throws: PCIError.barIndexInUse(index: 1)) {
            try config.addBAR(PCIBAR(index: 0, kind: .memory64, size: 0x1000, address: 0))
        }
    }

    @Test func errorsExplainThemselves() {
        let text = PCIError.misalignedBAR(index: 3, address: 0x800, size: 0x1000).description
        #expect(text.contains("BAR 3") && text.contains("0x800") && text.contains("0x1000"))
        #expect(PCIError.deviceNumberInUse(number: 4, existing: "virtio-net").description.contains("virtio-net"))
    }
}

@Suite("BAR reprogramming")
struct BARReprogramTests {
    @Test func moving32BitBARIsReported() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 0, kind: .memory32, size: 0x1000, address: 0xc000_0000))
        let result = config.write(offset: 0x10, size: 4, value: 0xd000_0000)
        #expect(result.barReprogram == BARReprogram(index: 0, kind: .memory32, oldAddress: 0xc000_0000, newAddress: 0xd000_0000, size: 0x1000))
        #expect(config.bar(0)?.address == 0xd000_0000)
        #expect(config.read(offset: 0x10, size: 4) == 0xd000_0000)
    }

    @Test func sizingAndRestoringIsNotAMove() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 0, kind: .memory32, size: 0x1000, address: 0xc000_0000))
        #expect(config.write(offset: 0x10, size: 4, value: 0xffff_ffff).barReprogram == nil)
        #expect(config.write(offset: 0x10, size: 4, value: 0xc000_0000).barReprogram == nil)
        #expect(config.write(offset: 0x10, size: 4, value: 0xc000_0000).barReprogram == nil)
        #expect(config.bar(0)?.address == 0xc000_0000)
    }

    @Test func moving64BitBARIsReportedOnTheUpperHalf() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 2, kind: .memory64, size: 0x1_0000, address: 0x8_0000_0000, prefetchable: true))
        #expect(config.write(offset: 0x18, size: 4, value: 0x2000_0000).barReprogram == nil)
        let change = config.write(offset: 0x1c, size: 4, value: 0x1).barReprogram
        #expect(change == BARReprogram(index: 2, kind: .memory64, oldAddress: 0x8_0000_0000, newAddress: 0x1_2000_0000, size: 0x1_0000))
        #expect(config.bar(2)?.address == 0x1_2000_0000)
        #expect(change?.description.contains("0x120000000") == true)
    }

    @Test func sizing64BitBARAndRestoringIsNotAMove() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 2, kind: .memory64, size: 0x1_0000, address: 0x8_0000_0000))
        for (offset, value) in [(0x18, UInt32(0xffff_ffff)), (0x1c, 0xffff_ffff), (0x18, 0x0), (0x1c, 0x8)] {
            #expect(config.write(offset: offset, size: 4, value: value).barReprogram == nil)
        }
        #expect(config.bar(2)?.address == 0x8_0000_0000)
    }

    @Test func movingIOBARIsReported() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 4, kind: .io, size: 0x20, address: 0xc040))
        let change = config.write(offset: 0x20, size: 4, value: 0xd001).barReprogram
        #expect(change == BARReprogram(index: 4, kind: .io, oldAddress: 0xc040, newAddress: 0xd000, size: 0x20))
        #expect(config.read(offset: 0x20, size: 4) == 0xd001)
    }

    @Test func narrowWriteMovesA32BitBAR() throws {
        var config = PCIConfiguration.sample()
        try config.addBAR(PCIBAR(index: 0, kind: .memory32, size: 0x1000, address: 0xc000_0000))
        let change = config.write(offset: 0x12, size: 2, value: 0xc010).barReprogram
        #expect(change?.newAddress == 0xc010_0000 && change?.oldAddress == 0xc000_0000)
    }
}

@Suite("Capabilities")
struct CapabilityTests {
    @Test func emptyListHasNoCapabilityBit() {
        let config = PCIConfiguration.sample()
        #expect(config.status & PCIConfiguration.statusCapabilityList == 0)
        #expect(config.read(offset: 0x34, size: 1) == 0)
        #expect(config.capabilityOffsets.isEmpty)
    }

    @Test func walkingTheListFrom0x34() throws {
        var config = PCIConfiguration.sample()
        let a = try config.addCapability(RawPCICapability(id: 0x09, body: [5, 0, 0]))
        let b = try config.addCapability(MSICapability(vectors: 2))
        let c = try config.addCapability(RawPCICapability(id: 0x01, body: [0, 0, 0, 0, 0, 0]))
        #expect(config.status & PCIConfiguration.statusCapabilityList != 0)
        #expect([a, b, c] == [0x40, 0x48, 0x58])
        // Walk as a guest does: pointer at 0x34, then each capability's next byte.
        var walked: [(Int, UInt32)] = []
        var next = Int(config.read(offset: 0x34, size: 1))
        while next != 0 {
            walked.append((next, config.read(offset: next, size: 1)))
            next = Int(config.read(offset: next + 1, size: 1))
        }
        #expect(walked.map(\.0) == [0x40, 0x48, 0x58])
        #expect(walked.map(\.1) == [0x09, 0x05, 0x01])
        #expect(config.capabilityOffsets == [0x40, 0x48, 0x58])
        #expect(config.capabilityOffset(id: PCICapabilityID.msi) == 0x48)
        #expect(config.msiCapabilityOffset == 0x48)
    }

    @Test func capabilityBytesAreReadOnlyUnlessMasked() throws {
        var config = PCIConfiguration.sample()
        let offset = try config.addCapability(RawPCICapability(id: 0x09, body: [1, 2, 3, 4], writableMask: [0, 0xff, 0, 0x0f]))
        config.write(offset: offset, size: 4, value: 0xffff_ffff)
        config.write(offset: offset + 4, size: 2, value: 0xffff)
        #expect(config.read(offset: offset, size: 4) == 0xff01_0009)
        #expect(config.read(offset: offset + 4, size: 2) == 0x0f03)
    }

    @Test func capabilitySpaceRunsOut() throws {
        var config = PCIConfiguration.sample()
        try config.addCapability(RawPCICapability(id: 0x09, body: [UInt8](repeating: 0, count: 150)))
        #expect(throws: PCIError.capabilitySpaceExhausted(length: 42, available: 40)) {
            try config.addCapability(RawPCICapability(id: 0x09, body: [UInt8](repeating: 0, count: 40)))
        }
        #expect(throws: PCIError.capabilityMaskLengthMismatch(bodyLength: 2, maskLength: 1)) {
            try config.addCapability(RawPCICapability(id: 0x09, body: [0, 0], writableMask: [0]))
        }
    }

    @Test func secondMSIXIsRefused() throws {
        var config = PCIConfiguration.sample()
        let cap = MSIXCapability(vectors: 4, tableBAR: 0, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x800)
        try config.addCapability(cap)
        #expect(throws: PCIError.duplicateCapability(id: 0x11)) { try config.addCapability(cap) }
    }

    @Test func extendedCapabilitiesChain() throws {
        var config = PCIConfiguration.sample(extendedSpace: true)
        let first = try config.addExtendedCapability(PCIExtendedCapability(id: 0x000b, version: 1, body: [1, 2, 3, 4]))
        let second = try config.addExtendedCapability(PCIExtendedCapability(id: 0x0023, version: 1, body: [9]))
        #expect(first == 0x100 && second == 0x108)
        #expect(config.read(offset: 0x100, size: 4) == 0x1081_000b)
        #expect(config.read(offset: 0x108, size: 4) == 0x0001_0023)
        #expect(config.read(offset: 0x104, size: 4) == 0x0403_0201)
        #expect(throws: PCIError.noExtendedConfigurationSpace) {
            var plain = PCIConfiguration.sample()
            try plain.addExtendedCapability(PCIExtendedCapability(id: 1, version: 1, body: []))
        }
    }

    @Test func msiCapabilityProgramming() throws {
        var config = PCIConfiguration.sample()
        let offset = try config.addCapability(MSICapability(vectors: 4, is64Bit: true, perVectorMasking: true))
        #expect(config.read(offset: offset + 2, size: 2) == 0x0184)
        #expect(config.write(offset: offset + 4, size: 4, value: 0xfee0_1003).msiTouched)
        config.write(offset: offset + 8, size: 4, value: 0)
        config.write(offset: offset + 0xc, size: 2, value: 0x4041)
        config.write(offset: offset + 0x10, size: 4, value: 0xffff_fff2)
        config.write(offset: offset + 2, size: 2, value: 0xff31)
        let state = try #require(MSIState(configuration: config))
        #expect(state.enabled && state.enabledVectors == 8 && state.perVectorMasking)
        #expect(state.address == 0xfee0_1000 && state.data == 0x4041)
        #expect(state.maskBits == 0x2 && state.isMasked(vector: 1) && !state.isMasked(vector: 0))
        #expect(state.data(vector: 3) == 0x4043)
        #expect(config.read(offset: offset + 2, size: 2) == 0x01b5)
        #expect(!config.write(offset: 0x3c, size: 1, value: 1).msiTouched)
        #expect(throws: PCIError.invalidMSIVectorCount(3)) { try MSICapability(vectors: 3) }
    }
}
