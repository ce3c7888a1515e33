import ACPITables
import Foundation
import Testing

/// Runs the tables in ACPICA's interpreter (`acpiexec`, the same ACPICA code Linux uses):
/// entering S5 must write `SLP_TYP` 5 | `SLP_EN` (0x34) to port 0x600, and the GED's
/// `_EVT` must notify the power button.
@Suite("acpiexec", .enabled(if: acpiexecPath != nil, "acpiexec is not installed (apt-get install acpica-tools)"))
struct ACPIExecTests {
    /// Writes the tables of a 2-vCPU set with a GED to a fresh directory and returns the
    /// directory and the table file names.
    func writeTables() throws -> (URL, [String]) {
        var configuration = ACPIConfiguration(vcpuCount: 2)
        configuration.genericEventDevice = PlatformAML.GenericEventDevice(address: 0xfed0_0000, irq: 5)
        return try writeACPIExecTables(configuration)
    }

    @Test func enteringS5WritesTheShutdownValueToPort0x600() throws {
        let (directory, files) = try writeTables()
        defer { try? FileManager.default.removeItem(at: directory) }
        // Debug level ACPI_LV_IO (0x04000000) logs every register access.
        let result = try runTool(acpiexecPath!, ["-x", "0x04000000", "-b", "sleep 5"] + files, in: directory)
        #expect(result.status == 0, "acpiexec failed:\n\(result.output)")
        #expect(result.output.contains("Sleep-A: 05"), "\(result.output)")
        let shutdownWrite = "Wrote: 0000000000000034 width  8   to 0000000000000600 (SystemIO)"
        #expect(result.output.contains(shutdownWrite), "no S5 write to port 0x600:\n\(result.output)")
    }

    @Test func objectsEvaluate() throws {
        let (directory, files) = try writeTables()
        defer { try? FileManager.default.removeItem(at: directory) }
        let commands = "evaluate \\_S5_; evaluate \\_SB.CPUS.C001._STA; evaluate \\_SB.CPUS.C001._MAT; evaluate \\_SB.COM1._CRS"
        let result = try runTool(acpiexecPath!, ["-b", commands] + files, in: directory)
        #expect(result.status == 0, "acpiexec failed:\n\(result.output)")
        #expect(!result.output.contains("AE_"), "an evaluation failed:\n\(result.output)")
        #expect(result.output.contains("[Integer] = 0000000000000005"))
        #expect(result.output.contains("[Integer] = 000000000000000F"))
        #expect(result.output.contains("00 08 01 01 01 00 00 00"))
        #expect(result.output.contains("89 06 00 03 01 04 00 00 00 47 01 F8 03 F8 03 00"))
    }

    @Test("each PCI segment's host bridge evaluates to its own _SEG, _UID and _BBN; two bridges coexist")
    func pciSegmentBridgesEvaluate() throws {
        var configuration = ACPIConfiguration(vcpuCount: 1)
        configuration.additionalDefinitions = [0, 1].map { (segment: UInt16) in
            PlatformAML.pciHostBridge(PlatformAML.PCIHostBridgeWindows(
                segment: segment, mmio32: (base: 0xC000_0000 + UInt64(segment) * 0x1400_0000, size: 0x1400_0000)))
        }
        let (directory, files) = try writeACPIExecTables(configuration)
        defer { try? FileManager.default.removeItem(at: directory) }
        let commands = "evaluate \\_SB.PC00._SEG; evaluate \\_SB.PC01._SEG; evaluate \\_SB.PC01._UID; evaluate \\_SB.PC01._BBN"
        let result = try runTool(acpiexecPath!, ["-b", commands] + files, in: directory)
        #expect(result.status == 0, "acpiexec failed:\n\(result.output)")
        #expect(!result.output.contains("AE_"), "an evaluation failed:\n\(result.output)")
        let integers = result.output.split(separator: "\n").filter { $0.contains("[Integer] = ") }
            .map { $0.split(separator: "=").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" }
        #expect(integers == ["0000000000000000", "0000000000000001", "0000000000000001", "0000000000000000"], "\(result.output)")
    }

    @Test func gedEventNotifiesThePowerButton() throws {
        let (directory, files) = try writeTables()
        defer { try? FileManager.default.removeItem(at: directory) }
        // Fill simulated operation regions with 8: GDAT reads "power button pressed".
        let result = try runTool(acpiexecPath!, ["-fv", "8", "-b", "evaluate \\_SB.GED._EVT 0"] + files, in: directory)
        #expect(result.status == 0, "acpiexec failed:\n\(result.output)")
        #expect(result.output.contains("Notify on [PWRB]") && result.output.contains("Value 0x80"), "\(result.output)")
    }
}

/// Builds `configuration`'s tables and writes the FADT, DSDT and MADT for acpiexec to a fresh
/// directory; returns the directory and the table file names.
func writeACPIExecTables(_ configuration: ACPIConfiguration) throws -> (URL, [String]) {
    let set = try ACPITableSet.build(configuration, rsdpAddress: 0xa_0000)
    let directory = try makeTemporaryDirectory()
    var files: [String] = []
    for signature in ["FACP", "DSDT", "APIC"] {
        let name = signature.lowercased() + ".dat"
        try Data(try #require(set.table(signature)).bytes).write(to: directory.appendingPathComponent(name))
        files.append(name)
    }
    return (directory, files)
}
