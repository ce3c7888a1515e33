import ACPITables
import Foundation
import Testing

/// The tables of a VM with PCI hotplug on segment 0: the `\_SB_.PHPR` controller and the
/// slots under `\_SB_.PC00`, disassembled by `iasl` and run by `acpiexec`.
@Suite("PCI hotplug AML")
struct PCIHotplugAMLTests {
    static let controllerAddress: UInt64 = 0xc000_2000

    static func configuration() -> ACPIConfiguration {
        var configuration = ACPIConfiguration(vcpuCount: 1)
        configuration.genericEventDevice = PlatformAML.GenericEventDevice(address: 0xc000_0000, irq: 5, events: [.pciHotplug, .powerButton])
        configuration.pciSegments = [MCFG.Allocation(baseAddress: 0xe800_0000)]
        configuration.additionalDefinitions = [PlatformAML.pciHostBridge(PlatformAML.PCIHostBridgeWindows(mmio32: (0xc000_0000, 0x3b00_0000)))]
        configuration.pciHotplugAddress = controllerAddress
        return configuration
    }

    @Test func controllerFieldsBytes() {
        let bytes = PlatformAML.pciHotplugController(address: Self.controllerAddress).amlBytes
        // Field (PCST, DWordAcc, NoLock, WriteAsZeros) { PCIU, 32, PCID, 32, B0EJ, 32, PSEG, 32 }
        let field: [UInt8] = [0x5b, 0x81, 0x1a] + Array("PCST".utf8) + [0x43] + Array("PCIU".utf8) + [0x20]
            + Array("PCID".utf8) + [0x20] + Array("B0EJ".utf8) + [0x20] + Array("PSEG".utf8) + [0x20]
        #expect(bytes.firstRange(of: field) != nil)
        // OperationRegion (PCST, SystemMemory, 0xC0002000, 0x10)
        #expect(bytes.firstRange(of: [0x5b, 0x80] + Array("PCST".utf8) + [0x00, 0x0c, 0x00, 0x20, 0x00, 0xc0, 0x0a, 0x10]) != nil)
    }

    @Test(.enabled(if: iaslPath != nil, "iasl is not installed (apt-get install acpica-tools)"))
    func disassemblyShowsCloudHypervisorsObjects() throws {
        let set = try ACPITableSet.build(Self.configuration(), rsdpAddress: 0xa_0000)
        let (result, asl) = try disassembledDSDT(set)
        #expect(result.status == 0, "\(result.output)")
        for fragment in [
            "Device (\\_SB.PHPR)", "\"PCI Hotplug Controller\"", "Mutex (BLCK, 0x00)", "Name (_STA, 0x0B)",
            "OperationRegion (PCST, SystemMemory, 0xC0002000, 0x10)",
            "Method (PCEJ, 2, Serialized)", "PSEG = Arg1", "B0EJ = (One << Arg0)",
            "Method (PSCN, 0, Serialized)", "\\_SB.PC00.PCNT ()",
            "Scope (\\_SB.PC00)", "Device (S000)", "Device (S031)", "Name (_SUN, 0x1F)", "Name (_ADR, 0x001F0000)",
            "\\_SB.PHPR.PCEJ (_SUN, _SEG)",
            "Method (DVNT, 2, Serialized)", "Local0 = (Arg0 & 0x80000000)", "Notify (S031, Arg1)",
            "Method (PCNT, 0, Serialized)", "\\_SB.PHPR.PSEG = _SEG", "DVNT (\\_SB.PHPR.PCIU, One)", "DVNT (\\_SB.PHPR.PCID, 0x03)",
            "\\_SB.PHPR.PSCN ()",
        ] {
            #expect(asl.contains(fragment), "the disassembled DSDT lacks \(fragment)")
        }
    }

    @Test(.enabled(if: acpiexecPath != nil, "acpiexec is not installed (apt-get install acpica-tools)"),
          arguments: [(UInt8(0x04), "Value 0x01 (Device Check)"), (0, nil)])
    func gedEventNotifiesTheSlots(fill: UInt8, value: String?) throws {
        let (directory, files) = try writeACPIExecTables(Self.configuration())
        defer { try? FileManager.default.removeItem(at: directory) }
        // acpiexec fills every simulated register with `fill`: GDAT bit 2 (PCI) and PCIU bit 2 (slot 2).
        let result = try runTool(acpiexecPath!, ["-fv", "\(fill)", "-b", "evaluate \\_SB.GED._EVT 0"] + files, in: directory)
        #expect(result.status == 0 && !result.output.contains("AE_"), "\(result.output)")
        if let value {
            #expect(result.output.contains("Notify on [S002]"), "\(result.output)")
            #expect(!result.output.contains("Notify on [S001]") && !result.output.contains("Notify on [S003]"), "\(result.output)")
            #expect(result.output.contains(value), "\(result.output)")
        } else {
            #expect(!result.output.contains("Notify on [S0"), "\(result.output)")
        }
    }

    @Test(.enabled(if: acpiexecPath != nil, "acpiexec is not installed (apt-get install acpica-tools)"))
    func ejectMethodWritesTheSlotBit() throws {
        let (directory, files) = try writeACPIExecTables(Self.configuration())
        defer { try? FileManager.default.removeItem(at: directory) }
        let commands = "evaluate \\_SB.PC00.S005._EJ0 1; evaluate \\_SB.PHPR.B0EJ; evaluate \\_SB.PHPR.PSEG"
        let result = try runTool(acpiexecPath!, ["-fv", "0", "-b", commands] + files, in: directory)
        #expect(result.status == 0 && !result.output.contains("AE_"), "\(result.output)")
        let values = result.output.split(separator: "\n").filter { $0.contains("[Integer] = ") }.map { $0.split(separator: " ").last.map(String.init) ?? "" }
        #expect(values.suffix(2) == ["0000000000000020", "0000000000000000"], "\(result.output)")
    }
}
