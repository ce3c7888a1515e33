import ACPITables
import Foundation
import Testing

/// The DSDT of a VM with ACPI memory hotplug: Cloud Hypervisor's `\_SB_.MHPC` controller,
/// its methods and memory devices, disassembled by `iasl` and run by `acpiexec`.
@Suite("Memory hotplug AML")
struct MemoryHotplugAMLTests {
    static let controllerAddress: UInt64 = 0xc000_3000

    static func configuration() -> ACPIConfiguration {
        var configuration = ACPIConfiguration(vcpuCount: 1)
        configuration.genericEventDevice = PlatformAML.GenericEventDevice(address: 0xc000_0000, irq: 5,
                                                                          events: [.cpuHotplug, .memoryHotplug, .powerButton])
        configuration.memoryHotplugAddress = controllerAddress
        return configuration
    }

    @Test func fieldsAndRegionBytes() throws {
        let bytes = try PlatformAML.memoryHotplugController(address: Self.controllerAddress).amlBytes
        // OperationRegion (MHPR, SystemMemory, 0xC0003000, 0x18); Mutex (MLCK, 0)
        #expect(bytes.firstRange(of: [0x5b, 0x80] + Array("MHPR".utf8) + [0x00, 0x0c, 0x00, 0x30, 0x00, 0xc0, 0x0a, 0x18]) != nil)
        #expect(bytes.firstRange(of: [0x5b, 0x01] + Array("MLCK".utf8) + [0x00]) != nil)
        // Field (MHPR, ByteAcc, NoLock, WriteAsZeros) { Offset (0x14), MEN_, 1, MINS, 1, MRMV, 1, MEJ0, 1 }
        let status: [UInt8] = Array("MHPR".utf8) + [0x41, 0x00, 0x40, 0x0a] + Array("MEN_".utf8) + [1]
            + Array("MINS".utf8) + [1] + Array("MRMV".utf8) + [1] + Array("MEJ0".utf8) + [1]
        #expect(bytes.firstRange(of: status) != nil)
        // Field (MHPR, DWordAcc, NoLock, Preserve) { MSEL, 32, MOEV, 32, MOSC, 32 }
        let select: [UInt8] = [0x5b, 0x81, 0x15] + Array("MHPR".utf8) + [0x03] + Array("MSEL".utf8) + [0x20]
            + Array("MOEV".utf8) + [0x20] + Array("MOSC".utf8) + [0x20]
        #expect(bytes.firstRange(of: select) != nil)
        // CreateQWordField (MR64, 0x0E, MINL)
        #expect(bytes.firstRange(of: [0x8f] + Array("MR64".utf8) + [0x0a, 0x0e] + Array("MINL".utf8)) != nil)
    }

    @Test(.enabled(if: iaslPath != nil, "iasl is not installed (apt-get install acpica-tools)"))
    func disassemblyShowsCloudHypervisorsMethods() throws {
        let set = try ACPITableSet.build(Self.configuration(), rsdpAddress: 0xa_0000)
        let (result, asl) = try disassembledDSDT(set)
        #expect(result.status == 0, "\(result.output)")
        for fragment in [
            "Device (\\_SB.MHPC)", "\"Memory Hotplug Controller\"", "Mutex (MLCK, 0x00)",
            "OperationRegion (MHPR, SystemMemory, 0xC0003000, 0x18)",
            "MHBL,   32", "MHPX,   32", "MEN,    1", "MSEL,   32",
            "Method (MTFY, 2, Serialized)", "If ((Arg0 == 0x07))", "Notify (M007, Arg1)",
            "Method (MSCN, 0, Serialized)", "While ((Local0 < 0x08))", "MTFY (Local0, One)", "MTFY (Local0, 0x03)",
            "\\_SB.MHPC.MINS = One", "\\_SB.MHPC.MRMV = One",
            "Method (MSTA, 1, Serialized)", "If ((\\_SB.MHPC.MEN == One))",
            "Method (MCRS, 1, Serialized)", "CreateQWordField (MR64, \\_SB.MHPC.MCRS._Y00._LEN, LENL)", "CreateDWordField (MR64, 0x12, MINH)",
            "MINL = \\_SB.MHPC.MHBL", "LENH = \\_SB.MHPC.MHLH", "MAXL = (MINL + LENL)", "MAXL -= One", "Return (MR64)",
            "Device (M000)", "EisaId (\"PNP0C80\")", "Return (MSTA (Zero))", "Return (MCRS (0x07))",
            "\\_SB.MHPC.MSCN ()",
        ] {
            #expect(asl.contains(fragment), "the disassembled DSDT lacks \(fragment)")
        }
    }

    @Test(.enabled(if: acpiexecPath != nil, "acpiexec is not installed (apt-get install acpica-tools)"))
    func gedEventNotifiesTheMemoryDevices() throws {
        let (directory, files) = try writeACPIExecTables(Self.configuration())
        defer { try? FileManager.default.removeItem(at: directory) }
        // acpiexec fills the simulated registers with 3: GDAT bit 1 (memory hotplug) and MINS.
        let result = try runTool(acpiexecPath!, ["-fv", "3", "-b", "evaluate \\_SB.GED._EVT 0"] + files, in: directory)
        #expect(result.status == 0 && !result.output.contains("AE_"), "\(result.output)")
        for name in ["M000", "M007"] {
            #expect(result.output.contains("Notify on [\(name)]"), "\(result.output)")
        }
        #expect(result.output.contains("Value 0x01 (Device Check)"), "\(result.output)")
    }

    @Test(.enabled(if: acpiexecPath != nil, "acpiexec is not installed (apt-get install acpica-tools)"))
    func resourcesCarryTheSlotsRange() throws {
        let (directory, files) = try writeACPIExecTables(Self.configuration())
        defer { try? FileManager.default.removeItem(at: directory) }
        // acpiexec simulates the registers as plain memory filled with 0x01 bytes; MCRS's
        // selection write (2) lands on MHBL's offset, as on no real controller. So the base is
        // 0x01010101_00000002, the length 0x01010101_01010101 and the maximum base + length - 1.
        let result = try runTool(acpiexecPath!, ["-fv", "1", "-b", "evaluate \\_SB.MHPC.M002._CRS; evaluate \\_SB.MHPC.M002._STA"] + files,
                                 in: directory)
        #expect(result.status == 0 && !result.output.contains("AE_"), "\(result.output)")
        let buffer = Self.dumpedBytes(result.output)
        try #require(buffer.count == 0x30, "\(result.output)")
        func qword(_ offset: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(buffer[offset + $1]) << (8 * UInt64($1)) } }
        #expect(buffer[0] == 0x8a && buffer[5] == 0x03, "a cacheable read-write QWordMemory")
        #expect(qword(14) == 0x0101_0101_0000_0002)
        #expect(qword(22) == 0x0202_0202_0101_0102)
        #expect(qword(38) == 0x0101_0101_0101_0101)
        #expect(result.output.contains("[Integer] = 000000000000000F"), "\(result.output)")
    }

    /// The bytes of the first buffer acpiexec dumps (`  0000: 8A 2B ... // text` lines).
    static func dumpedBytes(_ output: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var started = false
        for line in output.split(separator: "\n") {
            let trimmed = line.drop { $0 == " " }
            guard trimmed.count > 6, trimmed.dropFirst(4).first == ":", trimmed.prefix(4).allSatisfy(\.isHexDigit) else {
                if started { break } else { continue }
            }
            started = true
            let hex = trimmed.dropFirst(5).prefix { $0 != "/" }
            bytes += hex.split(separator: " ").compactMap { UInt8($0, radix: 16) }
        }
        return bytes
    }
}
