import ACPITables
import Testing

/// Whether `needle` occurs in `haystack`.
private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard needle.count <= haystack.count else { return false }
    return (0...(haystack.count - needle.count)).contains { Array(haystack[$0..<($0 + needle.count)]) == needle }
}

/// The assembled table set and the platform AML in it.
@Suite("ACPI table set")
struct TableSetTests {
    @Test func layoutIsContiguousAndAligned() throws {
        let set = try ACPITableSet.build(vcpuCount: 4, serialPort: true, rsdpAddress: 0xa_0000)
        #expect(set.rsdpAddress == 0xa_0000)
        #expect(set.tables.map(\.signature) == ["RSD PTR ", "DSDT", "FACP", "APIC", "XSDT"])
        #expect(set.tables[0].address == 0xa_0000)
        #expect(set.tables[1].address == 0xa_0028)  // RSDP (36 bytes) rounded up to 8
        var next: UInt64 = 0xa_0000
        for table in set.tables {
            #expect(table.address == (next + 7) & ~7)
            #expect(table.address % 8 == 0)
            next = table.address + UInt64(table.bytes.count)
        }
        #expect(set.endAddress == next)
    }

    @Test func everyTableIsChecksummedWithItsLength() throws {
        var configuration = ACPIConfiguration(vcpuCount: 8)
        configuration.pciSegments = [MCFG.Allocation(baseAddress: MCFG.cloudHypervisorECAMBase)]
        configuration.genericEventDevice = PlatformAML.GenericEventDevice(address: 0xfed0_0000, irq: 5)
        let set = try ACPITableSet.build(configuration, rsdpAddress: 0xa_0000)
        for table in set.tables {
            #expect(ACPIChecksum.sum(table.bytes) == 0, "\(table.signature) does not sum to 0")
            if table.signature != "RSD PTR " {
                #expect(load(UInt32.self, table.bytes, at: 4) == UInt32(table.bytes.count))
                #expect(text(table.bytes, at: 0, count: 4) == table.signature)
            }
        }
        #expect(ACPIChecksum.sum(set.tables[0].bytes[0..<20]) == 0)
    }

    @Test func pointersLinkTheTables() throws {
        var configuration = ACPIConfiguration(vcpuCount: 2)
        configuration.pciSegments = [MCFG.Allocation(baseAddress: MCFG.cloudHypervisorECAMBase)]
        let set = try ACPITableSet.build(configuration, rsdpAddress: 0x10_0000)
        let rsdp = try #require(set.table("RSD PTR "))
        let xsdt = try #require(set.table("XSDT"))
        let facp = try #require(set.table("FACP"))
        let dsdt = try #require(set.table("DSDT"))
        let madt = try #require(set.table("APIC"))
        let mcfg = try #require(set.table("MCFG"))
        #expect(load(UInt64.self, rsdp.bytes, at: 24) == xsdt.address)
        let entries = (0..<(xsdt.bytes.count - 36) / 8).map { load(UInt64.self, xsdt.bytes, at: 36 + 8 * $0) }
        #expect(entries == [facp.address, madt.address, mcfg.address])
        #expect(load(UInt64.self, facp.bytes, at: 140) == dsdt.address)
        #expect(set.tables.last?.signature == "XSDT")
    }

    @Test func madtHasOneProcessorPerAPICID() throws {
        let set = try ACPITableSet.build(ACPIConfiguration(apicIDs: [0, 2, 4, 6]), rsdpAddress: 0xa_0000)
        let madt = try #require(set.table("APIC")).bytes
        var processors: [(UInt8, UInt8)] = []
        var offset = 44
        while offset < madt.count {
            if madt[offset] == 0 { processors.append((madt[offset + 2], madt[offset + 3])) }
            offset += Int(madt[offset + 1])
        }
        #expect(processors.map(\.0) == [0, 1, 2, 3])
        #expect(processors.map(\.1) == [0, 2, 4, 6])
    }

    @Test func dsdtHoldsCloudHypervisorObjects() throws {
        let set = try ACPITableSet.build(vcpuCount: 2, serialPort: true, rsdpAddress: 0xa_0000)
        let dsdt = try #require(set.table("DSDT")).bytes
        #expect(contains(dsdt, hexBytes("08 5F 53 35 5F 12 04 01 0A 05")))          // \_S5_ = {5}
        #expect(contains(dsdt, PlatformAML.serialPort().amlBytes))
        #expect(contains(dsdt, PlatformAML.powerButton.amlBytes))
        #expect(contains(dsdt, Array("C000".utf8)) && contains(dsdt, Array("C001".utf8)))
        #expect(!contains(dsdt, Array("C002".utf8)))
        #expect(contains(dsdt, hexBytes("08 5F 4D 41 54 11 0B 0A 08 00 08 01 01 01 00 00 00")))  // C001's _MAT
        #expect(!contains(dsdt, Array("MBRD".utf8)) && !contains(dsdt, Array("GED_".utf8)))
        let quiet = try ACPITableSet.build(vcpuCount: 2, serialPort: false, rsdpAddress: 0xa_0000)
        #expect(!contains(try #require(quiet.table("DSDT")).bytes, Array("COM1".utf8)))
    }

    @Test func serialPortDeviceBytes() {
        let expected = hexBytes("""
            5B 82 43 04 5C 2E 5F 53 42 5F 43 4F 4D 31
            08 5F 48 49 44 0C 41 D0 05 01
            08 5F 55 49 44 00
            08 5F 44 44 4E 0D 43 4F 4D 31 00
            08 5F 43 52 53 11 16 0A 13
               89 06 00 03 01 04 00 00 00
               47 01 F8 03 F8 03 00 08
               79 00
            """)
        #expect(PlatformAML.serialPort().amlBytes == expected)
    }

    @Test func processorContainer() throws {
        let cpus = try PlatformAML.processors(apicIDs: [0, 0x1ff])
        let bytes = cpus.amlBytes
        #expect(Array(bytes.prefix(2)) == [0x5b, 0x82])
        #expect(contains(bytes, "ACPI0010".amlBytes) && contains(bytes, AML.EISAID("PNP0A05").amlBytes))
        #expect(contains(bytes, hexBytes("14 06 43 53 43 4E 08")))           // Method (CSCN, 0, Serialized) {}
        #expect(contains(bytes, hexBytes("14 09 5F 53 54 41 00 A4 0A 0F")))  // _STA returns 0x0F
        #expect(contains(bytes, hexBytes("14 08 5F 50 58 4D 00 A4 00")))     // _PXM returns 0
        #expect(contains(bytes, AML.Name("_MAT", AML.Buffer(MADT.Entry.processor(uid: 1, apicID: 0x1ff).bytes)).amlBytes))
        #expect(PlatformAML.processorMAT(uid: 1, apicID: 0x1ff).first == 9)  // x2APIC beyond 0xFE
        let many = try PlatformAML.processors(apicIDs: (0..<300).map { $0 }).amlBytes
        #expect(contains(many, Array("C12B".utf8)))
        #expect(throws: ACPIError.tooManyProcessors(count: 4097, maximum: 4096)) {
            try PlatformAML.processors(apicIDs: (0..<4097).map { $0 })
        }
    }

    @Test func genericEventDevice() {
        let ged = PlatformAML.GenericEventDevice(address: 0xfed0_0000, irq: 5, events: [.powerButton])
        let bytes = AML.encodeAll(ged.definitions)
        #expect(contains(bytes, Array("ACPI0013".utf8)))
        #expect(contains(bytes, hexBytes("89 06 00 03 01 05 00 00 00")))  // Interrupt {5}
        #expect(contains(bytes, hexBytes("7B 60 0A 08 61")))              // And (Local0, 8, Local1)
        #expect(!contains(bytes, Array("CSCN".utf8)))                     // only the events asked for
        #expect(contains(bytes, hexBytes("86 5C 2E 5F 53 42 5F 50 57 52 42 0A 80")))  // Notify (\_SB_.PWRB, 0x80)
        #expect(PlatformAML.GenericEventDevice.Events.powerButton.rawValue == 8)
    }

    @Test func genericEventDeviceInTheLastByteOfTheAddressSpace() throws {
        // Found by fuzz/ (aml): the _CRS maximum was computed as address + 1 - 1 and overflowed.
        var configuration = ACPIConfiguration(vcpuCount: 1)
        configuration.genericEventDevice = PlatformAML.GenericEventDevice(address: .max, irq: 5)
        let set = try ACPITableSet.build(configuration, rsdpAddress: 0xA_0000)
        let dsdt = try #require(set.table("DSDT"))
        #expect(contains(dsdt.bytes, Array(repeating: 0xFF, count: 16)))  // _MIN and _MAX, both 2^64 - 1
    }

    @Test func motherboardResourcesReserveECAM() {
        let mbrd = PlatformAML.motherboardResources(ecam: [MCFG.Allocation(baseAddress: 0xe800_0000)]).amlBytes
        #expect(contains(mbrd, hexBytes("86 09 00 01 00 00 00 E8 00 00 10 00")))
        #expect(contains(mbrd, AML.EISAID("PNP0C02").amlBytes))
    }

    @Test func cmosRealTimeClockDeviceBytes() {
        // Device (\_SB_.RTC_) { _HID PNP0B00, _UID 0, _CRS { IO (Decode16, 0x70, 0x70, 1, 2) } }
        let expected = hexBytes("""
            5B 82 2E 5C 2E 5F 53 42 5F 52 54 43 5F
            08 5F 48 49 44 0C 41 D0 0B 00
            08 5F 55 49 44 00
            08 5F 43 52 53 11 0D 0A 0A
               47 01 70 00 70 00 01 02
               79 00
            """)
        #expect(PlatformAML.CMOSRealTimeClock().device.amlBytes == expected)
        // With its interrupt: IRQNoFlags () { 8 } after the ports.
        let withIRQ = hexBytes("""
            5B 82 31 5C 2E 5F 53 42 5F 52 54 43 5F
            08 5F 48 49 44 0C 41 D0 0B 00
            08 5F 55 49 44 00
            08 5F 43 52 53 11 10 0A 0D
               47 01 70 00 70 00 01 02
               22 00 01
               79 00
            """)
        #expect(PlatformAML.CMOSRealTimeClock(irq: PlatformAML.CMOSRealTimeClock.pcIRQ).device.amlBytes == withIRQ)
    }

    @Test func dsdtDescribesTheRealTimeClockOnlyWhenAsked() throws {
        var configuration = ACPIConfiguration(vcpuCount: 1)
        let plain = try #require(try ACPITableSet.build(configuration, rsdpAddress: 0xa_0000).table("DSDT")).bytes
        #expect(!contains(plain, AML.EISAID("PNP0B00").amlBytes))
        configuration.cmosRealTimeClock = PlatformAML.CMOSRealTimeClock()
        let dsdt = try #require(try ACPITableSet.build(configuration, rsdpAddress: 0xa_0000).table("DSDT")).bytes
        #expect(contains(dsdt, PlatformAML.CMOSRealTimeClock().device.amlBytes))
        // The FADT keeps IAPC_BOOT_ARCH bit 5 ("CMOS RTC not present") clear: Linux gives up
        // on the clock when it is set.
        let facp = try #require(try ACPITableSet.build(configuration, rsdpAddress: 0xa_0000).table("FACP")).bytes
        #expect(load(UInt16.self, facp, at: FADT.iapcBootArchitectureOffset) & (1 << 5) == 0)
    }

    @Test func configurationKnobsReachTheTables() throws {
        var configuration = ACPIConfiguration(vcpuCount: 1)
        configuration.shutdownPort = 0x3c0
        configuration.pmTimerPort = 0x608
        configuration.ioapicID = 9
        configuration.additionalDefinitions = [AML.Name("XTRA", AML.one)]
        let set = try ACPITableSet.build(configuration, rsdpAddress: 0xe_0000)
        let facp = try #require(set.table("FACP")).bytes
        #expect(load(UInt64.self, facp, at: 248) == 0x3c0)
        #expect(load(UInt64.self, facp, at: 212) == 0x608)
        let madt = try #require(set.table("APIC")).bytes
        #expect(madt[44 + 8] == 1 && madt[44 + 8 + 2] == 9)
        let dsdt = try #require(set.table("DSDT")).bytes
        #expect(Array(dsdt.suffix(6)) == hexBytes("08 58 54 52 41 01"))
    }

    @Test func readmeExampleBuilds() throws {
        var configuration = ACPIConfiguration(apicIDs: [0, 2, 4, 6])
        configuration.pciSegments = [MCFG.Allocation(baseAddress: MCFG.cloudHypervisorECAMBase)]
        configuration.pmTimerPort = 0x608
        configuration.genericEventDevice = PlatformAML.GenericEventDevice(address: 0xFED0_0000, irq: 5)
        configuration.additionalDefinitions = [
            AML.Device("\\_SB_.VGEN") {
                AML.Name("_HID", "VMGENCTR")
                AML.Name("ADDR", AML.Package([UInt32(0xA_1000), UInt32(0)]))
            },
        ]
        let custom = try ACPITableSet.build(configuration, rsdpAddress: 0xA_0000)
        #expect(custom.tables.map(\.signature) == ["RSD PTR ", "DSDT", "FACP", "APIC", "MCFG", "XSDT"])
        var ssdt = try SDT(signature: "SSDT", revision: 2, oemTableID: "CHSSDT")
        ssdt.append(aml: AML.Scope("\\_SB_") {
            AML.Method("_STA", arguments: 0) { AML.Return(UInt8(0x0F)) }
        })
        #expect(Array(ssdt.bytes[36...]) == hexBytes("10 10 5C 5F 53 42 5F 14 09 5F 53 54 41 00 A4 0A 0F"))
        #expect(ACPIChecksum.sum(ssdt.bytes) == 0)
    }

    @Test func invalidConfigurationsAreRejected() {
        #expect(throws: ACPIError.noProcessors) { try ACPITableSet.build(vcpuCount: 0, serialPort: true, rsdpAddress: 0xa_0000) }
        #expect(throws: ACPIError.duplicateAPICID(1)) {
            try ACPITableSet.build(ACPIConfiguration(apicIDs: [0, 1, 1]), rsdpAddress: 0xa_0000)
        }
        #expect(throws: ACPIError.misalignedRSDP(0xa_0008)) {
            try ACPITableSet.build(vcpuCount: 1, serialPort: true, rsdpAddress: 0xa_0008)
        }
        #expect(throws: ACPIError.self) {
            try ACPITableSet.build(vcpuCount: 1, serialPort: true, rsdpAddress: UInt64.max - 15)
        }
        var badBus = ACPIConfiguration(vcpuCount: 1)
        badBus.pciSegments = [MCFG.Allocation(baseAddress: 0, startBus: 1, endBus: 0)]
        #expect(throws: ACPIError.invalidBusRange(segment: 0, startBus: 1, endBus: 0)) {
            try ACPITableSet.build(badBus, rsdpAddress: 0xa_0000)
        }
        #expect(ACPIError.misalignedRSDP(0xa_0008).description.contains("0xA0008"))
    }
}

extension AML {
    /// The encoding of several objects one after the other (test helper).
    static func encodeAll(_ objects: [any AMLConvertible]) -> [UInt8] {
        objects.flatMap { $0.amlBytes }
    }
}
