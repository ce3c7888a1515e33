import ACPITables
import Testing

/// The fixed-layout tables, field by field.
@Suite("ACPI tables")
struct TableTests {
    @Test func sdtHeaderAndChecksum() throws {
        var table = try SDT(signature: "TEST", revision: 3, oemTableID: "CHTEST")
        table.append(UInt32(0x1234_5678))
        table.append(.ioPort(0x600))
        table.append(bytes: [0xaa, 0xbb])
        table.write(UInt16(0xbeef), at: 36)
        let bytes = table.bytes
        #expect(bytes.count == 36 + 4 + 12 + 2)
        #expect(table.length == bytes.count)
        #expect(table.signature == "TEST" && table.revision == 3)
        #expect(text(bytes, at: 0, count: 4) == "TEST")
        #expect(load(UInt32.self, bytes, at: 4) == UInt32(bytes.count))
        #expect(bytes[8] == 3)
        #expect(text(bytes, at: 10, count: 6) == "CLOUDH")
        #expect(text(bytes, at: 16, count: 8) == "CHTEST  ")
        #expect(load(UInt32.self, bytes, at: 24) == 1)
        #expect(text(bytes, at: 28, count: 4) == "CHSW")
        #expect(load(UInt32.self, bytes, at: 32) == 1)
        #expect(load(UInt32.self, bytes, at: 36) == 0x1234_beef)
        #expect(Array(bytes[40..<52]) == [1, 8, 0, 1, 0x00, 0x06, 0, 0, 0, 0, 0, 0])
        #expect(Array(bytes.suffix(2)) == [0xaa, 0xbb])
        #expect(ACPIChecksum.sum(bytes) == 0)
    }

    @Test func sdtWithInitialLengthIsZeroFilled() throws {
        let table = try SDT(signature: "FACP", revision: 6, oemTableID: "X", length: 276)
        #expect(table.bytes.count == 276)
        #expect(table.bytes[36...].allSatisfy { $0 == 0 })
        #expect(ACPIChecksum.sum(table.bytes) == 0)
    }

    @Test func invalidHeaderFieldsAreRejected() {
        #expect(throws: ACPIError.invalidSignature("TOOLONG")) { try SDT(signature: "TOOLONG", revision: 1, oemTableID: "A") }
        #expect(throws: ACPIError.invalidSignature("AB")) { try SDT(signature: "AB", revision: 1, oemTableID: "A") }
        #expect(throws: ACPIError.invalidIdentifier(field: "OEM table ID", value: "NINECHARS", maximumLength: 8)) {
            try SDT(signature: "TEST", revision: 1, oemTableID: "NINECHARS")
        }
        #expect(throws: ACPIError.invalidIdentifier(field: "OEM ID", value: "SEVENCH", maximumLength: 6)) {
            try ACPIIdentity(oemID: "SEVENCH", creatorID: "ABCD", creatorRevision: 1)
        }
        #expect(throws: ACPIError.self) { try ACPIIdentity(oemID: "OK", creatorID: "FIVE5", creatorRevision: 1) }
        let message = ACPIError.invalidSignature("AB").description
        #expect(message.contains("\"AB\"") && message.contains("4 printable ASCII"))
    }

    @Test func customIdentityReachesEveryHeader() throws {
        let identity = try ACPIIdentity(oemID: "SWIFT", oemRevision: 7, creatorID: "TEST", creatorRevision: 9)
        let bytes = XSDT(entries: [], identity: identity).bytes
        #expect(text(bytes, at: 10, count: 6) == "SWIFT ")
        #expect(load(UInt32.self, bytes, at: 24) == 7)
        #expect(text(bytes, at: 28, count: 4) == "TEST")
        #expect(load(UInt32.self, bytes, at: 32) == 9)
        #expect(text(RSDP(xsdtAddress: 0, identity: identity).bytes, at: 9, count: 6) == "SWIFT ")
    }

    @Test func genericAddressStructures() {
        #expect(GenericAddress.ioPort(0x600).bytes == [1, 8, 0, 1, 0x00, 0x06, 0, 0, 0, 0, 0, 0])
        #expect(GenericAddress.ioPort(0x608, access: .dword).bytes == [1, 32, 0, 3, 0x08, 0x06, 0, 0, 0, 0, 0, 0])
        #expect(GenericAddress.memory(0x1_2345_6789, access: .qword).bytes
                == [0, 64, 0, 4, 0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0])
        #expect(GenericAddress.AccessSize.word.bits == 16)
        #expect(GenericAddress.AccessSize.undefined.bits == 0)
    }

    @Test func rsdpHasBothChecksumsAndPointsAtTheXSDT() {
        let bytes = RSDP(xsdtAddress: 0x1234_5678_9abc).bytes
        #expect(bytes.count == 36)
        #expect(text(bytes, at: 0, count: 8) == "RSD PTR ")
        #expect(ACPIChecksum.sum(bytes[0..<20]) == 0)
        #expect(ACPIChecksum.sum(bytes) == 0)
        #expect(text(bytes, at: 9, count: 6) == "CLOUDH")
        #expect(bytes[15] == 2)
        #expect(load(UInt32.self, bytes, at: 16) == 0)  // no RSDT
        #expect(load(UInt32.self, bytes, at: 20) == 36)
        #expect(load(UInt64.self, bytes, at: 24) == 0x1234_5678_9abc)
        #expect(Array(bytes[33..<36]) == [0, 0, 0])
    }

    @Test func xsdtListsTableAddresses() {
        let bytes = XSDT(entries: [0xa_0100, 0x1_0000_0000]).bytes
        #expect(text(bytes, at: 0, count: 4) == "XSDT")
        #expect(bytes.count == 36 + 16)
        #expect(bytes[8] == 1)
        #expect(text(bytes, at: 16, count: 8) == "CHXSDT  ")
        #expect(load(UInt64.self, bytes, at: 36) == 0xa_0100)
        #expect(load(UInt64.self, bytes, at: 44) == 0x1_0000_0000)
        #expect(ACPIChecksum.sum(bytes) == 0)
    }

    @Test func fadtMatchesCloudHypervisor() {
        let bytes = FADT.cloudHypervisor(dsdtAddress: 0xa_0028).bytes
        #expect(bytes.count == 276)
        #expect(text(bytes, at: 0, count: 4) == "FACP")
        #expect(bytes[8] == 6)
        #expect(text(bytes, at: 16, count: 8) == "CHFACP  ")
        #expect(ACPIChecksum.sum(bytes) == 0)
        // HW_REDUCED_ACPI (20) | RESET_REG_SUP (10) | TMR_VAL_EXT (8); no PWR/SLP_BUTTON bits.
        #expect(load(UInt32.self, bytes, at: 112) == 0x0010_0500)
        let port600: [UInt8] = [1, 8, 0, 1, 0x00, 0x06, 0, 0, 0, 0, 0, 0]
        #expect(Array(bytes[116..<128]) == port600)   // RESET_REG
        #expect(bytes[128] == 1)                      // RESET_VALUE
        #expect(bytes[131] == 3)                      // minor version: 6.3
        #expect(load(UInt64.self, bytes, at: 140) == 0xa_0028)  // X_DSDT
        #expect(load(UInt32.self, bytes, at: 40) == 0)          // 32-bit DSDT unused
        #expect(Array(bytes[244..<256]) == port600)   // SLEEP_CONTROL_REG
        #expect(Array(bytes[256..<268]) == port600)   // SLEEP_STATUS_REG
        #expect(text(bytes, at: 268, count: 8) == "CLOUDHYP")
        #expect(bytes[208..<220].allSatisfy { $0 == 0 })         // no PM timer
        #expect(load(UInt16.self, bytes, at: 109) == 0)          // IAPC_BOOT_ARCH
        #expect(load(UInt16.self, bytes, at: 46) == 0)           // no SCI
    }

    @Test func fadtWithPMTimerAndCustomFields() throws {
        let withTimer = FADT.cloudHypervisor(dsdtAddress: 0x1000, shutdownPort: 0x3c0, pmTimerPort: 0x608).bytes
        #expect(Array(withTimer[208..<220]) == [1, 32, 0, 3, 0x08, 0x06, 0, 0, 0, 0, 0, 0])
        #expect(load(UInt64.self, withTimer, at: 120) == 0x3c0)
        let custom = try FADT(dsdtAddress: 0x2000, flags: [.hardwareReducedACPI, .powerButtonControlMethod],
                              resetRegister: nil, sleepControlRegister: .ioPort(0x600), sleepStatusRegister: .ioPort(0x601),
                              iapcBootArchitecture: 0x2, hypervisorVendorIdentity: "SWIFT")
        let bytes = custom.bytes
        #expect(load(UInt32.self, bytes, at: 112) == 0x0010_0010)
        #expect(bytes[116..<129].allSatisfy { $0 == 0 })
        #expect(load(UInt64.self, bytes, at: 260) == 0x601)
        #expect(load(UInt16.self, bytes, at: 109) == 2)
        #expect(text(bytes, at: 268, count: 8) == "SWIFT   ")
        #expect(throws: ACPIError.self) {
            try FADT(dsdtAddress: 0, resetRegister: nil, sleepControlRegister: nil, sleepStatusRegister: nil,
                     hypervisorVendorIdentity: "NINECHARS")
        }
    }

    @Test func madtMatchesCloudHypervisor() {
        let bytes = MADT.cloudHypervisor(apicIDs: [0, 1, 2, 3]).bytes
        #expect(text(bytes, at: 0, count: 4) == "APIC")
        #expect(bytes[8] == 5)
        #expect(text(bytes, at: 16, count: 8) == "CHMADT  ")
        #expect(bytes.count == 44 + 4 * 8 + 12 + 10)
        #expect(ACPIChecksum.sum(bytes) == 0)
        #expect(load(UInt32.self, bytes, at: 36) == 0xfee0_0000)
        #expect(load(UInt32.self, bytes, at: 40) == 0)  // no PCAT_COMPAT, as Cloud Hypervisor
        var offset = 44
        var types: [UInt8] = []
        while offset < bytes.count {
            types.append(bytes[offset])
            offset += Int(bytes[offset + 1])
        }
        #expect(offset == bytes.count)
        #expect(types == [0, 0, 0, 0, 1, 2])
        #expect(Array(bytes[44 + 8 * 3..<44 + 8 * 4]) == [0, 8, 3, 3, 1, 0, 0, 0])  // vCPU 3 enabled
        #expect(Array(bytes[76..<88]) == [1, 12, 0, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0])  // IOAPIC 0
        #expect(Array(bytes[88..<98]) == [2, 10, 0, 4, 4, 0, 0, 0, 0, 0])  // ISA IRQ 4 -> GSI 4
    }

    @Test func madtEntryEncodings() {
        #expect(MADT.Entry.processor(uid: 300, apicID: 0x1ff).bytes
                == [9, 16, 0, 0, 0xff, 0x01, 0, 0, 1, 0, 0, 0, 0x2c, 0x01, 0, 0])
        #expect(MADT.Entry.processor(uid: 2, apicID: 0xff).type == 9)  // 0xFF is the broadcast ID
        #expect(MADT.Entry.processor(uid: 2, apicID: 7, flags: .onlineCapable).bytes == [0, 8, 2, 7, 2, 0, 0, 0])
        #expect(MADT.Entry.localAPICNMI(processorUID: 0xff, flags: [.activeHigh, .edgeTriggered], lint: 1).bytes
                == [4, 6, 0xff, 0x05, 0x00, 1])
        #expect(MADT.Entry.interruptSourceOverride(bus: 0, source: 0, gsi: 2, flags: [.activeLow, .levelTriggered]).bytes
                == [2, 10, 0, 0, 2, 0, 0, 0, 0x0f, 0x00])
        let pcat = MADT(flags: MADT.pcatCompatible, entries: []).bytes
        #expect(load(UInt32.self, pcat, at: 40) == 1 && pcat.count == 44)
    }

    @Test func mcfgDescribesECAMWindows() throws {
        let bytes = try MCFG(allocations: [MCFG.Allocation(baseAddress: MCFG.cloudHypervisorECAMBase)]).bytes
        #expect(text(bytes, at: 0, count: 4) == "MCFG")
        #expect(bytes.count == 36 + 8 + 16)
        #expect(bytes[8] == 1)
        #expect(load(UInt64.self, bytes, at: 36) == 0)  // reserved
        #expect(load(UInt64.self, bytes, at: 44) == 0xe800_0000)
        #expect(load(UInt16.self, bytes, at: 52) == 0)
        #expect(bytes[54] == 0 && bytes[55] == 0)
        #expect(load(UInt32.self, bytes, at: 56) == 0)
        #expect(ACPIChecksum.sum(bytes) == 0)
        #expect(MCFG.Allocation(baseAddress: 0, startBus: 0, endBus: 0xff).size == 256 << 20)
        #expect(throws: ACPIError.invalidBusRange(segment: 1, startBus: 2, endBus: 1)) {
            try MCFG(allocations: [MCFG.Allocation(baseAddress: 0, segment: 1, startBus: 2, endBus: 1)])
        }
    }

    @Test func dsdtWrapsADefinitionBlock() {
        let dsdt = DSDT([PlatformAML.s5SleepState])
        let bytes = dsdt.bytes
        #expect(text(bytes, at: 0, count: 4) == "DSDT")
        #expect(bytes[8] == 6)
        #expect(text(bytes, at: 16, count: 8) == "CHDSDT  ")
        #expect(Array(bytes[36...]) == hexBytes("08 5F 53 35 5F 12 04 01 0A 05"))
        #expect(ACPIChecksum.sum(bytes) == 0)
    }

    @Test func checksumHelpers() {
        #expect(ACPIChecksum.sum([0xff, 0x02]) == 0x01)
        #expect(ACPIChecksum.complement(of: [0xff, 0x02]) == 0xff)
        #expect(ACPIChecksum.complement(of: []) == 0)
    }
}
