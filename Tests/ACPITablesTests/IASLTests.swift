import ACPITables
import Foundation
import Testing

/// Validation against the ACPICA compiler: every generated table must disassemble cleanly
/// with `iasl -d`, and recompiling the disassembly (`iasl -oa`, no optimisations) must give
/// back our bytes, apart from the checksum and the compiler ID/revision iasl writes itself.
@Suite("iasl validation", .enabled(if: iaslPath != nil, "iasl is not installed (apt-get install acpica-tools)"))
struct IASLTests {
    /// Configurations covering the optional parts of the table set.
    static let configurations: [(String, ACPIConfiguration)] = {
        var full = ACPIConfiguration(vcpuCount: 4)
        full.pciSegments = [MCFG.Allocation(baseAddress: MCFG.cloudHypervisorECAMBase)]
        full.genericEventDevice = PlatformAML.GenericEventDevice(
            address: 0xfed0_0000, irq: 5, events: [.cpuHotplug, .powerButton])
        full.pmTimerPort = 0x608
        full.cmosRealTimeClock = PlatformAML.CMOSRealTimeClock()
        full.additionalDefinitions = [PlatformAML.pciHostBridge(PlatformAML.PCIHostBridgeWindows(
            mmio32: (base: 0xC000_0000, size: 0x2800_0000), mmio64: (base: 0x1_0000_0000 << 4, size: 1 << 36)))]
        var x2apic = ACPIConfiguration(apicIDs: (0..<300).map { $0 }, serialPort: true)
        x2apic.cmosRealTimeClock = PlatformAML.CMOSRealTimeClock(irq: PlatformAML.CMOSRealTimeClock.pcIRQ)
        var hotplug = full
        hotplug.apicIDs = (0..<8).map { $0 }
        hotplug.cpuHotplug = (controllerAddress: 0xfed0_1000, presentVCPUs: 2)
        // Two PCI segments as Cloud Hypervisor lays them out: ECAM 1 MiB apart, the 32-bit
        // window and the 64-bit area split in halves.
        var segments = full
        segments.pciSegments = [MCFG.Allocation(baseAddress: 0xE800_0000, segment: 0), MCFG.Allocation(baseAddress: 0xE810_0000, segment: 1)]
        segments.additionalDefinitions = [
            PlatformAML.pciHostBridge(PlatformAML.PCIHostBridgeWindows(
                segment: 0, mmio32: (base: 0xC000_0000, size: 0x1400_0000), mmio64: (base: 0x1_0000_0000, size: 0x7F_0000_0000))),
            PlatformAML.pciHostBridge(PlatformAML.PCIHostBridgeWindows(
                segment: 1, mmio32: (base: 0xD400_0000, size: 0x1400_0000), mmio64: (base: 0x80_0000_0000, size: 0x7F_FFEF_0000))),
        ]
        return [
            ("minimal", ACPIConfiguration(vcpuCount: 1, serialPort: false)),
            ("full", full),
            ("x2apic", x2apic),
            ("cpu-hotplug", hotplug),
            ("pci-segments", segments),
        ]
    }()

    @Test(arguments: 0..<5)
    func tablesDisassembleAndRecompileToTheSameBytes(index: Int) throws {
        let (label, configuration) = Self.configurations[index]
        let set = try ACPITableSet.build(configuration, rsdpAddress: 0xa_0000)
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }

        for table in set.tables where table.signature != "RSD PTR " {
            let name = table.signature.lowercased()
            try Data(table.bytes).write(to: directory.appendingPathComponent("\(name).dat"))

            let disassembly = try runIASL(["-d", "\(name).dat"], in: directory)
            #expect(disassembly.status == 0, "\(label) \(table.signature): iasl -d failed:\n\(disassembly.output)")
            #expect(!disassembly.output.contains("Error") && !disassembly.output.contains("Warning"),
                    "\(label) \(table.signature): iasl -d complained:\n\(disassembly.output)")
            let source = directory.appendingPathComponent("\(name).dsl")
            #expect(FileManager.default.fileExists(atPath: source.path), "\(label) \(table.signature): no .dsl")

            let compilation = try runIASL(["-oa", "\(name).dsl"], in: directory)
            #expect(compilation.status == 0, "\(label) \(table.signature): recompiling failed:\n\(compilation.output)")
            #expect(compilation.output.contains("0 Errors, 0 Warnings"),
                    "\(label) \(table.signature): recompiling complained:\n\(compilation.output)")
            let rebuilt = try [UInt8](Data(contentsOf: directory.appendingPathComponent("\(name).aml")))
            #expect(rebuilt.count == table.bytes.count, "\(label) \(table.signature): length differs")
            // iasl writes its own checksum (byte 9) and compiler ID and revision (bytes 28-35).
            let differing = zip(rebuilt, table.bytes).enumerated()
                .filter { $0.element.0 != $0.element.1 && $0.offset != 9 && !(28..<36).contains($0.offset) }
                .map(\.offset)
            #expect(differing.isEmpty, "\(label) \(table.signature): bytes differ at offsets \(differing.prefix(16))")
        }
    }

    @Test func disassembledDSDTNamesCloudHypervisorObjects() throws {
        let set = try ACPITableSet.build(Self.configurations[1].1, rsdpAddress: 0xa_0000)
        let (result, asl) = try disassembledDSDT(set)
        #expect(result.status == 0)
        for fragment in [
            "Name (_S5, Package (0x01)", "Device (\\_SB.COM1)", "EisaId (\"PNP0501\")",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
            "IO (Decode16,", "Device (\\_SB.PWRB)", "Device (\\_SB.CPUS)", "Device (C003)",
            "\"ACPI0007\"", "Name (_MAT, Buffer (0x08)", "Device (\\_SB.GED)", "\"ACPI0013\"",
            "OperationRegion (GDST, SystemMemory, 0xFED00000, One)", "Notify (\\_SB.PWRB, 0x80)",
            "Memory32Fixed (ReadWrite,", "Device (\\_SB.PC00)", "EisaId (\"PNP0A08\")", "EisaId (\"PNP0A03\")",
            "WordBusNumber (ResourceProducer,", "DWordMemory (ResourceProducer,", "QWordMemory (ResourceProducer,",
            "Device (\\_SB.RTC)", "EisaId (\"PNP0B00\")",
        ] {
            #expect(asl.contains(fragment), "the disassembled DSDT lacks \(fragment)")
        }
    }

    @Test("two PCI segments: an MCFG entry and a PNP0A08 host bridge each, with _SEG, _UID, _BBN and the segment's own windows")
    func disassembledSegments() throws {
        let set = try ACPITableSet.build(Self.configurations[4].1, rsdpAddress: 0xa_0000)
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for name in ["DSDT", "MCFG"] {
            try Data(try #require(set.table(name)).bytes).write(to: directory.appendingPathComponent("\(name.lowercased()).dat"))
            #expect(try runIASL(["-d", "\(name.lowercased()).dat"], in: directory).status == 0)
        }
        let dsdt = try String(contentsOf: directory.appendingPathComponent("dsdt.dsl"), encoding: .utf8)
        let mcfg = try String(contentsOf: directory.appendingPathComponent("mcfg.dsl"), encoding: .utf8)
        // Segment 1's host bridge, after segment 0's, with its own numbers and windows only.
        let second = try #require(dsdt.range(of: "Device (\\_SB.PC01)"))
        #expect(dsdt.range(of: "Device (\\_SB.PC00)").map { $0.lowerBound < second.lowerBound } == true)
        let pc01 = String(dsdt[second.lowerBound...])
        for fragment in ["EisaId (\"PNP0A08\")", "Name (_SEG, One)", "Name (_UID, One)", "Name (_BBN, Zero)",
                         "0xD4000000,         // Range Minimum", "0xE7FFFFFF,         // Range Maximum",
                         "0x0000008000000000, // Range Minimum", "0x000000FFFFEEFFFF, // Range Maximum"] {
            #expect(pc01.contains(fragment), "segment 1's host bridge lacks \(fragment)")
        }
        // Only segment 0 claims the 0xCF8 configuration ports.
        #expect(!pc01.contains("0x0CF8"))
        #expect(dsdt.contains("0x0CF8"))
        for fragment in ["Base Address : 00000000E8000000", "Base Address : 00000000E8100000",
                         "Segment Group Number : 0001"] {
            #expect(mcfg.contains(fragment), "the MCFG lacks \(fragment):\n\(mcfg)")
        }
    }
}
